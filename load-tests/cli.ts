#!/usr/bin/env node
/**
 * `node dist/load-tests/cli.js <command> [options]`: the load generator (see load-tests/README.md).
 *
 * Every command starts its servers as child processes (Switchboard, the baseline, a cluster, or
 * a peer server: NATS, Centrifugo), drives them from generator worker threads, prints progress
 * and a summary table, and writes a JSON result file (load-tests/results/ by default). All
 * traffic goes to 127.0.0.1, every run is bounded in time, and the servers are stopped however
 * the CLI ends: normally, on SIGINT/SIGTERM/SIGHUP, or at its time bound.
 */
import { join } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { argsErrorMessage } from '../services/control/args';
import { GeneratorPool } from './generator/pool';
import { summarize } from './lib/histogram';
import { addRatios, newResult, table, writeResult, type ResultFile, type Run } from './report';
import { repeatOrder, repeatSummary } from './repeat';
import { buildSpecs, fmt, runChurn, runIdle, runStep, stepLine, sweep, type IdleResult, type LoadParams, type LoadScenario, type StepResult, type SweepResult } from './scenarios';
import { execFileSync } from 'node:child_process';
import { killAllServers, stopAllServers } from './lib/procs';
import { PEER_KINDS } from './peers/servers';
import { BENCH_ENV, clusterRolesAvailable, otlpSinkStats, pinServers, procUsage, startTarget, type Target, type TargetKind } from './targets';

const USAGE = `Usage: node dist/load-tests/cli.js <command> [options]

Commands:
  fanout | ingest | broadcast   one step at --rate, or --sweep for the max sustainable rate
  idle                          --connections K idle connections: server memory per connection
  churn                         connect+hello+join+leave+close cycles at --rate per second
  cluster                       --scenario fanout|ingest|broadcast against redis + broadcast + N gateways
  soak                          fanout at --rate for --minutes, RSS sampled every 10 s
  tracing                       fanout (or --scenario) with tracing off vs on at the default sampler,
                                spans exported to an OTLP sink in this process; ratio = on / off
  compression                   fanout (or --scenario) with deliveries uncompressed, lz4 and zstd,
                                side by side (--pad 1024: bodies above the 512-byte threshold)
  peers                         fanout (or --scenario) against Switchboard standalone (binary and
                                text clients), the cluster, nats, nats-cluster, centrifugo and
                                centrifugo-redis side by side; ratio = target / standalone
                                (build the peers first: bash load-tests/peers/tools.sh)
  suite                         the standard set (what load-tests/run.sh runs), one table;
                                --peers adds the peers sweep

Options (defaults in brackets):
  --targets switchboard,baseline   servers to measure, interleaved [switchboard,baseline]; also
                                   cluster, cluster-2bc (2 broadcast workers), switchboard-text (text-mode
                                   clients whatever --mode says), switchboard-traced, switchboard-lz4,
                                   switchboard-zstd, nats, nats-cluster, centrifugo, centrifugo-redis,
                                   switchboard-ref, cluster-ref, cluster-2bc-ref (the same, built from LOADTEST_REF_ROOT: before/after in one run)
  --clients N [500]  --room-size R [50]  --rate N publishes/s  --sweep
  --warmup S [1]  --duration S [4]  --workers N [2]  --mode binary|text [binary]
  --pad BYTES [32]  --sample-every N [8]  --gateways N [2]  --connections K [10000]
  --sweep-start N [2000]  --sweep-factor F [1.5]  --sweep-steps N [10]  --sweep-refine N [2]
  --no-confirm (do not rerun a failed sweep step before believing it)
  --repeat N [1] (without --sweep: the step N times, the targets' order reversed each time, then
                  the medians per target and in how many repeats each had the lowest p99)
  --minutes M [10] (soak)  --out FILE [load-tests/results/<command>-<time>.json]
  --tick-ms N [1] (publish timer period: what each publisher owes is written every N ms)
  --pin SERVER_CPUS:GENERATOR_CPUS (e.g. 0:1: servers and generator on separate cores, taskset)
  --procs (generator workers as child processes, not threads: for more connections than one
           process's descriptor limit, e.g. idle --targets cluster --gateways 3 --connections 30000)`;

type Opts = Record<string, string | boolean>;

