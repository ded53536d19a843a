/** The admin HTTP endpoints (/stats, /healthz, /readyz, /metrics) and their servers, for every role. */
export { createAdminHandler, type AdminEndpoints, type AdminHandler } from './handler';
export { AdminServer, createTimedHttpServer, DEFAULT_HTTP_TIMEOUTS, type AdminServerOptions, type HttpTimeouts, type TimedServerHooks } from './server';
