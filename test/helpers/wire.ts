/**
 * A raw protocol client for tests: a plain socket with its own minimal line and frame splitters
 * (deliberately independent of services/protocol, so a parser bug cannot hide itself), an inbox
 * of received messages, and helpers to wait for a message or for the close.
 */
import { connect, type Socket } from 'node:net';
import { waitFor } from './wait';

export type Json = Record<string, unknown>;

export const PREAMBLE = Buffer.from([0xb5, 0x53, 0x42, 0x01]);

/** One binary frame: u32 BE length | u8 flags | body. */
export function binaryFrame(body: string | Buffer, flags = 0): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const h = Buffer.alloc(5);
  h.writeUInt32BE(b.length, 0);
  h[4] = flags;
  return Buffer.concat([h, b]);
}

export class WireClient {
  readonly inbox: Json[] = [];
  /** Every message ever received, in order (the inbox minus nothing). */
  readonly all: Json[] = [];
  closed = false;
  bytesIn = 0;
  private buf: Buffer = Buffer.alloc(0);
  private nextId = 1;

  private constructor(
    readonly socket: Socket,
    readonly mode: 'text' | 'binary',
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => (this.closed = true));
  }

  static connect(port: number, mode: 'text' | 'binary' = 'text', sendPreamble = true): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, noDelay: true });
      s.once('error', reject);
      s.once('connect', () => {
        s.removeListener('error', reject);
        if (mode === 'binary' && sendPreamble) s.write(PREAMBLE);
        resolve(new WireClient(s, mode));
      });
    });
  }

  private onData(chunk: Buffer): void {
    this.bytesIn += chunk.length;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      let body: Buffer;
      if (this.mode === 'text') {
        const nl = this.buf.indexOf(0x0a);
        if (nl === -1) return;
        body = this.buf.subarray(0, nl);
        this.buf = this.buf.subarray(nl + 1);
      } else {
        if (this.buf.length < 5) return;
        const len = this.buf.readUInt32BE(0);
        if (this.buf.length < 5 + len) return;
        body = this.buf.subarray(5, 5 + len);
        this.buf = this.buf.subarray(5 + len);
      }
      let msg: Json;
      try {
        msg = JSON.parse(body.toString('utf8')) as Json;
      } catch {
        msg = { type: '__unparsed', raw: body.toString('utf8') }; // e.g. an HTTP answer
      }
      this.inbox.push(msg);
      this.all.push(msg);
    }
  }

  /** Send a message (object: encoded in this client's mode; string: sent as one line/frame body). */
  send(msg: Json | string): void {
    const text = typeof msg === 'string' ? msg : JSON.stringify(msg);
    this.socket.write(this.mode === 'text' ? text + '\n' : binaryFrame(text));
  }

  writeRaw(bytes: Buffer | string): void {
    this.socket.write(bytes);
  }

  /** Take the first inbox message matching `pred`, waiting for it. */
  async next(pred: (m: Json) => boolean = () => true, timeoutMs = 3000, what = 'a message'): Promise<Json> {
    let found: Json | undefined;
    await waitFor(
      () => {
        const i = this.inbox.findIndex(pred);
        if (i === -1) return false;
        found = this.inbox.splice(i, 1)[0];
        return true;
      },
      timeoutMs,
      what,
    );
    return found!;
  }

  nextOfType(type: string, timeoutMs = 3000): Promise<Json> {
    return this.next((m) => m.type === type, timeoutMs, `a "${type}" message`);
  }

  /** Send with a fresh id and wait for the reply carrying it. */
  async request(msg: Json, timeoutMs = 3000): Promise<Json> {
    const id = msg.id ?? `r${this.nextId++}`;
    this.send({ ...msg, id });
    return this.next((m) => m.id === id, timeoutMs, `the reply to ${String(msg.type)} id ${String(id)}`);
  }

  async hello(user: string, extra: Json = {}): Promise<Json> {
    const w = await this.request({ type: 'hello', user, ...extra });
    if (w.type !== 'welcome') throw new Error(`hello failed: ${JSON.stringify(w)}`);
    return w;
  }

  async join(room: string): Promise<void> {
    const r = await this.request({ type: 'join_room', room });
    if (r.type !== 'ok') throw new Error(`join failed: ${JSON.stringify(r)}`);
  }

  waitClosed(timeoutMs = 3000): Promise<boolean> {
    return waitFor(() => this.closed, timeoutMs, 'the server to close the connection');
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Close and wait until the socket is gone. */
  async end(): Promise<void> {
    if (this.closed) return;
    this.socket.end();
    await waitFor(() => this.closed, 2000, 'socket close').catch(() => this.socket.destroy());
  }
}

/** Connect and say hello. */
export async function helloClient(port: number, user: string, mode: 'text' | 'binary' = 'text'): Promise<WireClient> {
  const c = await WireClient.connect(port, mode);
  await c.hello(user);
  return c;
}

let bystanderSeq = 0;

/**
 * Two healthy clients in one room; `check()` asserts they still chat (both receive a fresh
 * message). Called after each abuse to show the server kept serving everyone else.
 */
export async function bystanders(port: number): Promise<{ a: WireClient; b: WireClient; check(): Promise<void>; close(): Promise<void> }> {
  const room = `bystanders-${++bystanderSeq}`;
  const a = await helloClient(port, `alice-${bystanderSeq}`);
  const b = await helloClient(port, `bob-${bystanderSeq}`);
  await a.join(room);
  await b.join(room);
  let n = 0;
  return {
    a,
    b,
    async check() {
      const data = `still alive ${++n}`;
      const ok = await a.request({ type: 'send_chat', room, data });
      if (ok.type !== 'ok') throw new Error(`bystander send failed: ${JSON.stringify(ok)}`);
      await b.next((m) => m.type === 'message' && m.data === data, 3000, 'bystander b to receive the chat');
      await a.next((m) => m.type === 'message' && m.data === data, 3000, 'bystander a to receive its own chat');
    },
    async close() {
      a.destroy();
      b.destroy();
    },
  };
}
