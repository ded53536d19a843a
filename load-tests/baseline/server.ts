/**
 * The baseline: the smallest Node `net` fan-out server that speaks the same protocol subset
 * (hello, join_room, leave_room, send_chat, ping; text and binary framing) and pushes the same
 * `message` frames as Switchboard. It encodes each message once and corks each socket once per
 * event-loop turn (issue 2's "2,000,000 delivered msg/s" server), and does nothing else: no rate
 * limit, no history, no bounds, no metrics.
 *
 * Every figure of the load tests is also reported as a ratio to this server measured in the same
 * run, because absolute numbers on a shared 2-core machine mean little.
 *
 *   TCP_PORT=0 node dist/load-tests/baseline/server.js   # logs {"msg":"listening","port":N}
 */
import { createServer, type Socket } from 'node:net';
import { BINARY_PREAMBLE, BinaryParser, Mode, Outbound, roomMessageJson, sniffMode, TextParser, type FrameSink } from '../../services/protocol';

const rooms = new Map<string, Set<Peer>>();
const corked: Peer[] = [];
let flushScheduled = false;

function flush(): void {
  flushScheduled = false;
  for (let i = 0; i < corked.length; i++) {
    const p = corked[i];
    p.corked = false;
    p.socket.uncork();
  }
  corked.length = 0;
}

class Peer implements FrameSink {
  user = '';
  mode: Mode = Mode.Unknown;
  corked = false;
  readonly rooms = new Set<string>();
  private parser: TextParser | BinaryParser | null = null;
  private seqs = 0;

  constructor(readonly socket: Socket) {}

  onData(chunk: Buffer): void {
    if (this.parser !== null) return this.parser.push(chunk);
    const mode = sniffMode(chunk);
    if (mode === Mode.Text) {
      this.mode = mode;
      this.parser = new TextParser(this, 1 << 20);
      this.parser.push(chunk);
    } else if (mode === Mode.Binary) {
      this.mode = mode;
      this.parser = new BinaryParser(this, 1 << 20);
      this.parser.push(chunk.subarray(BINARY_PREAMBLE.length));
    } else {
      this.socket.destroy(); // the baseline does not buffer partial preambles or speak HTTP
    }
  }

  write(msg: Outbound): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      corked.push(this);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flush);
      }
    }
    this.socket.write(this.mode === Mode.Binary ? msg.binary() : msg.text());
  }

  onFrame(body: Buffer): void {
    let m: { type?: string; id?: unknown; user?: string; room?: string; data?: unknown };
    try {
      m = JSON.parse(body.toString('utf8'));
    } catch {
      this.socket.destroy();
      return;
    }
    switch (m.type) {
      case 'hello':
        this.user = String(m.user);
        return this.reply(m.id, { type: 'welcome', user: this.user, protocol: 1 });
      case 'join_room': {
        const room = String(m.room);
        let set = rooms.get(room);
        if (set === undefined) rooms.set(room, (set = new Set()));
        set.add(this);
        this.rooms.add(room);
        return this.reply(m.id, { type: 'ok' });
      }
      case 'leave_room': {
        const room = String(m.room);
        this.leave(room);
        return this.reply(m.id, { type: 'ok' });
      }
      case 'send_chat': {
        const set = rooms.get(String(m.room));
        if (set === undefined) return;
        const msg = new Outbound(roomMessageJson(String(m.room), this.user, JSON.stringify(m.data), ++this.seqs, 'baseline', Date.now()));
        for (const p of set) p.write(msg);
        return;
      }
      case 'ping':
        return this.reply(m.id, { type: 'pong', ts: Date.now() });
      default:
        return this.reply(m.id, { type: 'error', code: 'unknown_type', message: 'baseline' });
    }
  }

  private reply(id: unknown, body: Record<string, unknown>): void {
    if (id === undefined) return;
    this.write(Outbound.of({ ...body, id }));
  }

  leave(room: string): void {
    const set = rooms.get(room);
    this.rooms.delete(room);
    if (set === undefined) return;
    set.delete(this);
    if (set.size === 0) rooms.delete(room);
  }

  onFrameError(): void {
    this.socket.destroy();
  }
}

const server = createServer({ noDelay: true }, (socket) => {
  const peer = new Peer(socket);
  socket.on('data', (c: Buffer) => peer.onData(c));
  socket.on('error', () => {});
  socket.on('close', () => {
    for (const r of [...peer.rooms]) peer.leave(r);
  });
});

server.listen({ host: process.env.TCP_HOST ?? '127.0.0.1', port: Number(process.env.TCP_PORT ?? 0), backlog: 4096 }, () => {
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  process.stderr.write(JSON.stringify({ msg: 'listening', role: 'baseline', port, pid: process.pid }) + '\n');
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
