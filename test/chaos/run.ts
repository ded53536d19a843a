/**
 * One chaos run: a real redis-server, gateways and broadcast workers as child processes, members
 * on every gateway chatting in rooms spread over every ingress shard, and a seeded fault
 * schedule (kill -9, SIGTERM and restart of workers and gateways, scaling the workers, SIGSTOP of
 * Redis, Redis restarted empty). Afterwards the checker reads what was recorded.
 *
 * Everything started is stopped in `finally`, whatever happened. Waits for state poll with a
 * bound; only the schedule itself (gaps, holds) and the traffic tick use timers.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { shardOf } from '../../services/bus/keys';
import { stopAllRedis } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { check, formatSummary, pending, type Summary } from './checker';
import { ChaosMember } from './client';
import { FAULT_KINDS, type ChaosEvent, type FaultKind } from './events';
import { Prng } from './prng';
import { ChaosRedis, Fleet } from './procs';
import { makeSchedule, type FaultStep } from './schedule';

export const SHARDS = 8;

export interface ChaosOptions {
  seed: number;
  /** Traffic time during which faults are injected (more if `minFaults` are not done yet). */
  durationMs: number;
  gateways: number;
  workersMin: number;
  workersMax: number;
  rooms: number;
  /** Member connections per gateway (each in several rooms). */
  membersPerGateway?: number;
  /** Messages per second over the whole run (bounded by the in-flight caps). */
  rate?: number;
  leaseMs?: number;
  heartbeatMs?: number;
  /** Longest wait, after traffic stops, for every acknowledged message to arrive. */
  settleMs?: number;
  /** Clean traffic before the first fault. */
  warmupMs?: number;
  /** Run at least this many faults even past `durationMs` (default: every kind once). */
  minFaults?: number;
  kinds?: readonly FaultKind[];
  maxPauseMs?: number;
  gapMs?: [number, number];
  out?: string;
  /** Keep the run directory (logs, events) even when the run passed. */
  keep?: boolean;
  log?: (line: string) => void;
}

