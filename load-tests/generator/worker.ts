/**
 * One generator worker thread: holds a share of the connections, publishes at its share of the
 * rate, counts what is delivered and samples latency. The main thread (pool.ts) drives it with
 * small commands and adds up what the workers report.
 *
 * Connections are opened with the project's protocol module (preamble, hello and join_room are
 * encoded by services/protocol and their replies parsed by its TextParser/BinaryParser); once a
 * connection has joined, its socket's data goes to a FrameCounter, which counts frames without
 * parsing them. Churn cycles use the project's SwitchboardClient as a user would. Connections to
 * a peer server (NATS, Centrifugo) speak its protocol instead (load-tests/peers/), with the same
 * scheduling, sampling and counting around them.
 */
import { connect, type Socket } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { SwitchboardClient } from '../../services/client';
import { BINARY_PREAMBLE, BinaryParser, encodeBinaryFrame, encodeTextFrame, TextParser, type FrameSink } from '../../services/protocol';
import { nowUs } from '../lib/clock';
import { FrameCounter } from '../lib/counter';
import { encodeHistogram, newHistogram } from '../lib/histogram';
import { PublishTemplate } from '../lib/payload';
import { CentrifugoConn } from '../peers/centrifugo';
import { NatsConn } from '../peers/nats';
import { ConnSetup, type ConnContext, type LoadConn } from './conn';
import type { ConnSpec, LoadCodec, ToMain, ToWorker, WireProtocol, WorkerSnap } from './messages';

/**
 * The link to the main thread: a worker thread's parentPort, or the IPC channel when this file
 * runs as a child process (`--procs`): one process has at most `ulimit -n` descriptors, so more
 * connections than that need more generator processes.
 */
interface Link {
  postMessage(msg: ToMain): void;
  on(ev: 'message', f: (m: ToWorker) => void): void;
  close(): void;
}

const port: Link =
  parentPort ??
  ({
    postMessage: (msg: ToMain) => process.send!(msg),
    on: (_ev: 'message', f: (m: ToWorker) => void) => void process.on('message', f),
    close: () => process.disconnect(),
  } satisfies Link);
const id = parentPort !== null ? (workerData as { id: number }).id : Number(process.env.LOADGEN_WORKER_ID ?? 0);
const hist = newHistogram();
const errors = new Map<string, number>();

function countError(code: string, n = 1): void {
  errors.set(code, (errors.get(code) ?? 0) + n);
}

function send(msg: ToMain): void {
  port.postMessage(msg);
}

/** A connection speaking Switchboard's protocol, text or binary. */
class Conn implements FrameSink, LoadConn {
  socket: Socket | null = null;
  counter: FrameCounter;
  template: PublishTemplate | null = null;
  private parser: TextParser | BinaryParser | null;
  private replies = 0;
  private readonly setup = new ConnSetup((code) => countError(code));
  published = 0;

  constructor(
    readonly spec: ConnSpec,
    readonly binary: boolean,
    readonly codec: LoadCodec,
    sampleEvery: number,
    padBytes: number,
  ) {
    this.counter = new FrameCounter(binary, hist, sampleEvery);
    this.parser = binary ? new BinaryParser(this, 1 << 24) : new TextParser(this, 1 << 24);
    if (spec.publish) this.template = new PublishTemplate(spec.room, padBytes, binary);
  }

  open(host: string): Promise<string | null> {
    return new Promise((resolve) => {
      this.setup.begin(resolve);
      const s = connect({ host, port: this.spec.port, noDelay: true });
      this.socket = s;
      s.on('connect', () => {
        const enc = this.binary ? encodeBinaryFrame : encodeTextFrame;
        const codecs = this.codec === 'none' ? {} : { codecs: [this.codec] };
        const hello = enc(JSON.stringify({ type: 'hello', id: 1, user: this.spec.user, ...codecs }));
        const join = enc(JSON.stringify({ type: 'join_room', id: 2, room: this.spec.room }));
        s.write(this.binary ? Buffer.concat([BINARY_PREAMBLE, hello, join]) : Buffer.concat([hello, join]));
      });
      s.on('data', (chunk: Buffer) => {
        if (this.parser !== null) this.parser.push(chunk);
        else this.counter.push(chunk);
      });
      s.on('error', (err: NodeJS.ErrnoException) => {
        this.setup.lost(err.code ?? 'socket_error', err.code ?? 'socket_error');
      });
      s.on('close', () => {
        this.setup.lost('closed_during_setup', 'disconnected');
        this.socket = null;
      });
    });
  }

