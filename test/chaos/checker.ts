/**
 * The chaos run's checker: a pure function over the recorded events (no processes, no clock), so
 * it can be unit-tested and re-run on a saved event file.
 *
 * Invariants, per room and member (members are the connections that joined the room before the
 * message was sent):
 * - lost: every acknowledged message reaches every member (live, or recovered through history),
 *   unless Redis lost its data after the ack and the member was told its epoch changed after
 *   that: those are counted as `lostToEpochChange`, not as lost.
 * - duplicate: after dropping repeats of the same (epoch, seq), no message key is applied twice
 *   (repeats of one (epoch, seq) are harmless and only counted: `duplicatesBeforeDedupe`).
 * - seq-conflict: two different messages never carry the same (epoch, seq).
 * - reordered: the seqs a member applies are strictly increasing within an epoch.
 * - unexplained-epoch: an epoch changes only after Redis lost its data.
 * - stall: a room's acknowledged message reaches its first member within
 *   2 x LEASE_MS + reconnect slack + the length of any Redis outage overlapping the wait.
 * - foreign-message: every delivered message was sent, and to that room.
 * - unexpected-exit / unclean-shutdown: no server process exits unless told to, and SIGTERM
 *   ends in exit code 0.
 * - harness-error: the run could do what its schedule said (a restarted process came up...).
 */
import type { ChaosEvent, EventOf, FaultKind } from './events';

export interface CheckParams {
  leaseMs: number;
  /** Added to the stall bound: the roles' Redis reconnect backoff cap and process start-up. */
  slackMs?: number;
  /** Violations kept as examples in the summary. */
  maxExamples?: number;
}

export interface Violation {
  invariant: string;
  t: number;
  room?: string;
  member?: string;
  key?: string;
  detail: string;
  /** The last fault injected before the violation, with its time relative to the run's start. */
  lastFault?: string;
}

export interface Summary {
  ok: boolean;
  sent: number;
  acked: number;
  nacked: Record<string, number>;
  noReply: number;
  /** Unique messages applied from live pushes / history replies, summed over members. */
  delivered: number;
  recovered: number;
  lost: number;
  lostToEpochChange: number;
  /** The same message key applied twice under different (epoch, seq): a real duplicate. */
  duplicates: number;
  /** Repeats of an (epoch, seq) already seen (overlap of live pushes and history): dropped. */
  duplicatesBeforeDedupe: number;
  reordered: number;
  seqConflicts: number;
  unexplainedEpochChanges: number;
  epochChangesSeen: number;
  trimmedSeen: number;
  seqRegressionsSeen: number;
  /**
   * Messages (unique, not per member) whose send got an error reply or no reply but that were
   * delivered anyway: accepted after all. Allowed, but an error code here (`unavailable` says
   * "not accepted; retry") means a client that retries creates a duplicate. By outcome (`noreply`
   * or the error code) and by the last fault before the send.
   */
  deliveredUnacked: number;
  deliveredUnackedBy: Record<string, number>;
  deliveredUnackedAfter: Record<string, number>;
  foreignMessages: number;
  longestStallMs: number;
  stallViolations: number;
  /** The slowest delivery of an acknowledged message to one member (informational). */
  longestMemberLagMs: number;
  reconnects: number;
  /** Recoveries a `position` push started (a member behind its room, or in another epoch). */
  positionRecoveries: number;
  unexpectedExits: { proc: string; code: number | null; signal: string | null; t: number }[];
  faults: Partial<Record<FaultKind, number>>;
  violations: Record<string, number>;
  firstFailure?: Violation;
  examples: Violation[];
}

/** Acknowledged messages that every member has not got yet (and that are not excused). */
export interface Pending {
  count: number;
  sample: { room: string; member: string; key: string }[];
}

type Recv = EventOf<'recv'>;

const sep = '\u0000';
const rm = (room: string, member: string) => room + sep + member;

function sortedInsertTimes(xs: number[]): number[] {
  return xs.sort((a, b) => a - b);
}

