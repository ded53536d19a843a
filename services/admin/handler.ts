/**
 * The admin endpoints every process answers alike: /stats, /healthz, /readyz and /metrics. Each
 * role's admin port serves all four (gateway, broadcast, operator); HTTP requests sniffed on a
 * gateway's client port (the origin's `curl localhost:4000/stats`) get the same handler without
 * /metrics unless METRICS_ON_CLIENT_PORT is set.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SharedBuild } from './shared-build';

/**
 * /stats and /metrics bodies built per second at most, past a burst (a scrape now and then is
 * always fresh; a flood gets the last body built), and shared by the requests that arrive while one
 * is being built. Each build of /metrics is prom-client's whole exposition (a few ms).
 */
export const ADMIN_BUILDS_PER_SEC = 4;
const ADMIN_BUILDS_BURST = 4;

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

interface Body {
  readonly contentType: string;
  readonly body: string;
}

/** The endpoints' answers, each built through its own SharedBuild. */
interface Builds {
  readonly stats: SharedBuild<Body>;
  readonly metrics: SharedBuild<Body> | null;
}

export function createAdminHandler(ep: AdminEndpoints): AdminHandler {
  const rate = { perSecond: ADMIN_BUILDS_PER_SEC, burst: ADMIN_BUILDS_BURST };
  const builds: Builds = {
    stats: new SharedBuild(async () => ({ contentType: 'application/json', body: JSON.stringify(await ep.stats()) + '\n' }), rate),
    metrics: ep.metrics === undefined ? null : new SharedBuild(ep.metrics, rate),
  };
  const endpoints = ep.metrics === undefined ? ['/stats', '/healthz', '/readyz'] : ['/stats', '/healthz', '/readyz', '/metrics'];
  const notFound = JSON.stringify({ error: 'not found', endpoints }) + '\n';
  return (req, res) => {
    // A handler that throws would be an uncaught exception: answer 500 instead.
    try {
      route(ep, builds, req, res, notFound);
    } catch (err) {
      if (!res.headersSent) send(res, 500, JSON.stringify({ error: 'internal error' }) + '\n');
      else res.destroy(err as Error);
    }
  };
}

function sendBuilt(res: ServerResponse, build: SharedBuild<Body>): void {
  build.get().then(
    (b) => send(res, 200, b.body, b.contentType),
    (err: unknown) => send(res, 500, JSON.stringify({ error: String(err) }) + '\n'),
  );
}

function route(ep: AdminEndpoints, builds: Builds, req: IncomingMessage, res: ServerResponse, notFound: string): void {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(res, 405, JSON.stringify({ error: 'method not allowed' }));
    return;
  }
  switch (path) {
    case '/stats':
      sendBuilt(res, builds.stats);
      return;
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
      if (builds.metrics !== null) {
        sendBuilt(res, builds.metrics);
        return;
      }
      break;
  }
  send(res, 404, notFound);
}
