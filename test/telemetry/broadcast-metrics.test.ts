// The broadcast role exposes its own registry on its admin port: stream_pending (what the operator
// scales the broadcast tier on), its work counters and the default metrics; promtool accepts it.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { spawnRole, type RoleProcess } from '../cluster/harness';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { helloClient } from '../helpers/wire';
import { httpGet, promtoolCheck, sampleValue } from './tools';

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

test('broadcast /metrics passes promtool and counts routed entries', async () => {
  const redis = await RedisProcess.start();
  stops.push(() => redis.stop());
  const env = { REDIS_URL: redis.url, STREAM_SHARDS: '2' };
  const broadcast: RoleProcess = await spawnRole('broadcast', env);
  stops.push(() => broadcast.kill());
  const gateway: RoleProcess = await spawnRole('gateway', env);
  stops.push(() => gateway.kill());

  const a = await helloClient(gateway.port, 'a');
  stops.push(async () => a.destroy());
  await a.join('bm');
  assert.equal((await a.request({ type: 'send_chat', room: 'bm', data: 1 })).type, 'ok');
  await a.nextOfType('message', 5000);

  const body = await waitFor(async () => {
    const r = await httpGet(broadcast.adminPort, '/metrics');
    return r.status === 200 && (sampleValue(r.body, 'switchboard_broadcast_entries_total') ?? 0) >= 1 ? r.body : undefined;
  }, 5000, 'the routed entry in the broadcast metrics');
  const check = promtoolCheck(body!);
  assert.ok(check.ok, check.output);
  assert.equal(sampleValue(body!, 'switchboard_stream_pending'), 0);
  assert.ok((sampleValue(body!, 'switchboard_broadcast_routed_total') ?? 0) >= 1);
  assert.ok(body!.includes('# TYPE process_cpu_seconds_total counter'));

  // The cluster gateway's registry is the gateway one, also valid.
  const gw = await httpGet(gateway.adminPort, '/metrics');
  assert.ok(promtoolCheck(gw.body).ok);
  assert.ok((sampleValue(gw.body, 'switchboard_messages_delivered_total') ?? 0) >= 1);
});
