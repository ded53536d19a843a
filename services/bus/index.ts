/** The gateway-to-gateway bus: interface and the embedded in-memory implementation. */
export * from './types';
export { MemoryBus, type MemoryBusOptions } from './memory';
