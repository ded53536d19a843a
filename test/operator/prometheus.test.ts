// Credentials in a Prometheus URL never reach a message: fetch refuses such a URL and its error
// quotes the URL whole, and that message becomes the MetricsUnavailable condition, a Warning
// Event and a log line. No Prometheus needed: the request fails before it is sent.
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test, type TestContext } from 'node:test';
import { OperatorMetrics } from '../../operator/metrics';
import { parseDuration } from '../../operator/api/types';
import { MAX_ANSWER_BYTES, MetricsError, parseSampleValue, PrometheusClient, redactCredentials } from '../../operator/prometheus';
import { loopInterval, MetricsScaleHandler } from '../../operator/scaling/handler';
import { silentLogger } from '../../services/telemetry/log';
import { waitFor } from '../helpers/wait';
import { EventLog, ManualTimers, sbFixture } from './fixtures';

test('redactCredentials masks the userinfo of every URL in a text, and nothing else', () => {
  const cases: Array<[string, string]> = [
    ['http://user:pass@prom:9090', 'http://<redacted>@prom:9090'],
    ['at https://token@prom/api/v1/query?query=up: refused', 'at https://<redacted>@prom/api/v1/query?query=up: refused'],
    ['http://user:p@ss@prom:9090/', 'http://<redacted>@prom:9090/'],
    ['HTTP://u:p@prom and http://v:q@other', 'HTTP://<redacted>@prom and http://<redacted>@other'],
    ['http://prom:9090/prom@eu?a=b@c', 'http://prom:9090/prom@eu?a=b@c'],
    ['http://prom:9090', 'http://prom:9090'],
    ['no url, alice@example.com', 'no url, alice@example.com'],
  ];
  for (const [text, want] of cases) assert.equal(redactCredentials(text), want, text);
});

test('a Prometheus URL with credentials fails without quoting them, in the error and its cause', async () => {
  const client = new PrometheusClient('http://scraper:s3cret-pw@127.0.0.1:9/');
  const err = await client.scalar('up').then(() => assert.fail('fetch accepted a URL with credentials'), (e: unknown) => e);
  assert.ok(err instanceof MetricsError);
  assert.match(err.message, /^prometheus unreachable at http:\/\/<redacted>@127\.0\.0\.1:9\/: /);
  for (const text of [err.message, String((err.cause as Error | undefined)?.message), JSON.stringify(err, Object.getOwnPropertyNames(err))]) {
    assert.doesNotMatch(text, /s3cret-pw|scraper/, text);
  }
});

test('the MetricsUnavailable message and Event of such a Switchboard hold no credentials', async () => {
  const events = new EventLog();
  const h = new MetricsScaleHandler({
    log: silentLogger, events, metrics: new OperatorMetrics(),
    onUpdate: () => undefined, onOverloadChange: () => undefined, every: new ManualTimers().every,
  });
  h.handle(sbFixture('chat', 'ns', { prometheus: { url: 'http://scraper:s3cret-pw@127.0.0.1:9' } }), {});
  await h.poll({ namespace: 'ns', name: 'chat' });
  const state = h.state({ namespace: 'ns', name: 'chat' })!;
  h.stopAll();
  assert.equal(state.metrics, 'unavailable');
  assert.match(state.metricsMessage, /http:\/\/<redacted>@127\.0\.0\.1:9/);
  assert.deepEqual(events.reasons(), ['Warning MetricsUnavailable']);
  for (const text of [state.metricsMessage, events.events[0].message]) assert.doesNotMatch(text, /s3cret-pw|scraper/, text);
});

/**
 * A misbehaving Prometheus: an HTTP server answering every query with `answer(query)`. A real
 * Prometheus does not send these; a broken proxy in front of one, or a hostile endpoint, can.
 */
