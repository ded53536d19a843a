// The peer targets of the load suite (issue 16) end to end: each peer server, built by
// load-tests/peers/tools.sh (a missing binary fails these tests; .ci/run builds them), gets a
// few seconds of fan-out at about 2,000 deliveries/s through the generator's speaker for its
// protocol, and everything published must arrive: a broken protocol speaker or server config
// shows here as lost deliveries or failed setups. And the load-test CLI stops its servers when it
// is stopped by a signal.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { GeneratorPool } from '../../load-tests/generator/pool';
import { PEER_KINDS } from '../../load-tests/peers/servers';
import { runStep, type LoadParams } from '../../load-tests/scenarios';
import { startTarget } from '../../load-tests/targets';
import { waitFor } from '../helpers/wait';

/** 40 connections in rooms of 10, 200 publishes/s: 2,000 deliveries/s. */
const params: LoadParams = {
  scenario: 'fanout',
  clients: 40,
  roomSize: 10,
  rate: 200,
  warmupS: 0.3,
  measureS: 1.5,
  binary: true,
  padBytes: 32,
  sampleEvery: 2,
};

const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));

describe('peer targets', () => {
  let pool: GeneratorPool;
  before(() => {
    pool = new GeneratorPool(1);
  });
  after(() => pool.exit());

  for (const kind of PEER_KINDS) {
    test(`${kind}: a fan-out step at 2,000 deliveries/s delivers everything, with latency and server CPU`, async (t) => {
      const target = await startTarget(kind);
      t.after(() => target.stop());
      const nodes = kind.endsWith('-cluster') || kind.endsWith('-redis') ? 2 : 1;
      assert.equal(target.ports.length, nodes, 'clients are dealt over every node');
      assert.equal(target.pids.length, nodes + (kind === 'centrifugo-redis' ? 1 : 0), 'server CPU covers every node (and Redis)');
      const r = await runStep(pool, target, params);
      const detail = JSON.stringify(r);
      assert.equal(r.connections_ok, 40, detail);
      assert.ok(r.delivery_ratio > 0.99, detail);
      assert.deepEqual(r.errors, {}, detail);
      assert.ok(r.delivered_per_s > 1500, detail);
      assert.ok(r.latency_ms.samples > 0, detail);
      assert.ok(r.server_cpu_pct > 0, detail);
      await target.stop();
      for (const pid of target.pids) await waitFor(() => !alive(pid), 10_000, `${kind} process ${pid} to be gone after stop`, 20);
    });
  }
});

/** Children of `pid` (from /proc), with their command lines. */
function childrenOf(pid: number): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = [];
  for (const d of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'latin1');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push({ pid: Number(d), cmd: readFileSync(`/proc/${d}/cmdline`, 'latin1').replace(/\0/g, ' ') });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

test('the load-test CLI stops the servers it started when it gets SIGTERM mid-run', async (t) => {
  const out = join(tmpdir(), `loadgen-sigterm-${process.pid}.json`);
  const cli = spawn(process.execPath, [resolve(__dirname, '../../load-tests/cli.js'), 'fanout', '--targets', 'switchboard,nats', '--clients', '20', '--room-size', '10', '--rate', '50', '--duration', '60', '--workers', '1', '--max-minutes', '3', '--out', out], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LOADTEST_PROGRESS: '1' },
  });
  let stderr = '';
  cli.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => cli.once('exit', (code, signal) => r({ code, signal })));
  t.after(() => {
    cli.kill('SIGKILL');
    rmSync(out, { force: true });
  });
  // Both servers up and the first step publishing (its progress line), then the signal.
  const servers = await waitFor(
    () => {
      const kids = childrenOf(cli.pid!).filter((c) => /services\/cli\.js standalone|nats-server/.test(c.cmd));
      return kids.length === 2 && /pub\/s/.test(stderr) ? kids : null;
    },
    30_000,
    `the CLI's two servers and a running step (stderr: ${stderr.slice(-500)})`,
    50,
  );
  cli.kill('SIGTERM');
  const end = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 20_000).unref())]);
  assert.deepEqual(end, { code: 143, signal: null }, `the CLI exits 128 + SIGTERM after stopping its servers (stderr: ${stderr.slice(-500)})`);
  for (const s of servers) await waitFor(() => !alive(s.pid), 5000, `${s.cmd} (${s.pid}) to be gone`, 20);
});