  /** Setup is over (ready or failed): what arrives from now on is counted, not parsed. */
  private settle(err: string | null): void {
    this.parser = null;
    this.setup.settle(err);
  }

  onFrame(body: Buffer): void {
    let msg: { type: string; code?: string; codec?: string };
    try {
      msg = JSON.parse(body.toString('utf8')) as { type: string; code?: string; codec?: string };
    } catch {
      this.settle('bad_json_from_server');
      this.socket?.destroy();
      return;
    }
    if (msg.type === 'error') {
      this.settle(msg.code ?? 'error');
      this.socket?.destroy();
      return;
    }
    if (msg.type === 'welcome' && this.codec !== 'none' && msg.codec !== this.codec) {
      // A compression run whose connections were not compressed would measure the wrong thing.
      this.settle(`codec_refused:${msg.codec ?? 'none'}`);
      this.socket?.destroy();
      return;
    }
    if (++this.replies === 2) this.settle(null);
  }

  onFrameError(code: string): void {
    this.settle(code);
  }

  isOpen(): boolean {
    return this.socket !== null;
  }

  publish(k: number, ts: number): void {
    if (this.socket === null || this.template === null) return;
    this.socket.write(this.template.batch(k, ts));
    this.published += k;
  }

  close(): void {
    this.setup.closedByUs = true;
    this.socket?.destroy();
  }
}

let conns: LoadConn[] = [];
let publishers: LoadConn[] = [];
let host = '127.0.0.1';
let expected = 0;
let published = 0;

// ---- publishing: open loop, owed = rate x elapsed - sent, spread round-robin ------------------

let rate = 0;
let startedAt = 0;
let sent = 0;
let cursor = 0;
let timer: NodeJS.Timeout | null = null;
/** Publish timer period (ms); set per run by `start` (--tick-ms). */
let tickMs = 1;

function publishTick(): void {
  timer = setTimeout(publishTick, tickMs);
  const now = nowUs();
  let owed = Math.floor((rate * (now - startedAt)) / 1e6) - sent;
  if (owed <= 0 || publishers.length === 0) return;
  sent += owed;
  const p = publishers.length;
  const each = Math.floor(owed / p);
  let extra = owed - each * p;
  const advance = extra;
  // Everyone gets `each`; the next `extra` publishers from the cursor get one more.
  if (each > 0) {
    for (let i = 0; i < p; i++) {
      const c = publishers[(cursor + i) % p];
      const k = each + (extra > 0 ? 1 : 0);
      if (extra > 0) extra--;
      c.publish(k, now);
      expected += k * c.spec.roomSize;
      published += k;
    }
    cursor = (cursor + advance) % p;
  } else {
    while (owed-- > 0) {
      const c = publishers[cursor % p];
      cursor = (cursor + 1) % p;
      c.publish(1, now);
      expected += c.spec.roomSize;
      published++;
    }
  }
}

function startPublishing(r: number, tick: number): void {
  stopPublishing();
  rate = r;
  tickMs = tick;
  startedAt = nowUs();
  sent = 0;
  if (r > 0) timer = setTimeout(publishTick, tickMs);
}

