/** The admin HTTP endpoints (/stats, /healthz, /readyz, /metrics) and their servers, for every role. */
export { ADMIN_BUILDS_PER_SEC, createAdminHandler, type AdminEndpoints, type AdminHandler } from './handler';
export { AdminServer, adminConnectionCap, createTimedHttpServer, DEFAULT_HTTP_TIMEOUTS, MAX_HTTP_PENDING_BYTES, MAX_HTTP_UNANSWERED, type AdminServerOptions, type HttpTimeouts, type TimedServerHooks } from './server';
export { SharedBuild, type SharedBuildOptions } from './shared-build';
