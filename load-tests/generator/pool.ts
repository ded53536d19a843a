/**
 * The generator's main-thread side: spawns the workers, deals the connections out to them, drives
 * the phases of a run and adds up their reports (counts, errors, HDR histograms).
 *
 * Workers are threads by default. With `processes` they are child processes running the same
 * worker.js over IPC: a process may hold at most `ulimit -n` descriptors (20,000 here), so idle
 * runs of more connections than that spread them over several generator processes.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { decodeHistogram, newHistogram, type Histogram } from '../lib/histogram';
import type { ConnSpec, LoadCodec, ToMain, ToWorker, WireProtocol, WorkerSnap } from './messages';

/** A worker as the pool sees it, thread or process. */
interface WorkerHandle {
  post(msg: ToWorker): void;
  /** Ask it to exit; resolves when it has (forcibly after 2 s). */
  exit(): Promise<void>;
  /** End it now, synchronously where possible (process 'exit' handlers). */
  kill(): void;
}

const WORKER_JS = join(__dirname, 'worker.js');

function fail(i: number, err: unknown): never {
  process.stderr.write(`generator worker ${i} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(3);
}

function threadWorker(i: number, onMessage: (m: ToMain) => void): WorkerHandle {
  const w = new Worker(WORKER_JS, { workerData: { id: i } });
  w.on('message', onMessage);
  w.on('error', (err) => fail(i, err));
  return {
    post: (msg) => w.postMessage(msg),
    exit: () =>
      new Promise<void>((resolve) => {
        w.once('exit', () => resolve());
        w.postMessage({ cmd: 'exit' } satisfies ToWorker);
        setTimeout(() => void w.terminate(), 2000).unref();
      }),
    kill: () => void w.terminate(),
  };
}

function processWorker(i: number, onMessage: (m: ToMain) => void): WorkerHandle {
  const c: ChildProcess = fork(WORKER_JS, [], { env: { ...process.env, LOADGEN_WORKER_ID: String(i) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let exited = false;
  c.on('message', (m) => onMessage(m as ToMain));
  c.on('exit', (code, signal) => {
    exited = true;
    if (code !== 0 && signal === null) fail(i, new Error(`worker process exited with code ${code}`));
  });
  return {
    post: (msg) => void c.send(msg),
    exit: () =>
      new Promise<void>((resolve) => {
        if (exited) return resolve();
        c.once('exit', () => resolve());
        c.send({ cmd: 'exit' } satisfies ToWorker);
        setTimeout(() => c.kill('SIGKILL'), 2000).unref();
      }),
    kill: () => {
      if (!exited) c.kill('SIGKILL');
    },
  };
}

export interface Totals {
  published: number;
  expected: number;
  delivered: number;
  rxBytes: number;
  others: Record<string, number>;
  errors: Record<string, number>;
  open: number;
  hist: Histogram | null;
}

export interface SetupOptions {
  host: string;
  /** What the connections speak; Switchboard's protocol by default. */
  protocol?: WireProtocol;
  binary: boolean;
  /** Compression asked for in hello (binary mode); 'none' by default. */
  codec?: LoadCodec;
  sampleEvery: number;
  padBytes: number;
  /** Connection attempts in flight per worker. */
  concurrency: number;
}

export class GeneratorPool {
  private readonly workers: WorkerHandle[] = [];
  private readonly waiting = new Map<string, { left: Set<number>; replies: ToMain[]; resolve: (r: ToMain[]) => void }>();
  private publisherShare: number[] = [];
  /** Latest progress of each worker (published, delivered, errors). */
  readonly progress: { published: number; delivered: number; errors: number }[] = [];

  /**
   * @param size workers
   * @param processes run the workers as child processes instead of threads
   * @param tickMs publish timer period of the workers (ms): every tick each worker writes what it
   *   owes, so a longer tick means larger synchronized bursts
   */
  constructor(
    readonly size: number,
    readonly processes = false,
    readonly tickMs = 1,
  ) {
    const onMessage = (m: ToMain) => this.onMessage(m);
    for (let i = 0; i < size; i++) {
      this.workers.push(processes ? processWorker(i, onMessage) : threadWorker(i, onMessage));
      this.progress.push({ published: 0, delivered: 0, errors: 0 });
    }
  }

  private onMessage(m: ToMain): void {
    if (m.ev === 'tick') {
      this.progress[m.id] = { published: m.published, delivered: m.delivered, errors: m.errors };
      return;
    }
    const w = this.waiting.get(m.ev);
    if (w === undefined || !w.left.delete(m.id)) return;
    w.replies.push(m);
    if (w.left.size === 0) {
      this.waiting.delete(m.ev);
      w.resolve(w.replies);
    }
  }

  /** Send each worker its message and wait for every worker's `ev` reply. */
  private ask(ev: ToMain['ev'], msgFor: (i: number) => ToWorker): Promise<ToMain[]> {
    return new Promise((resolve) => {
      this.waiting.set(ev, { left: new Set(this.workers.map((_, i) => i)), replies: [], resolve });
      this.workers.forEach((w, i) => w.post(msgFor(i)));
    });
  }

  /** Open and join every connection; returns how many succeeded and failed. */
  async setup(specs: ConnSpec[], o: SetupOptions): Promise<{ ok: number; failed: number }> {
    const parts: ConnSpec[][] = this.workers.map(() => []);
    specs.forEach((s, i) => parts[i % parts.length].push(s));
    const pubs = specs.filter((s) => s.publish).length;
    this.publisherShare = parts.map((p) => (pubs === 0 ? 0 : p.filter((s) => s.publish).length / pubs));
    const replies = await this.ask('ready', (i) => ({ cmd: 'setup', host: o.host, conns: parts[i], protocol: o.protocol ?? 'switchboard', binary: o.binary, codec: o.codec ?? 'none', sampleEvery: o.sampleEvery, padBytes: o.padBytes, concurrency: o.concurrency }));
    let ok = 0;
    let failed = 0;
    for (const r of replies) if (r.ev === 'ready') {
      ok += r.ok;
      failed += r.failed;
    }
    return { ok, failed };
  }

  /** Publish `rate` messages per second in total, shared by the workers in proportion to their publishers. */
  start(rate: number): void {
    this.workers.forEach((w, i) => w.post({ cmd: 'start', rate: rate * this.publisherShare[i], tickMs: this.tickMs }));
  }

  async stop(): Promise<void> {
    await this.ask('stopped', () => ({ cmd: 'stop' }));
  }

  async snap(resetHist: boolean, withHist: boolean): Promise<Totals> {
    const replies = await this.ask('snap', () => ({ cmd: 'snap', resetHist, withHist }));
    const t: Totals = { published: 0, expected: 0, delivered: 0, rxBytes: 0, others: {}, errors: {}, open: 0, hist: withHist ? newHistogram() : null };
    for (const r of replies) {
      if (r.ev !== 'snap') continue;
      const s: WorkerSnap = r.snap;
      t.published += s.published;
      t.expected += s.expected;
      t.delivered += s.delivered;
      t.rxBytes += s.rxBytes;
      t.open += s.open;
      for (const [k, v] of Object.entries(s.others)) t.others[k] = (t.others[k] ?? 0) + v;
      for (const [k, v] of Object.entries(s.errors)) t.errors[k] = (t.errors[k] ?? 0) + v;
      if (s.hist !== undefined && t.hist !== null) t.hist.add(decodeHistogram(s.hist));
    }
    return t;
  }

  async close(): Promise<void> {
    await this.ask('closed', () => ({ cmd: 'close' }));
  }

  async churn(host: string, ports: number[], rate: number, durationMs: number, maxInFlight: number, binary: boolean) {
    const replies = await this.ask('churn', () => ({ cmd: 'churn', host, ports, rate: rate / this.workers.length, durationMs, maxInFlight, binary }));
    const hist = newHistogram();
    let started = 0;
    let completed = 0;
    let elapsedS = 0;
    const errors: Record<string, number> = {};
    for (const r of replies) {
      if (r.ev !== 'churn') continue;
      started += r.started;
      completed += r.completed;
      elapsedS = Math.max(elapsedS, r.elapsedS);
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
      hist.add(decodeHistogram(r.hist));
    }
    return { started, completed, elapsedS, errors, hist };
  }

  async exit(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.exit()));
  }

  /** End every worker now (the CLI's exit handler: worker processes must not outlive it). */
  kill(): void {
    for (const w of this.workers) w.kill();
  }
}
