/**
 * What the monitoring tests share: the dashboards as data (panels, targets, variables), Grafana's
 * variable substitution done the way Grafana does it for Prometheus, the metric names a PromQL
 * expression reads, and the metric names the code exports (a real scrape, the broadcast and
 * operator registries).
 */
import { basename, dirname, resolve } from 'node:path';
import overviewJson from '../../charts/switchboard/dashboards/overview.json';
import operatorJson from '../../charts/switchboard/dashboards/operator.json';
import { OperatorMetrics } from '../../operator/metrics';
import { BroadcastMetrics } from '../../services/telemetry/metrics';

/** The repository root, from dist/test/monitoring (compiled) or test/monitoring alike. */
export const REPO_ROOT = ((up2) => (basename(up2) === 'dist' ? dirname(up2) : up2))(resolve(__dirname, '../..'));

export function repoFile(path: string): string {
  return resolve(REPO_ROOT, path);
}

export interface DashboardTarget {
  refId?: string;
  expr?: string;
  datasource?: { type?: string; uid?: string };
  [key: string]: unknown;
}

export interface DashboardPanel {
  id?: number;
  type?: string;
  title?: string;
  gridPos?: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: DashboardTarget[];
  panels?: DashboardPanel[];
  [key: string]: unknown;
}

export interface DashboardVariable {
  name: string;
  type: string;
  query?: unknown;
  allValue?: string;
  multi?: boolean;
  includeAll?: boolean;
  datasource?: { type?: string; uid?: string } | null;
  [key: string]: unknown;
}

export interface DashboardDoc {
  title?: string;
  uid?: string;
  schemaVersion: number;
  panels?: DashboardPanel[];
  templating?: { list?: DashboardVariable[] };
  [key: string]: unknown;
}

/** Fresh copies (tests mutate them to prove the checks fail). */
export function dashboards(): Record<'overview' | 'operator', DashboardDoc> {
  return structuredClone({ overview: overviewJson, operator: operatorJson }) as unknown as Record<'overview' | 'operator', DashboardDoc>;
}

/** Every panel, those nested in collapsed rows included. */
export function allPanels(d: DashboardDoc): DashboardPanel[] {
  const out: DashboardPanel[] = [];
  for (const p of d.panels ?? []) {
    out.push(p);
    for (const inner of p.panels ?? []) out.push(inner);
  }
  return out;
}

export interface PanelQuery {
  panel: string;
  refId: string;
  expr: string;
  legendFormat?: string;
}

export function panelQueries(d: DashboardDoc): PanelQuery[] {
  return allPanels(d).flatMap((p) =>
    (p.targets ?? []).map((t) => ({
      panel: p.title ?? `#${p.id}`,
      refId: t.refId ?? '?',
      expr: t.expr ?? '',
      legendFormat: typeof t.legendFormat === 'string' ? t.legendFormat : undefined,
    })),
  );
}

export function variable(d: DashboardDoc, name: string): DashboardVariable | undefined {
  return d.templating?.list?.find((v) => v.name === name);
}

/**
 * Grafana's interpolation of a Prometheus query: `$name`, `${name}` and `[[name]]` become the
 * value (a multi-value variable is formatted as a regex alternation, so it only works after =~),
 * and the built-in intervals become fixed durations.
 */
export function interpolate(expr: string, values: Record<string, string | string[]>, intervals: Record<string, string> = DEFAULT_INTERVALS): string {
  const all: Record<string, string | string[]> = { ...intervals, ...values };
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (whole, a?: string, b?: string, c?: string) => {
    const name = (a ?? b ?? c)!;
    const v = all[name];
    if (v === undefined) throw new Error(`unresolved variable ${whole} in ${expr}`);
    return Array.isArray(v) ? (v.length === 1 ? v[0] : `(${v.join('|')})`) : v;
  });
}

/** What the dashboard-query test puts for Grafana's built-in variables. */
export const DEFAULT_INTERVALS: Record<string, string> = {
  __rate_interval: '1m',
  __interval: '15s',
  __range: '5m',
};

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names an expression reads. A lexer, not a parser, but PromQL makes it easy: drop
 * string literals, label matchers `{...}`, ranges `[...]` and the label lists of by/without/on/
 * ignoring/group_*; what is left is functions (followed by `(`), keywords, numbers, and metric
 * names. Prometheus itself checks that the expression parses.
 */
export function metricNames(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{[^}]*\}/g, ' ');
  s = s.replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const after = s.slice(m.index! + word.length).trimStart();
    if (after.startsWith('(')) continue; // a function or aggregation
    if (PROMQL_WORDS.has(word.toLowerCase())) continue;
    const before = s.slice(0, m.index!);
    if (/[0-9.]$/.test(before) || /\d[eE]$/.test(before)) continue; // 1e-9, 5m inside numbers
    names.add(word);
  }
  return [...names];
}

/** Series names one metric family yields in the text format. */
export function seriesNames(family: string, type: string): string[] {
  switch (type) {
    case 'histogram':
      return [`${family}_bucket`, `${family}_sum`, `${family}_count`];
    case 'summary':
      return [family, `${family}_sum`, `${family}_count`];
    default:
      return [family];
  }
}

/** Series names of a text exposition, from its `# TYPE` lines. */
export function exposedSeriesNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) for (const n of seriesNames(m[1], m[2])) names.add(n);
  return names;
}

/** The broadcast role's series names, from its real registry (the counters are not under test). */
export async function broadcastSeriesNames(): Promise<Set<string>> {
  const m = new BroadcastMetrics({ counters: { entries: 0, routed: 0, reclaimed: 0, failures: 0, epochRestarts: 0 }, pending: () => 0 });
  return exposedSeriesNames((await m.expose()).body);
}

/** The operator's series names, from its real registry (operator/metrics.ts). */
export async function operatorSeriesNames(): Promise<Set<string>> {
  return exposedSeriesNames(await new OperatorMetrics().registry.metrics());
}

/** Series Prometheus makes up itself for every target. */
export const PROMETHEUS_SERIES = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'scrape_samples_post_metric_relabeling', 'scrape_series_added']);
