/**
 * The seeded fault schedule: every enabled kind once in a shuffled order (so even a short run
 * covers them all), then kinds drawn at random. Each step has a quiet gap before it and a hold
 * (restart delay, pause length, time at the scaled-up size), all drawn from the seed.
 */
import { FAULT_KINDS, type FaultKind } from './events';
import type { Prng } from './prng';

export interface FaultStep {
  kind: FaultKind;
  /** Quiet time before the fault (traffic flows, nothing injected). */
  gapMs: number;
  /** Restart delay (process faults), pause length (redis_pause, gateway_pause), time scaled up (scale_workers). */
  holdMs: number;
}

export interface ScheduleOptions {
  kinds?: readonly FaultKind[];
  /** Range of the quiet gap between faults. */
  gapMs?: [number, number];
  /** Longest SIGSTOP of Redis. */
  maxPauseMs?: number;
}

function holdFor(kind: FaultKind, rng: Prng, maxPauseMs: number): number {
  switch (kind) {
    case 'redis_pause':
      return rng.int(1000, maxPauseMs);
    case 'scale_workers':
      return rng.int(4000, 8000);
    case 'redis_restart_empty':
      return 0;
    case 'gateway_pause':
      // Past the heartbeat TTL (3 x HEARTBEAT_MS, 3 s in a chaos run) about half the time: the
      // gateway is taken for dead, its routing removed, and it must repair itself and tell its
      // members where their rooms are (`position`) when it wakes.
      return rng.int(1500, 5500);
    default:
      return rng.int(200, 2000);
  }
}

export function makeSchedule(rng: Prng, steps: number, opts: ScheduleOptions = {}): FaultStep[] {
  const kinds = opts.kinds ?? FAULT_KINDS;
  const [gapLo, gapHi] = opts.gapMs ?? [3000, 6000];
  const maxPause = opts.maxPauseMs ?? 5000;
  if (kinds.length === 0) return [];
  const order = [...rng.shuffle(kinds)];
  while (order.length < steps) order.push(rng.pick(kinds));
  return order.slice(0, Math.max(steps, 0)).map((kind) => ({ kind, gapMs: rng.int(gapLo, gapHi), holdMs: holdFor(kind, rng, maxPause) }));
}
