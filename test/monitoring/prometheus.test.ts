/**
 * The dashboards and alert rules against the real thing: a `switchboard standalone` process
 * (with a flags file, so switchboard_feature_enabled has series) under a little chat load plus
 * some unknown_type errors, scraped every second by a real Prometheus that attaches the
 * namespace and pod labels Kubernetes scraping would, and that loads the alert rules.
 *
 * The operator itself needs a Kubernetes API server, so it does not run here; its real metrics
 * registry (operator/metrics.ts) does, served over HTTP and scraped too, moved the way its
 * controllers move it (reconciles, decisions, replica gauges for a Switchboard "chat" in the
 * gateway's namespace). So the operator panels meet the operator's real metric names, types and
 * labels, with values this test makes up.
 *
 * - Every dashboard variable query resolves to the labels of those targets.
 * - Every target of both dashboards, with Grafana's variables substituted, parses and returns
 *   data, and every {{label}} of its legend is a label of the result.
 * - No dashboard target and no alert names a metric the code does not export.
 * - Every alert rule evaluates without an error; on this healthy gateway the alerts stay quiet,
 *   except SwitchboardTierDown for the broadcast tier the operator wants and nobody runs.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { OperatorMetrics } from '../../operator/metrics';
import { queries } from '../../operator/prometheus';
import { spawnCli, tempDir, type CliProcess } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { PrometheusProcess, type Sample } from '../helpers/prometheus';
import { waitFor } from '../helpers/wait';
import { helloClient, type WireClient } from '../helpers/wire';
import { ChatLoad } from '../telemetry/tools';
import {
  broadcastSeriesNames,
  dashboards,
  exposedSeriesNames,
  interpolate,
  metricNames,
  operatorSeriesNames,
  panelQueries,
  PROMETHEUS_SERIES,
  repoFile,
  variable,
  type DashboardDoc,
  type PanelQuery,
} from './dashboards';

const NAMESPACE = 'sb-monitoring';
const POD = 'chat-gateway-5d8f-a1b2c';
const OPERATOR_POD = 'switchboard-operator-6b7c-x1y2z';
const RULES = repoFile('charts/switchboard/rules/switchboard-alerts.yaml');

function alertRules(): { alert: string; expr: string }[] {
  const file = parse(readFileSync(RULES, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  return file.groups.flatMap((g) => g.rules);
}

/** label_values(selector, label) or label_values(label), Grafana's Prometheus variable query. */
function parseLabelValues(query: string): { match?: string; label: string } {
  const m = /^label_values\(\s*(?:(.+),\s*)?(\w+)\s*\)$/.exec(query.trim());
  if (m === null) throw new Error(`not a label_values() query: ${query}`);
  return { match: m[1], label: m[2] };
}

/** What is wrong with one target's answer: no data, or a legend {{label}} its series lack. */
function answerProblems(q: PanelQuery, expr: string, samples: Sample[]): string[] {
  if (samples.length === 0) return [`${q.panel} ${q.refId}: no data: ${expr}`];
  const legendLabels = [...(q.legendFormat ?? '').matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]);
  return legendLabels
    .filter((l) => samples.some((s) => s.metric[l] === undefined))
    .map((l) => `${q.panel} ${q.refId}: legend label ${l} is not in ${JSON.stringify(samples[0].metric)}`);
}

/** The operator's registry on a free port, moved every 100 ms the way the controllers move it. */
class OperatorMetricsFeed {
  readonly metrics = new OperatorMetrics();
  private readonly server: Server;
  private timer: NodeJS.Timeout | undefined;
  private ticks = 0;
  private readonly sb = { namespace: NAMESPACE, switchboard: 'chat' };

