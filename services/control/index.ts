/** Configuration, feature flags, thresholds and overload control. */
export * from './config';
export * from './flags';
export { FlagsFileSource, parseFlagsFile, type FlagsFileOptions } from './flags-file';
export { RedisFlagsSource, FLAGS_KEY, FLAGS_CHANNEL, readFlags, writeFlag, deleteFlag, type FlagWriteOptions, type RedisFlagsOptions } from './flags-redis';
export { startFlags, FlagsStartError, type FlagService, type FlagServiceOptions } from './flag-service';
