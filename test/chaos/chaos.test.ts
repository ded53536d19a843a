/**
 * The cluster as operated, under faults (CI size, about two minutes): a real redis-server, three
 * gateways and one to three broadcast workers as child processes, 24 members in 64 rooms over all
 * 8 shards, and a fixed-seed schedule that injects every fault kind at least once (kill -9 and
 * SIGTERM of workers and gateways, workers scaled 1 -> 3 -> 1, Redis paused, Redis restarted
 * empty). `npm run chaos -- --seed N --minutes M` runs the same thing longer; see run.ts.
 */
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stopAllRedis } from '../helpers/redis';
import { FAULT_KINDS } from './events';
import { killAllNow } from './procs';
import { runChaos, type ChaosResult } from './run';

const SEED = 1;

describe('chaos: the cluster under a seeded fault schedule', { timeout: 300_000 }, () => {
  let res: ChaosResult;
  const lines: string[] = [];

  before(
    async () => {
      res = await runChaos({
        seed: SEED,
        durationMs: 75_000,
        gateways: 3,
        workersMin: 1,
        workersMax: 3,
        rooms: 64,
        rate: 120,
        settleMs: 20_000,
        out: join(tmpdir(), 'switchboard-chaos-ci.json'),
        log: (l) => lines.push(l),
      });
    },
    { timeout: 280_000 },
  );

  after(async () => {
    // runChaos stops everything it started; this only matters if it was cut short.
    killAllNow();
    await stopAllRedis();
  });

  const why = () => `\n${res.text}\n${lines.join('\n')}\nsummary ${res.outPath}, logs and events in ${res.runDir}`;

  it('injected every fault kind and carried real traffic', (t) => {
    for (const line of res.text.split('\n')) t.diagnostic(line);
    for (const k of FAULT_KINDS) assert.ok((res.summary.faults[k] ?? 0) >= 1, `fault ${k} was not injected${why()}`);
    assert.ok(res.summary.acked > 3000, `only ${res.summary.acked} messages acknowledged${why()}`);
    assert.equal(res.summary.violations['harness-error'], undefined, `the harness failed${why()}`);
  });

  it('lost no acknowledged message (except to an epoch change the member was told of)', () => {
    assert.equal(res.summary.lost, 0, `lost messages${why()}`);
  });

  it('delivered no duplicate and kept every room in order', () => {
    assert.equal(res.summary.duplicates, 0, `duplicates after dedupe${why()}`);
    assert.equal(res.summary.reordered, 0, `reordered${why()}`);
    assert.equal(res.summary.seqConflicts, 0, `two messages with one (epoch, seq)${why()}`);
  });

  it('no server process exited without being told to, and no room stalled past its bound', () => {
    assert.deepEqual(res.summary.unexpectedExits, [], `unexpected exits${why()}`);
    assert.equal(res.summary.stallViolations, 0, `stalls (longest ${res.summary.longestStallMs} ms)${why()}`);
  });

  it('every invariant held', () => {
    assert.ok(res.summary.ok, `first failure: ${JSON.stringify(res.summary.firstFailure)}${why()}`);
  });
});
