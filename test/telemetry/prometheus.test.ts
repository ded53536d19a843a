// A real Prometheus (the Debian package's /usr/bin/prometheus) scrapes a gateway under a little
// load every second; the queries dashboards and the operator use come back non-empty and plausible.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PrometheusProcess } from '../helpers/prometheus';
import { startServer, type TestServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { ChatLoad } from './tools';

describe('a real Prometheus scraping a gateway', () => {
  let srv: TestServer;
  let prom: PrometheusProcess;
  let load: ChatLoad;

  before(async () => {
    srv = await startServer({ adminPort: 0 });
    load = await ChatLoad.start(srv.port, 'prom-room', 2); // ~200 msg/s in, ~400 deliveries/s
    prom = await PrometheusProcess.start({ targets: [{ address: `127.0.0.1:${srv.server.addresses().adminPort}` }] });
  });

  after(async () => {
    load?.stop();
    await prom?.stop();
    await srv?.close();
  });

  test('the target is up', async () => {
    const up = await waitFor(async () => {
      const r = await prom.query('up{job="switchboard"}');
      return r.length > 0 && r[0].value === 1 ? r : undefined;
    }, 15_000, 'up == 1', 200);
    assert.equal(up.length, 1);
  });

  test('rate(switchboard_messages_delivered_total) is non-empty and plausible', async (t) => {
    const r = await waitFor(async () => {
      const v = await prom.query('rate(switchboard_messages_delivered_total[5s])');
      return v.length > 0 && v[0].value > 0 ? v : undefined;
    }, 20_000, 'a non-zero delivery rate', 250);
    const rate = r[0].value;
    t.diagnostic(`delivery rate ${rate.toFixed(1)}/s`);
    // The load sends ~200 msg/s to a room of two: ~400 deliveries/s; a slow CI box does less.
    assert.ok(rate > 20 && rate < 5000, `delivery rate ${rate}/s`);
    const received = await prom.query('sum(rate(switchboard_messages_received_total{type="send_chat"}[5s]))');
    assert.ok(received.length === 1 && received[0].value > 10, JSON.stringify(received));
  });

  test('the p99 from the latency histogram is non-empty and plausible', async (t) => {
    const r = await waitFor(async () => {
      const v = await prom.query('histogram_quantile(0.99, sum by (le) (rate(switchboard_delivery_latency_seconds_bucket[5s])))');
      return v.length > 0 && Number.isFinite(v[0].value) ? v : undefined;
    }, 20_000, 'a finite p99', 250);
    const p99 = r[0].value;
    t.diagnostic(`p99 delivery latency ${(p99 * 1000).toFixed(3)} ms`);
    assert.ok(p99 > 0 && p99 < 1, `p99 ${p99}s`);
  });

  test('the default process metrics are scraped too', async () => {
    const r = await prom.query('process_resident_memory_bytes{job="switchboard"}');
    assert.equal(r.length, 1);
    assert.ok(r[0].value > 10 * 1024 * 1024);
  });
});

describe('the test Prometheus itself: labelled targets, setTargets, restart', () => {
  let a: TestServer;
  let b: TestServer;
  let prom: PrometheusProcess;
  const target = (srv: TestServer, pod: string) => ({ address: `127.0.0.1:${srv.server.addresses().adminPort}`, labels: { namespace: 'prom-test', pod } });
  const upPods = async () => (await prom.query('up{namespace="prom-test"} == 1')).map((s) => s.metric.pod).sort();

  before(async () => {
    a = await startServer({ adminPort: 0 });
    b = await startServer({ adminPort: 0 });
    prom = await PrometheusProcess.start({ targets: [target(a, 'gw-a')], scrapeIntervalMs: 500 });
  });

  after(async () => {
    await prom?.stop();
    await a?.close();
    await b?.close();
  });

  test('each target carries its own labels; setTargets adds one without a restart', async () => {
    assert.match(prom.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    await waitFor(async () => (await upPods()).join() === 'gw-a', 15_000, 'gw-a up', 200);
    await prom.setTargets([target(a, 'gw-a'), target(b, 'gw-b')]);
    await waitFor(async () => (await upPods()).join() === 'gw-a,gw-b', 15_000, 'gw-a and gw-b up', 200);
  });

  test('a bad query throws with the API error', async () => {
    await assert.rejects(prom.query('rate(('), /bad_data/);
  });

  test('restart: same port, the data kept, scraping resumes', async () => {
    const port = prom.port;
    await prom.stop();
    await assert.rejects(fetch(`${prom.url}/-/ready`));
    const restartedAt = Date.now() / 1000;
    await prom.restart();
    assert.equal(prom.port, port);
    // Samples from before the stop are still there (same data directory).
    const kept = await prom.query('count_over_time(up{pod="gw-a"}[1h])');
    assert.ok(kept.length === 1 && kept[0].value >= 1, JSON.stringify(kept));
    // And both targets are scraped again (Prometheus applies targets ~5 s after a start or reload).
    await waitFor(
      async () => (await prom.query(`timestamp(up{namespace="prom-test"}) > ${restartedAt}`)).length === 2,
      15_000,
      'fresh scrapes of both targets after the restart',
      200,
    );
  });
});
