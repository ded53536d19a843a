/**
 * A chaos member: a raw NDJSON client over node:net (deliberately independent of services/client
 * and services/protocol) that behaves like a careful application and records what it sees.
 *
 * - Connects to a gateway, says hello, joins its rooms, and recovers each room with
 *   `history since=<last seq> epoch=<last epoch>`, paging while `more`.
 * - Live pushes are applied in seq order; a gap (seq > last + 1 in the same epoch) triggers the
 *   same recovery, and pushes arriving meanwhile are held back and applied after it.
 * - A push, join reply or history reply naming another epoch is recorded as "told the epoch
 *   changed" and the room starts again from seq 0 of the new epoch.
 * - On `reconnect` or a dropped connection it reconnects (to the next gateway when one refuses)
 *   with capped exponential backoff, and starts over (hello, joins, recovery).
 * Everything is recorded as ChaosEvents for the checker; nothing here decides pass or fail.
 */
import { connect, type Socket } from 'node:net';
import type { ChaosEvent, Via } from './events';
import type { Prng } from './prng';

type Json = Record<string, unknown>;

export interface MemberOptions {
  user: string;
  rooms: string[];
  /** Gateway ports, fixed for the run (a restarted gateway comes back on its port). */
  ports: () => readonly number[];
  /** The gateway tried first. */
  home: number;
  record: (ev: ChaosEvent) => void;
  rng: Prng;
  historyLimit?: number;
  requestTimeoutMs?: number;
  maxBackoffMs?: number;
  /** Diagnostic log (one line per noteworthy thing). */
  log?: (line: string) => void;
}

interface RoomState {
  epoch: string | undefined;
  last: number;
  joined: boolean;
  recovering: boolean;
  buffer: Json[];
}

interface PendingReq {
  resolve: (m: Json) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

class Disconnected extends Error {}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function epochOf(m: Json, fallback = ''): string {
  return typeof m.epoch === 'string' ? m.epoch : fallback;
}

function keyOf(m: Json): string {
  const d = m.data as { k?: unknown } | null | undefined;
  return d !== null && typeof d === 'object' && typeof d.k === 'string' ? d.k : `?${JSON.stringify(m.data)}`;
}

export class ChaosMember {
  readonly user: string;
  readonly rooms = new Map<string, RoomState>();
  /** connecting | ready (joined and recovered every room) | down | stopped */
  state: 'down' | 'connecting' | 'ready' | 'stopped' = 'down';
  port = 0;
  inflight = 0;
  private sock: Socket | null = null;
  private gen = 0;
  private nextId = 1;
  private sent = 0;
  private readonly pendingReqs = new Map<number, PendingReq>();
  private loop: Promise<void> = Promise.resolve();
  private wake: (() => void) | null = null;
  private readonly limit: number;
  private readonly timeoutMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly o: MemberOptions) {
    this.user = o.user;
    for (const r of o.rooms) this.rooms.set(r, { epoch: undefined, last: 0, joined: false, recovering: false, buffer: [] });
    this.limit = o.historyLimit ?? 50;
    this.timeoutMs = o.requestTimeoutMs ?? 5000;
    this.maxBackoffMs = o.maxBackoffMs ?? 2000;
  }

  private now(): number {
    return Date.now();
  }

  private log(line: string): void {
    this.o.log?.(`${this.user}: ${line}`);
  }

  start(): void {
    this.loop = this.connectLoop();
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    this.sock?.destroy();
    this.wake?.();
    await this.loop;
  }

  /** Whether the member may send into `room` now. */
  canSend(room: string): boolean {
    return this.state === 'ready' && this.rooms.get(room)?.joined === true;
  }

  /** Send one chat message with a fresh key; the outcome is recorded, never thrown. */
  send(room: string): void {
    const key = `${this.user}:${++this.sent}`;
    const member = this.user;
    this.o.record({ t: this.now(), e: 'sent', room, member, key });
    this.inflight++;
    this.request({ type: 'send_chat', room, data: { k: key } }).then(
      (r) => {
        this.inflight--;
        if (r.type === 'ok') this.o.record({ t: this.now(), e: 'ack', room, member, key });
        else this.o.record({ t: this.now(), e: 'nack', room, member, key, code: String(r.code ?? r.type) });
      },
      (err: Error) => {
        this.inflight--;
        this.o.record({ t: this.now(), e: 'noreply', room, member, key, why: err.message });
      },
    );
  }

  // ---- connection ----

