/**
 * The peer targets: servers Switchboard is measured against in the same run (issue 16), started
 * as child processes on 127.0.0.1 from the binaries tools.sh builds, with configs written to a
 * temporary directory that is removed when the target stops.
 *
 * - `nats`: one nats-server; `nats-cluster`: two, joined by routes (clients alternate nodes, so
 *   every room spans both, as in the Switchboard cluster target).
 * - `centrifugo`: one Centrifugo node (memory engine); `centrifugo-redis`: two nodes sharing a
 *   redis-server on a free port (Redis engine), clients alternating nodes.
 *
 * Each runs with its defaults except what a benchmark on 127.0.0.1 needs: anonymous clients
 * allowed to subscribe and publish (Centrifugo `client.insecure`), usage statistics and the
 * server API off, a health endpoint on for readiness. Server CPU and RSS are read from /proc like
 * every other target's, Redis included.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, spawnServer, startRedis, stopChild } from '../lib/procs';
import type { ConnSpec } from '../generator/messages';
import type { Target } from '../targets';
import { peerBinary, PeerBinary } from './bin';

export const PEER_KINDS = ['nats', 'nats-cluster', 'centrifugo', 'centrifugo-redis'] as const;
export type PeerKind = (typeof PEER_KINDS)[number];

export function isPeerKind(kind: string): kind is PeerKind {
  return (PEER_KINDS as readonly string[]).includes(kind);
}

export function startPeer(kind: PeerKind): Promise<Target> {
  switch (kind) {
    case 'nats':
      return startNats(kind, 1);
    case 'nats-cluster':
      return startNats(kind, 2);
    case 'centrifugo':
      return startCentrifugo(kind, 1, false);
    case 'centrifugo-redis':
      return startCentrifugo(kind, 2, true);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A peer process with the tail of its stderr kept for error messages. */
interface Peer {
  name: string;
  child: ChildProcess;
  tail(): string;
}

function spawnPeer(name: string, bin: string, args: string[]): Peer {
  const child = spawnServer(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let tail = '';
  child.stderr!.on('data', (c: Buffer) => {
    tail = (tail + c.toString('utf8')).slice(-4000);
  });
  return { name, child, tail: () => tail };
}

/** GET http://127.0.0.1:port/path as JSON (null on any failure). */
async function getJson(port: number, path: string): Promise<Record<string, unknown> | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2000) });
    if (!res.ok) return null;
    return (await res.json()) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** Poll `check` every 50 ms until true; fail with what the peers said if one exits or time runs out. */
