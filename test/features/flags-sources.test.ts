/**
 * Flags end to end: the file source (hot reload, bad file rejected), the Redis source reaching
 * two gateways after `switchboard flags set`, gating over the wire, and shedding under overload.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { defaultConfig, FlagStore, FlagsFileSource, FlagsStartError, MAX_FLAGS, MAX_FLAGS_FILE_BYTES, startFlags, writeFlag, type FlagService } from '../../services/control';
import { flagsRedis } from '../../services/control/flags-redis';
import { createLogger } from '../../services/telemetry';
import { spawnCli, tempDir } from '../helpers/cli';
import { RedisProcess } from '../helpers/redis';
import { startServer, type TestServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { WireClient } from '../helpers/wire';

function captureLog() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', {}, (l) => lines.push(JSON.parse(l) as Record<string, unknown>));
  return { log, lines };
}

/**
 * Expect startFlags to refuse the start. A service that started anyway is stopped before the
 * assertion fails, so a regression fails the test instead of leaving Redis connections open.
 */
async function refused(starting: Promise<FlagService>, message: RegExp): Promise<void> {
  let service: FlagService;
  try {
    service = await starting;
  } catch (err) {
    assert.ok(err instanceof FlagsStartError, String(err));
    assert.match(err.message, message);
    return;
  }
  await service.stop();
  assert.fail('startFlags resolved: every flag would be at its default (on)');
}

test('flags file: loads YAML, hot-reloads on change, rejects a bad file and keeps the last good set', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'flags:\n  history:\n    enabled: false\n  direct:\n    rolloutPercent: 0\n    betaUsers: [alice]\n');
  const store = new FlagStore();
  const { log, lines } = captureLog();
  const src = new FlagsFileSource({ path, store, log, debounceMs: 20 });
  t.after(() => src.stop());
  assert.equal(await src.start(), true);
  assert.equal(store.isEnabled('history', 'bob'), false);
  assert.equal(store.isEnabled('direct', 'alice'), true);
  assert.equal(store.isEnabled('direct', 'bob'), false);

  writeFileSync(path, 'flags:\n  history: {enabled: true}\n');
  await waitFor(() => store.isEnabled('history', 'bob'), 3000, 'the edited file to be applied');
  assert.equal(store.get('direct'), undefined, 'a flag removed from the file reverts to the default');

  const loads = src.loads;
  writeFileSync(path, 'flags:\n  history: {enabled: nope, rolloutPercent: 300}\n');
  await waitFor(() => src.rejects > 0, 3000, 'the bad file to be rejected');
  assert.equal(src.loads, loads);
  assert.equal(store.isEnabled('history', 'bob'), true, 'the last good set stays');
  const rejected = lines.find((l) => l.msg === 'flags file rejected, keeping the last good flags');
  assert.ok(rejected, 'one clear log line');
  assert.equal(rejected.level, 'error');
  assert.match(String(rejected.err), /enabled must be true or false/);

  writeFileSync(path, '{ "flags": [ {"name": "history", "enabled": false ');
  await waitFor(() => src.rejects > 1, 3000, 'the broken YAML to be rejected');
  assert.equal(store.isEnabled('history', 'bob'), true);
});

test('flags file: JSON by extension', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.json');
  writeFileSync(path, JSON.stringify([{ name: 'compression', enabled: false }]));
  const store = new FlagStore();
  const src = new FlagsFileSource({ path, store, log: captureLog().log });
  t.after(() => src.stop());
  assert.equal(await src.start(), true);
  assert.equal(store.isEnabled('compression', 'x'), false);
});

test('flags file: a fractional rolloutPercent loads, and the kill switch beside it holds', async (t) => {
  // A file like this one worked before rolloutPercent was briefly integer-only; refusing 12.5
  // rejected the whole file and turned the kill switch back on.
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'flags:\n  kill-switch:\n    enabled: false\n  new-ui:\n    rolloutPercent: 12.5\n');
  const store = new FlagStore();
  const src = new FlagsFileSource({ path, store, log: captureLog().log });
  t.after(() => src.stop());
  assert.equal(await src.start(), true);
  assert.equal(store.isEnabled('kill-switch', 'alice'), false);
  assert.equal(store.get('new-ui')?.rolloutPercent, 12.5);
  let on = 0;
  for (let i = 0; i < 10_000; i++) if (store.isEnabled('new-ui', `u${i}`)) on++;
  assert.ok(on > 1100 && on < 1500, `12.5% (evaluated as 13%) of 10000 users: ${on}`);
});

