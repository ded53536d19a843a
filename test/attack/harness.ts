/**
 * What every attack test needs: the target server as a real child process (its own event loop,
 * its own RSS, its own descriptor limit), a well-behaved witness client measuring ping latency in
 * a worker thread while the attack runs, RSS readings, and raw attacker sockets.
 *
 * Each test asserts the same three things besides the error the attacker gets: the witness was
 * served throughout (ping p99 under WITNESS_P99_MS), the process is still up, and its RSS grew by
 * no more than the budget documented in docs/operations.md ("Limits and abuse").
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CLI_PATH, tempDir } from '../helpers/cli';
import { ProcessGroup, stopChild } from '../helpers/process';
import { waitFor } from '../helpers/wait';
import type { WitnessReport } from './witness-worker';

/** The witness's ping p99 must stay under this (the bar on this 2-core machine). */
export const WITNESS_P99_MS = 50;
/** RSS growth allowed by an attack (docs/operations.md, "Limits and abuse"), MiB. */
export const RSS_BUDGET_MIB = 96;

const group = new ProcessGroup();
process.once('exit', () => group.killNow());

export interface Target {
  child: ChildProcess;
  port: number;
  adminPort: number;
  stderr: string[];
  logs(): Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  rssBytes(): number;
  stats(): Promise<Record<string, unknown>>;
  metric(series: string): Promise<number | undefined>;
  stop(): Promise<void>;
}

export interface TargetOptions {
  /** Soft and hard RLIMIT_NOFILE of the server process (`ulimit -n`). */
  nofile?: number;
  /** V8 heap limit, MiB (--max-old-space-size). @default 512, the process */
  heapMb?: number;
  /** More node flags (--cpu-prof when investigating). */
  nodeFlags?: string[];
}

/** Start `switchboard standalone` on free ports (admin on, gRPC off unless env says otherwise). */
export async function startTarget(env: Record<string, string> = {}, opts: TargetOptions = {}): Promise<Target> {
  const nodeArgs = [`--max-old-space-size=${opts.heapMb ?? 512}`, ...(opts.nodeFlags ?? []), CLI_PATH, 'standalone'];
  const fullEnv = { PATH: process.env.PATH ?? '', TCP_PORT: '0', ADMIN_PORT: '0', API_PORT: '-1', LOG_LEVEL: 'info', ...env };
  const child =
    opts.nofile === undefined
      ? spawn(process.execPath, nodeArgs, { cwd: tempDir(), env: fullEnv, stdio: ['ignore', process.env.TARGET_STDOUT ? 'inherit' : 'ignore', 'pipe'] })
      : spawn('/bin/sh', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, ...nodeArgs], {
          cwd: tempDir(),
          env: fullEnv,
          stdio: ['ignore', 'ignore', 'pipe'],
        });
  group.add(child);
  const stderr: string[] = [];
  let rest = '';
  child.stderr!.on('data', (c: Buffer) => {
    rest += c.toString('utf8');
    const lines = rest.split('\n');
    rest = lines.pop()!;
    stderr.push(...lines);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
  const logs = () =>
    stderr.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  const listening = await waitFor(() => logs().find((r) => r.msg === 'listening'), 10_000, 'the listening log line').catch((err: unknown) => {
    child.kill('SIGKILL');
    throw new Error(`${String(err)}\n${stderr.join('\n')}`);
  });
  const adminPort = listening.adminPort as number;
  const get = async (path: string) => (await fetch(`http://127.0.0.1:${adminPort}${path}`)).text();
  return {
    child,
    port: listening.port as number,
    adminPort,
    stderr,
    logs,
    exited,
    rssBytes: () => rssOf(child.pid!),
    stats: async () => JSON.parse(await get('/stats')) as Record<string, unknown>,
    metric: async (series) => sampleValue(await get('/metrics'), series),
    stop: () => stopChild(child, 'SIGKILL'),
  };
}

/** VmRSS of a process, bytes. */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) * 1024;
}

export function sampleValue(exposition: string, series: string): number | undefined {
  for (const line of exposition.split('\n')) if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  return undefined;
}