/** Options taking a number. */
const NUMBER_OPTIONS = [
  'clients', 'room-size', 'rate', 'warmup', 'duration', 'workers', 'pad', 'sample-every', 'gateways', 'connections',
  'sweep-start', 'sweep-factor', 'sweep-steps', 'sweep-refine', 'minutes', 'max-minutes', 'tick-ms', 'repeat',
  // suite: the rates of its fixed-rate steps
  'broadcast-rate', 'ingest-rate', 'compression-rate', 'churn-rate',
] as const;
const OPTIONS = {
  ...Object.fromEntries(NUMBER_OPTIONS.map((k) => [k, { type: 'string' as const }])),
  targets: { type: 'string' },
  mode: { type: 'string' },
  scenario: { type: 'string' },
  out: { type: 'string' },
  pin: { type: 'string' },
  sweep: { type: 'boolean' },
  'no-confirm': { type: 'boolean' },
  peers: { type: 'boolean' },
  procs: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

export class UsageError extends Error {}

/** The command and its options (node:util parseArgs); UsageError for anything it does not know. */
export function parseCommandLine(argv: string[]): { cmd: string; o: Opts } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(argsErrorMessage(err));
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}": one command at a time`);
  const o: Opts = {};
  for (const [k, v] of Object.entries(values)) if (v !== undefined) o[k] = v;
  for (const k of NUMBER_OPTIONS) {
    const v = o[k];
    if (typeof v === 'string' && (v.trim() === '' || !Number.isFinite(Number(v)))) throw new UsageError(`--${k} must be a number, got "${v}"`);
  }
  return { cmd: positionals[0] ?? '', o };
}

const num = (o: Opts, k: string, d: number) => (typeof o[k] === 'string' ? Number(o[k]) : d);
const str = (o: Opts, k: string, d: string) => (typeof o[k] === 'string' ? (o[k] as string) : d);
const log = (s: string) => process.stderr.write(s + '\n');

function loadParams(o: Opts, scenario: LoadScenario): LoadParams {
  const clients = num(o, 'clients', scenario === 'broadcast' ? 1000 : 500);
  return {
    scenario,
    clients,
    roomSize: num(o, 'room-size', scenario === 'ingest' ? 2 : 50),
    rate: num(o, 'rate', scenario === 'broadcast' ? 1000 : scenario === 'ingest' ? 20000 : 10000),
    warmupS: num(o, 'warmup', 1),
    measureS: num(o, 'duration', 4),
    binary: str(o, 'mode', 'binary') === 'binary',
    padBytes: num(o, 'pad', 32),
    sampleEvery: num(o, 'sample-every', 8),
  };
}

/**
 * Compressed deliveries next to uncompressed ones: the same server build, one server per codec,
 * measured in turns; 1 kB of padding so that bodies exceed COMPRESSION_THRESHOLD (512 bytes).
 */
const COMPRESSION_TARGETS: TargetKind[] = ['switchboard', 'switchboard-lz4', 'switchboard-zstd'];

function compressionParams(o: Opts, scenario: LoadScenario): LoadParams {
  return loadParams({ pad: '1024', ...o }, scenario);
}

function stepRun(name: string, r: StepResult): Run {
  return {
    name: `${name}/${r.target}`,
    target: r.target,
    metrics: {
      delivered_per_s: r.delivered_per_s,
      published_per_s: r.published_per_s,
      delivery_ratio: r.delivery_ratio,
      wire_per_msg_bytes: r.wire_bytes_per_msg,
      p50_ms: r.latency_ms.p50,
      p90_ms: r.latency_ms.p90,
      p99_ms: r.latency_ms.p99,
      p999_ms: r.latency_ms.p999,
      max_ms: r.latency_ms.max,
      server_cpu_pct: r.server_cpu_pct,
      server_rss_mb: r.server_rss_mb,
      generator_cpu_pct: r.generator_cpu_pct,
      errors: Object.values(r.errors).reduce((a, b) => a + b, 0),
    },
    detail: r,
  };
}