  constructor() {
    this.server = createServer((_req, res) => {
      this.metrics.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(body),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
  }

  async start(): Promise<string> {
    const m = this.metrics;
    m.isLeader.set(1);
    for (const tier of ['gateway', 'broadcast']) {
      m.desired.set({ ...this.sb, tier }, 1);
      m.current.set({ ...this.sb, tier }, 1);
    }
    m.overloaded.set(this.sb, 0);
    m.flagsShed.set(this.sb, 1);
    this.timer = setInterval(() => this.tick(), 100);
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private tick(): void {
    const m = this.metrics;
    const n = this.ticks++;
    for (const kind of ['Switchboard', 'FeatureFlag']) {
      m.reconciles.inc({ kind, result: 'ok' });
      m.reconcileDuration.observe({ kind }, 0.002 + (n % 10) * 0.003);
    }
    m.decisions.inc({ ...this.sb, tier: 'gateway', direction: 'hold' });
    if (n % 3 === 0) m.decisions.inc({ ...this.sb, tier: 'broadcast', direction: 'up' });
    if (n % 4 === 0) {
      m.reconciles.inc({ kind: 'Switchboard', result: 'error' });
      m.reconcileErrors.inc({ kind: 'Switchboard' });
      m.queryErrors.inc(this.sb);
    }
  }

  async stop(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    await new Promise((r) => this.server.close(r));
  }
}

interface ApiAlerts {
  data: { alerts: { labels: Record<string, string>; state: string }[] };
}

interface ApiRules {
  data: { groups: { rules: { name: string; health: string; lastError?: string; lastEvaluation: string }[] }[] };
}

describe('dashboards and alerts against a real Prometheus scraping a real gateway', () => {
  let server: CliProcess;
  let adminPort: number;
  let operator: OperatorMetricsFeed;
  let prom: PrometheusProcess;
  let load: ChatLoad;
  let mistaken: WireClient;
  let mistakes: NodeJS.Timeout | undefined;
  let exposition: string;

  before(async () => {
    const dir = tempDir('switchboard-monitoring-');
    const flags = join(dir, 'flags.yaml');
    writeFileSync(flags, 'flags:\n  history:\n    nonCritical: true\n  polls:\n    enabled: false\n');
    const tcpPort = await freePort();
    adminPort = await freePort();
    server = spawnCli(['standalone'], { TCP_PORT: String(tcpPort), ADMIN_PORT: String(adminPort), API_PORT: '-1', FLAGS_FILE: flags, LOG_LEVEL: 'warn' }, dir);
    await waitFor(
      async () => {
        if (server.child.exitCode !== null) throw new Error(`switchboard exited ${server.child.exitCode}: ${server.stderr.join('\n')}`);
        return (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200;
      },
      15_000,
      'switchboard standalone to be ready',
      { intervalMs: 100, retryErrors: true },
    );
    load = await ChatLoad.start(tcpPort, 'monitoring-room', 2);
    // A client that keeps sending a type nobody handles: unknown_type errors, counted and replied.
    mistaken = await helloClient(tcpPort, 'mistaken');
    mistakes = setInterval(() => {
      mistaken.writeRaw('{"type":"frobnicate"}\n');
      mistaken.inbox.length = 0;
      mistaken.all.length = 0;
    }, 50);
    operator = new OperatorMetricsFeed();
    const operatorAddress = await operator.start();
    prom = await PrometheusProcess.start({
      targets: [
        { address: `127.0.0.1:${adminPort}`, labels: { namespace: NAMESPACE, pod: POD } },
        // No namespace target label: in a cluster the operator is scraped with honor_labels, so
        // its per-Switchboard series keep their own namespace; here nothing competes with it.
        { address: operatorAddress, labels: { pod: OPERATOR_POD } },
      ],
      ruleFiles: [RULES],
    });
    // rate(...[1m]) needs two samples of a moving counter; p99 needs deliveries in the window.
    await waitFor(
      async () => {
        const [errors] = await prom.query('sum(rate(switchboard_errors_total{code="unknown_type"}[1m]))');
        const [p99] = await prom.query('histogram_quantile(0.99, sum by (le) (rate(switchboard_delivery_latency_seconds_bucket[1m])))');
        const [reconciles] = await prom.query('sum(rate(switchboard_operator_reconcile_errors_total[1m]))');
        return errors?.value > 0 && Number.isFinite(p99?.value) && reconciles?.value > 0;
      },
      30_000,
      'Prometheus to have scraped errors, deliveries and reconciles',
      { intervalMs: 250 },
    );
    exposition = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  });

  after(async () => {
    if (mistakes !== undefined) clearInterval(mistakes);
    mistaken?.destroy();
    load?.stop();
    await prom?.stop();
    await operator?.stop();
    if (server !== undefined && server.child.exitCode === null) {
      server.child.kill('SIGTERM');
      await Promise.race([server.exited, new Promise((r) => setTimeout(r, 5000))]);
      server.kill();
    }
  });

  async function labelValues(query: string): Promise<string[]> {
    const { match, label } = parseLabelValues(query);
    const url = new URL(`${prom.url}/api/v1/label/${label}/values`);
    if (match !== undefined) url.searchParams.set('match[]', match);
    const body = (await (await fetch(url)).json()) as { status: string; data: string[]; error?: string };
    assert.equal(body.status, 'success', `${query}: ${body.error}`);
    return body.data;
  }

  test('the overview variables resolve to the scraped namespace and pod', async () => {
    const { overview } = dashboards();
    const ns = variable(overview, 'namespace')!;
    assert.deepEqual(await labelValues(interpolate(String(ns.query), {})), [NAMESPACE]);
    const pod = variable(overview, 'pod')!;
    assert.deepEqual(await labelValues(interpolate(String(pod.query), { namespace: NAMESPACE })), [POD]);
  });

  test('the operator dashboard variables resolve to the Switchboard and the operator pod', async () => {
    const { operator: d } = dashboards();
    const values = { namespace: NAMESPACE, switchboard: 'chat', pod: OPERATOR_POD };
    const expected: Record<string, string> = values;
    for (const v of d.templating!.list!) {
      if (v.type !== 'query') continue;
      assert.deepEqual(await labelValues(interpolate(String(v.query), values)), [expected[v.name]], `variable ${v.name}`);
    }
  });

  // One pod selected, then "All" (Grafana puts the allValue regex in).
  for (const podChoice of ['selected pod', 'All']) {
    test(`every overview target parses and returns data (${podChoice})`, async (t) => {
      const { overview } = dashboards();
      const pod = podChoice === 'All' ? variable(overview, 'pod')!.allValue! : POD;
      const problems: string[] = [];
      const queries = panelQueries(overview);
      for (const q of queries) {
        const expr = interpolate(q.expr, { namespace: NAMESPACE, pod });
        problems.push(...answerProblems(q, expr, await prom.query(expr))); // query() throws when Prometheus rejects it
      }
      t.diagnostic(`${queries.length} targets queried`);
      assert.deepEqual(problems, []);
    });
  }

  test('a multi-value pod selection (a regex alternation) works too', async () => {
    const { overview } = dashboards();
    for (const q of panelQueries(overview).filter((x) => x.expr.includes('$pod'))) {
      const expr = interpolate(q.expr, { namespace: NAMESPACE, pod: [POD, 'chat-gateway-5d8f-zzzzz'] });
      assert.deepEqual(answerProblems(q, expr, await prom.query(expr)), []);
    }
  });

  for (const choice of ['selected', 'All']) {
    test(`every operator dashboard target parses and returns data (${choice})`, async (t) => {
      const { operator: d } = dashboards();
      const values = choice === 'All' ? { namespace: '.+', switchboard: '.+', pod: '.+' } : { namespace: NAMESPACE, switchboard: 'chat', pod: OPERATOR_POD };
      const problems: string[] = [];
      const queries = panelQueries(d);
      for (const q of queries) {
        const expr = interpolate(q.expr, values);
        problems.push(...answerProblems(q, expr, await prom.query(expr)));
      }
      t.diagnostic(`${queries.length} targets queried`);
      assert.deepEqual(problems, []);
    });
  }

  test('no dashboard target or alert names a metric the code does not export', async () => {
    const scraped = exposedSeriesNames(exposition);
    const operatorNames = await operatorSeriesNames();
    const exported = new Set([...scraped, ...(await broadcastSeriesNames()), ...operatorNames, ...PROMETHEUS_SERIES]);
    const unknown: string[] = [];
    const check = (where: string, expr: string) => {
      for (const name of metricNames(expr)) if (!exported.has(name)) unknown.push(`${where}: ${name}`);
    };
    const all: Record<string, DashboardDoc> = dashboards();
    for (const [name, d] of Object.entries(all)) {
      for (const q of panelQueries(d)) check(`${name} "${q.panel}" ${q.refId}`, q.expr);
      for (const v of d.templating?.list ?? []) if (v.type === 'query') check(`${name} variable ${v.name}`, parseLabelValues(String(v.query)).match ?? '');
    }
    for (const r of alertRules()) check(`alert ${r.alert}`, r.expr);
    assert.deepEqual(unknown, []);
    // The operator dashboard is about the operator only.
    for (const q of panelQueries(all.operator)) for (const name of metricNames(q.expr)) assert.ok(operatorNames.has(name), `operator "${q.panel}": ${name}`);
    // The lexer does find names (an empty result would pass the checks above vacuously).
    assert.deepEqual(metricNames('sum by (le) (rate(switchboard_delivery_latency_seconds_bucket{pod=~"a"}[1m])) / on (pod) up > 1e-9'), ['switchboard_delivery_latency_seconds_bucket', 'up']);
  });

  test('every alert rule evaluates without error', async () => {
    const expected = alertRules().map((r) => r.alert);
    const rules = await waitFor(
      async () => {
        const body = (await (await fetch(`${prom.url}/api/v1/rules`)).json()) as ApiRules;
        const list = body.data.groups.flatMap((g) => g.rules);
        return list.length === expected.length && list.every((r) => !r.lastEvaluation.startsWith('0001-')) ? list : undefined;
      },
      15_000,
      'every rule to have been evaluated',
      { intervalMs: 250 },
    );
    assert.deepEqual(rules.map((r) => r.name).sort(), [...expected].sort());
    for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
  });

  test("the operator's error rate counts server-side errors only: a client's unknown_type errors leave it at 0", async () => {
    const q = queries({ namespace: NAMESPACE, name: 'chat' }, '1m');
    const [all] = await prom.query(q.errorRate.replace(/,code=~"[^"]*"/, ''));
    assert.ok(all?.value > 0, `without the code filter the mistaken client's errors would count: ${q.errorRate}`);
    const [rate] = await prom.query(q.errorRate);
    assert.equal(rate?.value, 0, q.errorRate);
  });

  test('on a healthy gateway the alerts stay quiet, but a tier nobody runs is caught', async () => {
    // Judge an evaluation that saw the data `before` waited for: in the first second of
    // scraping, increase() has a single sample and a leader looks idle (pending, not firing).
    const since = Date.now();
    await waitFor(
      async () => {
        const body = (await (await fetch(`${prom.url}/api/v1/rules`)).json()) as ApiRules;
        return body.data.groups.flatMap((g) => g.rules).every((r) => Date.parse(r.lastEvaluation) > since);
      },
      15_000,
      'a fresh evaluation of every rule',
      { intervalMs: 250 },
    );
    const active = ((await (await fetch(`${prom.url}/api/v1/alerts`)).json()) as ApiAlerts).data.alerts;
    const tierDown = active.filter((a) => a.labels.alertname === 'SwitchboardTierDown').map((a) => `${a.labels.namespace}/${a.labels.switchboard}/${a.labels.tier}`);
    assert.deepEqual(tierDown, [`${NAMESPACE}/chat/broadcast`], 'the gateway tier has its pod up; the broadcast tier has none');
    // Deterministic on this setup (latency and overload depend on the machine, so they are not listed).
    const quiet = ['SwitchboardHighErrorRate', 'SwitchboardMemoryNearLimit', 'SwitchboardStreamBacklogGrowing', 'SwitchboardPodDown', 'SwitchboardOperatorNotReconciling', 'SwitchboardOperatorDown'];
    assert.deepEqual(active.filter((a) => quiet.includes(a.labels.alertname)).map((a) => a.labels.alertname), [], 'unknown_type errors are client mistakes, not server errors');
  });
});