export interface WitnessResult {
  count: number;
  p50: number;
  p99: number;
  max: number;
  closed: boolean;
  messages: Record<string, unknown>[];
  /** Every round trip, ms, in ascending order. */
  sorted: number[];
}

/** A client that pings every `everyMs` while the attack runs; stop() gives its latency. */
export class Witness {
  private readonly rtts: number[] = [];
  private readonly messages: Record<string, unknown>[] = [];
  private closed = false;
  private error: string | null = null;
  private ready = false;
  private stopped = false;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (r: WitnessReport) => {
      if (r.kind === 'ready') this.ready = true;
      else if (r.kind === 'rtt') this.rtts.push(r.ms);
      else if (r.kind === 'message') this.messages.push(r.msg);
      else if (r.kind === 'closed') this.closed = true;
      else this.error = r.error;
    });
  }

  /** Start a witness; `t` stops it after the test whatever happens. */
  static async start(port: number, t: { after(fn: () => unknown): void }, user = 'witness', everyMs = 10): Promise<Witness> {
    const worker = new Worker(join(__dirname, 'witness-worker.js'), { workerData: { witness: { port, user, everyMs } } });
    // A test that fails before stopping its witness must not be kept alive by it.
    worker.unref();
    const w = new Witness(worker);
    t.after(() => w.stop());
    await waitFor(() => w.ready || w.error !== null, 5000, 'the witness to be welcomed');
    if (w.error !== null) throw new Error(`witness: ${w.error}`);
    return w;
  }

  get pings(): number {
    return this.rtts.length;
  }

  /** Wait until the witness has done `n` more round trips (it is being served). */
  async served(n = 10, timeoutMs = 5000): Promise<void> {
    const target = this.rtts.length + n;
    await waitFor(() => this.rtts.length >= target || this.closed, timeoutMs, `${n} witness pings`);
    assert.equal(this.closed, false, 'the witness was disconnected');
  }

  async stop(): Promise<WitnessResult> {
    const closed = this.closed; // before our own stop closes it
    if (!this.stopped) {
      this.stopped = true;
      this.worker.postMessage('stop');
      await this.worker.terminate();
    }
    const sorted = [...this.rtts].sort((a, b) => a - b);
    // Nearest rank: with 200 pings the p99 is the third largest, so one scheduling hiccup of a
    // machine shared with other work does not decide the test, two more would.
    const q = (p: number) => (sorted.length === 0 ? NaN : sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)]);
    return { count: sorted.length, p50: q(0.5), p99: q(0.99), max: sorted[sorted.length - 1] ?? NaN, closed, messages: this.messages, sorted };
  }
}

/**
 * Stop the witness and assert it was served throughout the attack: it is still connected, and
 * the p99 of its pings (at least `minPings` of them, waiting for more if the attack was short)
 * is under WITNESS_P99_MS.
 */
export async function assertWitnessServed(w: Witness, minPings = 300): Promise<WitnessResult> {
  if (w.pings < minPings) await w.served(minPings - w.pings, 20 * minPings + 5000);
  const r = await w.stop();
  assert.equal(r.closed, false, 'the witness was disconnected');
  assert.ok(r.count >= minPings, `the witness got only ${r.count} pongs`);
  assert.ok(r.p99 < WITNESS_P99_MS, `witness ping p99 ${r.p99.toFixed(1)} ms (p50 ${r.p50.toFixed(1)}, max ${r.max.toFixed(1)}, ${r.count} pings) is not under ${WITNESS_P99_MS} ms`);
  return r;
}

/** RSS growth within the documented budget. */
export function assertRssWithin(before: number, after: number, budgetMiB = RSS_BUDGET_MIB, what = 'RSS'): void {
  const grew = (after - before) / 1048576;
  assert.ok(grew <= budgetMiB, `${what} grew by ${grew.toFixed(1)} MiB (from ${(before / 1048576).toFixed(1)} MiB), over the budget of ${budgetMiB} MiB`);
}