async function waitFor(what: string, peers: Peer[], check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    const dead = peers.find((p) => p.child.exitCode !== null || p.child.signalCode !== null);
    if (dead !== undefined) throw new Error(`${dead.name} exited (code ${dead.child.exitCode}, signal ${dead.child.signalCode}) before ${what}:\n${dead.tail()}`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms\n${peers.map((p) => `[${p.name}] ${p.tail()}`).join('\n')}`);
    await sleep(50);
  }
}

/** The parts of a target every peer shares; the caller adds kind, ports and readiness. */
function peerTarget(peers: Peer[], extra: ChildProcess[], dir: string): Pick<Target, 'pids' | 'connPids' | 'adminPorts' | 'codec' | 'processes' | 'stop'> {
  return {
    pids: [...peers.map((p) => p.child.pid!), ...extra.map((c) => c.pid!)],
    connPids: peers.map((p) => p.child.pid!),
    adminPorts: [],
    codec: 'none',
    processes: [...peers.map((p) => ({ role: p.name, pid: p.child.pid! })), ...extra.map((c) => ({ role: 'redis', pid: c.pid! }))],
    stop: async () => {
      await Promise.all(peers.map((p) => stopChild(p.child)));
      await Promise.all(extra.map(stopChild));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- NATS --------------------------------------------------------------------------------------

async function startNats(kind: PeerKind, nodes: number): Promise<Target> {
  const bin = peerBinary(PeerBinary.natsServer);
  const dir = mkdtempSync(join(tmpdir(), 'sb-peer-nats-'));
  const peers: Peer[] = [];
  try {
    const client: number[] = [];
    const http: number[] = [];
    const route: number[] = [];
    for (let i = 0; i < nodes; i++) {
      client.push(await freePort());
      http.push(await freePort());
      route.push(await freePort());
    }
    for (let i = 0; i < nodes; i++) {
      const routes = route.filter((_, j) => j !== i).map((p) => `"nats://127.0.0.1:${p}"`);
      const conf = [
        `server_name: "bench-nats-${i + 1}"`,
        `listen: "127.0.0.1:${client[i]}"`,
        `http: "127.0.0.1:${http[i]}"`,
        ...(nodes > 1 ? [`cluster {`, `  name: "bench"`, `  listen: "127.0.0.1:${route[i]}"`, `  routes: [${routes.join(', ')}]`, `  no_advertise: true`, `}`] : []),
      ].join('\n');
      const file = join(dir, `nats-${i + 1}.conf`);
      writeFileSync(file, conf + '\n');
      peers.push(spawnPeer(`nats-${i + 1}`, bin.path, ['-c', file]));
    }
    await waitFor('nats-server healthz', peers, async () => (await Promise.all(http.map((p) => getJson(p, '/healthz')))).every((h) => h?.status === 'ok'));
    if (nodes > 1) {
      await waitFor('nats routes', peers, async () => (await Promise.all(http.map((p) => getJson(p, '/routez')))).every((r) => Number(r?.num_routes ?? 0) >= 1));
    }
    return {
      kind,
      protocol: 'nats',
      ports: client,
      ...peerTarget(peers, [], dir),
      // A node tells its routes about a subject once it has a first local subscriber to it, after
      // that SUB is answered: wait until every node has interest from its routes in each subject
      // subscribed on another node, so that no early publish meets a node without it.
      ready:
        nodes > 1
          ? (specs: readonly ConnSpec[]) =>
              waitFor('every room subject known across the nats routes', peers, async () => {
                for (let i = 0; i < nodes; i++) {
                  const r = await getJson(http[i], '/routez?subs=1');
                  const known = new Set(((r?.routes ?? []) as { subscriptions_list?: string[] }[]).flatMap((x) => x.subscriptions_list ?? []));
                  if (specs.some((s) => s.port !== client[i] && !known.has(s.room))) return false;
                }
                return true;
              })
          : undefined,
    };
  } catch (err) {
    for (const p of peers) p.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

// ---- Centrifugo --------------------------------------------------------------------------------

async function startCentrifugo(kind: PeerKind, nodes: number, redis: boolean): Promise<Target> {
  const bin = peerBinary(PeerBinary.centrifugo);
  const dir = mkdtempSync(join(tmpdir(), 'sb-peer-centrifugo-'));
  const peers: Peer[] = [];
  const extra: ChildProcess[] = [];
  try {
    let engine: Record<string, unknown> = { type: 'memory' };
    if (redis) {
      const r = await startRedis();
      extra.push(r.child);
      engine = { type: 'redis', redis: { address: [`127.0.0.1:${r.port}`] } };
    }
    const ports: number[] = [];
    const internal: number[] = [];
    for (let i = 0; i < nodes; i++) {
      ports.push(await freePort());
      internal.push(await freePort());
      const config = {
        http_server: { address: '127.0.0.1', port: ports[i], internal_address: '127.0.0.1', internal_port: String(internal[i]) },
        log: { level: 'error' },
        // Anonymous connections that may subscribe to and publish in any channel: the generator
        // has no tokens. Bound to 127.0.0.1, for the length of a benchmark.
        client: { insecure: true },
        usage_stats: { disabled: true },
        http_api: { disabled: true },
        health: { enabled: true },
        node: { name: `bench-centrifugo-${i + 1}` },
        engine,
      };
      const file = join(dir, `centrifugo-${i + 1}.json`);
      writeFileSync(file, JSON.stringify(config, null, 2) + '\n');
      peers.push(spawnPeer(`centrifugo-${i + 1}`, bin.path, ['--config', file]));
    }
    await waitFor('centrifugo health', peers, async () => (await Promise.all(internal.map((p) => getJson(p, '/health')))).every((h) => h !== null));
    return { kind, protocol: 'centrifugo', ports, ...peerTarget(peers, extra, dir) };
  } catch (err) {
    for (const p of peers) p.child.kill('SIGKILL');
    for (const c of extra) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