test('a rejected flags file on the first load refuses the start; a missing file does not', async (t) => {
  // No last good set to keep: serving would put every flag at its default, on, kill switch included.
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'flags:\n  kill-switch:\n    enabled: false\n  new-ui:\n    rolloutPercent: 150\n');
  const store = new FlagStore();
  const { log, lines } = captureLog();
  await refused(startFlags(store, { config: defaultConfig({ flagsFile: path }), log }), /^FLAGS_FILE .*flags\.yaml rejected \(flag "new-ui": rolloutPercent must be a number 0-100\); not starting/);
  assert.equal(store.list().length, 0);
  assert.ok(lines.some((l) => l.msg === 'flags file rejected, keeping the last good flags' && l.level === 'error'));

  const missing = await startFlags(new FlagStore(), { config: defaultConfig({ flagsFile: join(dir, 'absent.yaml') }), log });
  await missing.stop();
  const none = await startFlags(new FlagStore(), { config: defaultConfig({ flagsFile: '' }), log });
  await none.stop();
});

test('cli: a process whose FLAGS_FILE is rejected exits 1 with the reason, without listening; without FLAGS_FILE it serves', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'flags:\n  kill-switch:\n    enabled: false\n  new-ui:\n    rolloutPercent: lots\n');
  const base = { TCP_PORT: '0', ADMIN_PORT: '-1', API_PORT: '-1', LOG_LEVEL: 'info' };
  const bad = spawnCli(['standalone'], { ...base, FLAGS_FILE: path });
  t.after(() => bad.kill());
  const outcome = await Promise.race([bad.exited.then((e) => e.code), bad.listening(8000).then(() => 'listening' as const)]);
  assert.equal(outcome, 1, bad.stderr.join('\n'));
  const failed = bad.logs().find((l) => l.msg === 'start failed');
  assert.ok(failed, bad.stderr.join('\n'));
  assert.equal(failed.level, 'error');
  assert.match(String(failed.err), /FLAGS_FILE .* rejected \(flag "new-ui": rolloutPercent must be a number 0-100\)/);
  assert.equal(bad.logs().some((l) => l.msg === 'listening'), false);

  const ok = spawnCli(['standalone'], base);
  t.after(() => ok.kill());
  await ok.listening();
});

/** A server whose flags come from a file `name` holding `content`; stopped after the test. */
async function serverWithFlagsFile(t: { after(fn: () => unknown): void }, name: string, content: string) {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, name);
  writeFileSync(path, content);
  const store = new FlagStore();
  const srv = await startServer({ flagsFile: path }, { flags: store });
  const flags = await startFlags(store, { config: srv.config, log: captureLog().log });
  t.after(async () => {
    await flags.stop();
    await srv.close();
  });
  return srv;
}

test('gating over the wire: welcome lists flags, history and direct answer feature_disabled, chat still works', async (t) => {
  const srv = await serverWithFlagsFile(t, 'flags.yaml', 'history: {enabled: false}\ndirect: {rolloutPercent: 0, betaUsers: [alice]}\n');
  const alice = await WireClient.connect(srv.port);
  const bob = await WireClient.connect(srv.port);
  t.after(() => {
    alice.socket.destroy();
    bob.socket.destroy();
  });
  const wa = await alice.hello('alice');
  const wb = await bob.hello('bob');
  assert.deepEqual(wa.flags, { direct: true, history: false });
  assert.deepEqual(wb.flags, { direct: false, history: false });
  await alice.join('r');
  await bob.join('r');
  const h = await alice.request({ type: 'history', room: 'r' });
  assert.equal(h.code, 'feature_disabled');
  assert.equal((await alice.request({ type: 'send_chat', room: 'r', data: 'hi' })).type, 'ok', 'chat is not gated');
  assert.equal((await alice.request({ type: 'direct', to: 'bob', data: 1 })).type, 'ok', 'alice is a beta user');
  const d = await bob.request({ type: 'direct', to: 'alice', data: 1 });
  assert.equal(d.code, 'feature_disabled');
  assert.equal(bob.closed, false, 'feature_disabled does not close the connection');
});

