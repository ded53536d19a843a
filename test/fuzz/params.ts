/**
 * How long the fuzzers run. `npm test` runs a bounded default (a few seconds in all); the long
 * run is `FUZZ_RUNS=100000 node --test dist/test/fuzz/` (its result is recorded in
 * docs/operations.md, "Limits and abuse"). FUZZ_SEED replays a reported failure.
 */
import type { Parameters } from 'fast-check';

export const FUZZ_RUNS = Number(process.env.FUZZ_RUNS ?? '') > 0 ? Number(process.env.FUZZ_RUNS) : 300;
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const LONG = process.env.FUZZ_RUNS !== undefined;

export function fuzzParams<T>(runs = FUZZ_RUNS): Parameters<T> {
  return {
    numRuns: runs,
    ...(SEED === undefined ? {} : { seed: SEED }),
    // The default run is time-boxed so that a slow, shared machine cannot make `npm test` drag;
    // a long run goes the whole way.
    ...(LONG ? {} : { interruptAfterTimeLimit: 4000 }),
  };
}
