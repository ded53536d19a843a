// Overload over and back: a deliberately low throughput threshold under a real chat load makes
// the gateway overloaded (metric, /stats, event, readiness, new hellos refused with `overloaded`),
// and stopping the load brings everything back.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { OverloadEvent } from '../../services/telemetry';
import { startServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { helloClient, WireClient } from '../helpers/wire';
import { ChatLoad, getJson, httpGet, sampleValue } from './tools';

test('overload is entered under load past a low threshold and left when the load stops', async (t) => {
  const srv = await startServer({
    adminPort: 0,
    overloadMaxMsgPerSec: 100,
    overloadIntervalMs: 200,
    overloadEnterSamples: 2,
    overloadExitSamples: 2,
    overloadConnectionMargin: 0,
    // Only the throughput check is under test: the others depend on the machine.
    overloadP99LatencyMs: 0,
    overloadEventLoopLagMs: 0,
    overloadMemoryPercent: 0,
    overloadErrorRatePercent: 0,
  });
  t.after(() => srv.close());
  const admin = srv.server.addresses().adminPort!;
  const events: [string, OverloadEvent][] = [];
  srv.server.monitor.on('overloaded', (e) => events.push(['overloaded', e]));
  srv.server.monitor.on('recovered', (e) => events.push(['recovered', e]));

  const existing = await helloClient(srv.port, 'already-here');
  t.after(() => existing.destroy());
  await existing.join('calm');
  const metric = async () => sampleValue((await httpGet(admin, '/metrics')).body, 'switchboard_overloaded');
  assert.equal(await metric(), 0);

  // ~400 msg/s against a 100 msg/s threshold.
  const load = await ChatLoad.start(srv.port, 'busy', 4);
  t.after(() => load.stop());

  await waitFor(() => srv.server.monitor.overloaded, 10_000, 'the overloaded transition', 20);
  assert.equal(events.length, 1);
  assert.equal(events[0][0], 'overloaded');
  assert.ok(events[0][1].reasons.some((r) => r.startsWith('throughput')), events[0][1].reasons.join());
  assert.equal(await metric(), 1);
  const stats = await getJson(admin, '/stats');
  assert.equal(stats.overloaded, true);
  assert.ok((stats.overload_reasons as string[]).length > 0);
  const ready = await httpGet(admin, '/readyz');
  assert.equal(ready.status, 503);
  assert.match(ready.body, /overloaded/);

  // A new session beyond the margin (0) is refused, with a reconnect push, and closed.
  const refused = await WireClient.connect(srv.port);
  t.after(() => refused.destroy());
  const reply = await refused.request({ type: 'hello', user: 'newcomer' });
  assert.equal(reply.type, 'error');
  assert.equal(reply.code, 'overloaded');
  const push = await refused.nextOfType('reconnect');
  assert.equal(push.reason, 'overloaded');
  assert.equal(push.reconnect, true);
  await refused.waitClosed();
  // Sessions that were already there keep working.
  assert.equal((await existing.request({ type: 'send_chat', room: 'calm', data: 'still here' })).type, 'ok');

  load.pause();
  await waitFor(() => !srv.server.monitor.overloaded, 10_000, 'the recovered transition', 20);
  assert.deepEqual(
    events.map((e) => e[0]),
    ['overloaded', 'recovered'],
  );
  assert.equal(await metric(), 0);
  const after = await getJson(admin, '/stats');
  assert.equal(after.overloaded, false);
  assert.deepEqual(after.overload_reasons, []);
  assert.equal((await httpGet(admin, '/readyz')).status, 200);
  const welcome = await helloClient(srv.port, 'newcomer');
  t.after(() => welcome.destroy());
  assert.equal(srv.server.counters.errors.overloaded, 1);
});