/** Whether some t in the sorted list satisfies lo < t <= hi. */
function anyIn(sorted: number[], lo: number, hi: number): boolean {
  for (const t of sorted) if (t > lo && t <= hi) return true;
  return false;
}

interface Indexed {
  start: number;
  faults: EventOf<'fault'>[];
  outages: EventOf<'outage'>[];
  dataloss: number[];
  sent: Map<string, EventOf<'sent'>>;
  acks: EventOf<'ack'>[];
  ackedKeys: Set<string>;
  /** key -> error code, or 'noreply'. */
  failedSends: Map<string, string>;
  /** room -> member -> first join time. */
  members: Map<string, Map<string, number>>;
  /** (room, member) -> recv events in order. */
  recvs: Map<string, Recv[]>;
  /** (room, member) -> times the member was told of an epoch change. */
  epochTold: Map<string, number[]>;
}

function index(events: readonly ChaosEvent[]): Indexed {
  const ix: Indexed = {
    start: events.length > 0 ? events[0].t : 0,
    faults: [],
    outages: [],
    dataloss: [],
    sent: new Map(),
    acks: [],
    ackedKeys: new Set(),
    failedSends: new Map(),
    members: new Map(),
    recvs: new Map(),
    epochTold: new Map(),
  };
  for (const ev of events) {
    if (ev.t < ix.start) ix.start = ev.t;
    switch (ev.e) {
      case 'fault':
        ix.faults.push(ev);
        break;
      case 'outage':
        ix.outages.push(ev);
        break;
      case 'dataloss':
        ix.dataloss.push(ev.t);
        break;
      case 'sent':
        ix.sent.set(ev.key, ev);
        break;
      case 'ack':
        ix.acks.push(ev);
        ix.ackedKeys.add(ev.key);
        break;
      case 'nack':
        ix.failedSends.set(ev.key, ev.code);
        break;
      case 'noreply':
        ix.failedSends.set(ev.key, 'noreply');
        break;
      case 'joined': {
        let m = ix.members.get(ev.room);
        if (m === undefined) ix.members.set(ev.room, (m = new Map()));
        if (!m.has(ev.member)) m.set(ev.member, ev.t);
        break;
      }
      case 'recv': {
        const k = rm(ev.room, ev.member);
        let l = ix.recvs.get(k);
        if (l === undefined) ix.recvs.set(k, (l = []));
        l.push(ev);
        break;
      }
      case 'epoch': {
        const k = rm(ev.room, ev.member);
        let l = ix.epochTold.get(k);
        if (l === undefined) ix.epochTold.set(k, (l = []));
        l.push(ev.t);
        break;
      }
      default:
        break;
    }
  }
  ix.faults.sort((a, b) => a.t - b.t);
  sortedInsertTimes(ix.dataloss);
  for (const l of ix.epochTold.values()) sortedInsertTimes(l);
  return ix;
}

/** Per (room, member): the first time each message key was applied, after dedupe. */
interface Applied {
  firstApply: Map<string, Map<string, number>>;
}

/** An ack's member is excused when Redis lost data after the ack and the member was told after that. */
function excused(ix: Indexed, room: string, member: string, ackT: number): boolean {
  const told = ix.epochTold.get(rm(room, member));
  if (told === undefined) return false;
  for (const tf of ix.dataloss) {
    if (tf <= ackT) continue;
    for (const te of told) if (te >= tf) return true;
  }
  return false;
}

function expectedMembers(ix: Indexed, ack: EventOf<'ack'>): string[] {
  const members = ix.members.get(ack.room);
  if (members === undefined) return [];
  // Members that had joined before the message was sent (the ack is later than the send).
  const sentAt = ix.sent.get(ack.key)?.t ?? ack.t;
  const out: string[] = [];
  for (const [m, joinedAt] of members) if (joinedAt < sentAt) out.push(m);
  return out;
}

