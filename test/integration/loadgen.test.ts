// The load generator end to end against a real Switchboard child process: process workers (what
// idle runs past one process's descriptor limit use) and compressed deliveries, whose latency is
// sampled from the decompressed frames and whose wire bytes shrink.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { GeneratorPool } from '../../load-tests/generator/pool';
import { runIdle, runStep, type LoadParams } from '../../load-tests/scenarios';
import { startTarget, type Target } from '../../load-tests/targets';

/** Child processes of this test process running the generator's worker.js. */
function workerProcesses(): number {
  let n = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes('generator/worker.js')) n++;
    } catch {
      // gone meanwhile
    }
  }
  return n;
}

const params: LoadParams = {
  scenario: 'fanout',
  clients: 20,
  roomSize: 10,
  rate: 200,
  warmupS: 0.3,
  measureS: 1,
  binary: true,
  padBytes: 1024,
  sampleEvery: 2,
};

describe('load generator', () => {
  let pool: GeneratorPool;
  const targets: Target[] = [];

  before(() => {
    pool = new GeneratorPool(2, true);
  });

  /** One plain Switchboard shared by the tests (started by whichever needs it first). */
  let plain: Target | null = null;
  async function switchboard(): Promise<Target> {
    if (plain === null) {
      plain = await startTarget('switchboard');
      targets.push(plain);
    }
    return plain;
  }

  after(async () => {
    await pool.exit();
    await Promise.all(targets.map((t) => t.stop()));
  });

  test('process workers: a fan-out step delivers everything and samples latency', async () => {
    assert.equal(workerProcesses(), 2, 'the two workers are child processes, not threads');
    const r = await runStep(pool, await switchboard(), params);
    assert.equal(r.connections_ok, 20);
    assert.equal(r.delivery_ratio, 1, JSON.stringify(r));
    assert.ok(r.latency_ms.samples > 0);
    assert.equal(r.codec, 'none');
    assert.ok(r.server_writes_per_s > 0 && r.delivered_per_write > 0);
  });

  test('switchboard-lz4 and -zstd: compressed deliveries, sampled, fewer bytes on the wire', async () => {
    const base = await runStep(pool, await switchboard(), params);
    for (const kind of ['switchboard-lz4', 'switchboard-zstd'] as const) {
      const t = await startTarget(kind);
      targets.push(t);
      const r = await runStep(pool, t, params);
      assert.equal(r.target, kind);
      assert.equal(r.codec, kind.slice('switchboard-'.length));
      assert.equal(r.delivery_ratio, 1, JSON.stringify(r));
      assert.deepEqual(r.errors, {});
      assert.ok(r.latency_ms.samples > 0, `${kind}: latency sampled from compressed frames`);
      assert.ok(r.wire_bytes_per_msg < base.wire_bytes_per_msg * 0.8, `${kind}: ${r.wire_bytes_per_msg} vs ${base.wire_bytes_per_msg} bytes per message`);
    }
  });

  test('idle: memory per connection is measured on the processes holding the connections', async () => {
    const r = await runIdle(pool, await switchboard(), 200, true);
    assert.equal(r.connections, 200);
    assert.equal(r.connections_open, 200);
    assert.equal(r.server_processes, 1);
    assert.ok(r.rss_after_mb > 0);
  });
});
