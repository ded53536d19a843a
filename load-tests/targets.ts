/**
 * Servers under test, each run as child processes of the generator (never inside it): the
 * Switchboard standalone role, the baseline server, a cluster (redis-server on a free port,
 * one broadcast worker, N gateways), and the peer servers of load-tests/peers/ (nats-server,
 * Centrifugo). Resource use is read from /proc/<pid> of every process of a target, so RSS and
 * CPU cover the whole server side (Redis included in cluster mode).
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { dirname, join } from 'node:path';
import type { ConnSpec, LoadCodec, WireProtocol } from './generator/messages';
import { spawnServer, startRedis, stopChild } from './lib/procs';
import { isPeerKind, startPeer, type PeerKind } from './peers/servers';

export { freePort, pinServers } from './lib/procs';

/**
 * `switchboard-traced` is standalone Switchboard with OpenTelemetry tracing on at its default
 * sampler (OTEL_EXPORTER_OTLP_ENDPOINT set, nothing else), exporting to an OTLP sink in the
 * generator process; its runs are compared with plain `switchboard` runs (issue 4).
 */
export type TargetKind =
  | 'switchboard'
  | 'baseline'
  | 'cluster'
  | 'cluster-2bc'
  | 'cluster-ref'
  | 'switchboard-ref'
  | 'cluster-2bc-ref'
  | 'switchboard-traced'
  | 'switchboard-lz4'
  | 'switchboard-zstd'
  | 'switchboard-text'
  | PeerKind;

const ROOT = join(__dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'services', 'cli.js');

/**
 * `switchboard-ref`, `cluster-ref` and `cluster-2bc-ref` are the same targets built from another checkout: the one
 * LOADTEST_REF_ROOT names (built, with its own dist/). A before/after comparison then runs both
 * builds step by step in turns in one sweep, on the same machine load, instead of two sweeps
 * minutes apart on a shared machine.
 */
function refCli(): string {
  const root = process.env.LOADTEST_REF_ROOT;
  if (root === undefined || root === '') throw new Error('cluster-ref targets need LOADTEST_REF_ROOT: a checkout of the reference build, built (npx tsc)');
  return join(root, 'dist', 'services', 'cli.js');
}
const BASELINE = join(__dirname, 'baseline', 'server.js');
const CLK_TCK = 100;
const PAGE = 4096;

/**
 * Settings for every benchmark run of Switchboard. The per-connection rate limit is an abuse
 * guard, not a capacity limit: broadcast and ingest publish thousands of messages a second from
 * one connection, so it is raised; everything else keeps its default.
 */
export const BENCH_ENV: Record<string, string> = {
  RATE_LIMIT_PER_SEC: '1000000',
  RATE_LIMIT_BURST: '1000000',
  IDLE_TIMEOUT_MS: '600000',
  LOG_LEVEL: 'info',
};

/**
 * Node flags of the Switchboard processes a target starts: LOADTEST_SERVER_NODE_ARGS (profiling,
 * GC traces, GC flags; none by default, as `npm start` and pods without a CPU limit run).
 * LOADTEST_REF_SERVER_NODE_ARGS, when set, replaces it for the `-ref` targets, so that one run
 * compares the same build with and without a flag (LOADTEST_REF_ROOT naming this checkout).
 */
function serverNodeArgs(ref: boolean): string[] {
  const o = (ref ? process.env.LOADTEST_REF_SERVER_NODE_ARGS : undefined) ?? process.env.LOADTEST_SERVER_NODE_ARGS ?? '';
  return o.split(' ').filter(Boolean);
}


export interface ProcUsage {
  /** CPU seconds (user + system) since start, summed over the processes. */
  cpuS: number;
  /** Resident set size in bytes, summed. */
  rssBytes: number;
  /** read(2)- and write(2)-family system calls since start (/proc/<pid>/io syscr, syscw), summed. */
  syscr: number;
  syscw: number;
}