function stopPublishing(): void {
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

// ---- setup and reports -------------------------------------------------------------------------

function newConn(spec: ConnSpec, protocol: WireProtocol, binary: boolean, codec: LoadCodec, sampleEvery: number, padBytes: number): LoadConn {
  if (protocol === 'switchboard') return new Conn(spec, binary, codec, sampleEvery, padBytes);
  const ctx: ConnContext = { hist, countError, sampleEvery, padBytes };
  return protocol === 'nats' ? new NatsConn(spec, ctx) : new CentrifugoConn(spec, ctx);
}

async function setup(specs: ConnSpec[], protocol: WireProtocol, binary: boolean, codec: LoadCodec, sampleEvery: number, padBytes: number, concurrency: number): Promise<void> {
  conns = specs.map((s) => newConn(s, protocol, binary, codec, sampleEvery, padBytes));
  publishers = conns.filter((c) => c.spec.publish);
  let next = 0;
  let ok = 0;
  let failed = 0;
  const lane = async () => {
    while (next < conns.length) {
      const c = conns[next++];
      const err = await c.open(host);
      if (err === null) ok++;
      else {
        failed++;
        countError(`setup:${err}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  publishers = publishers.filter((c) => c.isOpen());
  send({ ev: 'ready', id, ok, failed });
}

function snap(resetHist: boolean, withHist: boolean): WorkerSnap {
  let delivered = 0;
  let rxBytes = 0;
  const others: Record<string, number> = {};
  for (const c of conns) {
    delivered += c.counter.messages;
    rxBytes += c.counter.bytes;
    for (const [k, v] of c.counter.others) others[k] = (others[k] ?? 0) + v;
  }
  const s: WorkerSnap = {
    published,
    expected,
    delivered,
    rxBytes,
    others,
    errors: Object.fromEntries(errors),
    hist: withHist ? encodeHistogram(hist) : undefined,
    open: conns.reduce((n, c) => n + (c.isOpen() ? 1 : 0), 0),
  };
  if (resetHist) hist.reset();
  return s;
}

function closeAll(): void {
  stopPublishing();
  for (const c of conns) c.close();
  conns = [];
  publishers = [];
  // The next run may have fewer publishers: a cursor left past its end picked no one (a crash).
  cursor = 0;
  expected = 0;
  published = 0;
  errors.clear();
  hist.reset();
}

// ---- churn: connect, hello, join, leave, close, at a rate, with the project's client --------

async function churn(ports: number[], r: number, durationMs: number, maxInFlight: number, binary: boolean): Promise<void> {
  let started = 0;
  let completed = 0;
  let inFlight = 0;
  const t0 = nowUs();
  const end = t0 + durationMs * 1000;
  await new Promise<void>((resolve) => {
    const cycle = (n: number) => {
      const begin = nowUs();
      const client = new SwitchboardClient({
        servers: [{ host, port: ports[n % ports.length] }],
        user: `churn-${id}-${n}`,
        mode: binary ? 'binary' : 'text',
        reconnect: false,
        requestTimeoutMs: 5000,
      });
      inFlight++;
      const room = `churn-${id}-${n % 64}`;
      client
        .connect()
        .then(() => client.join(room))
        .then(() => client.leave(room))
        .then(() => client.close())
        .then(
          () => {
            completed++;
            hist.recordValue(Math.max(0, nowUs() - begin));
          },
          (err: { code?: string }) => {
            countError(err.code ?? 'churn_failed');
            void client.close();
          },
        )
        .finally(() => {
          inFlight--;
        });
    };
    const tick = () => {
      const now = nowUs();
      if (now >= end) {
        const wait = () => (inFlight === 0 || nowUs() > end + 5e6 ? resolve() : setTimeout(wait, 10));
        wait();
        return;
      }
      const owed = Math.floor((r * (now - t0)) / 1e6) - started;
      for (let i = 0; i < owed; i++) {
        if (inFlight >= maxInFlight) {
          countError('churn_backlog');
          started++;
          continue;
        }
        cycle(started++);
      }
      setTimeout(tick, 2);
    };
    tick();
  });
  const elapsed = (nowUs() - t0) / 1e6;
  send({ ev: 'churn', id, started, completed, elapsedS: elapsed, errors: Object.fromEntries(errors), hist: encodeHistogram(hist) });
}

// ---- command loop ------------------------------------------------------------------------------

const progress = setInterval(() => {
  let delivered = 0;
  for (const c of conns) delivered += c.counter.messages;
  let errs = 0;
  for (const v of errors.values()) errs += v;
  send({ ev: 'tick', id, published, delivered, errors: errs });
}, 500);
progress.unref();

port.on('message', (m: ToWorker) => {
  switch (m.cmd) {
    case 'setup':
      host = m.host;
      void setup(m.conns, m.protocol, m.binary, m.codec, m.sampleEvery, m.padBytes, m.concurrency);
      return;
    case 'start':
      startPublishing(m.rate, m.tickMs);
      return;
    case 'stop':
      stopPublishing();
      send({ ev: 'stopped', id });
      return;
    case 'snap':
      send({ ev: 'snap', id, snap: snap(m.resetHist, m.withHist) });
      return;
    case 'close':
      closeAll();
      send({ ev: 'closed', id });
      return;
    case 'churn':
      host = m.host;
      errors.clear();
      hist.reset();
      void churn(m.ports, m.rate, m.durationMs, m.maxInFlight, m.binary);
      return;
    case 'exit':
      closeAll();
      clearInterval(progress);
      port.close();
      return;
  }
});
