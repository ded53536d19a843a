// A client that behaves as the protocol asks (docs/protocol.md): it chats in its own room,
// remembers what the server acknowledged, and when told `reconnect` (or cut off) connects again
// through the Service, joins, and asks for `history` since the last seq it saw. verify() then
// checks, from a fresh session, that every acknowledged message is in the room's history.
import { connect, type Socket } from 'node:net';

type Json = Record<string, unknown>;

/** A text-mode connection to host:port with a request/reply helper. */
export class Conn {
  readonly inbox: Json[] = [];
  closed = false;
  private buf = '';
  private seq = 0;
  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('utf8');
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        try {
          this.inbox.push(JSON.parse(line) as Json);
        } catch {
          this.inbox.push({ type: '__unparsed', raw: line });
        }
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(host: string, port: number, timeoutMs = 5000): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port });
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`connect ${host}:${port} timed out`)); }, timeoutMs);
      s.once('error', (e) => { clearTimeout(timer); reject(e); });
      s.once('connect', () => { clearTimeout(timer); s.removeAllListeners('error'); resolve(new Conn(s)); });
    });
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  send(msg: Json): void {
    this.socket.write(`${JSON.stringify(msg)}\n`);
  }

  /** Takes the first message matching pred; rejects on timeout or close. */
  take(pred: (m: Json) => boolean, timeoutMs = 5000): Promise<Json> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.inbox.findIndex(pred);
        if (i >= 0) { done(); resolve(this.inbox.splice(i, 1)[0]); return; }
        if (this.closed) { done(); reject(new Error('connection closed')); }
      };
      const timer = setTimeout(() => { done(); reject(new Error(`no matching message in ${timeoutMs} ms`)); }, timeoutMs);
      const done = () => { clearTimeout(timer); this.waiters.delete(check); };
      this.waiters.add(check);
      check();
    });
  }

  request(msg: Json, timeoutMs = 5000): Promise<Json> {
    const id = `q${++this.seq}`;
    this.send({ ...msg, id });
    return this.take((m) => m.id === id, timeoutMs);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** hello at host:port; the welcome. */
export async function helloAt(host: string, port: number, user: string): Promise<{ conn: Conn; welcome: Json }> {
  const conn = await Conn.open(host, port);
  const welcome = await conn.request({ type: 'hello', user });
  if (welcome.type !== 'welcome') throw new Error(`hello: ${JSON.stringify(welcome)}`);
  return { conn, welcome };
}

export class Chatter {
  /**
   * Every message the server acknowledged (`ok`: in cluster mode it carries no seq, the broadcast
   * tier assigns it).
   */
  readonly acked = new Set<string>();
  readonly servers: string[] = [];
  /** Reasons of the `reconnect` pushes received. */
  readonly reconnectReasons: string[] = [];
  /** Connections lost without a `reconnect` push (pod killed, network cut). */
  abrupt = 0;
  sendErrors = 0;
  recovered = 0;
  /** Why the chat loop gave up, if it did. */
  failure: Error | undefined;
  /** Requests that got no answer in time (a connection silently gone). */
  timeouts = 0;
  lastAckAt = 0;
  private conn: Conn | undefined;
  private lastSeq = 0;
  private n = 0;
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(readonly user: string, readonly room: string, private readonly host: string, private readonly port: number, private readonly periodMs = 500) {}

  get server(): string | undefined {
    return this.servers[this.servers.length - 1];
  }

  async start(): Promise<void> {
    await this.connect();
    this.running = true;
    // A chatter that cannot get back in fails its step's verify(), not the process.
    this.loop = this.run().catch((err: Error) => {
      this.failure = err;
      this.running = false;
    });
  }

  private async connect(): Promise<void> {
    const { conn, welcome } = await helloAt(this.host, this.port, this.user);
    const joined = await conn.request({ type: 'join_room', room: this.room });
    if (joined.type !== 'ok') throw new Error(`join: ${JSON.stringify(joined)}`);
    if (this.lastSeq > 0) {
      // Recover what was missed while away, as the protocol says.
      const h = await conn.request({ type: 'history', room: this.room, since: this.lastSeq });
      if (h.type !== 'history') throw new Error(`history: ${JSON.stringify(h)}`);
      this.recovered++;
    }
    this.conn = conn;
    this.servers.push(String(welcome.server));
  }

  private async run(): Promise<void> {
    while (this.running) {
      const conn = this.conn;
      // Read the inbox first: a `reconnect` push is usually followed at once by the close.
      const told = conn !== undefined && this.pendingReconnect(conn);
      if (!conn || told || conn.closed) {
        conn?.destroy();
        this.conn = undefined;
        await this.reconnect();
        continue;
      }
      const data = `${this.user}-${++this.n}`;
      try {
        const r = await conn.request({ type: 'send_chat', room: this.room, data });
        if (r.type === 'ok') {
          this.acked.add(data);
          this.lastAckAt = Date.now();
        } else {
          this.sendErrors++;
        }
      } catch (err) {
        // No answer: not acknowledged, so nothing is owed; the loop reconnects.
        if (/no matching message/.test((err as Error).message)) this.timeouts++;
      }
      await sleep(this.periodMs);
    }
  }

  private pendingReconnect(conn: Conn): boolean {
    // The room's pushes (its own chats come back too): the last seq seen, for history since.
    for (let j = conn.inbox.length - 1; j >= 0; j--) {
      const m = conn.inbox[j];
      if (m.type === 'message') {
        if (typeof m.seq === 'number') this.lastSeq = Math.max(this.lastSeq, m.seq);
        conn.inbox.splice(j, 1);
      }
    }
    const i = conn.inbox.findIndex((m) => m.type === 'reconnect');
    if (i < 0) {
      if (conn.closed) this.abrupt++;
      return false;
    }
    this.reconnectReasons.push(String(conn.inbox[i].reason));
    conn.inbox.splice(i, 1);
    return true;
  }

  private async reconnect(): Promise<void> {
    const deadline = Date.now() + 60_000;
    while (this.running) {
      try {
        await this.connect();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`${this.user} could not reconnect for 60 s: ${(err as Error).message}`);
        await sleep(250);
      }
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.conn?.destroy();
  }

  /** From a fresh session: every acknowledged message is in the room's history. */
  async verify(): Promise<{ missing: string[]; checked: number }> {
    if (this.failure) throw this.failure;
    const { conn } = await helloAt(this.host, this.port, `${this.user}-check`);
    try {
      await conn.request({ type: 'join_room', room: this.room });
      const h = await conn.request({ type: 'history', room: this.room, limit: 1000 });
      const have = new Set((h.messages as Array<{ data: string }>).map((m) => m.data));
      const missing = [...this.acked].filter((data) => !have.has(data));
      return { missing, checked: this.acked.size };
    } finally {
      conn.destroy();
    }
  }

  /** A line of what happened to this chatter, for failure messages. */
  describe(): string {
    return `${this.user}: servers ${this.servers.join(' > ')}, reconnect ${JSON.stringify(this.reconnectReasons)}, abrupt ${this.abrupt}, ` +
      `timeouts ${this.timeouts}, acked ${this.acked.size}, last ack ${this.lastAckAt ? `${((Date.now() - this.lastAckAt) / 1000).toFixed(1)} s ago` : 'never'}` +
      `${this.failure ? `, failed: ${this.failure.message}` : ''}${this.connected ? '' : ', not connected'}`;
  }

  get connected(): boolean {
    return this.conn !== undefined && !this.conn.closed;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
