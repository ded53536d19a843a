/**
 * A gateway's ingress writes: one command for the messages published while the previous write was
 * in flight (up to MAX_CALL_MESSAGES; a bigger burst is several calls sent together), instead of
 * one XADD per message.
 *
 * At low rates nothing waits: a publish that finds no write in flight is sent at once, as the same
 * XADD as ever. Publishes that arrive while one is in flight queue up and go out together when it
 * completes, in calls of lua/ingress.lua that make exactly the entries one XADD each would
 * (the entry format does not change, so broadcast workers of any version read them). ioredis
 * itself keeps one pipeline in flight per connection, so those publishes would have waited as
 * long anyway; what is saved is a command object, a timer and a promise per message on the
 * gateway, and a command per message in Redis. Batches grow with the rate by themselves.
 *
 * Order: every publish goes through this one queue, FIFO, onto the gateway's command connection,
 * behind any command issued before it (a join's routing registration stays ahead of the member's
 * first publish, as with plain auto-pipelining). Each message's promise resolves once Redis has
 * its entry: a client's `ok` still means the message can no longer be lost.
 *
 * Bounds: a failed call fails all of its messages. When one failed because Redis did not answer
 * in time, the publishes queued behind it fail at once too, without being sent (so they surely did
 * not take effect), rather than wait another reply bound: a request gets `unavailable` within
 * REDIS_TIMEOUT_MS.
 */
import { isReady, isRedisTimeout, type RedisClient } from './redis-conn';
import { loadLua } from './lua';

const INGRESS_LUA = loadLua(__dirname, 'bus', 'ingress.lua');

type IngressClient = RedisClient & {
  sbIngress(numKeys: number, ...keysThenArgs: (string | number)[]): Promise<string[]>;
};

interface Queued {
  key: string;
  fields: string[];
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** The error of a publish that was queued behind a write that timed out, and never sent. */
export class NotSentError extends Error {
  constructor(cause: unknown) {
    super('not sent: the write before it got no reply from Redis', { cause });
  }
}

export class IngressWriter {
  private readonly cmd: IngressClient;
  private queue: Queued[] = [];
  private inFlight = false;
  /** Write commands and messages written, for tests and /stats. */
  writes = 0;
  messages = 0;

  /**
   * `perStream`: one call per stream (Redis Cluster, where a script's keys must share a slot);
   * otherwise one call for every stream.
   */
  constructor(
    cmd: RedisClient,
    private readonly maxLen: number,
    private readonly perStream: boolean,
  ) {
    cmd.defineCommand('sbIngress', { lua: INGRESS_LUA });
    this.cmd = cmd as IngressClient;
  }

  /** Append one message (its XADD fields) to `key`; resolves once Redis has the entry. */
  append(key: string, fields: string[]): Promise<void> {
    // Connection down: fail now, as a plain command would (nothing was sent).
    if (!isReady(this.cmd)) return Promise.reject(new Error('Connection is closed.'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ key, fields, resolve, reject });
      if (!this.inFlight) this.flush();
    });
  }

  private flush(): void {
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    this.inFlight = true;
    this.messages += batch.length;
    const calls = this.perStream ? byStream(batch).flatMap(chunks) : chunks(batch);
    this.writes += calls.length;
    let left = calls.length;
    let timedOut: unknown = null;
    // One settle per call (not per message): each call's messages get its own outcome, and the
    // next flush starts once every call of this one has answered.
    const settled = (qs: Queued[], err: unknown): void => {
      if (err === null) for (const q of qs) q.resolve();
      else {
        for (const q of qs) q.reject(err);
        if (isRedisTimeout(err)) timedOut = err;
      }
      if (--left > 0) return;
      this.inFlight = false;
      if (timedOut !== null) {
        const waiting = this.queue;
        this.queue = [];
        for (const q of waiting) q.reject(new NotSentError(timedOut));
      }
      this.flush();
    };
    for (const qs of calls) {
      (qs.length === 1 ? this.xadd(qs[0]) : this.script(qs)).then(
        () => settled(qs, null),
        (err: unknown) => settled(qs, err),
      );
    }
  }

  private xadd(q: Queued): Promise<unknown> {
    return this.cmd.call('XADD', q.key, 'MAXLEN', '~', this.maxLen, '*', ...q.fields);
  }

  private script(batch: Queued[]): Promise<unknown> {
    const keys: string[] = [];
    const index = new Map<string, number>();
    const argv: (string | number)[] = [this.maxLen];
    for (const q of batch) {
      let k = index.get(q.key);
      if (k === undefined) {
        keys.push(q.key);
        k = keys.length;
        index.set(q.key, k);
      }
      argv.push(k, q.fields.length);
      for (let i = 0; i < q.fields.length; i++) argv.push(q.fields[i]);
    }
    return this.cmd.sbIngress(keys.length, ...keys, ...argv);
  }
}

/**
 * Messages per call. A burst (every connection spending its RATE_LIMIT_BURST at once) queues
 * tens of thousands of publishes behind one write; as one call that made hundreds of thousands of
 * arguments, which ioredis spreads onto the stack: the RangeError left its auto-pipeline with a
 * callback and no command, and the gateway died of the TypeError that followed. It would also be
 * one script holding Redis for its whole length. The calls of one flush go out together.
 */
const MAX_CALL_MESSAGES = 256;

function chunks(qs: Queued[]): Queued[][] {
  if (qs.length <= MAX_CALL_MESSAGES) return [qs];
  const out: Queued[][] = [];
  for (let i = 0; i < qs.length; i += MAX_CALL_MESSAGES) out.push(qs.slice(i, i + MAX_CALL_MESSAGES));
  return out;
}

/** The batch split by stream, each in publish order (Redis Cluster: one slot per call). */
function byStream(batch: Queued[]): Queued[][] {
  const byKey = new Map<string, Queued[]>();
  for (const q of batch) {
    const list = byKey.get(q.key);
    if (list === undefined) byKey.set(q.key, [q]);
    else list.push(q);
  }
  return [...byKey.values()];
}