test('welcome.flags carries flags named __proto__ and constructor', async (t) => {
  const srv = await serverWithFlagsFile(t, 'flags.json', '{"flags":{"__proto__":{"enabled":false},"constructor":{"enabled":false},"history":{}}}');
  const c = await WireClient.connect(srv.port);
  t.after(() => c.socket.destroy());
  const w = await c.hello('u1');
  const announced = w.flags as Record<string, boolean>;
  assert.deepEqual(Object.keys(announced).sort(), ['__proto__', 'constructor', 'history']);
  assert.equal(Object.getOwnPropertyDescriptor(announced, '__proto__')?.value, false);
  assert.equal(Object.getOwnPropertyDescriptor(announced, 'constructor')?.value, false);
});

/** `n` flag names of 64 characters, the longest allowed. */
function longNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `flag_${String(i).padStart(58, '0')}x`);
}

/** Point `link` at `target` atomically (a new symlink renamed over it), as a deployment would. */
function swapSymlink(link: string, target: string): void {
  const tmp = `${link}.tmp`;
  rmSync(tmp, { force: true });
  symlinkSync(target, tmp);
  renameSync(tmp, link);
}

/**
 * A reader stuck opening or reading FIFOs (a regression) is released, so the test fails instead of
 * keeping the process alive: opening the write end succeeds only while a reader waits.
 */
function releaseFifoReaders(...fifos: string[]): void {
  for (const fifo of fifos) {
    try {
      closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {
      // ENXIO: nobody is reading it.
    }
  }
}

test('flags file: a symlink swapped to /dev/zero is rejected without reading it, the last good set stays, and the hot reload works once it points to a file again', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.json');
  writeFileSync(join(dir, 'a.json'), JSON.stringify({ flags: { history: { enabled: false } } }));
  writeFileSync(join(dir, 'b.json'), JSON.stringify({ flags: { direct: { enabled: false } } }));
  swapSymlink(path, 'a.json');
  const store = new FlagStore();
  const { log, lines } = captureLog();
  const src = new FlagsFileSource({ path, store, log, debounceMs: 20 });
  t.after(() => src.stop());
  assert.equal(await src.start(), true);
  assert.equal(store.isEnabled('history', 'u'), false);

  // stat says 0 bytes and the read never ends: it grew the heap by 200 MB a second and held
  // every later reload behind it.
  const rss = process.memoryUsage().rss;
  swapSymlink(path, '/dev/zero');
  await waitFor(() => src.rejects > 0, 3000, '/dev/zero to be rejected');
  const rejected = lines.find((l) => l.msg === 'flags file rejected, keeping the last good flags');
  assert.ok(rejected, 'the usual log line');
  assert.equal(rejected.level, 'error');
  assert.match(String(rejected.err), /character device: only a regular file/);
  assert.equal(store.isEnabled('history', 'u'), false, 'the last good set stays');
  assert.ok(process.memoryUsage().rss - rss < 64 * 1024 * 1024, 'nothing read');

  // A directory, likewise.
  swapSymlink(path, dir);
  await waitFor(() => src.rejects > 1, 3000, 'a directory to be rejected');
  assert.match(String(lines.filter((l) => l.msg === 'flags file rejected, keeping the last good flags')[1].err), /directory/);

  swapSymlink(path, 'b.json');
  await waitFor(() => store.isEnabled('history', 'u') && !store.isEnabled('direct', 'u'), 3000, 'the hot reload of b.json');
  assert.equal(src.lastError, null);
});

test('flags file: a FIFO is rejected at once (opening it does not wait for a writer), on the first load as on a reload', async (t) => {
  const dir = tempDir();
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const path = join(dir, 'flags.yaml');
  t.after(() => {
    releaseFifoReaders(fifo, path);
    rmSync(dir, { recursive: true, force: true });
  });

  // The first load: the start is refused, promptly, rather than hanging for ever.
  execFileSync('mkfifo', [path]);
  const first = new FlagsFileSource({ path, store: new FlagStore(), log: captureLog().log, debounceMs: 20 });
  t.after(() => first.stop());
  let started: boolean | undefined;
  void first.start().then((ok) => (started = ok));
  await waitFor(() => started !== undefined, 3000, 'the first load of a FIFO to finish');
  assert.equal(started, false);
  assert.match(String(first.lastError), /FIFO: only a regular file/);
  first.stop();
  rmSync(path);

  // A reload: rejected, the last good set stays, and the next good file loads.
  writeFileSync(path, 'flags:\n  history: {enabled: false}\n');
  const store = new FlagStore();
  const src = new FlagsFileSource({ path, store, log: captureLog().log, debounceMs: 20 });
  t.after(() => src.stop());
  assert.equal(await src.start(), true);
  swapSymlink(path, fifo);
  await waitFor(() => src.rejects > 0, 3000, 'the FIFO to be rejected');
  assert.match(String(src.lastError), /FIFO/);
  assert.equal(store.isEnabled('history', 'u'), false, 'the last good set stays');
  rmSync(path);
  writeFileSync(path, 'flags:\n  direct: {enabled: false}\n');
  await waitFor(() => store.isEnabled('history', 'u') && !store.isEnabled('direct', 'u'), 3000, 'the hot reload of the regular file');
});

