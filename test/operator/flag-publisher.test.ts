// The flag publisher's Redis connections, against real redis-servers (never port 6379): one per
// Switchboard, closed when its URL changes (a rotated password, another Redis) or the
// Switchboard is gone. It used to keep one per URL forever, each reconnecting with whatever
// credentials it was made with for as long as the operator ran.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { NotLeaderError, type Kube } from '../../operator/kube/client';
import { FlagPublisher } from '../../operator/flag-publisher';
import type { FeatureFlag as ServerFlag } from '../../services/control';
import { silentLogger } from '../../services/telemetry/log';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { sbFixture } from './fixtures';

let a: RedisProcess;
let b: RedisProcess;
before(async () => {
  [a, b] = await Promise.all([RedisProcess.start(), RedisProcess.start()]);
});
after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

const flag = (name: string): ServerFlag => ({ name, enabled: true, rolloutPercent: 100, betaUsers: [], nonCritical: false, description: '' });

/** The ids of the publisher's connections to a Redis (CLIENT LIST, by connection name). */
function operatorClients(r: RedisProcess): string[] {
  return r.cli('client', 'list').split('\n').filter((l) => /\bname=switchboard-operator\b/.test(l)).map((l) => /\bid=(\d+)/.exec(l)![1]);
}

/** Secrets by name, as the API server would return them; the test changes them. */
function fakeKube(secrets: Map<string, string>): Pick<Kube, 'core'> {
  const core = {
    readNamespacedSecret: async ({ name }: { name: string }) => ({ data: { url: Buffer.from(secrets.get(name) ?? '').toString('base64') } }),
  };
  return { core } as unknown as Pick<Kube, 'core'>;
}

async function settled(r: RedisProcess, n: number, what: string): Promise<string[]> {
  let ids: string[] = [];
  await waitFor(() => (ids = operatorClients(r)).length === n, 5000, `${what}: ${n} operator connection(s) to redis :${r.port}`, 20);
  return ids;
}

test('a changed Redis URL closes the old connection: a rotated password, another Redis', async (t) => {
  const secrets = new Map<string, string>();
  const pub = new FlagPublisher(fakeKube(secrets), silentLogger);
  t.after(() => pub.close());

  // Another Redis: spec.redis.url changed.
  await pub.write(sbFixture('chat', 'ns', { redis: { url: a.url } }), flag('one'));
  assert.ok(a.cli('hget', 'sb:flags', 'one'));
  await settled(a, 1, 'published to a');
  await pub.write(sbFixture('chat', 'ns', { redis: { url: b.url } }), flag('two'));
  assert.ok(b.cli('hget', 'sb:flags', 'two'));
  await settled(a, 0, 'the connection to the old URL closed');
  await settled(b, 1, 'one connection to the new URL');

  // A rotated password in the Secret: both are valid for a moment, the old one must not stay in use.
  a.cli('acl', 'setuser', 'flags', 'on', '>old-pw', '>new-pw', '~*', '&*', '+@all');
  const url = (pw: string) => `redis://flags:${pw}@127.0.0.1:${a.port}`;
  const viaSecret = sbFixture('vault', 'ns', { redis: { url: undefined, secretRef: { name: 'vault-redis', key: 'url' } } });
  secrets.set('vault-redis', url('old-pw'));
  await pub.write(viaSecret, flag('three'));
  const [before] = await settled(a, 1, 'connected with the old password');
  secrets.set('vault-redis', url('new-pw'));
  await pub.write(viaSecret, flag('four'));
  const [now] = await settled(a, 1, 'only the connection with the new password');
  assert.notEqual(now, before, 'a new connection, the old one closed');
  assert.deepEqual(pub.connected, ['ns/chat', 'ns/vault']);
  a.cli('acl', 'deluser', 'flags');
});

test('a deleted Switchboard\'s connection is closed; Switchboards sharing a Redis have one each', async (t) => {
  const pub = new FlagPublisher(fakeKube(new Map()), silentLogger);
  t.after(() => pub.close());
  for (const name of ['chat', 'news', 'games']) await pub.write(sbFixture(name, 'ns', { redis: { url: b.url } }), flag(name));
  await settled(b, 3, 'one per Switchboard');

  pub.forget({ namespace: 'ns', name: 'chat' });
  await settled(b, 2, 'chat deleted');
  assert.deepEqual(pub.connected, ['ns/games', 'ns/news']);
  pub.forget({ namespace: 'ns', name: 'chat' }); // twice: nothing to do

  // The resync's backstop: only Switchboards that exist keep theirs.
  pub.retain([{ namespace: 'ns', name: 'news' }, { namespace: 'other', name: 'games' }]);
  await settled(b, 1, 'games gone');
  assert.deepEqual(pub.connected, ['ns/news']);

  // Publishing again after a delete connects again, as the first time.
  await pub.write(sbFixture('chat', 'ns', { redis: { url: b.url } }), flag('back'));
  await settled(b, 2, 'chat published again');
  await pub.close();
  await settled(b, 0, 'close() closes all');
});

