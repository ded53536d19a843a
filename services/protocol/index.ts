/** Wire protocol v1: shared by the gateway, the client library and the load generator. */
export * from './errors';
export * from './framing';
export * from './messages';
export * from './outbound';
export * from './compression';
export * from './in-order';