function lastFaultBefore(ix: Indexed, t: number): EventOf<'fault'> | undefined {
  let last: EventOf<'fault'> | undefined;
  for (const f of ix.faults) {
    if (f.t > t) break;
    last = f;
  }
  return last;
}

function applyAll(ix: Indexed, s: Summary, violate: (v: Violation) => void): Applied {
  const firstApply = new Map<string, Map<string, number>>();
  const unackedSeen = new Set<string>();
  for (const [k, list] of ix.recvs) {
    const [room, member] = k.split(sep);
    const seen = new Map<string, string>(); // epoch|seq -> key
    const applied = new Map<string, number>(); // key -> first apply time
    const lastByEpoch = new Map<string, number>();
    for (const ev of list) {
      const es = ev.epoch + sep + ev.seq;
      const prior = seen.get(es);
      if (prior !== undefined) {
        if (prior === ev.key) s.duplicatesBeforeDedupe++;
        else {
          s.seqConflicts++;
          violate({ invariant: 'seq-conflict', t: ev.t, room, member, key: ev.key, detail: `seq ${ev.seq} of epoch "${ev.epoch}" carried ${prior} and then ${ev.key} (${ev.via})` });
        }
        continue;
      }
      seen.set(es, ev.key);
      const sent = ix.sent.get(ev.key);
      if (sent === undefined || sent.room !== room) {
        s.foreignMessages++;
        violate({ invariant: 'foreign-message', t: ev.t, room, member, key: ev.key, detail: sent === undefined ? 'a message nobody sent' : `a message sent to ${sent.room}` });
      }
      if (applied.has(ev.key)) {
        s.duplicates++;
        violate({ invariant: 'duplicate', t: ev.t, room, member, key: ev.key, detail: `applied again as seq ${ev.seq} of epoch "${ev.epoch}" (${ev.via})` });
        continue;
      }
      applied.set(ev.key, ev.t);
      if (ev.via === 'live') s.delivered++;
      else s.recovered++;
      if (sent !== undefined && !ix.ackedKeys.has(ev.key) && !unackedSeen.has(ev.key)) {
        unackedSeen.add(ev.key);
        s.deliveredUnacked++;
        const outcome = ix.failedSends.get(ev.key) ?? 'pending';
        s.deliveredUnackedBy[outcome] = (s.deliveredUnackedBy[outcome] ?? 0) + 1;
        const f = lastFaultBefore(ix, sent.t);
        const fk = f === undefined ? 'none' : f.kind;
        s.deliveredUnackedAfter[fk] = (s.deliveredUnackedAfter[fk] ?? 0) + 1;
      }
      const last = lastByEpoch.get(ev.epoch);
      if (last !== undefined && ev.seq <= last) {
        s.reordered++;
        violate({ invariant: 'reordered', t: ev.t, room, member, key: ev.key, detail: `seq ${ev.seq} applied after seq ${last} in epoch "${ev.epoch}" (${ev.via})` });
      }
      lastByEpoch.set(ev.epoch, last === undefined ? ev.seq : Math.max(last, ev.seq));
    }
    firstApply.set(k, applied);
  }
  return { firstApply };
}

/** Acknowledged messages some member still lacks (not excused by an epoch change). */
export function pending(events: readonly ChaosEvent[], maxSample = 5): Pending {
  const ix = index(events);
  const keysBy = new Map<string, Set<string>>();
  for (const [k, list] of ix.recvs) keysBy.set(k, new Set(list.map((r) => r.key)));
  const out: Pending = { count: 0, sample: [] };
  for (const ack of ix.acks) {
    for (const m of expectedMembers(ix, ack)) {
      if (keysBy.get(rm(ack.room, m))?.has(ack.key)) continue;
      if (excused(ix, ack.room, m, ack.t)) continue;
      out.count++;
      if (out.sample.length < maxSample) out.sample.push({ room: ack.room, member: m, key: ack.key });
    }
  }
  return out;
}

