/**
 * The flags file source: a JSON or YAML file (by extension; `.json` is JSON, anything else is
 * parsed as YAML, which also accepts JSON), loaded at start and reloaded when it changes.
 *
 * Editors replace files in several ways (write in place, write a temp file and rename, delete and
 * recreate), so we watch the directory rather than the file and debounce events. A file that does
 * not parse or validate, is past the caps (MAX_FLAGS_FILE_BYTES, MAX_FLAGS), or is not a regular
 * file (a device, a FIFO, a directory, through a symlink or not), is rejected with
 * one log line naming the problem, and the last good set stays in force. A missing file counts as an empty set (every flag at its default: on).
 * A first load has no last good set: start() resolves false, and startFlags refuses to start.
 */
import { constants, watch, type FSWatcher, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../telemetry/log';
import { FlagError, MAX_FLAGS_FILE_BYTES, parseFlagSet, type FeatureFlag, type FlagStore } from './flags';

export const FILE_SOURCE = 'file';

export interface FlagsFileOptions {
  path: string;
  store: FlagStore;
  log: Logger;
  /** Quiet time after the last change event before the file is read. @default 100 */
  debounceMs?: number;
}

/** Parse the text of a flags file; throws an Error naming the problem. */
export function parseFlagsFile(text: string, path: string): FeatureFlag[] {
  let doc: unknown;
  try {
    doc = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new Error(`not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseFlagSet(doc);
}

/** What a path that is not a regular file is, for the rejection message. */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, for ever (it does
// nothing to a regular file's reads). Not on Windows, which has no FIFOs to open this way.
const OPEN_FLAGS = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

/**
 * The text of a flags file of at most MAX_FLAGS_FILE_BYTES. Only a regular file is read (through
 * a symlink too): a device such as /dev/zero has size 0 and never ends, and a FIFO blocks its
 * reader, so either held a reload (and every one after it) for ever, the first while memory grew
 * without bound. The path is checked before it is opened (a device is not opened at all) and the
 * handle after (the path may have changed in between). The size is checked before the read, so a
 * huge file is neither held in memory nor parsed, and the read stops after one byte more than the
 * limit whatever the size said (a file may grow, and /proc files say 0).
 */
async function readCapped(path: string): Promise<string> {
  const notRegular = (st: Stats) => new FlagError(`the path is ${kindOf(st)}: only a regular file (or a symlink to one) is read`);
  const before = await stat(path);
  if (!before.isFile()) throw notRegular(before);
  const fh = await open(path, OPEN_FLAGS);
  try {
    const tooBig = (n: number, more = '') => new FlagError(`the file is ${more}${n} bytes, more than the limit of ${MAX_FLAGS_FILE_BYTES}`);
    const st = await fh.stat();
    if (!st.isFile()) throw notRegular(st);
    if (st.size > MAX_FLAGS_FILE_BYTES) throw tooBig(st.size);
    const buf = Buffer.allocUnsafe(MAX_FLAGS_FILE_BYTES + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > MAX_FLAGS_FILE_BYTES) throw tooBig(n, 'at least ');
    return buf.toString('utf8', 0, n);
  } finally {
    await fh.close();
  }
}

export class FlagsFileSource {
  private readonly path: string;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private loading: Promise<boolean> | null = null;
  private again = false;
  /** Successful loads, for tests and /stats. */
  loads = 0;
  /** Rejected loads. */
  rejects = 0;
  /** Why the last load was rejected (null after a good one): what a refused start reports. */
  lastError: string | null = null;

  constructor(private readonly opts: FlagsFileOptions) {
    this.path = resolve(opts.path);
  }

  /** Load the file once and start watching it. Resolves whether the first load succeeded. */
  async start(): Promise<boolean> {
    const ok = await this.reload();
    const name = basename(this.path);
    this.watcher = watch(dirname(this.path), { persistent: false }, (_event, file) => {
      if (file === null || file === name) this.schedule();
    });
    this.watcher.on('error', (err) => this.opts.log.warn('flags file watch failed', { path: this.path, err }));
    return ok;
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.reload();
    }, this.opts.debounceMs ?? 100);
    this.timer.unref();
  }

  /** Read and apply the file now; loads never overlap, a change during a load reloads after it. */
  reload(): Promise<boolean> {
    if (this.loading !== null) {
      this.again = true;
      return this.loading;
    }
    this.loading = this.load().finally(() => {
      this.loading = null;
      if (this.again) {
        this.again = false;
        void this.reload();
      }
    });
    return this.loading;
  }

  private async load(): Promise<boolean> {
    const { store, log } = this.opts;
    let text: string;
    try {
      text = await readCapped(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return this.reject(err as Error);
      text = '';
    }
    let flags: FeatureFlag[];
    try {
      flags = parseFlagsFile(text, this.path);
      // The store refuses a set that would take the effective flags past MAX_FLAGS; that is a
      // rejected file like any other.
      store.setSource(FILE_SOURCE, flags);
    } catch (err) {
      return this.reject(err as Error);
    }
    this.lastError = null;
    this.loads++;
    log.info('flags loaded', { source: FILE_SOURCE, path: this.path, flags: flags.length });
    return true;
  }

  private reject(err: Error): false {
    this.rejects++;
    this.lastError = err.message;
    this.opts.log.error('flags file rejected, keeping the last good flags', { path: this.path, err: err.message });
    return false;
  }
}