function sweepRun(name: string, s: SweepResult): Run {
  const b = s.best;
  return {
    name: `${name}/${s.target}`,
    target: s.target,
    metrics:
      b === null
        ? { max_delivered_per_s: 0 }
        : {
            max_delivered_per_s: b.delivered_per_s,
            max_published_per_s: b.published_per_s,
            p50_ms: b.latency_ms.p50,
            p99_ms: b.latency_ms.p99,
            p999_ms: b.latency_ms.p999,
            delivery_ratio: b.delivery_ratio,
            server_cpu_pct: b.server_cpu_pct,
            server_rss_mb: b.server_rss_mb,
            generator_cpu_pct: b.generator_cpu_pct,
          },
    detail: { steps: s.steps },
  };
}

function idleRun(r: IdleResult): Run {
  return {
    name: `idle-${r.connections}/${r.target}`,
    target: r.target,
    metrics: {
      bytes_per_connection_bytes: r.bytes_per_connection,
      total_per_connection_bytes: r.total_bytes_per_connection,
      server_rss_mb: r.rss_after_mb,
      errors: r.connections_failed + (r.connections - r.connections_open) + Object.values(r.errors).reduce((a, b) => a + b, 0),
    },
    detail: r,
  };
}

/** Targets running now, stopped by the signal handler (their stop also removes their temp files). */
const running = new Set<Target>();

async function withTargets<T>(kinds: TargetKind[], extraEnv: Record<string, string>, gateways: number, f: (ts: Target[]) => Promise<T>): Promise<T> {
  const ts: Target[] = [];
  try {
    for (const k of kinds) {
      const t = await startTarget(k, extraEnv, gateways);
      ts.push(t);
      running.add(t);
    }
    return await f(ts);
  } finally {
    await Promise.all(ts.map((t) => t.stop()));
    for (const t of ts) running.delete(t);
  }
}

/**
 * The CLI's servers must not outlive it. On SIGINT, SIGTERM or SIGHUP: stop the running targets
 * (SIGTERM, SIGKILL after 5 s) and any server still starting, then exit 128 + the signal number.
 * On any exit, including process.exit at the time bound or from a failed worker: SIGKILL what is
 * left, synchronously. (Only SIGKILL of the CLI itself escapes this.)
 */
function stopServersOnExit(pool: GeneratorPool): void {
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals, code: number) => {
    if (stopping) return;
    stopping = true;
    log(`\n${sig}: stopping the servers`);
    const bound = new Promise<void>((r) => setTimeout(r, 8000).unref());
    const stopAll = Promise.all([...running].map((t) => t.stop())).then(stopAllServers);
    void Promise.race([stopAll, bound]).finally(() => process.exit(code));
  };
  process.on('SIGINT', () => onSignal('SIGINT', 130));
  process.on('SIGTERM', () => onSignal('SIGTERM', 143));
  process.on('SIGHUP', () => onSignal('SIGHUP', 129));
  process.on('exit', () => {
    killAllServers();
    pool.kill();
  });
}

/** Load scenario: one step per target, or a sweep; then, after a sweep, a step at half the max. */
async function loadCommand(res: ResultFile, pool: GeneratorPool, kinds: TargetKind[], p: LoadParams, o: Opts, name: string): Promise<void> {
  await withTargets(kinds, {}, num(o, 'gateways', 2), async (ts) => {
    if (o.sweep !== true) {
      const repeat = num(o, 'repeat', 1);
      const repeats: Run[][] = [];
      for (let i = 0; i < repeat; i++) {
        const runs: Run[] = [];
        for (const t of repeatOrder(ts, i)) {
          const r = await runStep(pool, t, p);
          log(stepLine(r));
          runs.push(stepRun(name, r));
        }
        res.runs.push(...runs);
        repeats.push(runs);
      }
      if (repeat > 1) res.runs.push(...repeatSummary(name, repeats));
      return;
    }
    log(`sweep ${name}: ${p.clients} clients, rooms of ${p.scenario === 'broadcast' ? p.clients : p.roomSize}, targets ${kinds.join(', ')}`);
    const sw = await sweep(pool, ts, p, { start: num(o, 'sweep-start', 2000), factor: num(o, 'sweep-factor', 1.5), maxSteps: num(o, 'sweep-steps', 10), refine: num(o, 'sweep-refine', 2), confirm: o['no-confirm'] !== true }, log);
    for (const s of sw) res.runs.push(sweepRun(`${name}-max`, s));
    // p99 at half the max sustainable rate, each target at half of its own max.
    for (const s of sw) {
      if (s.best === null) continue;
      const t = ts.find((x) => x.kind === s.target)!;
      const r = await runStep(pool, t, { ...p, rate: Math.round(s.best.target_publish_per_s / 2), measureS: Math.max(p.measureS, 8) });
      log(stepLine(r));
      res.runs.push(stepRun(`${name}-half`, r));
    }
  });
}

