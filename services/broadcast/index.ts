/** The broadcast tier: ingress consumer, shard leases, routing to gateway egress streams. */
export { BroadcastWorker, BroadcastCounters, type BroadcastOptions } from './worker';
export { BroadcastServer } from './server';
