/** Telemetry: counters, histograms, /stats, Prometheus metrics, the performance monitor, logging. */
export * from './counters';
export * from './histogram';
export * from './stats';
export * from './log';
export * from './clock';
export * from './metrics';
export * from './monitor';