async function idleCommand(res: ResultFile, pool: GeneratorPool, kinds: TargetKind[], o: Opts): Promise<void> {
  const k = num(o, 'connections', 10000);
  for (const kind of kinds) {
    // A fresh server per target: the figure is the growth from an empty process.
    await withTargets([kind], {}, num(o, 'gateways', 2), async ([t]) => {
      const r = await runIdle(pool, t, k, str(o, 'mode', 'binary') === 'binary');
      log(
        `  ${t.kind.padEnd(11)} idle ${r.connections} connections (${r.connections_failed} failed, ${r.connections_open} open at the end) on ${r.server_processes} process(es): ` +
          `RSS ${r.rss_before_mb} -> ${r.rss_after_mb} MB, ${r.bytes_per_connection} bytes per connection` +
          (t.kind.startsWith('cluster') ? ` (${r.total_bytes_per_connection} with Redis and the broadcast workers)` : ''),
      );
      res.runs.push(idleRun(r));
    });
  }
}

async function churnCommand(res: ResultFile, pool: GeneratorPool, kinds: TargetKind[], o: Opts): Promise<void> {
  const rate = num(o, 'rate', 2500);
  const dur = num(o, 'duration', 10);
  await withTargets(kinds, {}, num(o, 'gateways', 2), async (ts) => {
    for (const t of ts) {
      const r = await runChurn(pool, t, rate, dur, str(o, 'mode', 'binary') === 'binary');
      const errs = Object.values(r.errors).reduce((a, b) => a + b, 0);
      log(`  ${t.kind.padEnd(11)} churn target ${rate}/s -> ${r.cycles_per_s} cycles/s (${r.completed}/${r.started}), errors ${errs} ${JSON.stringify(r.errors)}, cycle p99 ${r.cycle_latency_ms.p99} ms, server ${r.server_cpu_pct}% cpu`);
      res.runs.push({
        name: `churn/${t.kind}`,
        target: t.kind,
        metrics: { cycles_per_s: r.cycles_per_s, p50_ms: r.cycle_latency_ms.p50, p99_ms: r.cycle_latency_ms.p99, server_cpu_pct: r.server_cpu_pct, errors: errs },
        detail: r,
      });
    }
  });
}

async function soakCommand(res: ResultFile, pool: GeneratorPool, o: Opts): Promise<void> {
  const p = loadParams(o, 'fanout');
  const minutes = num(o, 'minutes', 10);
  await withTargets(['switchboard'], {}, 2, async ([t]) => {
    const specs = buildSpecs(p, t.ports);
    const setup = await pool.setup(specs, { host: '127.0.0.1', binary: p.binary, sampleEvery: p.sampleEvery, padBytes: p.padBytes, concurrency: 64 });
    pool.start(p.rate);
    const series: { t_s: number; rss_mb: number; delivered: number; expected: number; p99_ms: number }[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < minutes * 60_000) {
      await new Promise((r) => setTimeout(r, 10_000));
      const s = await pool.snap(true, true);
      const rss = Math.round((procUsage(t.pids).rssBytes / 1048576) * 10) / 10;
      const p99 = summarize(s.hist!).p99;
      series.push({ t_s: Math.round((Date.now() - t0) / 1000), rss_mb: rss, delivered: s.delivered, expected: s.expected, p99_ms: p99 });
      log(`  soak ${series[series.length - 1].t_s}s: RSS ${rss} MB, delivered ${fmt(s.delivered)} / expected ${fmt(s.expected)}, p99 (last 10 s) ${p99} ms`);
    }
    await pool.stop();
    await new Promise((r) => setTimeout(r, 2000));
    const fin = await pool.snap(false, false);
    await pool.close();
    // RSS trend: least-squares slope over the second half (after warm-up growth), MB per minute.
    const half = series.slice(Math.floor(series.length / 2));
    const n = half.length;
    const mx = half.reduce((a, b) => a + b.t_s, 0) / n;
    const my = half.reduce((a, b) => a + b.rss_mb, 0) / n;
    const slope = half.reduce((a, b) => a + (b.t_s - mx) * (b.rss_mb - my), 0) / Math.max(1e-9, half.reduce((a, b) => a + (b.t_s - mx) ** 2, 0));
    const errs = Object.values(fin.errors).reduce((a, b) => a + b, 0) + Object.values(fin.others).reduce((a, b) => a + b, 0);
    res.runs.push({
      name: 'soak/switchboard',
      target: 'switchboard',
      metrics: {
        delivered_per_s: Math.round(fin.delivered / (minutes * 60)),
        delivery_ratio: fin.expected === 0 ? 0 : Math.round((fin.delivered / fin.expected) * 1e6) / 1e6,
        rss_start_mb: series[0]?.rss_mb ?? 0,
        rss_end_mb: series[series.length - 1]?.rss_mb ?? 0,
        rss_slope_second_half_mb_per_min: Math.round(slope * 60 * 100) / 100,
        errors: errs + setup.failed,
      },
      detail: { series, errors: fin.errors, others: fin.others },
    });
  });
}