export function procUsage(pids: readonly number[]): ProcUsage {
  let cpuS = 0;
  let rssBytes = 0;
  let syscr = 0;
  let syscw = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      // Fields after the command name (which may contain spaces) start after the last ')'.
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      cpuS += (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime (fields 14, 15)
      rssBytes += Number(f[21]) * PAGE; // rss (field 24)
      const io = readFileSync(`/proc/${pid}/io`, 'latin1');
      syscr += Number(/syscr: (\d+)/.exec(io)?.[1] ?? 0);
      syscw += Number(/syscw: (\d+)/.exec(io)?.[1] ?? 0);
    } catch {
      // process gone
    }
  }
  return { cpuS, rssBytes, syscr, syscw };
}

export interface Target {
  kind: TargetKind;
  /** Client ports; clients are dealt round-robin over them. */
  ports: number[];
  /** Processes whose usage counts as the server's. */
  pids: number[];
  /** Admin ports for /stats (Switchboard only). */
  adminPorts: number[];
  /** Processes that hold the client connections (the gateways in a cluster), for memory per connection. */
  connPids: number[];
  /**
   * Compression the generator's connections ask for in hello: `switchboard-lz4` and
   * `switchboard-zstd` are standalone Switchboard measured with compressed deliveries.
   */
  codec: LoadCodec;
  /** What the generator's connections speak: Switchboard's protocol, or a peer server's. */
  protocol: WireProtocol;
  /**
   * Switchboard framing the target's connections always use, whatever `--mode` says:
   * `switchboard-text` is standalone Switchboard measured with text-mode clients, so text and
   * binary can be reported side by side in one run.
   */
  mode?: 'text' | 'binary';
  /**
   * Called once the generator's connections are set up, before publishing starts: a target whose
   * subscriptions reach other nodes asynchronously (a NATS cluster's route interest) waits here
   * until every node knows them, so the first publishes are not lost to propagation.
   */
  ready?(specs: readonly ConnSpec[]): Promise<void>;
  /** Cluster targets: the Redis port and each process by role, for per-hop measurements. */
  redisPort?: number;
  processes?: { role: string; pid: number }[];
  stop(): Promise<void>;
}

function nodeServer(nodeArgv: string[], opts: Parameters<typeof spawnServer>[2]): ChildProcess {
  return spawnServer(process.execPath, nodeArgv, opts);
}

/** Server stdout: discarded, or appended to LOADTEST_SERVER_STDOUT (e.g. for `--trace-gc` output). */
function serverStdout(): 'ignore' | number {
  const f = process.env.LOADTEST_SERVER_STDOUT;
  return f === undefined || f === '' ? 'ignore' : openSync(f, 'a');
}

interface Spawned {
  child: ChildProcess;
  port: number;
  adminPort: number | null;
}

