// The real CLI as a child process: help, roles, configuration from env and .env, one-line
// config errors with exit code 2, and graceful SIGTERM (reconnect push, drain, exit 0).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { spawnCli, tempDir } from '../helpers/cli';
import { bystanders, helloClient, WireClient } from '../helpers/wire';
import { waitFor } from '../helpers/wait';

const BASE = { ADMIN_PORT: '-1', TCP_PORT: '0', LOG_LEVEL: 'info' };

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
}

describe('cli', () => {
  test('--help prints usage with the roles and exits 0', async () => {
    const p = spawnCli(['--help']);
    const { code } = await p.exited;
    assert.equal(code, 0);
    const out = p.stdout.join('\n');
    assert.match(out, /Usage: switchboard \[role\]/);
    assert.match(out, /standalone/);
  });

  test('an unknown role exits 2 with one line', async () => {
    const p = spawnCli(['nonsense'], BASE);
    const { code } = await p.exited;
    assert.equal(code, 2);
    assert.equal(p.stderr.filter((l) => l !== '').length, 1);
    assert.match(p.stderr[0], /unknown role "nonsense"/);
  });

  test('an unknown option, or a second role, exits 2 with one line', async () => {
    for (const [args, expected] of [
      [['--verbose'], /unknown option --verbose/],
      [['standalone', '-x'], /unknown option -x/],
      [['gateway', 'broadcast'], /unexpected argument "broadcast"/],
    ] as const) {
      const p = spawnCli([...args], BASE);
      const { code } = await p.exited;
      assert.equal(code, 2, args.join(' '));
      const lines = p.stderr.filter((l) => l !== '');
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(lines[0], expected);
    }
  });

  test('--help and -h work after a role too', async () => {
    for (const args of [['gateway', '--help'], ['-h'], ['help']]) {
      const p = spawnCli(args);
      assert.equal((await p.exited).code, 0, args.join(' '));
      assert.match(p.stdout.join('\n'), /Usage: switchboard \[role\]/);
    }
  });

  test('npm start runs the standalone role', () => {
    const pkg = JSON.parse(readFileSync(resolve(__dirname, '../../../package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.match(pkg.scripts.start, /node dist\/services\/cli\.js standalone$/);
  });

  for (const [env, key, expected] of [
    [{ TCP_PORT: 'abc' }, 'TCP_PORT', 'a port number 0-65535'],
    [{ MAX_ROOMS_PER_CONNECTION: '-3' }, 'MAX_ROOMS_PER_CONNECTION', 'an integer >= 1'],
    [{ SLOW_CONSUMER_POLICY: 'maybe' }, 'SLOW_CONSUMER_POLICY', 'one of disconnect, drop'],
    // Above 2^31-1 ms a timer fires after 1 ms: the overload monitor ran every millisecond.
    [{ OVERLOAD_INTERVAL_MS: '3000000000' }, 'OVERLOAD_INTERVAL_MS', 'an integer from 50 to 2147483647 (milliseconds)'],
  ] as const) {
    test(`invalid ${key}: one line naming the key and the expected form, exit code 2`, async (t) => {
      const p = spawnCli([], { ...BASE, ...env });
      t.after(() => p.kill());
      await waitFor(() => p.child.exitCode !== null || p.child.signalCode !== null, 5000, 'the process to exit');
      const { code } = await p.exited;
      assert.equal(code, 2);
      const lines = p.stderr.filter((l) => l !== '');
      assert.equal(lines.length, 1, `stderr: ${lines.join('\n')}`);
      assert.ok(lines[0].includes(key), lines[0]);
      assert.ok(lines[0].includes(expected), lines[0]);
    });
  }

  test('a duration past the longest timer stops every role at start-up: one line, exit code 2', async (t) => {
    for (const [role, key] of [['gateway', 'HEARTBEAT_MS'], ['broadcast', 'LEASE_MS'], ['broadcast', 'HISTORY_TTL_SEC'], ['operator', 'RESYNC_MS'], ['operator', 'LEASE_DURATION_MS']] as const) {
      // Unreachable Redis and Kubernetes: a role that accepted the value would keep trying them.
      const p = spawnCli([role], { ...BASE, [key]: '3000000000', REDIS_URL: 'redis://127.0.0.1:1', KUBECONFIG: '/nonexistent' });
      t.after(() => p.kill());
      await waitFor(() => p.child.exitCode !== null || p.child.signalCode !== null, 5000, `${role} with ${key} to exit`);
      const { code } = await p.exited;
      const lines = p.stderr.filter((l) => l !== '');
      assert.equal(code, 2, `${role} ${key}: ${lines.join('\n')}`);
      assert.equal(lines.length, 1, `stderr: ${lines.join('\n')}`);
      assert.match(lines[0], new RegExp(`^switchboard: invalid ${key}="3000000000": expected an integer from \\d+ to 2147483647 \\((milliseconds|seconds)\\)$`));
    }
  });

  test("the default role is standalone; .env with the origin's keys is read; the environment wins", async (t) => {
    const port = await freePort();
    const dir = tempDir();
    writeFileSync(join(dir, '.env'), `tcp_host=127.0.0.1\ntcp_port=${port}\nredis_host=10.9.8.7\nredis_port=6390\nmax_rooms_per_connection=abc\n`);
    // .env alone: its invalid value stops start-up, which shows it is read...
    const bad = spawnCli([], { ADMIN_PORT: '-1' }, dir);
    assert.equal((await bad.exited).code, 2);
    assert.match(bad.stderr[0], /MAX_ROOMS_PER_CONNECTION/);
    // ...and the environment overrides it.
    const p = spawnCli([], { ADMIN_PORT: '-1', MAX_ROOMS_PER_CONNECTION: '2' }, dir);
    t.after(() => p.kill());
    assert.equal(await p.listening(), port, 'tcp_port from .env');
    const starting = p.logs().find((r) => r.msg === 'starting')!;
    assert.equal(starting.role, 'standalone');
    const cfg = starting.config as Record<string, unknown>;
    assert.equal(cfg.redisUrl, 'redis://10.9.8.7:6390', 'redis_host/redis_port from .env');
    const c = await helloClient(port, 'envy');
    t.after(() => c.destroy());
    const w = await c.request({ type: 'ping' });
    assert.equal(w.type, 'pong');
    await c.join('a');
    await c.join('b');
    assert.equal((await c.request({ type: 'join_room', room: 'c' })).code, 'too_many_rooms', 'the limit from the environment');
  });

  test('client abuse never ends the process', async (t) => {
    const p = spawnCli(['standalone'], { ...BASE, MAX_FRAME_BYTES: '1024' });
    t.after(() => p.kill());
    const port = await p.listening();
    const by = await bystanders(port);
    t.after(() => by.close());
    const attacks: (Buffer | string)[] = [
      'not json at all\n',
      '{"type":"hello","user":"x"}\n{"broken\n[]\n{"type":42}\n',
      '{"type":"hello","user":"x"}\n' + 'a'.repeat(5000) + '\n',
      Buffer.from([0xb5, 0x53, 0x42, 0x01, 0xff, 0xff, 0xff, 0xff, 0x00]),
      Buffer.from([0xb5, 0x53, 0x42, 0x01, 0, 0, 0, 2, 0xfc, 0x7b]),
      Buffer.from([0, 0, 0, 0, 0]),
      'GET /stats HTTP/1.1\r\nHost: x\r\n\r\n',
      'POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\nxx',
    ];
    for (const a of attacks) {
      const c = await WireClient.connect(port);
      c.writeRaw(a);
      await new Promise((r) => setTimeout(r, 10));
      c.destroy();
    }
    await by.check();
    assert.equal(p.child.exitCode, null, 'still running');
  });

  test('SIGTERM: stop accepting, reconnect push with reason shutdown after queued messages drain, exit 0', async (t) => {
    const p = spawnCli(['standalone'], { ...BASE, SHUTDOWN_DRAIN_MS: '5000' });
    t.after(() => p.kill());
    const port = await p.listening();
    const reader = await helloClient(port, 'reader');
    const sender = await helloClient(port, 'sender');
    t.after(() => (reader.destroy(), sender.destroy()));
    await reader.join('bye');
    await sender.join('bye');
    // The reader stops reading, so messages pile up in buffers that shutdown must drain.
    reader.socket.pause();
    const N = 300;
    const payload = 'q'.repeat(2048);
    for (let i = 0; i < N; i++) sender.send({ type: 'send_chat', room: 'bye', data: `${i}:${payload}` });
    await sender.request({ type: 'ping' });
    p.child.kill('SIGTERM');
    const r = await sender.nextOfType('reconnect', 5000);
    assert.equal(r.reason, 'shutdown');
    assert.equal(r.reconnect, true);
    // New connections are refused once draining.
    await waitFor(
      () =>
        new Promise<boolean>((res) => {
          WireClient.connect(port).then(
            async (c) => {
              c.send({ type: 'ping' });
              const gone = await c.waitClosed(1000).then(() => c.all.length === 0, () => false);
              c.destroy();
              res(gone);
            },
            () => res(true),
          );
        }),
      3000,
      'new connections to be refused',
    );
    reader.socket.resume();
    await reader.waitClosed(5000);
    const msgs = reader.all.filter((m) => m.type === 'message');
    assert.equal(msgs.length, N, 'every queued message was delivered before the close');
    const last = reader.all[reader.all.length - 1];
    assert.deepEqual(last, { type: 'reconnect', reason: 'shutdown', reconnect: true });
    const { code } = await p.exited;
    assert.equal(code, 0);
  });
});