async function suite(res: ResultFile, pool: GeneratorPool, o: Opts): Promise<void> {
  const both: TargetKind[] = ['switchboard', 'baseline'];
  log('== fanout sweep (500 clients, rooms of 50), switchboard vs baseline, interleaved');
  await loadCommand(res, pool, both, loadParams(o, 'fanout'), { ...o, sweep: true }, 'fanout');
  log('== broadcast (one room of 1000, one publisher)');
  await loadCommand(res, pool, both, loadParams({ ...o, rate: String(num(o, 'broadcast-rate', 1000)) }, 'broadcast'), { ...o, sweep: false }, 'broadcast');
  log('== ingest (500 clients, rooms of 2)');
  await loadCommand(res, pool, both, loadParams({ ...o, rate: String(num(o, 'ingest-rate', 20000)) }, 'ingest'), { ...o, sweep: false }, 'ingest');
  log('== compression (fan-out, 1 kB messages, 2,000 publishes/s): uncompressed vs lz4 vs zstd');
  await loadCommand(res, pool, COMPRESSION_TARGETS, compressionParams({ ...o, rate: String(num(o, 'compression-rate', 2000)) }, 'fanout'), { ...o, sweep: false }, 'compression-fanout');
  // Churn runs before idle: 10,000 just-closed idle sockets would leave the port range crowded.
  log('== churn (2,500 cycles/s target for 10 s)');
  await churnCommand(res, pool, both, { ...o, rate: String(num(o, 'churn-rate', 2500)) });
  log('== idle (10,000 connections per server process)');
  await idleCommand(res, pool, both, o);
  if (clusterRolesAvailable()) {
    log('== cluster fanout sweep (redis + 1 or 2 broadcast workers + 2 gateways) vs standalone, interleaved');
    await loadCommand(res, pool, ['cluster', 'cluster-2bc', 'switchboard'], loadParams(o, 'fanout'), { ...o, sweep: true }, 'cluster-fanout');
  } else {
    res.notes.push('cluster: skipped, this build has no `switchboard gateway` / `broadcast` roles');
    log('== cluster: skipped (no gateway/broadcast roles in this build)');
  }
  if (o.peers === true) {
    log('== peers fanout sweep: Switchboard standalone (binary, text), cluster, nats, nats-cluster, centrifugo, centrifugo-redis, interleaved');
    await loadCommand(res, pool, peerTargets(), loadParams(o, 'fanout'), { ...o, sweep: true }, 'peers-fanout');
  }
}

/**
 * Issue 16's comparison: Switchboard standalone with binary and text clients, the cluster (when
 * this build has its roles), and the peer servers, all in one run.
 */
function peerTargets(): TargetKind[] {
  return ['switchboard', 'switchboard-text', ...(clusterRolesAvailable() ? (['cluster'] as TargetKind[]) : []), ...PEER_KINDS];
}

