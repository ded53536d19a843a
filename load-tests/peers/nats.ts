/**
 * The generator's NATS speaker: the NATS text protocol over TCP (CONNECT, SUB, PUB, MSG,
 * PING/PONG), enough to put nats-server under the same fan-out load as Switchboard. A room is a
 * subject; each connection subscribes to its room's subject and publishes to it (echo on, so a
 * publisher gets its own message, as a Switchboard room member does).
 *
 * Like lib/counter.ts for Switchboard, NatsCounter walks the bytes without parsing messages:
 * a control line is found by its newline and classified by its first letter; a MSG line's last
 * field is its payload size, and the payload is skipped, except for one in `sampleEvery`, whose
 * send timestamp is read in place. Control lines split over chunks are kept until they end.
 */
import { connect, type Socket } from 'node:net';
import { ConnSetup, type ConnContext, type DeliveryCounter, type LoadConn } from '../generator/conn';
import type { ConnSpec } from '../generator/messages';
import { nowUs } from '../lib/clock';
import { readTimestamp, type LatencySink } from '../lib/counter';
import { FrameTemplate, publishData } from '../lib/payload';

const LF = 0x0a;
const CR = 0x0d;
/** A control line longer than this is a broken stream (nats-server's max_control_line is 4 KiB; INFO can be longer). */
const MAX_LINE = 1 << 20;

export type NatsControl = 'PING' | 'PONG' | 'INFO' | 'OK' | 'ERR';

export class NatsCounter implements DeliveryCounter {
  messages = 0;
  bytes = 0;
  readonly others = new Map<string, number>();
  /** Time of the last push, for the samples of the chunk; overridable for tests. */
  clock: () => number = nowUs;
  /** A control line that started in an earlier chunk. */
  private partial: Buffer | null = null;
  /** Bytes of the current MSG's payload and its CRLF still to come; 0 between messages. */
  private payloadLeft = 0;
  private untilSample = 1;

  constructor(
    private readonly latency: LatencySink | null,
    private readonly sampleEvery: number,
    private readonly onControl: (op: NatsControl, line: string) => void,
  ) {}

  push(buf: Buffer): void {
    this.bytes += buf.length;
    const len = buf.length;
    let pos = 0;
    let now = -1;
    while (pos < len) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, len - pos);
        pos += take;
        this.payloadLeft -= take;
        if (this.payloadLeft === 0) this.messages++;
        continue;
      }
      const nl = buf.indexOf(LF, pos);
      if (nl === -1) {
        this.keepPartial(buf.subarray(pos));
        return;
      }
      let size: number;
      if (this.partial !== null) {
        const line = Buffer.concat([this.partial, buf.subarray(pos, nl + 1)]);
        this.partial = null;
        size = this.line(line, 0, line.length - 1);
      } else size = this.line(buf, pos, nl);
      pos = nl + 1;
      if (size < 0) continue;
      // A MSG: its payload starts at pos. Sample it when due and wholly in this chunk.
      if (--this.untilSample <= 0 && this.latency !== null && pos + size <= len) {
        const ts = readTimestamp(buf, pos, pos + size);
        if (ts !== -1) {
          if (now === -1) now = this.clock();
          this.latency.recordValue(now > ts ? now - ts : 0);
          this.untilSample = this.sampleEvery;
        }
      }
      this.payloadLeft = size + 2;
    }
  }

  /** One control line [start, nl) (nl: its LF): the payload size of a MSG, else -1. */
  private line(buf: Buffer, start: number, nl: number): number {
    const end = nl > start && buf[nl - 1] === CR ? nl - 1 : nl;
    switch (buf[start]) {
      case 0x4d: // MSG <subject> <sid> [reply-to] <#bytes>
      case 0x6d: {
        let size = 0;
        let mul = 1;
        let i = end - 1;
        for (; i > start && buf[i] >= 0x30 && buf[i] <= 0x39; i--) {
          size += (buf[i] - 0x30) * mul;
          mul *= 10;
        }
        if (i === end - 1) {
          this.count('nats_bad_msg_line');
          return -1;
        }
        return size;
      }
      case 0x50: // PING / PONG
      case 0x70:
        this.onControl(buf[start + 1] === 0x49 || buf[start + 1] === 0x69 ? 'PING' : 'PONG', '');
        return -1;
      case 0x49: // INFO (also sent again when the cluster changes)
      case 0x69:
        this.onControl('INFO', buf.toString('utf8', start, end));
        return -1;
      case 0x2b: // +OK (verbose mode only)
        this.onControl('OK', '');
        return -1;
      case 0x2d: {
        // -ERR '<reason>'
        const text = buf.toString('utf8', start, end).replace(/^-ERR\s*'?|'$/g, '');
        this.count(`nats_err:${text.slice(0, 60)}`);
        this.onControl('ERR', text);
        return -1;
      }
      default:
        if (end > start) this.count('nats_unknown_line');
        return -1;
    }
  }

  private keepPartial(rest: Buffer): void {
    this.partial = this.partial === null ? Buffer.from(rest) : Buffer.concat([this.partial, rest]);
    if (this.partial.length > MAX_LINE) {
      this.count('nats_line_too_long');
      this.partial = null;
    }
  }

  private count(key: string): void {
    this.others.set(key, (this.others.get(key) ?? 0) + 1);
  }
}

