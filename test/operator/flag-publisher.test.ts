// The flag publisher's Redis connections, against real redis-servers (never port 6379): one per
// Switchboard, closed when its URL changes (a rotated password, another Redis) or the
// Switchboard is gone. It used to keep one per URL forever, each reconnecting with whatever
// credentials it was made with for as long as the operator ran.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Kube } from '../../operator/kube/client';
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