async function main(): Promise<number> {
  let cmd: string;
  let o: Opts;
  try {
    ({ cmd, o } = parseCommandLine(process.argv.slice(2)));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`loadtest: ${err.message} (--help for the options)\n`);
    return 2;
  }
  if (cmd === '' || o.help === true || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return cmd === '' ? 2 : 0;
  }
  const kinds = str(o, 'targets', 'switchboard,baseline').split(',').filter(Boolean) as TargetKind[];
  const res = newResult(`node dist/load-tests/cli.js ${process.argv.slice(2).join(' ')}`, BENCH_ENV);
  const pool = new GeneratorPool(num(o, 'workers', 2), o.procs === true, num(o, 'tick-ms', 1));
  stopServersOnExit(pool);
  if (typeof o.pin === 'string') {
    // --pin SERVER_CPUS:GENERATOR_CPUS, e.g. 0:1 - servers and generator on separate cores, so the
    // generator's threads never preempt the server (they still share the machine's memory bus).
    const [srv, gen] = o.pin.split(':');
    pinServers(srv);
    execFileSync('taskset', ['-a', '-p', '-c', gen, String(process.pid)], { stdio: 'ignore' });
    res.notes.push(`pinned: servers on CPUs ${srv}, generator on CPUs ${gen}`);
  }
  const hardStop = setTimeout(() => {
    log('load test exceeded its time bound; aborting');
    process.exit(4);
  }, num(o, 'max-minutes', cmd === 'soak' ? num(o, 'minutes', 10) + 5 : 60) * 60_000);
  hardStop.unref();
  try {
    switch (cmd) {
      case 'fanout':
      case 'ingest':
      case 'broadcast':
        await loadCommand(res, pool, kinds, loadParams(o, cmd), o, cmd);
        break;
      case 'cluster': {
        const scen = str(o, 'scenario', 'fanout') as LoadScenario;
        // One and two broadcast workers side by side with standalone, in the same run.
        const ks = typeof o.targets === 'string' ? kinds : (['cluster', 'cluster-2bc', 'switchboard'] as TargetKind[]);
        await loadCommand(res, pool, ks, loadParams(o, scen), o, `cluster-${scen}`);
        break;
      }
      case 'tracing': {
        // Issue 4: what OpenTelemetry costs at its default settings. Both servers run side by
        // side, measured in turns; the traced one only has OTEL_EXPORTER_OTLP_ENDPOINT set.
        const scen = str(o, 'scenario', 'fanout') as LoadScenario;
        const ks = typeof o.targets === 'string' ? kinds : (['switchboard', 'switchboard-traced'] as TargetKind[]);
        await loadCommand(res, pool, ks, loadParams(o, scen), o, `tracing-${scen}`);
        const sink = otlpSinkStats();
        res.notes.push(`OTLP sink: ${sink?.requests ?? 0} export requests, ${sink?.bytes ?? 0} bytes received from the traced server`);
        break;
      }
      case 'peers': {
        const scen = str(o, 'scenario', 'fanout') as LoadScenario;
        const ks = typeof o.targets === 'string' ? kinds : peerTargets();
        await loadCommand(res, pool, ks, loadParams(o, scen), o, `peers-${scen}`);
        break;
      }
      case 'compression': {
        const scen = str(o, 'scenario', 'fanout') as LoadScenario;
        const ks = typeof o.targets === 'string' ? kinds : COMPRESSION_TARGETS;
        await loadCommand(res, pool, ks, compressionParams(o, scen), o, `compression-${scen}`);
        break;
      }
      case 'idle':
        await idleCommand(res, pool, kinds, o);
        break;
      case 'churn':
        await churnCommand(res, pool, kinds, o);
        break;
      case 'soak':
        await soakCommand(res, pool, o);
        break;
      case 'suite':
        await suite(res, pool, o);
        break;
      default:
        process.stderr.write(`unknown command "${cmd}"\n${USAGE}\n`);
        return 2;
    }
  } finally {
    await pool.exit();
  }
  addRatios(res);
  const out = str(o, 'out', join(__dirname, '..', '..', 'load-tests', 'results', `${cmd}-${res.date.replace(/[:.]/g, '-')}.json`));
  writeResult(out, res);
  process.stdout.write('\n' + table(res) + '\n');
  for (const n of res.notes) process.stdout.write(`note: ${n}\n`);
  process.stdout.write(`\nresults: ${out}\n`);
  return 0;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`loadtest: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
