// Credentials in a Prometheus URL never reach a message: fetch refuses such a URL and its error
// quotes the URL whole, and that message becomes the MetricsUnavailable condition, a Warning
// Event and a log line. No Prometheus needed: the request fails before it is sent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OperatorMetrics } from '../../operator/metrics';
import { MetricsError, PrometheusClient, redactCredentials } from '../../operator/prometheus';
import { MetricsScaleHandler } from '../../operator/scaling/handler';
import { silentLogger } from '../../services/telemetry/log';
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
