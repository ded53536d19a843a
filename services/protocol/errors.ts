/**
 * The one registry of wire error codes and disconnect reasons.
 *
 * Codes are stable strings: clients switch on them, docs/protocol.md lists them, the gRPC API
 * maps them to status codes. A code once published is never reused for another meaning; a test
 * checks that this registry and docs/protocol.md list the same set.
 */

export const ErrorCode = {
  BadFrame: 'bad_frame',
  BadJson: 'bad_json',
  BadRequest: 'bad_request',
  UnknownType: 'unknown_type',
  TooLarge: 'too_large',
  FrameTimeout: 'frame_timeout',
  RateLimited: 'rate_limited',
  NotInRoom: 'not_in_room',
  TooManyRooms: 'too_many_rooms',
  TooManyConnections: 'too_many_connections',
  UserOffline: 'user_offline',
  Unauthorized: 'unauthorized',
  TokenExpired: 'token_expired',
  FeatureDisabled: 'feature_disabled',
  Overloaded: 'overloaded',
  SlowConsumer: 'slow_consumer',
  Unavailable: 'unavailable',
  Internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** gRPC status codes (numeric, as in grpc/status.proto) used to map protocol errors. */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatus = (typeof GrpcStatus)[keyof typeof GrpcStatus];

export interface ErrorInfo {
  /** The connection is closed after this error is sent: the stream cannot be trusted any more. */
  readonly closes: boolean;
  /** The gRPC status the server API answers with for the same failure. */
  readonly grpc: GrpcStatus;
  readonly description: string;
  /**
   * A failure of the server or its dependencies, not of the client's input or behaviour: only
   * these count toward the error-rate overload threshold, so that no client can push a process
   * into overload by sending bad frames or by not reading.
   */
  readonly serverSide: boolean;
}

export const ErrorInfo: { readonly [C in ErrorCode]: ErrorInfo } = {
  bad_frame: { closes: true, grpc: GrpcStatus.INVALID_ARGUMENT, description: 'The byte stream is not a valid frame (unknown preamble, reserved flag bits, corrupt compressed body); the connection is closed.', serverSide: false },
  bad_json: { closes: false, grpc: GrpcStatus.INVALID_ARGUMENT, description: 'A frame is not valid JSON. The frame is dropped; the connection stays open.', serverSide: false },
  bad_request: { closes: false, grpc: GrpcStatus.INVALID_ARGUMENT, description: 'The message is not a JSON object, or a field is missing, of the wrong type or out of range.', serverSide: false },
  unknown_type: { closes: false, grpc: GrpcStatus.UNIMPLEMENTED, description: 'No core handler or plugin handles this message type.', serverSide: false },
  frame_timeout: { closes: true, grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'A frame was not completed within the frame timeout (a partial frame sent too slowly); the connection is closed.', serverSide: false },
  too_large: { closes: true, grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'A frame (or a declared frame length) exceeds the maximum frame size; the connection is closed.', serverSide: false },
  rate_limited: { closes: false, grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'The per-connection message rate limit was exceeded; the message was not processed.', serverSide: false },
  not_in_room: { closes: false, grpc: GrpcStatus.FAILED_PRECONDITION, description: 'The request names a room this connection has not joined.', serverSide: false },
  too_many_rooms: { closes: false, grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'Joining would exceed the per-connection room limit (MAX_ROOMS_PER_CONNECTION) or the rooms this server holds in total (MAX_ROOMS_TOTAL).', serverSide: false },
  too_many_connections: { closes: true, grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'The user already holds MAX_CONNECTIONS_PER_USER connections on this server; the hello is refused and the connection closed.', serverSide: false },
  user_offline: { closes: false, grpc: GrpcStatus.NOT_FOUND, description: 'A direct message names a user with no live connection.', serverSide: false },
  unauthorized: { closes: true, grpc: GrpcStatus.UNAUTHENTICATED, description: 'Authentication failed (bad, expired or missing token), or a request came before hello; the connection is closed.', serverSide: false },
  token_expired: { closes: true, grpc: GrpcStatus.UNAUTHENTICATED, description: 'The session token expired and was not refreshed in time; the connection is closed.', serverSide: false },
  feature_disabled: { closes: false, grpc: GrpcStatus.FAILED_PRECONDITION, description: 'The feature flag gating this request is off for this user.', serverSide: false },
  overloaded: { closes: false, grpc: GrpcStatus.UNAVAILABLE, description: 'The server is overloaded and refuses new work; retry later or elsewhere.', serverSide: false },
  slow_consumer: { closes: true, grpc: GrpcStatus.RESOURCE_EXHAUSTED, description: 'The client does not read fast enough and its outbound buffer is full; it is disconnected.', serverSide: false },
  unavailable: { closes: false, grpc: GrpcStatus.UNAVAILABLE, description: 'A dependency (such as Redis) is unreachable; the request was not accepted. Retry.', serverSide: true },
  internal: { closes: false, grpc: GrpcStatus.INTERNAL, description: 'An unexpected server error; the request may not have been processed.', serverSide: true },
};

export const ALL_ERROR_CODES: readonly ErrorCode[] = Object.values(ErrorCode);

/** The codes of the server's own failures (`serverSide`): what error rates and alerts count. */
export const SERVER_SIDE_CODES: readonly ErrorCode[] = ALL_ERROR_CODES.filter((c) => ErrorInfo[c].serverSide);

/** An error with a stable protocol code, thrown by handlers and plugins and sent to the client. */
export class SwitchboardError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SwitchboardError';
    this.code = code;
  }
}

export function isSwitchboardError(err: unknown): err is SwitchboardError {
  return err instanceof SwitchboardError;
}

/**
 * Why the server ends a connection, sent in the `reconnect` push (or the closing error) so the
 * client knows whether to come back. Modelled on centrifuge's disconnect codes.
 */
export const DisconnectReason = {
  Shutdown: 'shutdown',
  IdleTimeout: 'idle_timeout',
  SlowConsumer: 'slow_consumer',
  ProtocolError: 'protocol_error',
  Unauthorized: 'unauthorized',
  Overloaded: 'overloaded',
  Kicked: 'kicked',
} as const;
export type DisconnectReason = (typeof DisconnectReason)[keyof typeof DisconnectReason];

/** Whether a client should reconnect after each disconnect reason. */
export const DisconnectReconnect: { readonly [R in DisconnectReason]: boolean } = {
  shutdown: true,
  idle_timeout: true,
  slow_consumer: true,
  protocol_error: false,
  unauthorized: false,
  overloaded: true,
  kicked: false,
};
