/**
 * The generator's main-thread side: spawns the worker threads, deals the connections out to them,
 * drives the phases of a run and adds up their reports (counts, errors, HDR histograms).
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { decodeHistogram, newHistogram, type Histogram } from '../lib/histogram';
import type { ConnSpec, ToMain, ToWorker, WorkerSnap } from './messages';

export interface Totals {
  published: number;
  expected: number;
  delivered: number;
  others: Record<string, number>;
  errors: Record<string, number>;
  open: number;
  hist: Histogram | null;
}

export interface SetupOptions {
  host: string;
  binary: boolean;
  sampleEvery: number;
  padBytes: number;
  /** Connection attempts in flight per worker. */
  concurrency: number;
}

export class GeneratorPool {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<string, { left: Set<number>; replies: ToMain[]; resolve: (r: ToMain[]) => void }>();
  private publisherShare: number[] = [];
  /** Latest progress of each worker (published, delivered, errors). */
  readonly progress: { published: number; delivered: number; errors: number }[] = [];

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) {
      const w = new Worker(join(__dirname, 'worker.js'), { workerData: { id: i } });
      w.on('message', (m: ToMain) => this.onMessage(m));
      w.on('error', (err) => {
        process.stderr.write(`generator worker ${i} failed: ${err.stack ?? String(err)}\n`);
        process.exit(3);
      });
      this.workers.push(w);
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
      this.workers.forEach((w, i) => w.postMessage(msgFor(i)));
    });
  }

  /** Open and join every connection; returns how many succeeded and failed. */
  async setup(specs: ConnSpec[], o: SetupOptions): Promise<{ ok: number; failed: number }> {
    const parts: ConnSpec[][] = this.workers.map(() => []);
    specs.forEach((s, i) => parts[i % parts.length].push(s));
    const pubs = specs.filter((s) => s.publish).length;
    this.publisherShare = parts.map((p) => (pubs === 0 ? 0 : p.filter((s) => s.publish).length / pubs));
    const replies = await this.ask('ready', (i) => ({ cmd: 'setup', host: o.host, conns: parts[i], binary: o.binary, sampleEvery: o.sampleEvery, padBytes: o.padBytes, concurrency: o.concurrency }));
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
    this.workers.forEach((w, i) => w.postMessage({ cmd: 'start', rate: rate * this.publisherShare[i] } satisfies ToWorker));
  }

  async stop(): Promise<void> {
    await this.ask('stopped', () => ({ cmd: 'stop' }));
  }

  async snap(resetHist: boolean, withHist: boolean): Promise<Totals> {
    const replies = await this.ask('snap', () => ({ cmd: 'snap', resetHist, withHist }));
    const t: Totals = { published: 0, expected: 0, delivered: 0, others: {}, errors: {}, open: 0, hist: withHist ? newHistogram() : null };
    for (const r of replies) {
      if (r.ev !== 'snap') continue;
      const s: WorkerSnap = r.snap;
      t.published += s.published;
      t.expected += s.expected;
      t.delivered += s.delivered;
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
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            w.once('exit', () => resolve());
            w.postMessage({ cmd: 'exit' } satisfies ToWorker);
            setTimeout(() => void w.terminate(), 2000).unref();
          }),
      ),
    );
  }
}