/** `PUB <subject> <#bytes>\r\n<payload>\r\n` */
export function natsPublish(subject: string, payload: string): Buffer {
  const body = Buffer.from(payload, 'utf8');
  return Buffer.concat([Buffer.from(`PUB ${subject} ${body.length}\r\n`, 'latin1'), body, Buffer.from('\r\n')]);
}

const CONNECT = `CONNECT ${JSON.stringify({ verbose: false, pedantic: false, tls_required: false, name: 'switchboard-loadgen', lang: 'node', version: '0', protocol: 1, echo: true, headers: false })}\r\n`;

export class NatsConn implements LoadConn {
  readonly counter: NatsCounter;
  private socket: Socket | null = null;
  private readonly template: FrameTemplate | null;
  private readonly setup: ConnSetup;

  constructor(
    readonly spec: ConnSpec,
    ctx: ConnContext,
  ) {
    this.counter = new NatsCounter(ctx.hist, ctx.sampleEvery, (op, text) => this.onControl(op, text));
    this.setup = new ConnSetup((code) => ctx.countError(code));
    this.template = spec.publish ? new FrameTemplate(natsPublish(spec.room, publishData(ctx.padBytes))) : null;
  }

  /** CONNECT, SUB to the room's subject, then PING: the PONG says the server has the subscription. */
  open(host: string): Promise<string | null> {
    return new Promise((resolve) => {
      this.setup.begin(resolve);
      const s = connect({ host, port: this.spec.port, noDelay: true });
      this.socket = s;
      s.on('connect', () => s.write(`${CONNECT}SUB ${this.spec.room} 1\r\nPING\r\n`));
      s.on('data', (chunk: Buffer) => this.counter.push(chunk));
      s.on('error', (err: NodeJS.ErrnoException) => {
        this.setup.lost(err.code ?? 'socket_error', err.code ?? 'socket_error');
      });
      s.on('close', () => {
        this.setup.lost('closed_during_setup', 'disconnected');
        this.socket = null;
      });
    });
  }

  private onControl(op: NatsControl, text: string): void {
    if (op === 'PING') this.socket?.write('PONG\r\n');
    else if (op === 'PONG') this.setup.settle(null);
    else if (op === 'ERR' && this.setup.pending) {
      this.setup.settle(`nats_err:${text}`);
      this.socket?.destroy();
    }
  }

  isOpen(): boolean {
    return this.socket !== null;
  }

  publish(k: number, ts: number): void {
    if (this.socket === null || this.template === null) return;
    this.socket.write(this.template.batch(k, ts));
  }

  close(): void {
    this.setup.closedByUs = true;
    this.socket?.destroy();
  }
}