  private async connectLoop(): Promise<void> {
    let failures = 0;
    let offset = 0;
    while (!this.stopped) {
      const ports = this.o.ports();
      const port = ports[(this.o.home + offset) % ports.length];
      try {
        this.state = 'connecting';
        const { closed } = await this.session(port);
        failures = 0;
        await closed;
      } catch (err) {
        failures++;
        offset++; // the next try goes to the next gateway
        if (!(err instanceof Disconnected)) this.log(`session on ${port} failed: ${(err as Error).message}`);
      }
      if (this.stopped) break;
      this.state = 'down';
      // Capped exponential backoff with jitter; the first retry after a working session is quick.
      const base = failures === 0 ? 50 : Math.min(this.maxBackoffMs, 100 * 2 ** Math.min(failures, 5));
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, base * (0.5 + this.o.rng.next() * 0.5));
      });
      this.wake = null;
    }
  }

  private get stopped(): boolean {
    return this.state === 'stopped';
  }

  /** Connect, hello, join and recover every room; resolves with a promise of the socket's close. */
  private async session(port: number): Promise<{ closed: Promise<void> }> {
    const gen = ++this.gen;
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, noDelay: true });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('connect timeout'));
      }, 3000);
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
    });
    this.sock = sock;
    this.port = port;
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        let m: Json;
        try {
          m = JSON.parse(line) as Json;
        } catch {
          this.log(`unparsable line from ${port}: ${line.slice(0, 200)}`);
          continue;
        }
        this.onMessage(m, gen);
      }
    });
    let wasUp = false;
    const closed = new Promise<void>((resolve) =>
      sock.once('close', () => {
        for (const [id, p] of this.pendingReqs) {
          clearTimeout(p.timer);
          p.reject(new Disconnected('disconnected'));
          this.pendingReqs.delete(id);
        }
        for (const rs of this.rooms.values()) {
          rs.joined = false;
          rs.recovering = false;
          rs.buffer = [];
        }
        if (this.sock === sock) this.sock = null;
        if (wasUp) this.o.record({ t: this.now(), e: 'conn', member: this.user, up: false, port });
        if (this.state !== 'stopped') this.state = 'down';
        resolve();
      }),
    );
    try {
      const w = await this.request({ type: 'hello', user: this.user });
      if (w.type !== 'welcome') throw new Error(`hello answered ${JSON.stringify(w)}`);
      await Promise.all([...this.rooms.keys()].map((room) => this.joinAndRecover(room, gen)));
      if (gen !== this.gen || sock.destroyed) throw new Disconnected('disconnected');
      wasUp = true;
      this.state = 'ready';
      this.o.record({ t: this.now(), e: 'conn', member: this.user, up: true, port });
    } catch (err) {
      sock.destroy();
      await closed;
      throw err;
    }
    return { closed };
  }

  private async joinAndRecover(room: string, gen: number): Promise<void> {
    const rs = this.rooms.get(room)!;
    rs.recovering = true;
    rs.buffer = [];
    let reply: Json | undefined;
    for (let attempt = 0; ; attempt++) {
      reply = await this.request({ type: 'join_room', room });
      if (gen !== this.gen) throw new Disconnected('disconnected');
      if (reply.type === 'ok') break;
      if (attempt >= 10) throw new Error(`join ${room}: ${JSON.stringify(reply)}`);
      await sleep(200 + 100 * attempt);
    }
    const seq = Number(reply.seq ?? 0);
    const epoch = epochOf(reply);
    const first = rs.epoch === undefined;
    this.o.record({ t: this.now(), e: 'joined', room, member: this.user, seq, epoch, first });
    rs.joined = true;
    if (first) {
      // Messages up to `seq` were before this member.
      rs.epoch = epoch;
      rs.last = seq;
    } else if (epoch !== rs.epoch) {
      this.epochChanged(room, rs, epoch, 'join');
    } else if (seq < rs.last) {
      this.o.record({ t: this.now(), e: 'seq_regressed', room, member: this.user, last: rs.last, seq, epoch });
    }
    await this.recover(room, gen);
  }

  // ---- messages ----

  private onMessage(m: Json, gen: number): void {
    if (gen !== this.gen) return;
    const id = m.id;
    if (typeof id === 'number' && this.pendingReqs.has(id) && m.type !== 'message') {
      const p = this.pendingReqs.get(id)!;
      this.pendingReqs.delete(id);
      clearTimeout(p.timer);
      p.resolve(m);
      return;
    }
    switch (m.type) {
      case 'message':
        this.onPush(m, gen, false);
        break;
      case 'position':
        this.onPosition(m, gen);
        break;
      case 'reconnect':
        this.log(`reconnect push from ${this.port}: ${String(m.reason)}`);
        this.sock?.end();
        setTimeout(() => {
          if (gen === this.gen) this.sock?.destroy();
        }, 1000).unref();
        break;
      case 'error':
        this.log(`error push from ${this.port}: ${JSON.stringify(m)}`);
        break;
      default:
        break;
    }
  }

  private epochChanged(room: string, rs: RoomState, to: string, via: 'live' | 'join' | 'history'): void {
    this.o.record({ t: this.now(), e: 'epoch', room, member: this.user, from: rs.epoch ?? '', to, via });
    rs.epoch = to;
    rs.last = 0;
  }

  private apply(room: string, m: Json, epoch: string, via: Via): void {
    const rs = this.rooms.get(room)!;
    const seq = Number(m.seq);
    this.o.record({ t: this.now(), e: 'recv', room, member: this.user, key: keyOf(m), seq, epoch, via });
    if (epoch === rs.epoch && seq > rs.last) rs.last = seq;
  }

  private onPush(m: Json, gen: number, afterRecovery: boolean): void {
    const room = String(m.room);
    const rs = this.rooms.get(room);
    if (rs === undefined) {
      this.log(`push for a room it is not in: ${room}`);
      return;
    }
    if (rs.recovering) {
      rs.buffer.push(m);
      return;
    }
    const epoch = epochOf(m);
    if (rs.epoch !== undefined && epoch !== rs.epoch) this.epochChanged(room, rs, epoch, 'live');
    const seq = Number(m.seq);
    if (seq <= rs.last + 1 || afterRecovery) {
      this.apply(room, m, epoch, 'live');
      return;
    }
    // A gap: hold this push back and recover what is missing first.
    rs.buffer.push(m);
    rs.recovering = true;
    this.recover(room, gen).catch((err: Error) => {
      if (err instanceof Disconnected || gen !== this.gen) return;
      this.log(`recovery of ${room} failed (${err.message}); reconnecting`);
      this.sock?.destroy();
    });
  }

  /**
   * A `position` push: messages may have missed us (this gateway was taken for dead, or fell
   * behind its egress stream), and the room may stay quiet, so no later push would show the gap.
   * Behind it, or in another epoch: recover. It used to be ignored, and a gateway paused past its
   * heartbeat lost its members those messages for good in the checker's eyes.
   */
  private onPosition(m: Json, gen: number): void {
    const room = String(m.room);
    const rs = this.rooms.get(room);
    if (rs === undefined) return;
    if (rs.recovering) {
      // Looked at again once the recovery under way is done (it may end before this seq).
      rs.buffer.push(m);
      return;
    }
    if (epochOf(m) === rs.epoch && Number(m.seq) <= rs.last) return;
    this.o.record({ t: this.now(), e: 'position', room, member: this.user, seq: Number(m.seq), epoch: epochOf(m) });
    rs.recovering = true;
    this.recover(room, gen).catch((err: Error) => {
      if (err instanceof Disconnected || gen !== this.gen) return;
      this.log(`recovery of ${room} after a position push failed (${err.message}); reconnecting`);
      this.sock?.destroy();
    });
  }

  /** Page through history since the last seq; then apply the pushes held back meanwhile. */
  private async recover(room: string, gen: number): Promise<void> {
    const rs = this.rooms.get(room)!;
    rs.recovering = true;
    let trimmedTold = false;
    let epochHops = 0;
    for (let attempt = 0; ; ) {
      const req: Json = { type: 'history', room, since: rs.last, limit: this.limit };
      if (rs.epoch !== undefined && rs.epoch !== '') req.epoch = rs.epoch;
      const r = await this.request(req);
      if (gen !== this.gen) throw new Disconnected('disconnected');
      if (r.type !== 'history') {
        if (++attempt > 20) throw new Error(`history ${room}: ${JSON.stringify(r)}`);
        await sleep(Math.min(1000, 100 * attempt));
        if (gen !== this.gen) throw new Disconnected('disconnected');
        continue;
      }
      const epoch = epochOf(r, rs.epoch ?? '');
      if (epoch !== rs.epoch) {
        // Redis lost the room: start again from the new epoch's first message.
        this.epochChanged(room, rs, epoch, 'history');
        if (++epochHops > 5) throw new Error(`history ${room}: the epoch keeps changing`);
        continue;
      }
      if (r.recovered === false && !trimmedTold) {
        trimmedTold = true;
        this.o.record({ t: this.now(), e: 'trimmed', room, member: this.user, since: rs.last });
      }
      const msgs = Array.isArray(r.messages) ? (r.messages as Json[]) : [];
      for (const m of msgs) this.apply(room, m, epochOf(m, epoch), 'history');
      if (r.more === true && msgs.length > 0) continue;
      break;
    }
    rs.recovering = false;
    const held = rs.buffer;
    rs.buffer = [];
    for (const m of held) {
      if (m.type === 'position') this.onPosition(m, gen);
      else this.onPush(m, gen, true);
    }
  }

  private request(msg: Json): Promise<Json> {
    const sock = this.sock;
    if (sock === null || sock.destroyed) return Promise.reject(new Disconnected('not connected'));
    const id = this.nextId++;
    return new Promise<Json>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingReqs.delete(id);
        reject(new Error(`no reply to ${String(msg.type)} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pendingReqs.set(id, { resolve, reject, timer });
      sock.write(JSON.stringify({ ...msg, id }) + '\n');
    });
  }
}