export interface ChaosResult {
  summary: Summary & Record<string, unknown>;
  text: string;
  outPath: string;
  runDir: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Room names spread evenly over the shards (the unit of broadcast ownership and order). */
export function roomNames(count: number, seed: number, shards = SHARDS): string[] {
  const perShard = Math.ceil(count / shards);
  const buckets: string[][] = Array.from({ length: shards }, () => []);
  const out: string[] = [];
  for (let n = 0; out.length < count; n++) {
    const name = `chaos${seed}-r${n}`;
    const b = buckets[shardOf(name, shards)];
    if (b.length >= perShard) continue;
    b.push(name);
    out.push(name);
  }
  return out;
}

export interface Layout {
  /** member user -> home gateway index and rooms. */
  members: { user: string; home: number; rooms: string[] }[];
  rooms: string[];
}

/** 2-3 members per room, on different gateways as far as there are gateways; everyone in a room. */
export function makeLayout(rng: Prng, rooms: string[], gateways: number, perGateway: number): Layout {
  const members = Array.from({ length: gateways * perGateway }, (_, i) => ({ user: `m${i}`, home: i % gateways, rooms: [] as string[] }));
  const byGw = Array.from({ length: gateways }, (_, g) => members.filter((m) => m.home === g));
  const roomMembers = new Map<string, Set<number>>();
  for (const room of rooms) {
    const k = rng.int(2, 3);
    const gws = rng.shuffle([...Array(gateways).keys()]);
    const chosen = new Set<number>();
    for (let j = 0; j < k; j++) {
      const g = gws[j % gws.length];
      const candidates = byGw[g].filter((m) => !chosen.has(members.indexOf(m)));
      if (candidates.length === 0) continue;
      chosen.add(members.indexOf(rng.pick(candidates)));
    }
    roomMembers.set(room, chosen);
  }
  // Members with no room join a random room that has fewer than 3.
  for (let i = 0; i < members.length; i++) {
    if ([...roomMembers.values()].some((s) => s.has(i))) continue;
    const open = rooms.filter((r) => roomMembers.get(r)!.size < 3);
    roomMembers.get(rng.pick(open.length > 0 ? open : rooms))!.add(i);
  }
  for (const [room, set] of roomMembers) for (const i of set) members[i].rooms.push(room);
  return { members, rooms };
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const leaseMs = o.leaseMs ?? 3000;
  const heartbeatMs = o.heartbeatMs ?? 1000;
  const rate = o.rate ?? 150;
  const settleMs = o.settleMs ?? 20_000;
  const warmupMs = o.warmupMs ?? 3000;
  const kinds = (o.kinds ?? FAULT_KINDS).filter(
    (k) => k !== 'scale_workers' || o.workersMax > o.workersMin,
  );
  const minFaults = o.minFaults ?? kinds.length;
  const root = new Prng(o.seed);
  const layoutRng = root.fork();
  const scheduleRng = root.fork();
  const targetRng = root.fork();
  const trafficRng = root.fork();
  const memberRng = root.fork();

  const runDir = mkdtempSync(join(tmpdir(), `switchboard-chaos-${o.seed}-`));
  const outPath = o.out ?? join(runDir, 'summary.json');
  const events: ChaosEvent[] = [];
  const record = (ev: ChaosEvent) => events.push(ev);
  const t0 = Date.now();
  const rel = () => `+${((Date.now() - t0) / 1000).toFixed(1)}s`;
  const memberLog: string[] = [];
  const harnessError = (detail: string) => {
    log(`${rel()} HARNESS ERROR ${detail}`);
    record({ t: Date.now(), e: 'harness_error', detail });
  };

  const redis = await ChaosRedis.create(record);
  const fleet = new Fleet({ redisUrl: redis.url, heartbeatMs, leaseMs, shards: SHARDS }, runDir, record);
  const members: ChaosMember[] = [];
  let traffic: NodeJS.Timeout | null = null;
  let faultsDone = 0;
  let settledPending = 0;
  const schedule = makeSchedule(scheduleRng, 10_000, { kinds, maxPauseMs: o.maxPauseMs, gapMs: o.gapMs });

  const fault = (kind: FaultKind, detail: string) => {
    log(`${rel()} fault ${kind}: ${detail}`);
    record({ t: Date.now(), e: 'fault', kind, detail });
  };

  async function runStep(step: FaultStep): Promise<void> {
    switch (step.kind) {
      case 'worker_kill9':
      case 'worker_term': {
        const sig = step.kind === 'worker_kill9' ? 'SIGKILL' : 'SIGTERM';
        const ws = fleet.liveWorkers();
        const w = targetRng.pick(ws);
        fault(step.kind, `${w.name} ${sig} (of ${ws.length}), new worker after ${step.holdMs} ms`);
        await w.stop(sig);
        await sleep(step.holdMs);
        await fleet.startWorker();
        break;
      }
      case 'gateway_kill9':
      case 'gateway_term': {
        const sig = step.kind === 'gateway_kill9' ? 'SIGKILL' : 'SIGTERM';
        const i = targetRng.pick(fleet.liveGateways());
        const g = fleet.gateways[i]!;
        fault(step.kind, `${g.name} (port ${g.port}) ${sig}, restart on its port after ${step.holdMs} ms`);
        await g.stop(sig);
        await sleep(step.holdMs);
        await fleet.startGateway(i);
        break;
      }
      case 'gateway_pause': {
        const i = targetRng.pick(fleet.liveGateways());
        const g = fleet.gateways[i]!;
        fault(step.kind, `${g.name} (port ${g.port}) SIGSTOP for ${step.holdMs} ms`);
        const start = Date.now();
        g.proc.kill('SIGSTOP');
        await sleep(step.holdMs);
        g.proc.kill('SIGCONT');
        // Its members hear nothing meanwhile: the stall bound counts the pause like a Redis outage.
        record({ t: Date.now(), e: 'outage', start, end: Date.now(), kind: step.kind });
        break;
      }
      case 'scale_workers': {
        const cur = fleet.liveWorkers().length;
        fault(step.kind, `${cur} -> ${o.workersMax} for ${step.holdMs} ms -> ${o.workersMin}`);
        await Promise.all(Array.from({ length: Math.max(0, o.workersMax - cur) }, () => fleet.startWorker()));
        // Half the time one of the scaled-up workers is killed mid-way: a handover among several.
        if (targetRng.next() < 0.5 && fleet.liveWorkers().length > 1) {
          await sleep(Math.floor(step.holdMs / 2));
          const ws = fleet.liveWorkers();
          const w = targetRng.pick(ws);
          fault('worker_kill9', `${w.name} SIGKILL (of ${ws.length}) while scaled up, not replaced`);
          await w.stop('SIGKILL');
          await sleep(step.holdMs - Math.floor(step.holdMs / 2));
        } else await sleep(step.holdMs);
        const extra = targetRng.shuffle(fleet.liveWorkers()).slice(0, Math.max(0, fleet.liveWorkers().length - o.workersMin));
        await Promise.all(extra.map((w) => w.stop('SIGTERM')));
        break;
      }
      case 'redis_pause': {
        fault(step.kind, `SIGSTOP for ${step.holdMs} ms`);
        const start = Date.now();
        redis.pause();
        await sleep(step.holdMs);
        redis.resume();
        record({ t: Date.now(), e: 'outage', start, end: Date.now(), kind: step.kind });
        break;
      }
      case 'redis_restart_empty': {
        fault(step.kind, 'SIGKILL, new empty redis-server on the same port');
        const start = Date.now();
        await redis.kill();
        await redis.start();
        const end = Date.now();
        record({ t: end, e: 'outage', start, end, kind: step.kind });
        record({ t: end, e: 'dataloss' });
        break;
      }
    }
  }

  try {
    await redis.start();
    await fleet.addGatewaySlots(o.gateways);
    await Promise.all(Array.from({ length: o.gateways }, (_, i) => fleet.startGateway(i)));
    await Promise.all(Array.from({ length: o.workersMin }, () => fleet.startWorker()));
    log(`${rel()} redis ${redis.url}, gateways on ${fleet.gatewayPorts.join(',')}, ${o.workersMin} worker(s); run dir ${runDir}`);

    const layout = makeLayout(layoutRng, roomNames(o.rooms, o.seed), o.gateways, o.membersPerGateway ?? 8);
    for (const m of layout.members) {
      const member = new ChaosMember({
        user: m.user,
        rooms: m.rooms,
        home: m.home,
        ports: () => fleet.gatewayPorts,
        record,
        rng: memberRng.fork(),
        log: (l) => memberLog.push(`${rel()} ${l}`),
      });
      members.push(member);
      member.start();
    }
    await waitFor(() => members.every((m) => m.state === 'ready'), 30_000, 'every member to join its rooms', 50);
    log(`${rel()} ${members.length} members in ${layout.rooms.length} rooms (shards ${[...new Set(layout.rooms.map((r) => shardOf(r, SHARDS)))].length}/${SHARDS}); traffic ${rate} msg/s`);

    // Traffic: a token bucket ticking every 20 ms, bounded by in-flight caps.
    const memberships = members.flatMap((m) => [...m.rooms.keys()].map((room) => ({ m, room })));
    let tokens = 0;
    let lastTick = Date.now();
    record({ t: Date.now(), e: 'traffic', on: true });
    traffic = setInterval(() => {
      const now = Date.now();
      tokens = Math.min(tokens + ((now - lastTick) * rate) / 1000, rate / 5);
      lastTick = now;
      let inflight = 0;
      for (const m of members) inflight += m.inflight;
      while (tokens >= 1) {
        tokens--;
        if (inflight >= 200) break;
        for (let tries = 0; tries < 8; tries++) {
          const { m, room } = trafficRng.pick(memberships);
          if (m.canSend(room) && m.inflight < 20) {
            m.send(room);
            inflight++;
            break;
          }
        }
      }
    }, 20);

    const trafficStart = Date.now();
    await sleep(warmupMs);
    for (const step of schedule) {
      if (Date.now() - trafficStart >= o.durationMs && faultsDone >= minFaults) break;
      await sleep(step.gapMs);
      try {
        await runStep(step);
      } catch (err) {
        harnessError(`${step.kind}: ${(err as Error).message}`);
        break;
      }
      faultsDone++;
    }
    // Quiet traffic to the end of the duration, then stop sending.
    const left = o.durationMs - (Date.now() - trafficStart);
    if (left > 0) await sleep(Math.min(left, 5000));
    clearInterval(traffic);
    traffic = null;
    record({ t: Date.now(), e: 'traffic', on: false });
    log(`${rel()} traffic stopped after ${faultsDone} faults; settling (up to ${settleMs} ms)`);
    await waitFor(() => members.every((m) => m.inflight === 0), 10_000, 'replies to every send', 50).catch(() => undefined);
    await waitFor(() => pending(events).count === 0 && members.every((m) => m.state === 'ready'), settleMs, 'every acknowledged message to arrive', 250).catch(() => {
      const p = pending(events);
      settledPending = p.count;
      log(`${rel()} not settled: ${p.count} (member, message) pairs missing, e.g. ${JSON.stringify(p.sample)}; members not ready: ${members.filter((m) => m.state !== 'ready').map((m) => `${m.user}:${m.state}`).join(' ') || 'none'}`);
    });
  } catch (err) {
    harnessError((err as Error).stack ?? String(err));
  } finally {
    if (traffic !== null) clearInterval(traffic);
    await Promise.all(members.map((m) => m.stop()));
    // The run stops everything: exits from here on are expected.
    await fleet.stopAll();
    await redis.kill();
    await stopAllRedis();
  }

  const s = check(events, { leaseMs });
  const summary: Summary & Record<string, unknown> = {
    ...s,
    seed: o.seed,
    gateways: o.gateways,
    workers: `${o.workersMin}-${o.workersMax}`,
    rooms: o.rooms,
    members: members.length,
    rate,
    leaseMs,
    heartbeatMs,
    durationMs: o.durationMs,
    wallMs: Date.now() - t0,
    faultsDone,
    pendingAtEnd: settledPending,
    runDir,
  };
  const text = formatSummary(s, { seed: o.seed, faults: faultsDone, wall: `${Math.round((Date.now() - t0) / 1000)}s` });
  if (!s.ok || o.keep) {
    writeFileSync(join(runDir, 'events.ndjson'), events.map((e) => JSON.stringify(e)).join('\n') + '\n');
    writeFileSync(join(runDir, 'members.log'), memberLog.join('\n') + '\n');
  }
  writeFileSync(outPath, JSON.stringify(summary, null, 2) + '\n');
  if (s.ok && !o.keep && !outPath.startsWith(runDir)) rmSync(runDir, { recursive: true, force: true });
  return { summary, text, outPath, runDir };
}