/** Spawn a node process and wait for its JSON "listening" log line on stderr. */
function spawnListening(args: string[], env: Record<string, string>, name: string, ref = false, timeoutMs = 20_000): Promise<Spawned> {
  return new Promise((resolve, reject) => {
    const nodeArgs = serverNodeArgs(ref);
    const out = serverStdout();
    const child = nodeServer([...nodeArgs, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', out, 'pipe'] });
    if (typeof out === 'number') closeSync(out); // the child has its own copy
    let buf = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(`${name}: no "listening" line within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | null, s?: Spawned) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err !== null) {
        child.kill('SIGKILL');
        reject(err);
      } else resolve(s!);
    };
    child.stderr!.on('data', (c: Buffer) => {
      if (done) return; // keep draining the pipe, but stop parsing
      buf += c.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as { msg?: string; port?: number; adminPort?: number | null; level?: string };
          if (rec.msg === 'listening' && typeof rec.port === 'number') finish(null, { child, port: rec.port, adminPort: rec.adminPort ?? null });
          else if (rec.msg === 'broadcast listening') finish(null, { child, port: 0, adminPort: rec.adminPort ?? null });
          else if (rec.level === 'error') process.stderr.write(`[${name}] ${line}\n`);
        } catch {
          process.stderr.write(`[${name}] ${line}\n`);
        }
      }
    });
    child.once('exit', (code, signal) => finish(new Error(`${name} exited early (code ${code}, signal ${signal})`)));
  });
}

export async function startSwitchboard(extraEnv: Record<string, string> = {}, cli = CLI, ref = false): Promise<Target> {
  const s = await spawnListening([cli, 'standalone'], { ...BENCH_ENV, TCP_PORT: '0', ADMIN_PORT: '0', SHUTDOWN_DRAIN_MS: '500', ...extraEnv }, 'switchboard', ref);
  return { kind: 'switchboard', ports: [s.port], pids: [s.child.pid!], connPids: [s.child.pid!], codec: 'none', protocol: 'switchboard', adminPorts: s.adminPort === null ? [] : [s.adminPort], stop: () => stopChild(s.child) };
}

export async function startBaseline(): Promise<Target> {
  const s = await spawnListening([BASELINE], { TCP_PORT: '0' }, 'baseline');
  return { kind: 'baseline', ports: [s.port], pids: [s.child.pid!], connPids: [s.child.pid!], codec: 'none', protocol: 'switchboard', adminPorts: [], stop: () => stopChild(s.child) };
}

/** What the OTLP sink received: proof that the traced server really exported spans. */
export interface OtlpSinkStats {
  requests: number;
  bytes: number;
}

/**
 * An OTLP/HTTP receiver on 127.0.0.1 that accepts every export and discards it: answers 200 with
 * an empty body (an empty ExportTraceServiceResponse in protobuf). It runs in the generator
 * process, so its cost counts against the generator, not the server under test.
 */
export async function startOtlpSink(): Promise<{ url: string; stats: OtlpSinkStats; close(): Promise<void> }> {
  const stats: OtlpSinkStats = { requests: 0, bytes: 0 };
  const server: HttpServer = createHttpServer((req, res) => {
    req.on('data', (c: Buffer) => (stats.bytes += c.length));
    req.on('end', () => {
      stats.requests++;
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/x-protobuf', 'content-length': '0' });
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const a = server.address();
  const port = typeof a === 'object' && a !== null ? a.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The sink shared by every traced target of this generator process (started on first use). */
let sink: Awaited<ReturnType<typeof startOtlpSink>> | null = null;
/** Stats of the last sink started, kept after it closed (read once the targets are stopped). */
let lastSinkStats: OtlpSinkStats | null = null;

export function otlpSinkStats(): OtlpSinkStats | null {
  return lastSinkStats === null ? null : { ...lastSinkStats };
}

/** Standalone Switchboard with tracing on at the default sampler, exporting to the sink. */
export async function startTracedSwitchboard(extraEnv: Record<string, string> = {}): Promise<Target> {
  if (sink === null) {
    sink = await startOtlpSink();
    lastSinkStats = sink.stats;
  }
  const t = await startSwitchboard({ OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_SERVICE_NAME: 'switchboard-bench', ...extraEnv });
  const s = sink;
  return {
    ...t,
    kind: 'switchboard-traced',
    stop: async () => {
      await t.stop();
      if (sink === s) {
        sink = null;
        await s.close();
      }
    },
  };
}

/**
 * Whether this build has the cluster roles (`switchboard gateway` and `broadcast`): the roles'
 * table (services/roles/ from the fourth session on, the CLI itself before) names both. Older
 * builds are still measured, for before/after comparisons.
 */
export function clusterRolesAvailable(): boolean {
  for (const file of [join(dirname(CLI), 'roles', 'index.js'), CLI]) {
    try {
      const src = readFileSync(file, 'utf8');
      if (/\bgateway\b/.test(src) && /\bbroadcast\b/.test(src) && /roles/.test(src)) return true;
    } catch {
      // not in this build
    }
  }
  return false;
}

/**
 * Wait until the broadcast workers own every ingress shard exactly once (several workers share
 * the shards out over a few lease periods after they start): a sweep must not measure a handover.
 */
async function waitForShardOwners(adminPorts: number[], shards: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const owned: number[] = [];
    for (const p of adminPorts) owned.push(...(((await fetchStats(p))?.shards as number[] | undefined) ?? []));
    if (owned.length === shards && new Set(owned).size === shards) return;
    if (Date.now() > deadline) throw new Error(`broadcast workers own shards [${owned.sort().join(',')}] of ${shards} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** redis-server + `broadcasts` broadcast workers + `gateways` gateways, all on 127.0.0.1. */
export async function startCluster(gateways = 2, extraEnv: Record<string, string> = {}, broadcasts = 1, kind: TargetKind = 'cluster', cli = CLI): Promise<Target> {
  if (cli === CLI && !clusterRolesAvailable()) throw new Error('this build has no cluster roles (switchboard gateway / broadcast): see load-tests/README.md');
  const redis = await startRedis();
  const children: ChildProcess[] = [redis.child];
  const env = { ...BENCH_ENV, REDIS_URL: `redis://127.0.0.1:${redis.port}`, SHUTDOWN_DRAIN_MS: '500', ...extraEnv };
  try {
    const bcAdmin: number[] = [];
    for (let i = 0; i < broadcasts; i++) {
      const b = await spawnListening([cli, 'broadcast'], { ...env, ADMIN_PORT: '0', TCP_PORT: '0', SERVER_ID: `bench-bc-${i + 1}` }, `broadcast-${i + 1}`, kind.endsWith('-ref'));
      children.push(b.child);
      if (b.adminPort !== null) bcAdmin.push(b.adminPort);
    }
    await waitForShardOwners(bcAdmin, Number((env as Record<string, string>).STREAM_SHARDS ?? 8));
    const gws: Spawned[] = [];
    for (let i = 0; i < gateways; i++) {
      const g = await spawnListening([cli, 'gateway'], { ...env, TCP_PORT: '0', ADMIN_PORT: '0', SERVER_ID: `bench-gw-${i + 1}` }, `gateway-${i + 1}`, kind.endsWith('-ref'));
      gws.push(g);
      children.push(g.child);
    }
    return {
      kind,
      redisPort: redis.port,
      processes: children.map((c, i) => ({ role: i === 0 ? 'redis' : i <= broadcasts ? `broadcast-${i}` : `gateway-${i - broadcasts}`, pid: c.pid! })),
      ports: gws.map((g) => g.port),
      pids: children.map((c) => c.pid!),
      connPids: gws.map((g) => g.child.pid!),
      codec: 'none',
      protocol: 'switchboard',
      adminPorts: gws.flatMap((g) => (g.adminPort === null ? [] : [g.adminPort])),
      stop: async () => {
        await Promise.all(children.slice(1).map(stopChild));
        await stopChild(redis.child);
      },
    };
  } catch (err) {
    for (const c of children) c.kill('SIGKILL');
    throw err;
  }
}

export function startTarget(kind: TargetKind, extraEnv: Record<string, string> = {}, gateways = 2): Promise<Target> {
  if (isPeerKind(kind)) return startPeer(kind);
  if (kind === 'switchboard-text') return startSwitchboard(extraEnv).then((t) => ({ ...t, kind, mode: 'text' as const }));
  if (kind === 'baseline') return startBaseline();
  if (kind === 'cluster') return startCluster(gateways, extraEnv);
  if (kind === 'cluster-2bc') return startCluster(gateways, extraEnv, 2, kind);
  if (kind === 'switchboard-ref') return startSwitchboard(extraEnv, refCli(), true).then((t) => ({ ...t, kind }));
  if (kind === 'cluster-ref') return startCluster(gateways, extraEnv, 1, kind, refCli());
  if (kind === 'cluster-2bc-ref') return startCluster(gateways, extraEnv, 2, kind, refCli());
  if (kind === 'switchboard-traced') return startTracedSwitchboard(extraEnv);
  if (kind === 'switchboard-lz4' || kind === 'switchboard-zstd') {
    const codec = kind === 'switchboard-lz4' ? 'lz4' : 'zstd';
    return startSwitchboard(extraEnv).then((t) => ({ ...t, kind, codec }));
  }
  if (kind !== 'switchboard') throw new Error(`unknown target "${kind}"`);
  return startSwitchboard(extraEnv);
}

/** GET /stats from a Switchboard admin port (null when unavailable). */
export async function fetchStats(adminPort: number): Promise<Record<string, unknown> | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${adminPort}/stats`, { signal: AbortSignal.timeout(2000) });
    return (await res.json()) as Record<string, unknown>;
  } catch {
    return null;
  }
}
