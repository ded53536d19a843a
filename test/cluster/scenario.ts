/**
 * A chat workload with bookkeeping: members publish numbered messages, everything accepted with
 * `ok` is recorded, and `verify` checks that every member received every accepted message, each
 * sender's messages in the order they were accepted, and sequence numbers strictly increasing.
 */
import assert from 'node:assert/strict';
import { ClientError, SwitchboardClient, type RoomMessage, type ServerAddress } from '../../services/client';
import { waitFor } from '../helpers/wait';

export class ChatScenario {
  readonly clients: SwitchboardClient[] = [];
  readonly received = new Map<SwitchboardClient, RoomMessage[]>();
  readonly accepted = new Set<string>();
  readonly errors: string[] = [];
  private stopped = false;
  private readonly nextIndex = new Map<SwitchboardClient, number>();

  constructor(readonly room: string) {}

  async addMember(user: string, servers: ServerAddress[]): Promise<SwitchboardClient> {
    const c = new SwitchboardClient({ servers, user, initialBackoffMs: 50, maxBackoffMs: 500, requestTimeoutMs: 5000 });
    const got: RoomMessage[] = [];
    this.received.set(c, got);
    c.on('message', (m: RoomMessage) => {
      if (m.room === this.room) got.push(m);
    });
    await c.connect();
    await c.join(this.room);
    this.clients.push(c);
    return c;
  }

  /** Publish `count` messages one after another (each awaits its ok), pausing `gapMs` between. */
  async publish(c: SwitchboardClient, count: number, gapMs = 0): Promise<void> {
    const user = (c as unknown as { opts: { user: string } }).opts.user;
    const first = this.nextIndex.get(c) ?? 0;
    this.nextIndex.set(c, first + count);
    for (let i = first; i < first + count && !this.stopped; i++) {
      const data = `${user}:${i}`;
      try {
        await c.send(this.room, data);
        this.accepted.add(data);
      } catch (err) {
        this.errors.push(err instanceof ClientError ? err.code : String(err));
        await new Promise((r) => setTimeout(r, 20));
      }
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    }
  }

  stop(): void {
    this.stopped = true;
  }

  /** Wait until every member has every accepted message, then check order. */
  async verify(timeoutMs = 15_000): Promise<void> {
    await waitFor(
      () => {
        for (const got of this.received.values()) {
          const have = new Set(got.map((m) => m.data as string));
          for (const a of this.accepted) if (!have.has(a)) return false;
        }
        return true;
      },
      timeoutMs,
      'every member to receive every accepted message',
      25,
    ).catch((err: Error) => {
      const missing = [...this.received.values()].map((got) => {
        const have = new Set(got.map((m) => m.data as string));
        return [...this.accepted].filter((a) => !have.has(a)).slice(0, 5);
      });
      throw new Error(`${err.message}; accepted ${this.accepted.size}; missing per member (first 5): ${JSON.stringify(missing)}`);
    });
    for (const got of this.received.values()) {
      for (let i = 1; i < got.length; i++) assert.ok(got[i].seq > got[i - 1].seq, `seq not increasing: ${got[i - 1].seq} then ${got[i].seq}`);
      const lastIndex = new Map<string, number>();
      for (const m of got) {
        const [sender, n] = String(m.data).split(':');
        const idx = Number(n);
        const prev = lastIndex.get(sender) ?? -1;
        assert.ok(idx > prev, `messages of ${sender} out of order: ${prev} then ${idx}`);
        lastIndex.set(sender, idx);
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}
