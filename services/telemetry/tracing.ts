/**
 * OpenTelemetry tracing of room messages across processes.
 *
 * One sampled room message is one trace: `gateway receive` -> `bus publish` -> `broadcast route`
 * -> `gateway deliver`. The context crosses processes inside the message itself, as a W3C
 * traceparent string (PublishRequest.trace, then the stream entries), and is handed on
 * explicitly: there is no async context manager, so nothing runs on other code paths.
 *
 * Off unless OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set (and OTEL_SDK_DISABLED is
 * not true); the standard OTEL_* variables configure the rest. When off, the hot path pays one
 * boolean check (`tracing.enabled`). When on, unsampled messages pay one sampling decision and
 * carry no context, so the downstream stages start no span for them.
 */
import {
  isSpanContextValid,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type ContextManager,
  type Span,
  type SpanContext,
  type Tracer,
} from '@opentelemetry/api';
import type { NodeSDK } from '@opentelemetry/sdk-node';

export { SpanKind, type Span, type Context };

/** Sampling ratio when OTEL_TRACES_SAMPLER is unset: 1 message in 100 starts a trace. */
export const DEFAULT_SAMPLE_RATIO = 0.01;

/** Read on the hot path: true once initTracing started an exporter. */
export const tracing: { enabled: boolean } = { enabled: false };

let sdk: NodeSDK | null = null;
let tracer: Tracer = trace.getTracer('switchboard');

/** Contexts are passed by hand here, so the SDK's AsyncLocalStorage manager would be pure cost. */
class ExplicitContextManager implements ContextManager {
  active(): Context {
    return ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(_ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return fn.call(thisArg, ...args);
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    return this;
  }
}

/** Whether the environment asks for tracing. */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if (/^(true|1)$/i.test(env.OTEL_SDK_DISABLED ?? '')) return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').trim();
  if (exporters !== '') return !/^none$/i.test(exporters);
  return (env.OTEL_EXPORTER_OTLP_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? '').trim() !== '';
}

/**
 * Start the OpenTelemetry SDK for this process when the environment asks for it. `serviceName`
 * is used unless OTEL_SERVICE_NAME is set. Returns whether tracing is on. Idempotent.
 */
export function initTracing(serviceName: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (sdk !== null) return true;
  if (!tracingRequested(env)) return false;
  // Loaded only when asked for: the SDK costs close to a second and ~60 MB to load.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const { ParentBasedSampler, TraceIdRatioBasedSampler } = require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const samplerSet = (env.OTEL_TRACES_SAMPLER ?? '').trim() !== '';
  const ratio = Number(env.OTEL_TRACES_SAMPLER_ARG ?? DEFAULT_SAMPLE_RATIO);
  sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ? undefined : serviceName,
    // Metrics go to Prometheus and logs to stderr: only traces are exported.
    metricReaders: [],
    logRecordProcessors: [],
    contextManager: new ExplicitContextManager(),
    instrumentations: [],
    ...(samplerSet ? {} : { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(Number.isFinite(ratio) ? ratio : DEFAULT_SAMPLE_RATIO) }) }),
  });
  sdk.start();
  tracer = trace.getTracer('switchboard');
  tracing.enabled = true;
  return true;
}

/** Flush and stop the exporter (on shutdown). */
export async function shutdownTracing(): Promise<void> {
  const s = sdk;
  if (s === null) return;
  sdk = null;
  tracing.enabled = false;
  await s.shutdown();
}

/** The W3C traceparent of a span or context, or undefined when it carries no valid span. */
export function injectTraceparent(from: Context | Span | SpanContext): string | undefined {
  const sc = spanContextOf(from);
  if (sc === undefined || !isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

function spanContextOf(from: Context | Span | SpanContext): SpanContext | undefined {
  if ('traceId' in from) return from as SpanContext;
  if (typeof (from as Span).spanContext === 'function') return (from as Span).spanContext();
  return trace.getSpanContext(from as Context);
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A context continuing from a traceparent; ROOT_CONTEXT when it is missing or malformed. */
export function extract(traceparent: string | undefined): Context {
  if (traceparent === undefined) return ROOT_CONTEXT;
  const m = TRACEPARENT.exec(traceparent);
  if (m === null || m[1] === 'ff') return ROOT_CONTEXT;
  const sc: SpanContext = { traceId: m[2], spanId: m[3], traceFlags: parseInt(m[4], 16), isRemote: true };
  return isSpanContextValid(sc) ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT;
}

/** Start a span as a child of `parent` (a context or a traceparent). */
export function startSpan(name: string, parent: Context | string | undefined, kind: SpanKind, attributes?: Attributes): Span {
  const ctx = typeof parent === 'string' || parent === undefined ? extract(parent) : parent;
  return tracer.startSpan(name, { kind, attributes }, ctx);
}

/** End a span with an error status. */
export function failSpan(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
  span.end();
}

/**
 * Trace the acceptance of a room message at the gateway: a `gateway receive` span (root of the
 * trace) with a `bus publish` child around `publish`. When the message is sampled, `setTrace`
 * receives the publish span's traceparent before `publish` runs, so that the bus carries it.
 * Call only when `tracing.enabled`.
 */
export function traceReceive<R>(room: string, attributes: Attributes, setTrace: (traceparent: string) => void, publish: () => R | Promise<R>): R | Promise<R> {
  const receive = tracer.startSpan('gateway receive', { kind: SpanKind.SERVER, attributes: { 'messaging.destination.name': room, ...attributes } }, ROOT_CONTEXT);
  if (!receive.isRecording()) {
    receive.end();
    return publish();
  }
  const span = tracer.startSpan('bus publish', { kind: SpanKind.PRODUCER, attributes: { 'messaging.destination.name': room } }, trace.setSpan(ROOT_CONTEXT, receive));
  const tp = injectTraceparent(span);
  if (tp !== undefined) setTrace(tp);
  let result: R | Promise<R>;
  try {
    result = publish();
  } catch (err) {
    failSpan(span, err);
    failSpan(receive, err);
    throw err;
  }
  if (result instanceof Promise) {
    return result.then(
      (r) => {
        span.end();
        receive.end();
        return r;
      },
      (err: unknown) => {
        failSpan(span, err);
        failSpan(receive, err);
        throw err;
      },
    );
  }
  span.end();
  receive.end();
  return result;
}