test('flags file: past MAX_FLAGS flags or MAX_FLAGS_FILE_BYTES it is rejected and the last good set stays; a full set fits welcome', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.json');
  writeFileSync(path, JSON.stringify({ flags: { history: { enabled: false } } }));
  const store = new FlagStore();
  const { log, lines } = captureLog();
  const srv = await startServer({ flagsFile: path }, { flags: store });
  const flags = await startFlags(store, { config: srv.config, log });
  const src = flags.file!;
  // Rebuilt short of the watcher's debounce, so every case is one reload.
  src.stop();
  t.after(async () => {
    await flags.stop();
    await srv.close();
  });
  const rejected = () => lines.filter((l) => l.msg === 'flags file rejected, keeping the last good flags');

  const tooMany = Object.fromEntries(longNames(MAX_FLAGS + 1).map((n) => [n, { rolloutPercent: 50 }]));
  writeFileSync(path, JSON.stringify({ flags: tooMany }));
  assert.equal(await src.reload(), false);
  assert.equal(rejected().length, 1);
  assert.equal(rejected()[0].level, 'error');
  assert.match(String(rejected()[0].err), /1001 flags, more than the limit of 1000/);
  assert.equal(store.isEnabled('history', 'u'), false, 'the last good set stays');
  assert.equal(store.list().length, 1);

  // Few flags, many bytes: refused before parsing.
  writeFileSync(path, JSON.stringify({ flags: { history: { betaUsers: Array.from({ length: 60_000 }, (_, i) => `beta-user-${i}`) } } }));
  assert.equal(await src.reload(), false);
  assert.match(String(rejected()[1].err), new RegExp(`more than the limit of ${MAX_FLAGS_FILE_BYTES}`));
  assert.equal(store.isEnabled('history', 'u'), false);
  assert.equal(src.rejects, 2);

  // Exactly the cap, every name 64 characters: accepted, and welcome stays inside the frame limit it announces.
  writeFileSync(path, JSON.stringify({ flags: Object.fromEntries(longNames(MAX_FLAGS).map((n) => [n, { enabled: false }])) }));
  assert.equal(await src.reload(), true);
  assert.equal(store.list().length, MAX_FLAGS);
  const c = await WireClient.connect(srv.port);
  t.after(() => c.socket.destroy());
  const w = await c.hello('u1');
  assert.equal(Object.keys(w.flags as object).length, MAX_FLAGS);
  const bytes = Buffer.byteLength(JSON.stringify(w));
  const limit = (w.limits as { maxFrameBytes: number }).maxFrameBytes;
  assert.ok(bytes < limit, `welcome is ${bytes} bytes, limit ${limit}`);
});

test('redis: a hash past MAX_FLAGS is rejected whole, the flags in force stay; writers refuse to add past it', async (t) => {
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const store = new FlagStore();
  const { log, lines } = captureLog();
  const srv = await startServer({ redisUrl: redis.url }, { flags: store });
  const flags = await startFlags(store, { config: srv.config, log, redis: true, resyncMs: 0 });
  t.after(async () => {
    await flags.stop();
    await srv.close();
  });
  const w = flagsRedis(redis.url, 'test-writer');
  t.after(() => w.disconnect());
  const off = (name: string) => ({ name, enabled: false, rolloutPercent: 100, betaUsers: [], nonCritical: false, description: '' });
  await writeFlag(w, off('history'));
  await waitFor(() => !store.isEnabled('history', 'u'), 2000, 'history off');

  // Written behind the writers' backs: 1,001 fields.
  const names = longNames(MAX_FLAGS);
  await w.hset('sb:flags', Object.fromEntries(names.map((n) => [n, JSON.stringify(off(n))])));
  await w.publish('sb:flags:changed', 'many');
  const src = flags.redis!;
  await waitFor(() => src.rejects > 0, 2000, 'the oversized hash to be rejected');
  const line = lines.find((l) => l.msg === 'flags: Redis flag set rejected, keeping the current flags');
  assert.ok(line, 'one error line');
  assert.equal(line.level, 'error');
  assert.match(String(line.err), /1001 flags, more than the limit of 1000/);
  assert.equal(store.isEnabled('history', 'u'), false, 'the flags in force stay');
  assert.equal(store.list().length, 1);

  // A writer (the CLI, the operator) refuses a new flag once the hash is full, and still updates one it holds.
  await w.hdel('sb:flags', names[0]);
  await assert.rejects(writeFlag(w, off('direct')), /holds 1000 flags, the limit is 1000/);
  assert.equal(await w.hexists('sb:flags', 'direct'), 0);
  await writeFlag(w, { ...off('history'), enabled: true });
  await waitFor(() => store.list().length === MAX_FLAGS, 2000, 'the full hash to be applied');
  assert.equal(store.isEnabled('history', 'u'), true);
});