/** A raw attacker socket collecting what the server sends (text lines parsed as JSON). */
export class RawClient {
  readonly lines: Record<string, unknown>[] = [];
  /** The first 64 kB received, as text (HTTP answers). */
  raw = '';
  closed = false;
  bytesIn = 0;
  /** Chunks of the line being received (only new chunks are searched: large lines stay cheap). */
  private pending: Buffer[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('data', (c: Buffer) => {
      this.bytesIn += c.length;
      if (this.raw.length < 65536) this.raw += c.toString('utf8', 0, Math.min(c.length, 65536));
      let start = 0;
      let nl: number;
      while ((nl = c.indexOf(0x0a, start)) !== -1) {
        this.pending.push(c.subarray(start, nl));
        const bytes = this.pending.reduce((n, b) => n + b.length, 0);
        start = nl + 1;
        if (bytes > 65536) {
          // Large lines are not parsed (the test process must not take the CPU the server and
          // the witness need): their type and size are enough.
          const head = Buffer.concat(this.pending).toString('utf8', 0, 200);
          this.pending = [];
          const id = /"id":("[^"]{0,128}"|-?\d+)/.exec(head)?.[1];
          this.lines.push({ type: /"type":"(\w+)"/.exec(head)?.[1] ?? '__large', ...(id === undefined ? {} : { id: JSON.parse(id) as unknown }), bytes });
          continue;
        }
        const line = Buffer.concat(this.pending).toString('utf8');
        this.pending = [];
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          /* HTTP or partial output */
        }
      }
      if (start < c.length) this.pending.push(c.subarray(start));
    });
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  static open(port: number, opts: { allowHalfOpen?: boolean } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, noDelay: true, allowHalfOpen: opts.allowHalfOpen ?? false });
      s.once('error', reject);
      s.once('connect', () => {
        s.removeListener('error', reject);
        resolve(new RawClient(s));
      });
    });
  }

  /** Connect without waiting (floods); errors are swallowed. */
  static openNoWait(port: number): RawClient {
    return new RawClient(connect({ host: '127.0.0.1', port, noDelay: true }));
  }

  write(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  line(obj: Record<string, unknown>): void {
    this.write(JSON.stringify(obj) + '\n');
  }

  async hello(user: string): Promise<void> {
    this.line({ type: 'hello', user, id: 'hello' });
    await this.waitFor((m) => m.id === 'hello', 5000, `${user}'s welcome`);
  }

  /** The first received message matching `pred`. */
  async waitFor(pred: (m: Record<string, unknown>) => boolean, timeoutMs = 5000, what = 'a message'): Promise<Record<string, unknown>> {
    return waitFor(() => this.lines.find(pred), timeoutMs, what);
  }

  async errorCode(timeoutMs = 5000): Promise<string> {
    const e = await this.waitFor((m) => m.type === 'error', timeoutMs, 'an error');
    return e.code as string;
  }

  waitClosed(timeoutMs = 5000): Promise<boolean> {
    return waitFor(() => this.closed, timeoutMs, 'the server to close the connection');
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Wait until the target's RSS settles (two readings 100 ms apart within 2 MiB), then read it. */
export async function settledRss(t: Target, timeoutMs = 3000): Promise<number> {
  let prev = t.rssBytes();
  await waitFor(
    async () => {
      await new Promise((r) => setTimeout(r, 100));
      const cur = t.rssBytes();
      const settled = Math.abs(cur - prev) < 2 * 1048576;
      prev = cur;
      return settled;
    },
    timeoutMs,
    'RSS to settle',
    { intervalMs: 0 },
  ).catch(() => undefined);
  return t.rssBytes();
}

/** Peak RSS while `during` runs, sampled every 50 ms. */
export async function peakRss<T>(t: Target, during: () => Promise<T>): Promise<{ peak: number; result: T }> {
  let peak = t.rssBytes();
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, t.rssBytes());
    } catch {
      /* exited: the test's other assertions say so */
    }
  }, 50);
  try {
    const result = await during();
    return { peak, result };
  } finally {
    clearInterval(timer);
  }
}
