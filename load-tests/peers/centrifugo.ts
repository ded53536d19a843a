/**
 * The generator's Centrifugo speaker: Centrifugo's JSON client protocol (v2) over WebSocket,
 * through the `ws` library: a `connect` command (anonymous, the target runs with
 * client.insecure), a `subscribe` to the room's channel, then `publish` commands. A room is a
 * channel; a publication reaches every subscriber, the publisher too, as in a Switchboard room.
 *
 * Several commands go in one WebSocket message, one JSON object per line, so k publishes are one
 * message. The server likewise puts several replies and pushes in one message; CentrifugoCounter
 * walks its lines without parsing them: a line starting `{"push"` with a `"pub":` is a delivered
 * publication (one in `sampleEvery` has its timestamp read in place), a line starting `{"id"` is
 * a reply (to a publish: counted as an ack, or an error), and `{}` is the server's ping, answered
 * with `{}`.
 */
import WebSocket from 'ws';
import { ConnSetup, type ConnContext, type DeliveryCounter, type LoadConn } from '../generator/conn';
import type { ConnSpec } from '../generator/messages';
import { nowUs } from '../lib/clock';
import { readTimestamp, type LatencySink } from '../lib/counter';
import { FrameTemplate, publishData } from '../lib/payload';

const LF = 0x0a;
const PUB_MARKER = Buffer.from('"pub":');
const ERROR_MARKER = Buffer.from('"error":');
/** Id of every publish command: replies are only counted, never matched to their command. */
const PUBLISH_ID = 3;

export class CentrifugoCounter implements DeliveryCounter {
  messages = 0;
  bytes = 0;
  /** Replies to publish commands that were not errors. */
  acks = 0;
  readonly others = new Map<string, number>();
  /** Time of the last push, for the samples of the message; overridable for tests. */
  clock: () => number = nowUs;
  private untilSample = 1;

  constructor(
    private readonly latency: LatencySink | null,
    private readonly sampleEvery: number,
    private readonly onPing: () => void,
  ) {}

  /** One WebSocket message: replies and pushes, one per line. */
  push(buf: Buffer): void {
    this.bytes += buf.length;
    const len = buf.length;
    let pos = 0;
    let now = -1;
    while (pos < len) {
      let end = buf.indexOf(LF, pos);
      if (end === -1) end = len;
      if (end - pos >= 2 && buf[pos] === 0x7b) {
        const c = buf[pos + 2]; // {"push" / {"id" / {}
        if (c === 0x70) {
          const at = buf.indexOf(PUB_MARKER, pos);
          if (at !== -1 && at < end) {
            this.messages++;
            if (--this.untilSample <= 0 && this.latency !== null) {
              const ts = readTimestamp(buf, at, end);
              if (ts !== -1) {
                if (now === -1) now = this.clock();
                this.latency.recordValue(now > ts ? now - ts : 0);
                this.untilSample = this.sampleEvery;
              }
            }
          } else this.count(`centrifugo_push:${pushKind(buf, pos, end)}`);
        } else if (c === 0x69) {
          const at = buf.indexOf(ERROR_MARKER, pos);
          if (at !== -1 && at < end) this.count(`centrifugo_error:${errorCode(buf, pos, end)}`);
          else this.acks++;
        } else if (end - pos === 2 && buf[pos + 1] === 0x7d) this.onPing();
        else this.count('centrifugo_unknown');
      } else if (end > pos) this.count('centrifugo_unknown');
      pos = end + 1;
    }
  }

  private count(key: string): void {
    this.others.set(key, (this.others.get(key) ?? 0) + 1);
  }
}

/** The kind of a push that is not a publication (rare: disconnect, unsubscribe, join, leave). */
function pushKind(buf: Buffer, start: number, end: number): string {
  try {
    const p = (JSON.parse(buf.toString('utf8', start, end)) as { push?: Record<string, unknown> }).push ?? {};
    return Object.keys(p).find((k) => k !== 'channel') ?? 'empty';
  } catch {
    return 'unparsable';
  }
}

function errorCode(buf: Buffer, start: number, end: number): string {
  try {
    const e = (JSON.parse(buf.toString('utf8', start, end)) as { error?: { code?: number; message?: string } }).error;
    return `${e?.code ?? '?'} ${e?.message ?? ''}`.trim();
  } catch {
    return 'unparsable';
  }
}

/** One publish command for the channel, newline-terminated (lines of a batch are joined by it). */
export function centrifugoPublish(channel: string, data: string): Buffer {
  return Buffer.from(`{"id":${PUBLISH_ID},"publish":{"channel":${JSON.stringify(channel)},"data":${data}}}\n`, 'utf8');
}

interface Reply {
  id?: number;
  error?: { code: number; message: string };
}

export class CentrifugoConn implements LoadConn {
  readonly counter: CentrifugoCounter;
  private ws: WebSocket | null = null;
  private readonly template: FrameTemplate | null;
  private readonly setup: ConnSetup;

  constructor(
    readonly spec: ConnSpec,
    ctx: ConnContext,
  ) {
    this.counter = new CentrifugoCounter(ctx.hist, ctx.sampleEvery, () => this.ws?.send('{}'));
    this.setup = new ConnSetup((code) => ctx.countError(code));
    this.template = spec.publish ? new FrameTemplate(centrifugoPublish(spec.room, publishData(ctx.padBytes))) : null;
  }

  /** connect, then subscribe to the room's channel: its reply says the subscription is in place. */
  open(host: string): Promise<string | null> {
    return new Promise((resolve) => {
      this.setup.begin(resolve);
      const ws = new WebSocket(`ws://${host}:${this.spec.port}/connection/websocket`, { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 10_000 });
      this.ws = ws;
      ws.on('open', () => ws.send('{"id":1,"connect":{"name":"switchboard-loadgen"}}'));
      ws.on('message', (data: Buffer) => {
        if (!this.setup.pending) this.counter.push(data);
        else this.onSetupReply(data);
      });
      ws.on('error', (err: NodeJS.ErrnoException) => {
        this.setup.lost(err.code ?? 'ws_error', err.code ?? 'ws_error');
      });
      ws.on('close', (code: number) => {
        this.setup.lost(`closed_during_setup:${code}`, `disconnected:${code}`);
        this.ws = null;
      });
    });
  }

  private onSetupReply(data: Buffer): void {
    for (const line of data.toString('utf8').split('\n')) {
      if (line === '') continue;
      let r: Reply;
      try {
        r = JSON.parse(line) as Reply;
      } catch {
        return this.fail('bad_json_from_server');
      }
      if (r.error !== undefined) return this.fail(`centrifugo_error:${r.error.code} ${r.error.message}`);
      if (r.id === 1) this.ws?.send(`{"id":2,"subscribe":{"channel":${JSON.stringify(this.spec.room)}}}`);
      else if (r.id === 2) this.setup.settle(null);
      else if (line === '{}') this.ws?.send('{}');
    }
  }

  private fail(code: string): void {
    this.setup.settle(code);
    this.ws?.terminate();
  }

  isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  publish(k: number, ts: number): void {
    if (this.template === null || !this.isOpen()) return;
    const b = this.template.batch(k, ts);
    this.ws!.send(b.subarray(0, b.length - 1), { binary: false });
  }

  close(): void {
    this.setup.closedByUs = true;
    this.ws?.terminate();
  }
}