test('redis: a hash rejected whole on the first read refuses the start; an unreachable Redis does not', async (t) => {
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const w = flagsRedis(redis.url, 'test-writer');
  t.after(() => w.disconnect());
  const off = (name: string) => JSON.stringify({ name, enabled: false });
  await w.hset('sb:flags', Object.fromEntries(longNames(MAX_FLAGS + 1).map((n) => [n, off(n)])));
  const store = new FlagStore();
  const { log } = captureLog();
  await refused(startFlags(store, { config: defaultConfig({ redisUrl: redis.url }), log, redis: true, resyncMs: 0 }), /^flags in Redis \(sb:flags\) rejected \(1001 flags, more than the limit of 1000\); not starting/);
  assert.equal(store.list().length, 0);

  // Within the cap alone, past it with the file's flags: rejected by the store, the same refusal.
  await w.hdel('sb:flags', longNames(MAX_FLAGS + 1)[0]);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'kill-switch: {enabled: false}\n');
  await refused(startFlags(new FlagStore(), { config: defaultConfig({ redisUrl: redis.url, flagsFile: path }), log, redis: true, resyncMs: 0 }), /with the other sources' flags/);

  // Redis down: flags keep their defaults until it is back, as before.
  await redis.stop();
  const down = await startFlags(new FlagStore(), { config: defaultConfig({ redisUrl: redis.url }), log, redis: true, resyncMs: 0 });
  await down.stop();
});

test('shedding: a nonCritical flag is off while the monitor says overloaded and back when it clears', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'history: {nonCritical: true, description: room history reads}\n');
  const monitor = Object.assign(new EventEmitter(), { overloaded: false });
  const store = new FlagStore();
  const srv = await startServer({ flagsFile: path }, { flags: store });
  const flags = await startFlags(store, { config: srv.config, log: captureLog().log, monitor });
  t.after(async () => {
    await flags.stop();
    await srv.close();
  });
  const c = await WireClient.connect(srv.port, 'binary');
  t.after(() => c.socket.destroy());
  await c.hello('u1');
  await c.join('r');
  assert.equal((await c.request({ type: 'history', room: 'r' })).type, 'history');

  monitor.overloaded = true;
  monitor.emit('overloaded');
  const shed = await c.request({ type: 'history', room: 'r' });
  assert.equal(shed.type, 'error');
  assert.equal(shed.code, 'feature_disabled');
  assert.equal(srv.server.statsSnapshot().flags_shed, true);
  assert.deepEqual(flags.store.featureStates(), [['history', false]]);

  monitor.overloaded = false;
  monitor.emit('recovered');
  assert.equal((await c.request({ type: 'history', room: 'r' })).type, 'history');
  assert.deepEqual(flags.store.featureStates(), [['history', true]]);
});

