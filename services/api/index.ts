/** The gRPC server API (switchboard.v1). */
export { ApiServer, startApiServer, switchboardService, loadSwitchboardProto, protoPath, toGrpcError, ERROR_CODE_TRAILER, type ApiServerOptions } from './server';
