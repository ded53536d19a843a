/**
 * Instant queries to the Prometheus HTTP API (/api/v1/query) over the server's metric names
 * (docs/operations.md), for one Switchboard's pods. Any failure (unreachable, HTTP error, query error,
 * timeout) is a MetricsError; "no series" is reported as missing data, not as zero, so the
 * caller never scales down on it.
 *
 * A MetricsError's message reaches the MetricsUnavailable condition, a Warning Event and the log,
 * so credentials in a URL (http://user:pass@host, which fetch refuses, quoting the URL whole) are
 * masked first; the CRD refuses such a URL, this covers objects stored before that rule.
 */
import { SERVER_SIDE_CODES } from '../services/protocol/errors';
import type { SwitchboardSpec } from './api/types';

export class MetricsError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MetricsError';
  }
}

/** How much of a text from Prometheus (an error message) the operator shows. */
export const MAX_MESSAGE_CHARS = 512;

/**
 * The most bytes read from Prometheus for one round of queries, all answers together (each one
 * too); an instant vector of one series is a few hundred bytes. With rounds of one Switchboard
 * never overlapping, this bounds what its metrics loop holds.
 */
export const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/** What one round's queries share: the round's abort signal and what they have read so far. */
export interface RoundBudget {
  readonly signal?: AbortSignal;
  /** Bytes read by the round's answers so far, against MAX_ANSWER_BYTES. */
  bytes: number;
}

/**
 * Every `scheme://userinfo@` in a text, with the userinfo masked (as services/control's redactUrl).
 * A scheme starts only where no scheme character precedes it: tried at every letter of a long run,
 * the match took time quadratic in its length (a 150 kB error from Prometheus held the operator's
 * event loop for 20 s, and its leader lease lapsed).
 */
