/**
 * The flags file source: a JSON or YAML file (by extension; `.json` is JSON, anything else is
 * parsed as YAML, which also accepts JSON), loaded at start and reloaded when it changes.
 *
 * Editors replace files in several ways (write in place, write a temp file and rename, delete and
 * recreate), so we watch the directory rather than the file and debounce events. A file that does
 * not parse or validate, or is past the caps (MAX_FLAGS_FILE_BYTES, MAX_FLAGS), is rejected with
 * one log line naming the problem, and the last good set stays in force. A missing file counts as an empty set (every flag at its default: on).
 * A first load has no last good set: start() resolves false, and startFlags refuses to start.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open } from 'node:fs/promises';
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

/**
 * The text of a flags file of at most MAX_FLAGS_FILE_BYTES. The size is checked before the read,
 * so a huge file is neither held in memory nor parsed, and again after it (the file may have
 * grown in between).
 */
async function readCapped(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const tooBig = (n: number) => new FlagError(`the file is ${n} bytes, more than the limit of ${MAX_FLAGS_FILE_BYTES}`);
    const { size } = await fh.stat();
    if (size > MAX_FLAGS_FILE_BYTES) throw tooBig(size);
    const data = await fh.readFile();
    if (data.length > MAX_FLAGS_FILE_BYTES) throw tooBig(data.length);
    return data.toString('utf8');
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
