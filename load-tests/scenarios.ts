/**
 * Scenarios: who connects where, who publishes, and the phases of one measured step
 * (setup, warm-up, measure, stop, drain, close). A step's figures are taken over the measure
 * window only; the delivery ratio over the whole step after the drain.
 */
import { cpus } from 'node:os';
import type { ConnSpec, LoadCodec } from './generator/messages';
import type { GeneratorPool, Totals } from './generator/pool';
import { summarize, type LatencySummary } from './lib/histogram';
import { procUsage, type Target } from './targets';

export type LoadScenario = 'fanout' | 'ingest' | 'broadcast';

export interface LoadParams {
  scenario: LoadScenario;
  clients: number;
  roomSize: number;
  /** Publishes per second, all publishers together. */
  rate: number;
  warmupS: number;
  measureS: number;
  binary: boolean;
  padBytes: number;
  sampleEvery: number;
}

export interface StepResult {
  target: string;
  scenario: string;
  clients: number;
  room_size: number;
  target_publish_per_s: number;
  published_per_s: number;
  delivered_per_s: number;
  delivery_ratio: number;
  /** Wire bytes received per delivered message (framing included; compressed when negotiated). */
  wire_bytes_per_msg: number;
  /** Compression the generator's connections negotiated. */
  codec: LoadCodec;
  latency_ms: LatencySummary;
  /** Non-message frames and transport errors, by code. */
  errors: Record<string, number>;
  server_cpu_pct: number;
  server_rss_mb: number;
  /**
   * Write system calls per second of the processes holding the client connections (Redis
   * commands too in a cluster), and messages delivered per such call: how much each socket write
   * batches. On loopback a write(2) includes the kernel's work for the receiving side too, so at
   * a given rate this number decides most of the server's CPU (docs/performance.md).
   */
  server_writes_per_s: number;
  delivered_per_write: number;
  generator_cpu_pct: number;
  connections_ok: number;
  connections_failed: number;
  pass?: boolean;
  fail_reason?: string;
}

/** p99 bound and delivery ratio that define "sustainable". */
export const SLO = { p99Ms: 50, minRatio: 0.999, minPublishedShare: 0.97 };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let stepSeq = 0;

export function buildSpecs(p: LoadParams, ports: readonly number[]): ConnSpec[] {
  const tag = `s${process.pid}-${++stepSeq}`;
  const specs: ConnSpec[] = [];
  const size = p.scenario === 'broadcast' ? p.clients : Math.max(1, p.roomSize);
  for (let i = 0; i < p.clients; i++) {
    const roomIdx = Math.floor(i / size);
    const inRoom = Math.min(size, p.clients - roomIdx * size);
    specs.push({
      user: `${tag}-u${i}`,
      room: `${tag}-r${roomIdx}`,
      publish: p.scenario === 'broadcast' ? i === 0 : true,
      roomSize: inRoom,
      port: ports[i % ports.length],
    });
  }
  return specs;
}

