/**
 * The cluster wire format: every entry that crosses Redis between gateways and the broadcast
 * tier is written and read here, and nowhere else.
 *
 * Ingress (`sb:in:{N}`, written by a gateway, read by the broadcast tier), named fields:
 *   r <room>  f <from>  d <data as JSON>  t <accept time, ms>  [p <traceparent>]
 *
 * Egress (`sb:out:{gw}`, written by the broadcast tier or a gateway, read by one gateway), the
 * kind in the first field pair:
 *   k b  then per room message five fields: <room> <message id> <accept time> <JSON> <traceparent
 *        or ''>, and one '' pad when the count of messages is odd (fields come in pairs). One entry
 *        carries every message of one broadcast batch for that gateway.
 *   k d  u <user>  m <JSON>: a direct message to every local connection of the user.
 *
 * The message JSON itself is built from the template in services/protocol/outbound.ts. Trimming:
 * EGRESS_MAXLEN counts messages, so an entry of n messages trims to about EGRESS_MAXLEN / n
 * entries (never fewer than 100).
 */
import { Outbound } from '../protocol';
import type { PublishRequest } from './types';

/** The ingress fields of a published message (XADD arguments after the id). */
export function ingressFields(req: PublishRequest): string[] {
  const f = ['r', req.room, 'f', req.from, 'd', req.dataJson, 't', String(req.ts)];
  if (req.trace !== undefined) f.push('p', req.trace);
  return f;
}

/** A published message as the broadcast tier reads it back. */
export interface IngressMessage {
  room: string;
  from: string;
  dataJson: string;
  ts: number;
  trace: string | undefined;
}

/** Parse ingress fields; null for an entry that is not a room message (never written by us). */
export function parseIngress(flat: readonly string[]): IngressMessage | null {
  let room: string | undefined;
  let from: string | undefined;
  let data: string | undefined;
  let ts = 0;
  let trace: string | undefined;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const v = flat[i + 1];
    switch (flat[i]) {
      case 'r':
        room = v;
        break;
      case 'f':
        from = v;
        break;
      case 'd':
        data = v;
        break;
      case 't':
        ts = Number(v);
        break;
      case 'p':
        trace = v;
        break;
    }
  }
  if (room === undefined || from === undefined || data === undefined) return null;
  return { room, from, dataJson: data, ts, trace };
}

/**
 * The id gateways deduplicate on: the ingress entry id qualified by its shard's stream. Entry ids
 * are only unique within one stream; a bare id made gateways drop a different shard's message of
 * the same millisecond as a "duplicate".
 */
export function messageId(ingressKey: string, entryId: string): string {
  return `${ingressKey}/${entryId}`;
}

/** Approximate MAXLEN of an egress stream whose entries carry `messages` messages each. */
export function egressTrim(maxMessages: number, messages: number): number {
  return Math.max(100, Math.ceil(maxMessages / Math.max(1, messages)));
}

/** The XADD arguments of one `k b` egress entry, built message by message. */
export class EgressBatch {
  private readonly args: (string | number)[];
  private count = 0;

  constructor(key: string) {
    this.args = [key, 'MAXLEN', '~', 0, '*', 'k', 'b'];
  }

  add(room: string, mid: string, ts: string | number, json: string, trace: string | undefined): void {
    this.args.push(room, mid, ts, json, trace ?? '');
    this.count++;
  }

  /** The finished XADD arguments, trimmed per the message-count policy. */
  finish(maxMessages: number): (string | number)[] {
    this.args[3] = egressTrim(maxMessages, this.count);
    if (this.count % 2 === 1) this.args.push('');
    return this.args;
  }
}

/** The XADD arguments of a `k d` egress entry. */
export function directEntry(key: string, maxMessages: number, user: string, json: string): (string | number)[] {
  return [key, 'MAXLEN', '~', egressTrim(maxMessages, 1), '*', 'k', 'd', 'u', user, 'm', json];
}

/** What reading an egress entry hands on. */
export interface EgressHandler {
  room(room: string, msg: Outbound, ts: number, mid: string, trace: string | undefined): void;
  direct(user: string, msg: Outbound): void;
}

/** Read one egress entry's fields and hand every message in it to `h`. */
export function readEgress(f: readonly string[], h: EgressHandler): void {
  const kind = f[1];
  if (kind === 'b') {
    for (let i = 2; i + 4 < f.length; i += 5) {
      const tp = f[i + 4];
      h.room(f[i], new Outbound(f[i + 3]), Number(f[i + 2]), f[i + 1], tp === '' ? undefined : tp);
    }
  } else if (kind === 'd') {
    h.direct(f[3], new Outbound(f[5]));
  }
}
