// Property-based fuzzing of every message type against a real server (in this process, so an
// uncaught exception anywhere in the server fails the run): structured messages of every type
// with fields of every JSON type, deep nesting in any field, mutated and truncated messages,
// garbage lines, binary frames with any flags and (corrupt or valid) compressed bodies, before
// and after hello, with and without AUTH_SECRET. No input may produce `internal`, crash the
// server, or stop it from answering the next request on a fresh connection.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { compressSync } from 'lz4-napi';
import { signHs256 } from '../../services/gateway';
import { startServer, type TestServer } from '../helpers/server';
import { FUZZ_RUNS, fuzzParams } from './params';

type Json = Record<string, unknown>;
const PREAMBLE = Buffer.from([0xb5, 0x53, 0x42, 0x01]);
const SECRET = 'fuzz-secret';

function binaryFrame(body: Buffer, flags = 0): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(body.length, 0);
  h[4] = flags;
  return Buffer.concat([h, body]);
}

/**
 * A connection driven request by request: after each fuzzed input a `ping` with a fresh id is
 * sent, and everything received until its pong (or the close) is what that input produced.
 */
class FuzzConn {
  readonly received: Json[] = [];
  closed = false;
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private seq = 0;

  private constructor(
    readonly socket: Socket,
    readonly mode: 'text' | 'binary',
  ) {
    socket.on('data', (c: Buffer) => {
      this.buf = this.buf.length === 0 ? c : Buffer.concat([this.buf, c]);
      for (;;) {
        let body: Buffer;
        if (mode === 'text') {
          const nl = this.buf.indexOf(0x0a);
          if (nl === -1) break;
          body = this.buf.subarray(0, nl);
          this.buf = this.buf.subarray(nl + 1);
        } else {
          if (this.buf.length < 5) break;
          const len = this.buf.readUInt32BE(0);
          if (this.buf.length < 5 + len) break;
          if (this.buf[4] !== 0) {
            // A compressed reply: the fuzz client does not decompress; note it.
            this.received.push({ type: '__compressed' });
            this.buf = this.buf.subarray(5 + len);
            continue;
          }
          body = this.buf.subarray(5, 5 + len);
          this.buf = this.buf.subarray(5 + len);
        }
        try {
          this.received.push(JSON.parse(body.toString('utf8')) as Json);
        } catch {
          // Not JSON: an HTTP answer (a first line that looked like a request line).
          this.received.push({ type: '__unparsed', raw: body.toString('utf8', 0, 100) });
        }
      }
      this.waiter?.();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
  }

  static open(port: number, mode: 'text' | 'binary'): Promise<FuzzConn> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, noDelay: true });
      s.once('error', reject);
      s.once('connect', () => {
        s.removeListener('error', reject);
        if (mode === 'binary') s.write(PREAMBLE);
        resolve(new FuzzConn(s, mode));
      });
    });
  }

  sendRaw(bytes: Buffer): void {
    if (!this.closed) this.socket.write(bytes);
  }

  send(obj: Json | string): void {
    const text = typeof obj === 'string' ? obj : JSON.stringify(obj);
    this.sendRaw(this.mode === 'text' ? Buffer.from(text + '\n') : binaryFrame(Buffer.from(text)));
  }

  /** Ping and wait for the pong (or the close); returns what arrived since `from`. */
  async sync(from: number, timeoutMs = 5000): Promise<Json[]> {
    const id = `sync-${++this.seq}`;
    this.send({ type: 'ping', id });
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && !this.received.some((m, i) => i >= from && m.id === id)) {
      if (Date.now() > deadline) throw new Error(`no pong within ${timeoutMs} ms; got ${JSON.stringify(this.received.slice(from)).slice(0, 500)}`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 50);
      });
      this.waiter = null;
    }
    return this.received.slice(from);
  }

  async hello(extra: Json): Promise<boolean> {
    const from = this.received.length;
    this.send({ type: 'hello', id: 'hello', ...extra });
    const got = await this.sync(from);
    return got.some((m) => m.id === 'hello' && m.type === 'welcome');
  }

  destroy(): void {
    this.socket.destroy();
  }
}

