/** The gRPC server API (switchboard.v1). */
export { ApiServer, startApiServer, switchboardService, loadSwitchboardProto, protoPath, toGrpcError, ERROR_CODE_TRAILER, MAX_WATCHERS, MAX_STREAMS, MAX_API_CONNECTIONS, MAX_UNPROVEN_CALLS, MAX_CALLS_READING, API_ACCEPTS_PER_SEC, API_ACCEPT_BURST, WATCH_MIN_MS, WATCH_MAX_MS, type ApiServerOptions } from './server';
