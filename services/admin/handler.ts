/**
 * The admin endpoints every process answers alike: /stats, /healthz, /readyz and /metrics. Each
 * role's admin port serves all four (gateway, broadcast, operator); HTTP requests sniffed on a
 * gateway's client port (the origin's `curl localhost:4000/stats`) get the same handler without
 * /metrics unless METRICS_ON_CLIENT_PORT is set.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface AdminEndpoints {
  /** /stats; may be asynchronous (the broadcast tier asks Redis for its pending count). */
  stats(): Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Readiness and the reasons when not ready. */
  readiness(): { ready: boolean; reasons: string[] };
  /** Prometheus exposition, when telemetry is wired. */
  metrics?(): Promise<{ contentType: string; body: string }>;
}

function send(res: ServerResponse, status: number, body: string, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export type AdminHandler = (req: IncomingMessage, res: ServerResponse) => void;

export function createAdminHandler(ep: AdminEndpoints): AdminHandler {
  const endpoints = ep.metrics === undefined ? ['/stats', '/healthz', '/readyz'] : ['/stats', '/healthz', '/readyz', '/metrics'];
  const notFound = JSON.stringify({ error: 'not found', endpoints }) + '\n';
  return (req, res) => {
    // A handler that throws would be an uncaught exception: answer 500 instead.
    try {
      route(ep, req, res, notFound);
    } catch (err) {
      if (!res.headersSent) send(res, 500, JSON.stringify({ error: 'internal error' }) + '\n');
      else res.destroy(err as Error);
    }
  };
}

function route(ep: AdminEndpoints, req: IncomingMessage, res: ServerResponse, notFound: string): void {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, JSON.stringify({ error: 'method not allowed' }));
    return;
  }
  switch (path) {
    case '/stats': {
      const stats = ep.stats();
      if (stats instanceof Promise) {
        stats.then(
          (s) => send(res, 200, JSON.stringify(s) + '\n'),
          (err: unknown) => send(res, 500, JSON.stringify({ error: String(err) }) + '\n'),
        );
      } else send(res, 200, JSON.stringify(stats) + '\n');
      return;
    }
    case '/healthz':
      send(res, 200, '{"status":"ok"}\n');
      return;
    case '/readyz': {
      const r = ep.readiness();
      send(res, r.ready ? 200 : 503, JSON.stringify({ status: r.ready ? 'ready' : 'not ready', reasons: r.reasons }) + '\n');
      return;
    }
    case '/metrics':
      // Not offered on the client port unless METRICS_ON_CLIENT_PORT: there it is a plain 404.
      if (ep.metrics !== undefined) {
        ep.metrics().then(
          (m) => send(res, 200, m.body, m.contentType),
          (err: unknown) => send(res, 500, JSON.stringify({ error: String(err) })),
        );
        return;
      }
      break;
  }
  send(res, 404, notFound);
}
