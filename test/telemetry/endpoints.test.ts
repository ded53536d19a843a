// /metrics, /stats, /healthz and /readyz on the admin port and on the client port: the exposition
// passes promtool, /stats has the origin's fields, readiness goes false while draining.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { FlagStore } from '../../services/control';
import { startServer, type TestServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { helloClient } from '../helpers/wire';
import { ChatLoad, getJson, httpGet, promtoolCheck, sampleValue } from './tools';

const ORIGIN_STATS_FIELDS = ['msg_per_sec', 'latency_p99', 'memory_mb', 'connections', 'error_rate'];

describe('metrics and stats endpoints', () => {
  let srv: TestServer;
  let admin: number;
  let load: ChatLoad;

  before(async () => {
    // /metrics is served on the client port only with METRICS_ON_CLIENT_PORT (the default, admin
    // port only, is tested in test/attack/http.test.ts).
    // Flags as a source would set them: one reaching users, one switched off.
    const flags = new FlagStore();
    flags.setSource('test', [
      { name: 'history', enabled: true, rolloutPercent: 100, betaUsers: [], nonCritical: false, description: '' },
      { name: 'voice', enabled: false, rolloutPercent: 100, betaUsers: [], nonCritical: false, description: '' },
    ]);
    srv = await startServer({ adminPort: 0, metricsOnClientPort: true }, { flags });
    admin = srv.server.addresses().adminPort!;
    load = await ChatLoad.start(srv.port, 'metrics-room', 3);
    // Something in every labelled family: a bad frame for errors_total.
    const bad = await helloClient(srv.port, 'bad-json');
    bad.writeRaw('{not json\n');
    await bad.nextOfType('error');
    bad.destroy();
    await waitFor(() => srv.server.counters.delivered > 100, 5000, 'some deliveries');
  });

  after(async () => {
    load?.stop();
    await srv?.close();
  });

  test('the exposition on the admin port passes promtool check metrics', async () => {
    const r = await httpGet(admin, '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.type, /^text\/plain; version=0\.0\.4/);
    const check = promtoolCheck(r.body);
    assert.ok(check.ok, `promtool check metrics failed:\n${check.output}`);
  });

  test('every documented metric is there, with the default process and Node.js metrics', async () => {
    const { body } = await httpGet(admin, '/metrics');
    const families = new Set([...body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`));
    for (const f of [
      'switchboard_connections gauge',
      'switchboard_connections_opened_total counter',
      'switchboard_messages_received_total counter',
      'switchboard_messages_delivered_total counter',
      'switchboard_delivery_latency_seconds histogram',
      'switchboard_errors_total counter',
      'switchboard_dropped_total counter',
      'switchboard_bytes_received_total counter',
      'switchboard_bytes_sent_total counter',
      'switchboard_stream_pending gauge',
      'switchboard_event_loop_lag_seconds gauge',
      'switchboard_overloaded gauge',
      'switchboard_feature_enabled gauge',
      'process_cpu_seconds_total counter',
      'process_resident_memory_bytes gauge',
      'nodejs_heap_size_used_bytes gauge',
    ]) {
      assert.ok(families.has(f), `missing family ${f}`);
    }
    assert.ok((sampleValue(body, 'switchboard_messages_received_total{type="send_chat"}') ?? 0) > 0);
    assert.ok((sampleValue(body, 'switchboard_messages_delivered_total') ?? 0) > 100);
    assert.equal(sampleValue(body, 'switchboard_errors_total{code="bad_json"}'), 1);
    assert.equal(sampleValue(body, 'switchboard_connections'), srv.server.counters.connections);
    assert.equal(sampleValue(body, 'switchboard_overloaded'), 0);
    assert.equal(sampleValue(body, 'switchboard_feature_enabled{flag="history"}'), 1);
    assert.equal(sampleValue(body, 'switchboard_feature_enabled{flag="voice"}'), 0);
    // The histogram uses the hot-path bounds and its +Inf bucket equals its count.
    assert.ok(body.includes('switchboard_delivery_latency_seconds_bucket{le="0.0001"}'));
    const inf = sampleValue(body, 'switchboard_delivery_latency_seconds_bucket{le="+Inf"}');
    assert.ok(inf !== undefined && inf > 0);
    assert.equal(sampleValue(body, 'switchboard_delivery_latency_seconds_count'), inf);
  });

  test('counters only grow between scrapes and follow the hot-path counters', async () => {
    const first = sampleValue((await httpGet(admin, '/metrics')).body, 'switchboard_messages_delivered_total')!;
    await waitFor(() => srv.server.counters.delivered > first + 50, 5000, 'more deliveries');
    const second = sampleValue((await httpGet(admin, '/metrics')).body, 'switchboard_messages_delivered_total')!;
    assert.ok(second > first);
    assert.ok(second <= srv.server.counters.delivered);
  });

  test('/metrics and /stats are also served on the client port (HTTP sniffing)', async () => {
    const m = await httpGet(srv.port, '/metrics');
    assert.equal(m.status, 200);
    assert.ok(promtoolCheck(m.body).ok);
    const s = await getJson(srv.port, '/stats');
    for (const f of ORIGIN_STATS_FIELDS) assert.equal(typeof s[f], 'number', `/stats.${f}`);
  });

  test('/stats has the origin fields, plausible, plus the overload state', async () => {
    await waitFor(async () => ((await getJson(admin, '/stats')).msg_per_sec as number) > 0, 5000, 'a non-zero msg_per_sec');
    const s = await getJson(admin, '/stats');
    for (const f of ORIGIN_STATS_FIELDS) assert.equal(typeof s[f], 'number', `/stats.${f}`);
    assert.ok((s.memory_mb as number) > 10 && (s.memory_mb as number) < 4096, `memory_mb ${String(s.memory_mb)}`);
    assert.ok((s.connections as number) >= 2);
    assert.ok((s.latency_p99 as number) >= 0 && (s.latency_p99 as number) < 1000, `latency_p99 ${String(s.latency_p99)} ms`);
    assert.ok((s.error_rate as number) >= 0 && (s.error_rate as number) <= 1);
    assert.equal(s.overloaded, false);
    assert.deepEqual(s.overload_reasons, []);
    assert.equal(typeof s.event_loop_lag_ms, 'number');
  });

  test('/healthz and /readyz answer as Kubernetes probes expect', async () => {
    const h = await httpGet(admin, '/healthz');
    assert.equal(h.status, 200);
    const r = await httpGet(admin, '/readyz');
    assert.equal(r.status, 200, r.body);
    assert.equal((JSON.parse(r.body) as { status: string }).status, 'ready');
  });
});

describe('readiness while draining', () => {
  test('/readyz is 503 with reason draining while connections drain, /healthz stays 200', async (t) => {
    const srv = await startServer({ adminPort: 0 });
    t.after(() => srv.close());
    const admin = srv.server.addresses().adminPort!;
    // A client that keeps its side open after the server's reconnect push holds the drain open.
    const sock: Socket = connect({ host: '127.0.0.1', port: srv.port, allowHalfOpen: true });
    t.after(() => sock.destroy());
    let got = '';
    sock.on('data', (d: Buffer) => (got += d.toString('utf8')));
    sock.write('{"type":"hello","user":"lingerer","id":1}\n');
    await waitFor(() => got.includes('welcome'), 3000, 'welcome');
    assert.equal((await httpGet(admin, '/readyz')).status, 200);

    const shutdown = srv.server.shutdown(10_000);
    const r = (await waitFor(async () => {
      const res = await httpGet(admin, '/readyz');
      return res.status === 503 ? res : undefined;
    }, 3000, '/readyz to turn 503'))!;
    assert.ok((JSON.parse(r.body) as { reasons: string[] }).reasons.includes('draining'), r.body);
    assert.equal((await httpGet(admin, '/healthz')).status, 200);
    await waitFor(() => got.includes('"reconnect"'), 3000, 'the reconnect push');
    sock.destroy();
    await shutdown;
  });
});