export function check(events: readonly ChaosEvent[], params: CheckParams): Summary {
  const { leaseMs, slackMs = 2000, maxExamples = 20 } = params;
  const ix = index(events);
  const s: Summary = {
    ok: true,
    sent: ix.sent.size,
    acked: ix.acks.length,
    nacked: {},
    noReply: 0,
    delivered: 0,
    recovered: 0,
    lost: 0,
    lostToEpochChange: 0,
    duplicates: 0,
    duplicatesBeforeDedupe: 0,
    reordered: 0,
    seqConflicts: 0,
    unexplainedEpochChanges: 0,
    epochChangesSeen: 0,
    trimmedSeen: 0,
    seqRegressionsSeen: 0,
    deliveredUnacked: 0,
    deliveredUnackedBy: {},
    deliveredUnackedAfter: {},
    foreignMessages: 0,
    longestStallMs: 0,
    stallViolations: 0,
    longestMemberLagMs: 0,
    reconnects: 0,
    positionRecoveries: 0,
    unexpectedExits: [],
    faults: {},
    violations: {},
    examples: [],
  };
  const all: Violation[] = [];
  const violate = (v: Violation) => {
    all.push(v);
    s.violations[v.invariant] = (s.violations[v.invariant] ?? 0) + 1;
  };

  // Counters from single events, epoch-change explanations, process exits.
  const establishedAt = new Map<string, number>();
  const connectedOnce = new Set<string>();
  for (const ev of events) {
    switch (ev.e) {
      case 'nack':
        s.nacked[ev.code] = (s.nacked[ev.code] ?? 0) + 1;
        break;
      case 'noreply':
        s.noReply++;
        break;
      case 'fault':
        s.faults[ev.kind] = (s.faults[ev.kind] ?? 0) + 1;
        break;
      case 'trimmed':
        s.trimmedSeen++;
        break;
      case 'seq_regressed':
        s.seqRegressionsSeen++;
        break;
      case 'position':
        s.positionRecoveries++;
        break;
      case 'conn':
        if (ev.up) {
          if (connectedOnce.has(ev.member)) s.reconnects++;
          connectedOnce.add(ev.member);
        }
        break;
      case 'joined': {
        const k = rm(ev.room, ev.member);
        if (!establishedAt.has(k)) establishedAt.set(k, ev.t);
        break;
      }
      case 'epoch': {
        s.epochChangesSeen++;
        const k = rm(ev.room, ev.member);
        const since = establishedAt.get(k) ?? -Infinity;
        if (!anyIn(ix.dataloss, since, ev.t)) {
          s.unexplainedEpochChanges++;
          violate({ invariant: 'unexplained-epoch', t: ev.t, room: ev.room, member: ev.member, detail: `epoch "${ev.from}" -> "${ev.to}" (${ev.via}) without Redis losing its data` });
        }
        establishedAt.set(k, ev.t);
        break;
      }
      case 'harness_error':
        violate({ invariant: 'harness-error', t: ev.t, detail: ev.detail });
        break;
      case 'exit':
        if (!ev.expected) {
          s.unexpectedExits.push({ proc: ev.proc, code: ev.code, signal: ev.signal, t: ev.t });
          violate({ invariant: 'unexpected-exit', t: ev.t, detail: `${ev.proc} exited (code ${ev.code}, signal ${ev.signal}) without being told; last log: ${ev.tail.slice(-3).join(' | ')}` });
        } else if (ev.told === 'SIGTERM' && ev.code !== 0) {
          violate({ invariant: 'unclean-shutdown', t: ev.t, detail: `${ev.proc} exited (code ${ev.code}, signal ${ev.signal}) after SIGTERM; last log: ${ev.tail.slice(-3).join(' | ')}` });
        }
        break;
      default:
        break;
    }
  }

  const { firstApply } = applyAll(ix, s, violate);

  // Lost messages and stalls.
  const overlap = (a: number, b: number) => {
    let total = 0;
    for (const o of ix.outages) total += Math.max(0, Math.min(b, o.end) - Math.max(a, o.start));
    return total;
  };
  for (const ack of ix.acks) {
    let first = Infinity;
    let anyLost = false;
    for (const m of expectedMembers(ix, ack)) {
      const at = firstApply.get(rm(ack.room, m))?.get(ack.key);
      if (at !== undefined) {
        first = Math.min(first, at);
        s.longestMemberLagMs = Math.max(s.longestMemberLagMs, at - ack.t);
        continue;
      }
      if (excused(ix, ack.room, m, ack.t)) {
        s.lostToEpochChange++;
        continue;
      }
      s.lost++;
      anyLost = true;
      violate({ invariant: 'lost', t: ack.t, room: ack.room, member: m, key: ack.key, detail: `acknowledged, never delivered nor recovered` });
    }
    if (first === Infinity) continue;
    const stall = Math.max(0, first - ack.t);
    s.longestStallMs = Math.max(s.longestStallMs, stall);
    const bound = 2 * leaseMs + slackMs + overlap(ack.t, first);
    if (stall > bound && !anyLost) {
      s.stallViolations++;
      violate({ invariant: 'stall', t: ack.t, room: ack.room, key: ack.key, detail: `first delivery ${stall} ms after the ack (bound ${bound} ms)` });
    }
  }

  all.sort((a, b) => a.t - b.t);
  const rel = (t: number) => `+${((t - ix.start) / 1000).toFixed(1)}s`;
  const withFault = (v: Violation): Violation => {
    const last = lastFaultBefore(ix, v.t);
    return { ...v, lastFault: last === undefined ? 'none' : `${last.kind} (${last.detail}) at ${rel(last.t)}` };
  };
  s.examples = all.slice(0, maxExamples).map(withFault);
  if (all.length > 0) {
    s.ok = false;
    s.firstFailure = withFault(all[0]);
  }
  return s;
}