const TYPES = ['hello', 'ping', 'refresh', 'join_room', 'leave_room', 'send_chat', 'presence', 'history', 'direct', 'start_voice', 'end_voice'];
const FIELDS = ['id', 'room', 'data', 'to', 'since', 'limit', 'epoch', 'user', 'token', 'codecs', 'type'];

/** Values of every JSON type, including the edges validators trip on. */
const weird = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.string({ maxLength: 300 }),
  fc.constantFrom('', 'lobby', 'x'.repeat(129), '__proto__', 'constructor', 'toString', '\u0000', '\ud800', 'lz4', 'zstd'),
  fc.constantFrom(0, -1, 1.5, 2 ** 53, -(2 ** 53), Number.MAX_VALUE, 1e-300),
  fc.constantFrom(null, true, false, [], {}, ['lz4', 'zstd'], [1, 'a'], { type: 'ping' }),
);

/** A message as text: structured with weird fields, or with a deeply nested field. */
const message = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .record({
        type: fc.oneof(fc.constantFrom(...TYPES), fc.string({ maxLength: 20 }), weird),
        fields: fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 8 })), weird, { maxKeys: 6 }),
      })
      .map(({ type, fields }) => JSON.stringify({ ...fields, type })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ type: fc.constantFrom(...TYPES), field: fc.constantFrom(...FIELDS.filter((f) => f !== 'type')), depth: fc.integer({ min: 60, max: 5000 }), object: fc.boolean() })
      .map(({ type, field, depth, object }) => {
        const deep = object ? '{"a":'.repeat(depth) + '1' + '}'.repeat(depth) : '['.repeat(depth) + ']'.repeat(depth);
        return `{"type":${JSON.stringify(type)},"id":"d","room":"lobby",${JSON.stringify(field)}:${deep}}`;
      }),
  },
  {
    weight: 2,
    // A valid message, mutated: bytes flipped, cut short, or garbage appended.
    arbitrary: fc
      .tuple(fc.constantFrom(...TYPES), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 32, max: 126 })), { maxLength: 4 }), fc.nat())
      .map(([type, flips, cut]) => {
        const chars = [...JSON.stringify({ type, id: 'm', room: 'lobby', data: { a: [1, 2] }, to: 'u', since: 1, limit: 2 })];
        for (const [at, c] of flips) chars[at % chars.length] = String.fromCharCode(c);
        const s = chars.join('');
        return s.slice(0, s.length - (cut % 4 === 0 ? cut % s.length : 0));
      }),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((s) => s.replace(/\n/g, ' ')) },
);

/** Everything received must be well-formed and never `internal`. */
function check(input: string, got: Json[]): void {
  for (const m of got) {
    assert.notEqual(m.code, 'internal', `input ${input.slice(0, 300)} produced ${JSON.stringify(m)}`);
    assert.equal(typeof m.type, 'string', JSON.stringify(m));
  }
}