test('redis: `switchboard flags set` reaches two gateways within a second', async (t) => {
  const redis = await RedisProcess.start();
  t.after(() => redis.stop());
  const gateways: { srv: TestServer; flags: FlagService; c: WireClient }[] = [];
  for (let i = 0; i < 2; i++) {
    const store = new FlagStore();
    const srv = await startServer({ redisUrl: redis.url }, { flags: store });
    const flags = await startFlags(store, { config: srv.config, log: captureLog().log, redis: true });
    t.after(async () => {
      await flags.stop();
      await srv.close();
    });
    const c = await WireClient.connect(srv.port);
    t.after(() => c.socket.destroy());
    await c.hello(`user${i}`);
    await c.join('lobby');
    assert.equal((await c.request({ type: 'history', room: 'lobby' })).type, 'history');
    gateways.push({ srv, flags, c });
  }

  const env = { REDIS_URL: redis.url };
  const set = spawnCli(['flags', 'set', 'history', '--enabled', 'false', '--description', 'off for maintenance'], env);
  assert.equal((await set.exited).code, 0, set.stderr.join('\n'));
  const written = Date.now();
  await waitFor(() => gateways.every((g) => !g.srv.server.featureEnabled('history', 'user0')), 1000, 'both gateways to apply the flag', 2);
  const elapsed = Date.now() - written;
  assert.ok(elapsed < 1000, `applied after ${elapsed} ms`);
  for (const g of gateways) assert.equal((await g.c.request({ type: 'history', room: 'lobby' })).code, 'feature_disabled');
  assert.deepEqual(JSON.parse(set.stdout[0]), { name: 'history', rolloutPercent: 100, betaUsers: [], nonCritical: false, description: 'off for maintenance', enabled: false });

  const list = spawnCli(['flags', 'list'], env);
  assert.equal((await list.exited).code, 0);
  assert.equal(JSON.parse(list.stdout[0]).name, 'history');

  // A bad value written behind the CLI's back is rejected; the last good version stays.
  redis.cli('HSET', 'sb:flags', 'history', '{"enabled":"maybe"}');
  redis.cli('PUBLISH', 'sb:flags:changed', 'history');
  const loads = gateways[0].flags.redis!.loads;
  await waitFor(() => gateways[0].flags.redis!.loads > loads, 2000, 'the reload after the bad write');
  assert.equal(gateways[0].srv.server.featureEnabled('history', 'user0'), false);

  const del = spawnCli(['flags', 'delete', 'history'], env);
  assert.equal((await del.exited).code, 0);
  await waitFor(() => gateways.every((g) => g.srv.server.featureEnabled('history', 'user0')), 1000, 'the default (on) after delete');

  // A fraction goes through the CLI and Redis as written, as it does through the file.
  const frac = spawnCli(['flags', 'set', 'history', '--rollout', '12.5'], env);
  assert.equal((await frac.exited).code, 0, frac.stderr.join('\n'));
  await waitFor(() => gateways.every((g) => g.flags.store.get('history')?.rolloutPercent === 12.5), 1000, 'both gateways to apply 12.5%');

  const bad = spawnCli(['flags', 'set', 'history', '--rollout', '250'], env);
  assert.equal((await bad.exited).code, 2);
  assert.match(bad.stderr.join('\n'), /rolloutPercent must be a number 0-100/);
});

test('shedding with the real performance monitor: a throughput breach sheds, a quiet interval restores', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'flags.yaml');
  writeFileSync(path, 'history: {nonCritical: true}\n');
  // The monitor samples only when the test says so (interval far away), one breach enters, one clear interval exits.
  const store = new FlagStore();
  const srv = await startServer({
    flagsFile: path,
    overloadMaxMsgPerSec: 50,
    overloadIntervalMs: 600_000,
    overloadEnterSamples: 1,
    overloadExitSamples: 1,
    overloadP99LatencyMs: 0,
    overloadEventLoopLagMs: 0,
    overloadErrorRatePercent: 0,
  }, { flags: store });
  const flags = await startFlags(store, { config: srv.config, log: captureLog().log, monitor: srv.server.monitor });
  t.after(async () => {
    await flags.stop();
    await srv.close();
  });
  const c = await WireClient.connect(srv.port);
  t.after(() => c.socket.destroy());
  await c.hello('u1');
  await c.join('r');
  srv.server.monitor.sample(); // baseline
  for (let i = 0; i < 200; i++) c.send({ type: 'ping' });
  await c.next((m) => m.type === 'pong' && c.inbox.filter((x) => x.type === 'pong').length >= 199, 3000, '200 pongs');
  srv.server.monitor.sample();
  assert.equal(srv.server.monitor.overloaded, true, 'the throughput breach is an overload');
  assert.equal((await c.request({ type: 'history', room: 'r' })).code, 'feature_disabled');
  await new Promise((r) => setTimeout(r, 300)); // a quiet interval: a handful of messages over 300 ms
  srv.server.monitor.sample();
  assert.equal(srv.server.monitor.overloaded, false);
  assert.equal((await c.request({ type: 'history', room: 'r' })).type, 'history');
});