export function redactCredentials(text: string): string {
  return text.replace(/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/)[^\s/?#]*@/gi, '$1<redacted>@');
}

/** A text from outside cut to MAX_MESSAGE_CHARS (status conditions take 32 kB at most). */
export function clip(text: string, max = MAX_MESSAGE_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length} characters)`;
}

/** An error as a cause that is safe to show: the same error unless its message held credentials. */
function redactedCause(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const message = redactCredentials(err.message);
  if (message === err.message) return err;
  const safe = new Error(message);
  safe.name = err.name;
  return safe;
}

export interface ClusterMetrics {
  gatewayPods: number;
  broadcastPods: number;
  /** Delivered messages per second, all gateways. */
  deliveredPerSecond: number;
  /** Messages received from clients per second, all gateways. */
  receivedPerSecond: number;
  connections: number;
  /** 0 when there was no traffic in the window. */
  p99LatencyMs: number;
  /** Largest resident set of a gateway or broadcast pod. */
  memoryMiB: number;
  /**
   * Server-side errors (internal, unavailable) per received message: client mistakes and slow
   * clients are not the cluster's health, as in the SwitchboardHighErrorRate alert.
   */
  errorRate: number;
}

export interface Selector {
  namespace: string;
  name: string;
}

function esc(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
}

/** Label matchers for a Switchboard's pods of one tier (or both). */
export function podSelector(sel: Selector, tier: 'gateway' | 'broadcast' | 'all'): string {
  const re = tier === 'all' ? `${sel.name}-(gateway|broadcast)-.+` : `${sel.name}-${tier}-.+`;
  return `namespace="${esc(sel.namespace)}",pod=~"${esc(re)}"`;
}

/** The PromQL the operator runs, by name (documented in docs/operator.md). */
export function queries(sel: Selector, window: string): Record<keyof ClusterMetrics, string> {
  const gw = podSelector(sel, 'gateway');
  const bc = podSelector(sel, 'broadcast');
  const all = podSelector(sel, 'all');
  return {
    gatewayPods: `count(up{${gw}} == 1)`,
    broadcastPods: `count(up{${bc}} == 1)`,
    deliveredPerSecond: `sum(rate(switchboard_messages_delivered_total{${gw}}[${window}]))`,
    receivedPerSecond: `sum(rate(switchboard_messages_received_total{${gw}}[${window}]))`,
    connections: `sum(switchboard_connections{${gw}})`,
    p99LatencyMs: `1000 * histogram_quantile(0.99, sum by (le) (rate(switchboard_delivery_latency_seconds_bucket{${gw}}[${window}])))`,
    memoryMiB: `max(process_resident_memory_bytes{${all}}) / 1048576`,
    errorRate: `sum(rate(switchboard_errors_total{${gw},code=~"${SERVER_SIDE_CODES.join('|')}"}[${window}])) / clamp_min(sum(rate(switchboard_messages_received_total{${gw}}[${window}])), 1e-9)`,
  };
}

/**
 * A sample value as Prometheus writes it (a JSON string, Go's strconv.FormatFloat): a decimal
 * number with an optional exponent, or NaN, +Inf, -Inf.
 */
const PROMETHEUS_FLOAT = /^(?:[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|Inf)|NaN)$/;

/**
 * The number in a sample value, or a MetricsError when it is not one in Prometheus' syntax.
 * `Number()` read "", null and [] as 0, true as 1 and "0x7fffffff" as 2147483647: a broken or
 * hostile endpoint's junk became data to scale on.
 */
export function parseSampleValue(raw: unknown): number {
  if (typeof raw !== 'string' || !PROMETHEUS_FLOAT.test(raw)) {
    throw new MetricsError(`prometheus gave ${clip(JSON.stringify(raw) ?? String(raw), 64)}, not a number`);
  }
  if (raw.endsWith('Inf')) return raw.startsWith('-') ? -Infinity : Infinity;
  return Number(raw);
}

/** Counts of pods: a whole number of them. */
const POD_COUNTS: ReadonlySet<keyof ClusterMetrics> = new Set(['gatewayPods', 'broadcastPods']);

interface ApiAnswer {
  status: 'success' | 'error';
  error?: string;
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, unknown] }> };
}

export class PrometheusClient {
  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs = 5000,
  ) {}

  /**
   * A scalar from an instant vector query; undefined when it has no series. `round` (shared by
   * the queries of one round) aborts it and bounds the bytes read by all of them together.
   */
  async scalar(promql: string, round: RoundBudget = { bytes: 0 }): Promise<number | undefined> {
    const url = `${this.baseUrl.replace(/\/+$/, '')}/api/v1/query?query=${encodeURIComponent(promql)}`;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = round.signal === undefined ? timeout : AbortSignal.any([timeout, round.signal]);
    let res: Response;
    try {
      res = await fetch(url, { signal });
    } catch (err) {
      const reason = redactCredentials((err as Error)?.message ?? String(err));
      throw new MetricsError(`prometheus unreachable at ${redactCredentials(this.baseUrl)}: ${reason}`, { cause: redactedCause(err) });
    }
    let body: ApiAnswer;
    try {
      body = JSON.parse(await readBounded(res, round)) as ApiAnswer;
    } catch (err) {
      if (err instanceof MetricsError) throw err;
      throw new MetricsError(`prometheus answered ${res.status} without JSON`, { cause: err });
    }
    const error = typeof body?.error === 'string' ? clip(body.error) : 'unknown error';
    if (!res.ok) throw new MetricsError(`prometheus answered ${res.status}: ${error}`);
    if (body?.status !== 'success' || body.data === undefined) throw new MetricsError(`prometheus query failed (${res.status}): ${error}`);
    const first = body.data.result?.[0];
    if (first === undefined) return undefined;
    // NaN stays NaN (a quantile of no traffic); clusterMetrics decides what it means.
    return parseSampleValue(Array.isArray(first.value) ? first.value[1] : undefined);
  }

  /**
   * Everything the scaling and threshold logic needs, or null when Prometheus has no data for
   * these pods (none scraped yet, or the selector matches nothing).
   */
  async clusterMetrics(sel: Selector, spec: Pick<SwitchboardSpec, 'prometheus'>): Promise<ClusterMetrics | null> {
    const q = queries(sel, spec.prometheus?.rateWindow ?? '1m');
    const keys = Object.keys(q) as Array<keyof ClusterMetrics>;
    // One round, one AbortController: the first failure ends the queries still running, and the
    // round returns only once every request is closed. With Promise.all it ended at the first
    // failure while the others went on downloading (up to 4 MiB each, for up to 5 s), and the next
    // round started beside them: a Prometheus failing one query fast and answering the others
    // slowly grew the operator by 586 MiB in 15 s.
    const abort = new AbortController();
    const round: RoundBudget = { signal: abort.signal, bytes: 0 };
    let failure: { err: unknown } | undefined;
    const settled = await Promise.allSettled(keys.map((k) => this.scalar(q[k], round).catch((err: unknown) => {
      failure ??= { err };
      abort.abort(err);
      throw err;
    })));
    abort.abort(); // nothing is open any more; listeners go
    if (failure !== undefined) throw failure.err;
    const values = settled.map((r) => (r as PromiseFulfilledResult<number | undefined>).value);
    const out = {} as ClusterMetrics;
    keys.forEach((k, i) => {
      const v = values[i];
      // A p99 of no traffic is NaN, and means 0. Anything else that is not a finite number (NaN,
      // Inf, or past what a status field holds) is not data to scale on: the metrics are
      // unavailable, and nothing is scaled down on them.
      if (v !== undefined && !(Number.isFinite(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER) && !(k === 'p99LatencyMs' && Number.isNaN(v))) {
        throw new MetricsError(`prometheus gave ${k} = ${v}, not a usable number`);
      }
      // Every value is a count, a rate, a size or a ratio: none is below zero, and pods are whole.
      if (v !== undefined && v < 0) throw new MetricsError(`prometheus gave ${k} = ${v}, below zero`);
      if (v !== undefined && POD_COUNTS.has(k) && !Number.isInteger(v)) throw new MetricsError(`prometheus gave ${k} = ${v}, not a whole number of pods`);
      out[k] = v === undefined || Number.isNaN(v) ? 0 : v;
    });
    // No gateway target reporting "up" means no data at all: the caller must not act on zeros.
    if (values[keys.indexOf('gatewayPods')] === undefined) return null;
    return out;
  }
}

/**
 * The body of `res` as text, or a MetricsError once the round has read more than
 * MAX_ANSWER_BYTES (nothing more is read).
 */
async function readBounded(res: Response, round: RoundBudget): Promise<string> {
  const max = MAX_ANSWER_BYTES;
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (round.bytes + declared > max) {
    await res.body?.cancel().catch(() => {});
    throw new MetricsError(`prometheus answered ${res.status} with ${declared} bytes, over ${max}`);
  }
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    bytes += value.byteLength;
    round.bytes += value.byteLength;
    if (bytes > max) {
      await reader.cancel().catch(() => {});
      throw new MetricsError(`prometheus answered ${res.status} with more than ${max} bytes`);
    }
    if (round.bytes > max) {
      await reader.cancel().catch(() => {});
      throw new MetricsError(`prometheus answered more than ${max} bytes to one round of queries`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