function sumErrors(t: Totals): Record<string, number> {
  const out: Record<string, number> = { ...t.errors };
  for (const [k, v] of Object.entries(t.others)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** Live progress on stderr while a step runs. */
function progressLine(pool: GeneratorPool, label: string): () => void {
  if (!process.stderr.isTTY && process.env.LOADTEST_PROGRESS !== '1') {
    // Not a terminal: one line every 5 s instead of a redrawn one.
    let last = { p: 0, d: 0, at: Date.now() };
    const t = setInterval(() => {
      const p = pool.progress.reduce((a, b) => a + b.published, 0);
      const d = pool.progress.reduce((a, b) => a + b.delivered, 0);
      const now = Date.now();
      const s = (now - last.at) / 1000;
      process.stderr.write(`  ${label}: ${Math.round((p - last.p) / s)} pub/s, ${Math.round((d - last.d) / s)} deliv/s\n`);
      last = { p, d, at: now };
    }, 5000);
    return () => clearInterval(t);
  }
  let last = { p: 0, d: 0, at: Date.now() };
  const t = setInterval(() => {
    const p = pool.progress.reduce((a, b) => a + b.published, 0);
    const d = pool.progress.reduce((a, b) => a + b.delivered, 0);
    const e = pool.progress.reduce((a, b) => a + b.errors, 0);
    const now = Date.now();
    const s = (now - last.at) / 1000;
    process.stderr.write(`\r\x1b[K  ${label}: ${fmt((p - last.p) / s)} pub/s  ${fmt((d - last.d) / s)} deliv/s  errors ${e}`);
    last = { p, d, at: now };
  }, 1000);
  return () => {
    clearInterval(t);
    process.stderr.write('\r\x1b[K');
  };
}

export function fmt(n: number): string {
  if (n >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return String(Math.round(n));
}

/** One measured step of fanout / ingest / broadcast against one target. */
export async function runStep(pool: GeneratorPool, target: Target, p: LoadParams): Promise<StepResult> {
  const specs = buildSpecs(p, target.ports);
  const binary = target.mode === undefined ? p.binary : target.mode === 'binary';
  const setup = await pool.setup(specs, { host: '127.0.0.1', protocol: target.protocol, binary, codec: target.codec, sampleEvery: p.sampleEvery, padBytes: p.padBytes, concurrency: 64 });
  if (target.ready !== undefined && setup.failed === 0) await target.ready(specs);
  const stopProgress = progressLine(pool, `${target.kind} ${p.scenario} @${fmt(p.rate)} pub/s`);
  pool.start(p.rate);
  await sleep(p.warmupS * 1000);
  const s0 = await pool.snap(true, false);
  const u0 = procUsage(target.pids);
  const w0 = procUsage(target.connPids).syscw;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let rssMax = u0.rssBytes;
  const rssTimer = setInterval(() => (rssMax = Math.max(rssMax, procUsage(target.pids).rssBytes)), 500);
  await sleep(p.measureS * 1000);
  const s1 = await pool.snap(false, true);
  const t1 = process.hrtime.bigint();
  const u1 = procUsage(target.pids);
  const w1 = procUsage(target.connPids).syscw;
  const c1 = process.cpuUsage(c0);
  clearInterval(rssTimer);
  await pool.stop();
  stopProgress();
  // Drain: wait until everything owed arrived or nothing moved for 500 ms (bounded).
  let s2 = await pool.snap(false, false);
  const drainEnd = Date.now() + 5000;
  let still = 0;
  while (s2.delivered < s2.expected && Date.now() < drainEnd && still < 5) {
    await sleep(100);
    const s = await pool.snap(false, false);
    still = s.delivered === s2.delivered ? still + 1 : 0;
    s2 = s;
  }
  await pool.close();
  const secs = Number(t1 - t0) / 1e9;
  const lat = summarize(s1.hist!);
  const r: StepResult = {
    target: target.kind,
    scenario: p.scenario,
    clients: p.clients,
    room_size: p.scenario === 'broadcast' ? p.clients : p.roomSize,
    target_publish_per_s: p.rate,
    published_per_s: Math.round((s1.published - s0.published) / secs),
    delivered_per_s: Math.round((s1.delivered - s0.delivered) / secs),
    delivery_ratio: s2.expected === 0 ? 0 : Math.round((s2.delivered / s2.expected) * 1e6) / 1e6,
    wire_bytes_per_msg: s1.delivered === s0.delivered ? 0 : Math.round(((s1.rxBytes - s0.rxBytes) / (s1.delivered - s0.delivered)) * 10) / 10,
    codec: target.codec,
    latency_ms: lat,
    errors: sumErrors(s2),
    server_cpu_pct: Math.round(((u1.cpuS - u0.cpuS) / secs) * 1000) / 10,
    server_rss_mb: Math.round((Math.max(rssMax, u1.rssBytes) / 1048576) * 10) / 10,
    server_writes_per_s: Math.round((w1 - w0) / secs),
    delivered_per_write: w1 === w0 ? 0 : Math.round(((s1.delivered - s0.delivered) / (w1 - w0)) * 100) / 100,
    generator_cpu_pct: Math.round(((c1.user + c1.system) / 1e6 / secs) * 1000) / 10,
    connections_ok: setup.ok,
    connections_failed: setup.failed,
  };
  judge(r);
  return r;
}

export function judge(r: StepResult): void {
  const errs = Object.values(r.errors).reduce((a, b) => a + b, 0);
  const reasons: string[] = [];
  if (r.connections_failed > 0) reasons.push(`${r.connections_failed} connections failed`);
  if (r.latency_ms.p99 >= SLO.p99Ms) reasons.push(`p99 ${r.latency_ms.p99} ms`);
  if (r.delivery_ratio < SLO.minRatio) reasons.push(`delivery ratio ${r.delivery_ratio}`);
  if (r.published_per_s < r.target_publish_per_s * SLO.minPublishedShare) reasons.push(`generator published only ${r.published_per_s}/s`);
  if (errs > 0) reasons.push(`${errs} errors`);
  r.pass = reasons.length === 0;
  if (!r.pass) r.fail_reason = reasons.join('; ');
}

export interface SweepOptions {
  start: number;
  factor: number;
  maxSteps: number;
  /** Bisection steps between the last pass and the first failure. */
  refine: number;
  /** Run a failed step again before believing it. */
  confirm: boolean;
}

export interface SweepResult {
  target: string;
  steps: StepResult[];
  /** The highest passing step: its delivered/s is the max sustainable figure. */
  best: StepResult | null;
}

/**
 * Raise the publish rate geometrically until a step fails (or lower it until one passes), then
 * bisect between the last pass and the first failure. Targets take turns step by
 * step so that slow drifts of the machine (other jobs) hit all of them alike.
 */
export async function sweep(pool: GeneratorPool, targets: Target[], base: LoadParams, o: SweepOptions, log: (s: string) => void): Promise<SweepResult[]> {
  const st = targets.map((t) => ({ t, lo: 0, hi: Infinity, next: o.start, refined: 0, steps: [] as StepResult[], best: null as StepResult | null, done: false }));
  for (let round = 0; round < o.maxSteps + o.refine && st.some((s) => !s.done); round++) {
    for (const s of st) {
      if (s.done) continue;
      let r = await runStep(pool, s.t, { ...base, rate: Math.round(s.next) });
      s.steps.push(r);
      log(stepLine(r));
      if (!r.pass && o.confirm) {
        // One noisy moment (another job on the machine) must not end the search: a failure
        // counts only when the same rate fails twice in a row.
        await settle(targets);
        r = await runStep(pool, s.t, { ...base, rate: Math.round(s.next) });
        s.steps.push(r);
        log(stepLine(r) + ' (confirmation)');
      }
      if (r.pass) {
        s.lo = s.next;
        if (s.best === null || r.delivered_per_s > s.best.delivered_per_s) s.best = r;
      } else s.hi = Math.min(s.hi, s.next);
      if (s.hi === Infinity) {
        s.next = s.next * o.factor;
        if (s.steps.length >= o.maxSteps) s.done = true;
      } else {
        if (s.lo === 0) {
          // Failed from the first step: step down until something passes.
          s.next = s.next / o.factor;
          if (s.steps.length >= o.maxSteps || s.next < 1) s.done = true;
          continue;
        }
        if (s.refined >= o.refine) {
          s.done = true;
          continue;
        }
        s.refined++;
        s.next = Math.sqrt(s.lo * s.hi);
      }
      await settle(targets);
    }
  }
  return st.map((s) => ({ target: s.t.kind, steps: s.steps, best: s.best }));
}

/**
 * Wait until every target is quiet (under 10% CPU over 250 ms, at most 8 s), so that a server
 * still working off the backlog of an overloaded step does not steal CPU from the next step.
 */
export async function settle(targets: Target[]): Promise<void> {
  const pids = targets.flatMap((t) => t.pids);
  const end = Date.now() + 8000;
  let prev = procUsage(pids).cpuS;
  while (Date.now() < end) {
    await sleep(250);
    const cur = procUsage(pids).cpuS;
    if (cur - prev < 0.025) return;
    prev = cur;
  }
}

export function stepLine(r: StepResult): string {
  const e = Object.entries(r.errors)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return (
    `  ${r.target.padEnd(11)} ${r.scenario} target ${fmt(r.target_publish_per_s)} pub/s -> ${fmt(r.published_per_s)} pub/s, ` +
    `${fmt(r.delivered_per_s)} deliv/s, ratio ${r.delivery_ratio}, p50 ${r.latency_ms.p50} p99 ${r.latency_ms.p99} max ${r.latency_ms.max} ms, ` +
    `server ${r.server_cpu_pct}% cpu ${r.server_rss_mb} MB ${fmt(r.server_writes_per_s)} writes/s (${r.delivered_per_write}/write), gen ${r.generator_cpu_pct}% ${r.pass ? 'PASS' : 'FAIL (' + r.fail_reason + ')'}${e ? ' [' + e + ']' : ''}`
  );
}

// ---- idle and churn ----------------------------------------------------------------------------

export interface IdleResult {
  target: string;
  connections: number;
  connections_failed: number;
  /** Connections still open when memory was read (all of them unless the server dropped some). */
  connections_open: number;
  /** Processes holding the connections (1 standalone, N gateways in a cluster). */
  server_processes: number;
  /** RSS of the connection-holding processes, summed. */
  rss_before_mb: number;
  rss_after_mb: number;
  /** Their RSS growth per connection: the figure issue 6 bounds (< 6 KB). */
  bytes_per_connection: number;
  /** Cluster only: growth of every process (Redis and the broadcast worker too) per connection. */
  total_bytes_per_connection: number;
  errors: Record<string, number>;
}

/**
 * K connections that say hello, join a room of 50 and then stay silent: memory per connection.
 * With several gateways (cluster target) they are dealt round-robin over them, so K may exceed
 * one process's descriptor limit; the generator then needs process workers (`--procs`).
 */
export async function runIdle(pool: GeneratorPool, target: Target, k: number, binary: boolean): Promise<IdleResult> {
  await sleep(1000);
  const before = procUsage(target.connPids).rssBytes;
  const beforeAll = procUsage(target.pids).rssBytes;
  const specs = buildSpecs({ scenario: 'fanout', clients: k, roomSize: 50, rate: 0, warmupS: 0, measureS: 0, binary, padBytes: 0, sampleEvery: 1 }, target.ports);
  const setup = await pool.setup(specs, { host: '127.0.0.1', protocol: target.protocol, binary: target.mode === undefined ? binary : target.mode === 'binary', sampleEvery: 8, padBytes: 0, concurrency: 50 });
  await sleep(3000); // let the server's allocations settle (GC, socket buffers)
  const after = procUsage(target.connPids).rssBytes;
  const afterAll = procUsage(target.pids).rssBytes;
  const t = await pool.snap(false, false);
  await pool.close();
  const per = (d: number) => (setup.ok === 0 ? 0 : Math.round(d / setup.ok));
  return {
    target: target.kind,
    connections: setup.ok,
    connections_failed: setup.failed,
    connections_open: t.open,
    server_processes: target.connPids.length,
    rss_before_mb: Math.round((before / 1048576) * 10) / 10,
    rss_after_mb: Math.round((after / 1048576) * 10) / 10,
    bytes_per_connection: per(after - before),
    total_bytes_per_connection: per(afterAll - beforeAll),
    errors: sumErrors(t),
  };
}

export interface ChurnResult {
  target: string;
  target_cycles_per_s: number;
  cycles_per_s: number;
  started: number;
  completed: number;
  errors: Record<string, number>;
  cycle_latency_ms: LatencySummary;
  server_cpu_pct: number;
}

/** connect + hello + join + leave + close cycles at a rate, through the project's client. */
export async function runChurn(pool: GeneratorPool, target: Target, rate: number, durationS: number, binary: boolean): Promise<ChurnResult> {
  if (target.protocol !== 'switchboard') throw new Error(`churn runs through SwitchboardClient; ${target.kind} speaks ${target.protocol}`);
  const u0 = procUsage(target.pids);
  const r = await pool.churn('127.0.0.1', target.ports, rate, durationS * 1000, 2000, binary);
  const u1 = procUsage(target.pids);
  return {
    target: target.kind,
    target_cycles_per_s: rate,
    cycles_per_s: Math.round(r.completed / durationS),
    started: r.started,
    completed: r.completed,
    errors: r.errors,
    cycle_latency_ms: summarize(r.hist),
    server_cpu_pct: Math.round(((u1.cpuS - u0.cpuS) / r.elapsedS) * 1000) / 10,
  };
}

export function machine(): Record<string, unknown> {
  const c = cpus();
  return { cpus: c.length, cpu_model: c[0]?.model ?? 'unknown', node: process.version, platform: `${process.platform} ${require('node:os').release()}`, mem_gb: Math.round(require('node:os').totalmem() / 1e9) };
}