/** One line per headline number, and the first failure. */
export function formatSummary(s: Summary, extra: Record<string, unknown> = {}): string {
  const lines = [
    `chaos ${s.ok ? 'PASSED' : 'FAILED'} ${Object.entries(extra)
      .map(([k, v]) => `${k}=${String(v)}`)
      .join(' ')}`,
    `  sent ${s.sent}  acked ${s.acked}  nacked ${JSON.stringify(s.nacked)}  noReply ${s.noReply}`,
    `  delivered ${s.delivered}  recovered ${s.recovered}  lost ${s.lost}  lostToEpochChange ${s.lostToEpochChange}`,
    `  deliveredUnacked ${s.deliveredUnacked} ${JSON.stringify(s.deliveredUnackedBy)} after ${JSON.stringify(s.deliveredUnackedAfter)}`,
    `  duplicates ${s.duplicates} (before dedupe ${s.duplicatesBeforeDedupe})  reordered ${s.reordered}  seqConflicts ${s.seqConflicts}  foreign ${s.foreignMessages}`,
    `  epochChanges ${s.epochChangesSeen} (unexplained ${s.unexplainedEpochChanges})  trimmed ${s.trimmedSeen}  seqRegressions ${s.seqRegressionsSeen}  reconnects ${s.reconnects}  positionRecoveries ${s.positionRecoveries}`,
    `  longestStallMs ${s.longestStallMs} (violations ${s.stallViolations})  longestMemberLagMs ${s.longestMemberLagMs}`,
    `  faults ${JSON.stringify(s.faults)}  unexpectedExits ${s.unexpectedExits.length}`,
  ];
  if (s.firstFailure !== undefined) {
    const f = s.firstFailure;
    lines.push(`  violations ${JSON.stringify(s.violations)}`);
    lines.push(`  FIRST FAILURE: ${f.invariant} room=${f.room ?? '-'} member=${f.member ?? '-'} key=${f.key ?? '-'}: ${f.detail}; last fault before it: ${f.lastFault}`);
  }
  return lines.join('\n');
}