async function hostilePrometheus(t: TestContext, answer: (query: string, res: ServerResponse) => void): Promise<PrometheusClient> {
  const server = createServer((req, res) => answer(new URL(req.url ?? '/', 'http://x').searchParams.get('query') ?? '', res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return new PrometheusClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 5000);
}

const vector = (v: string) => JSON.stringify({ status: 'success', data: { resultType: 'vector', result: [{ metric: {}, value: [0, v] }] } });

test('redactCredentials takes linear time on a long run of letters (it was quadratic: 20 s for 150 kB)', () => {
  const started = Date.now();
  assert.equal(redactCredentials('E'.repeat(200_000)), 'E'.repeat(200_000));
  assert.ok(Date.now() - started < 2000, `${Date.now() - started} ms`);
});

test('a hostile Prometheus: long errors are cut, HTTP errors and huge answers are errors, values that are not numbers are not data', async (t) => {
  // An error of 150 kB held the event loop (the redaction) and then made every status write fail
  // (a condition message takes 32 kB); a 100 MB answer was read whole, eight at a time; a 500 with
  // a success body was taken as data; 1e20 connections made every status write fail.
  const long = await hostilePrometheus(t, (_q, res) => res.end(JSON.stringify({ status: 'error', error: 'E'.repeat(150_000) })));
  const e1 = await long.scalar('up').catch((e: unknown) => e);
  assert.ok(e1 instanceof MetricsError && e1.message.length < 700, `message of ${(e1 as Error).message.length} characters`);

  const http500 = await hostilePrometheus(t, (_q, res) => {
    res.statusCode = 500;
    res.end(vector('1'));
  });
  assert.match(String(await http500.scalar('up').catch((e: Error) => e.message)), /^prometheus answered 500/);

  let written = 0;
  const huge = await hostilePrometheus(t, (_q, res) => {
    // 64 MB streamed without a length: the client stops reading past its bound.
    const chunk = Buffer.alloc(1 << 20, 0x20);
    const more = (): void => {
      while (written < 64 && res.write(chunk)) written++;
      if (written < 64) res.once('drain', more);
      else res.end();
    };
    more();
  });
  assert.match(String(await huge.scalar('up').catch((e: Error) => e.message)), /with more than 4194304 bytes/);
  assert.ok(written < 64, `the whole answer was read (${written} MB written)`);

  const sel = { namespace: 'ns', name: 'sb' };
  const spec = { prometheus: { url: 'unused' } } as Parameters<PrometheusClient['clusterMetrics']>[1];
  const big = await hostilePrometheus(t, (q, res) => res.end(vector(q.includes('switchboard_connections') ? '1e20' : '1')));
  assert.match(String(await big.clusterMetrics(sel, spec).catch((e: Error) => e.message)), /connections = 100000000000000000000, not a usable number/);
  const nan = await hostilePrometheus(t, (q, res) => res.end(vector(q.includes('messages_delivered') ? 'NaN' : q.includes('histogram_quantile') ? 'NaN' : '1')));
  assert.match(String(await nan.clusterMetrics(sel, spec).catch((e: Error) => e.message)), /deliveredPerSecond = NaN/);
  const quiet = await hostilePrometheus(t, (q, res) => res.end(vector(q.includes('histogram_quantile') ? 'NaN' : '1')));
  assert.equal((await quiet.clusterMetrics(sel, spec))?.p99LatencyMs, 0, 'a p99 of no traffic is 0');
});

test('a failed query ends its round: the other requests are closed when clusterMetrics returns, and the next round starts after', { timeout: 15_000 }, async (t) => {
  // count(up) fails at once; the seven others answer slowly. The round used to end at the first
  // failure while the others went on downloading (4 MiB each, up to the 5 s timeout), and with an
  // interval of "0s" a new round started every 100 ms beside them: +586 MiB in 15 s.
  let open = 0;
  let most = 0;
  const client = await hostilePrometheus(t, (q, res) => {
    open++;
    most = Math.max(most, open);
    res.on('close', () => open--);
    if (q.startsWith('count(up{') && q.includes('gateway')) {
      res.statusCode = 500;
      res.end('{}');
      return;
    }
    res.writeHead(200);
    const timer = setInterval(() => res.write(Buffer.alloc(64 * 1024, 0x20)), 20);
    res.on('close', () => clearInterval(timer));
  });
  const sel = { namespace: 'ns', name: 'sb' };
  const spec = { prometheus: { url: 'unused', interval: '0s', rateWindow: '1m' } };
  for (let round = 0; round < 3; round++) {
    const started = Date.now();
    await assert.rejects(client.clusterMetrics(sel, spec), /prometheus answered 500/);
    assert.ok(Date.now() - started < 2000, `round ${round} took ${Date.now() - started} ms`);
    await waitFor(() => open === 0, 1000, `round ${round}: every request of the round closed (${open} open)`);
  }
  assert.ok(most <= 8, `${most} requests open at once: rounds overlapped`);
  assert.equal(loopInterval(parseDuration('0s')), 1000, 'an interval of "0s" runs a round a second, not every 100 ms');
});

test('one round reads at most MAX_ANSWER_BYTES from Prometheus, all answers together', { timeout: 15_000 }, async (t) => {
  // Eight answers of 1 MiB each (blanks, then a valid vector), each under the per-answer cap.
  let written = 0;
  const client = await hostilePrometheus(t, (_q, res) => {
    res.writeHead(200);
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let n = 0;
    const more = (): void => {
      while (n < 16) {
        n++;
        written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', more);
      }
      res.end(vector('1'));
    };
    more();
  });
  const sel = { namespace: 'ns', name: 'sb' };
  await assert.rejects(client.clusterMetrics(sel, { prometheus: { url: 'unused', interval: '1s', rateWindow: '1m' } }), (err: unknown) => {
    assert.ok(err instanceof MetricsError);
    assert.match(err.message, new RegExp(`more than ${MAX_ANSWER_BYTES} bytes to one round`));
    return true;
  });
});

test('only numbers in Prometheus\' syntax are data: junk, negatives and fractions of pods are missing data', { timeout: 15_000 }, async (t) => {
  // Number() read "" / null / [] as 0, true as 1, "0x7fffffff" as 2147483647; -1e15 msg/s and
  // 0.001 gateway pods were taken as they came.
  assert.deepEqual(['0', '12', '-0', '1.5', '.5', '5.', '1e3', '2.5E-3', '+7', 'NaN'].map(parseSampleValue), [0, 12, -0, 1.5, 0.5, 5, 1000, 0.0025, 7, NaN]);
  assert.equal(parseSampleValue('+Inf'), Infinity);
  assert.equal(parseSampleValue('-Inf'), -Infinity);
  for (const junk of ['', ' 1', '1 ', '0x7fffffff', '0b1', '1_000', 'Infinity', 'inf', 'nan', '1e', 'e3', '--1', null, true, [], {}, 5, undefined]) {
    assert.throws(() => parseSampleValue(junk), MetricsError, JSON.stringify(junk));
  }

  const sel = { namespace: 'ns', name: 'sb' };
  const spec = { prometheus: { url: 'unused', interval: '1s', rateWindow: '1m' } };
  const answering = async (value: (q: string) => unknown) =>
    hostilePrometheus(t, (q, res) => res.end(JSON.stringify({ status: 'success', data: { resultType: 'vector', result: [{ metric: {}, value: [0, value(q)] }] } })));
  const isPods = (q: string) => q.startsWith('count(up{');
  const cases: Array<[string, (q: string) => unknown, RegExp]> = [
    ['"" connections', (q) => (isPods(q) ? '2' : q.includes('switchboard_connections') ? '' : '1'), /gave "", not a number/],
    ['null values', (q) => (isPods(q) ? '2' : null), /gave null, not a number/],
    ['[] values', (q) => (isPods(q) ? '2' : []), /gave \[\], not a number/],
    ['true values', (q) => (isPods(q) ? '2' : true), /gave true, not a number/],
    ['hex values', (q) => (isPods(q) ? '2' : '0x7fffffff'), /gave "0x7fffffff", not a number/],
    ['a number, not a string', (q) => (isPods(q) ? '2' : 3), /gave 3, not a number/],
    ['negative rates', (q) => (isPods(q) ? '2' : '-1e15'), /= -1000000000000000, below zero/],
    ['negative pods', (q) => (isPods(q) ? '-5' : '1000000'), /gatewayPods = -5, below zero/],
    ['a fraction of a pod', (q) => (isPods(q) ? '0.001' : '10'), /gatewayPods = 0\.001, not a whole number of pods/],
    ['+Inf', (q) => (isPods(q) ? '2' : '+Inf'), /= Infinity, not a usable number/],
  ];
  for (const [name, value, want] of cases) {
    const client = await answering(value);
    await assert.rejects(client.clusterMetrics(sel, spec), (err: unknown) => {
      assert.ok(err instanceof MetricsError, `${name}: ${String(err)}`);
      assert.match(err.message, want, name);
      return true;
    });
  }
  const good = await answering((q) => (isPods(q) ? '3' : q.includes('histogram_quantile') ? 'NaN' : '1.5e2'));
  assert.deepEqual(await good.clusterMetrics(sel, spec), {
    gatewayPods: 3, broadcastPods: 3, deliveredPerSecond: 150, receivedPerSecond: 150, connections: 150, p99LatencyMs: 0, memoryMiB: 150, errorRate: 150,
  });
});