test('a new flag past MAX_FLAGS is refused: the gateways would reject the whole hash', async (t) => {
  const pub = new FlagPublisher(fakeKube(new Map()), silentLogger);
  t.after(() => pub.close());
  t.after(() => a.cli('del', 'sb:flags'));
  const sb = sbFixture('full', 'ns', { redis: { url: a.url } });
  a.cli('del', 'sb:flags');
  for (let i = 0; i < 1000; i += 250) {
    const args: string[] = [];
    for (let j = i; j < i + 250; j++) args.push(`f${j}`, JSON.stringify(flag(`f${j}`)));
    a.cli('hset', 'sb:flags', ...args);
  }
  await assert.rejects(pub.write(sb, flag('one-too-many')), /holds 1000 flags, the limit is 1000/);
  assert.equal(a.cli('hexists', 'sb:flags', 'one-too-many').trim(), '0');
  await pub.write(sb, { ...flag('f7'), enabled: false }); // one it holds can still change
  assert.equal(JSON.parse(a.cli('hget', 'sb:flags', 'f7')).enabled, false);
});

/**
 * Run `during` whenever a connection sends `command` (patched on ioredis' prototype for the
 * test): a stand-in for a leader paused between its first leadership check and the MULTI.
 */
function onCommand(t: { after(fn: () => void): void }, command: 'hexists' | 'ping', during: () => void): void {
  const proto = Redis.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
  const had = Object.hasOwn(proto, command);
  const original = proto[command];
  proto[command] = function (this: unknown, ...args: unknown[]) {
    during();
    return original.apply(this, args);
  };
  t.after(() => {
    if (had) proto[command] = original;
    else delete proto[command];
  });
}

test('leadership lost during the reads before a publish: nothing is written', async (t) => {
  let leading = true;
  const pub = new FlagPublisher(fakeKube(new Map()), silentLogger, () => leading);
  t.after(() => pub.close());
  t.after(() => a.cli('del', 'sb:flags'));
  a.cli('del', 'sb:flags');
  const sb = sbFixture('paused', 'ns', { redis: { url: a.url } });
  await pub.write(sb, { ...flag('kill'), enabled: false });
  const before = a.cli('hgetall', 'sb:flags');

  // The gate said yes before writeFlag; the Lease is lost while its HEXISTS is in flight.
  onCommand(t, 'hexists', () => (leading = false));
  await assert.rejects(pub.write(sb, flag('kill')), NotLeaderError);
  await assert.rejects(pub.write(sb, flag('new-one')), NotLeaderError);
  assert.equal(a.cli('hgetall', 'sb:flags'), before, 'the hash is unchanged');
  assert.equal(JSON.parse(a.cli('hget', 'sb:flags', 'kill')).enabled, false);
});

test('leadership lost while a new connection gets ready before an unpublish: nothing is deleted', async (t) => {
  let leading = true;
  const pub = new FlagPublisher(fakeKube(new Map()), silentLogger, () => leading);
  t.after(() => pub.close());
  t.after(() => a.cli('del', 'sb:flags'));
  a.cli('hset', 'sb:flags', 'kill', JSON.stringify({ ...flag('kill'), enabled: false }));
  // A Switchboard the publisher has no connection for: deleteFlag has no reads, and the client
  // it gets is still connecting; the gate must be asked once it is ready, not when the commands
  // are queued.
  onCommand(t, 'ping', () => (leading = false));
  await assert.rejects(pub.remove(sbFixture('fresh', 'ns', { redis: { url: a.url } }), 'kill'), NotLeaderError);
  await new Promise((r) => setTimeout(r, 100)); // anything queued would have gone out by now
  assert.equal(JSON.parse(a.cli('hget', 'sb:flags', 'kill')).enabled, false, 'still there');

  leading = true;
  await pub.remove(sbFixture('fresh', 'ns', { redis: { url: a.url } }), 'kill');
  assert.equal(a.cli('hexists', 'sb:flags', 'kill').trim(), '0', 'a leader still unpublishes');
});