describe(`message fuzzing (${FUZZ_RUNS} runs per property)`, () => {
  let dev: TestServer;
  let auth: TestServer;
  before(async () => {
    // A short frame timeout: a frame announcing more than it carries is closed quickly.
    const limits = { rateLimitPerSec: 1_000_000, rateLimitBurst: 1_000_000, maxFrameBytes: 256 * 1024, helloTimeoutMs: 60_000, frameTimeoutMs: 300 };
    dev = await startServer(limits);
    auth = await startServer({ ...limits, authSecret: SECRET });
  });
  after(async () => {
    await dev?.close();
    await auth?.close();
    // Nothing the fuzzers sent made the server fail: no internal errors counted, none logged.
    assert.equal(dev.server.counters.errors.internal, 0);
    assert.equal(auth.server.counters.errors.internal, 0);
    // And they reached where they were meant to: the validators, the depth limit, the framing.
    const c = dev.server.counters;
    for (const code of ['bad_request', 'bad_json', 'unknown_type', 'bad_frame', 'unauthorized'] as const) assert.ok(c.errors[code] > 0, `no ${code} was produced`);
    assert.ok(c.limitHits.MAX_JSON_DEPTH > 0, 'no input was nested too deep');
    assert.ok(auth.server.counters.errors.unauthorized > 0);
  });

  for (const mode of ['text', 'binary'] as const) {
    test(`${mode}: any message of any type after hello`, async () => {
      let conn: FuzzConn | null = null;
      const fresh = async () => {
        conn?.destroy();
        conn = await FuzzConn.open(dev.port, mode);
        assert.ok(await conn.hello({ user: 'fuzzer', ...(mode === 'binary' ? { codecs: ['lz4', 'zstd'] } : {}) }));
        conn.send({ type: 'join_room', room: 'lobby' });
        return conn;
      };
      await fc.assert(
        fc.asyncProperty(message, async (input) => {
          const c = conn === null || conn.closed ? await fresh() : conn;
          const from = c.received.length;
          c.send(input);
          check(input, await c.sync(from));
        }),
        fuzzParams(),
      );
      (conn as FuzzConn | null)?.destroy();
    });

    test(`${mode}: any first message (before hello)`, async () => {
      await fc.assert(
        fc.asyncProperty(message, async (input) => {
          const c = await FuzzConn.open(dev.port, mode);
          try {
            c.send(input);
            check(input, await c.sync(0));
          } finally {
            c.destroy();
          }
        }),
        fuzzParams(Math.max(50, Math.floor(FUZZ_RUNS / 4))),
      );
    });
  }

  test('binary: frames with any flags, declared lengths and (corrupt or valid) compressed bodies', async () => {
    const body = fc.oneof(
      message.map((s) => Buffer.from(s)),
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    );
    const frameArb = fc.oneof(
      fc.tuple(body, fc.integer({ min: 0, max: 255 })).map(([b, f]) => binaryFrame(b, f)),
      body.map((b) => binaryFrame(compressSync(b), 1)),
      fc.tuple(body, fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([b, junk]) => binaryFrame(Buffer.concat([compressSync(b), Buffer.from(junk)]), 1)),
      fc.uint8Array({ maxLength: 64 }).map((a) => binaryFrame(Buffer.from(a), 2)),
      fc.integer({ min: 0, max: 0xffffffff }).map((n) => {
        const h = Buffer.alloc(5);
        h.writeUInt32BE(n, 0);
        return h;
      }),
    );
    let conn: FuzzConn | null = null;
    await fc.assert(
      fc.asyncProperty(frameArb, async (frame) => {
        if (conn === null || conn.closed) {
          conn?.destroy();
          conn = await FuzzConn.open(dev.port, 'binary');
          assert.ok(await conn.hello({ user: 'bin-fuzzer', codecs: ['lz4', 'zstd'] }));
        }
        const c: FuzzConn = conn;
        const from = c.received.length;
        c.sendRaw(frame);
        // A frame announcing more than it carries waits for the rest (the sync ping becomes part
        // of its body) until FRAME_TIMEOUT_MS closes the connection with frame_timeout.
        const got = await c.sync(from);
        check(frame.toString('hex', 0, 64), got);
      }),
      fuzzParams(),
    );
    (conn as FuzzConn | null)?.destroy();
  });

  test('with AUTH_SECRET: hello and refresh with any token and claims', async () => {
    const claims = fc.record(
      {
        sub: weird,
        exp: fc.oneof(fc.integer({ min: -1e10, max: 1e11 }), weird),
        nbf: fc.oneof(fc.integer({ min: -1e10, max: 1e11 }), weird),
      },
      { requiredKeys: [] },
    );
    const token = fc.oneof(
      claims.map((c) => signHs256(c, SECRET)),
      claims.map((c) => signHs256(c, 'other')),
      fc.string({ maxLength: 200 }),
      fc.tuple(claims, fc.nat(), fc.integer({ min: 32, max: 126 })).map(([c, at, ch]) => {
        const t = [...signHs256(c, SECRET)];
        t[at % t.length] = String.fromCharCode(ch);
        return t.join('');
      }),
      weird,
    );
    await fc.assert(
      fc.asyncProperty(token, token, weird, async (first, second, user) => {
        const c = await FuzzConn.open(auth.port, 'text');
        try {
          const input = JSON.stringify({ first, second, user });
          c.send({ type: 'hello', id: 'h', token: first, ...(user === undefined ? {} : { user }) });
          check(input, await c.sync(0));
          if (c.closed) return;
          const from = c.received.length;
          c.send({ type: 'refresh', id: 'r', token: second });
          check(input, await c.sync(from));
        } finally {
          c.destroy();
        }
      }),
      fuzzParams(),
    );
  });
});
