/**
 * The dashboards against Grafana's own dashboard types (@grafana/schema), in two steps:
 *
 * - at compile time, each JSON file is assigned to the schema's Dashboard type (with string
 *   enums and literal unions widened to string, since a JSON import types every string as
 *   string): a missing required field (schemaVersion, a panel's type, gridPos.h, a variable's
 *   name) or a wrong type fails `tsc`, and so `npm test`;
 * - at run time, what types cannot see: unknown keys (a typo such as `gridpos` or `target` is
 *   an optional field gone missing to tsc), checked against key lists that tsc in turn checks
 *   against the schema (Record<keyof Panel, true> must name every key of Panel and no other),
 *   plus Grafana's own rules: unique panel ids, a 24-column grid without overlaps, a data source
 *   that is the ${datasource} variable everywhere, PromQL in every target.
 *
 * Each rule is also shown to fail on a broken copy of a dashboard.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Dashboard, GridPos, Panel, RowPanel, VariableModel } from '@grafana/schema';
import type { DataQuery } from '@grafana/schema';
import type { Options as HeatmapOptions } from '@grafana/schema/dist/types/raw/composable/heatmap/panelcfg/x/types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/types/raw/composable/stat/panelcfg/x/types.gen';
import type { Options as StateTimelineOptions } from '@grafana/schema/dist/types/raw/composable/statetimeline/panelcfg/x/types.gen';
import type { Options as TimeSeriesOptions } from '@grafana/schema/dist/types/raw/composable/timeseries/panelcfg/x/types.gen';
import overviewJson from '../../charts/switchboard/dashboards/overview.json';
import operatorJson from '../../charts/switchboard/dashboards/operator.json';
import { allPanels, dashboards, type DashboardDoc } from './dashboards';

/** A schema type as a JSON import sees it: enums and string literal unions are plain strings. */
type Loose<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends boolean
      ? boolean
      : T extends readonly (infer U)[]
        ? Loose<U>[]
        : T extends object
          ? { [K in keyof T]: Loose<T[K]> }
          : T;

// The compile-time check: these two lines fail `tsc` when a dashboard leaves the schema.
export const overviewTyped: Loose<Dashboard> = overviewJson;
export const operatorTyped: Loose<Dashboard> = operatorJson;

// ...and the types do reject a malformed dashboard (tsc fails if one of these stops being an error).
// @ts-expect-error schemaVersion is required
export const noSchemaVersion: Loose<Dashboard> = { title: 'x', panels: [] };
// @ts-expect-error gridPos.h is a number
export const badGridPos: Loose<Dashboard> = { schemaVersion: 39, panels: [{ type: 'stat', gridPos: { h: '8', w: 6, x: 0, y: 0 } }] };
// @ts-expect-error a variable has a name
export const namelessVariable: Loose<Dashboard> = { schemaVersion: 39, templating: { list: [{ type: 'query' }] } };

/** Grafana's Prometheus query model (public/app/plugins/datasource/prometheus dataquery.cue). */
interface PromQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  range?: boolean;
  exemplar?: boolean;
  interval?: string;
  intervalFactor?: number;
  editorMode?: 'code' | 'builder';
}

// Key lists tied to the schema: tsc requires exactly the keys of each type.
const DASHBOARD_KEYS: Record<keyof Dashboard, true> = {
  annotations: true, description: true, editable: true, fiscalYearStartMonth: true, gnetId: true, graphTooltip: true, id: true,
  links: true, liveNow: true, panels: true, preload: true, refresh: true, revision: true, schemaVersion: true, snapshot: true,
  tags: true, templating: true, time: true, timepicker: true, timezone: true, title: true, uid: true, version: true, weekStart: true,
};
const PANEL_KEYS: Record<keyof Panel, true> = {
  autoMigrateFrom: true, cacheTimeout: true, datasource: true, description: true, fieldConfig: true, gridPos: true, hideTimeOverride: true,
  id: true, interval: true, libraryPanel: true, links: true, maxDataPoints: true, maxPerRow: true, options: true, pluginVersion: true,
  queryCachingTTL: true, repeat: true, repeatDirection: true, targets: true, timeCompare: true, timeFrom: true, timeShift: true, title: true,
  transformations: true, transparent: true, type: true,
};
const ROW_KEYS: Record<keyof RowPanel, true> = { collapsed: true, datasource: true, gridPos: true, id: true, panels: true, repeat: true, title: true, type: true };
const GRID_KEYS: Record<keyof GridPos, true> = { h: true, w: true, x: true, y: true, static: true };
const SCHEMA_VARIABLE_KEYS: Record<keyof VariableModel, true> = {
  allValue: true, allowCustomValue: true, current: true, datasource: true, description: true, enableGroupBy: true, hide: true,
  includeAll: true, label: true, multi: true, name: true, options: true, query: true, refresh: true, regex: true, regexApplyTo: true,
  skipUrlSync: true, sort: true, staticOptions: true, staticOptionsOrder: true, type: true, valuesFormat: true,
};
// `definition` is not in the schema's VariableModel, but Grafana writes it for query variables.
const VARIABLE_KEYS: Record<string, true> = { ...SCHEMA_VARIABLE_KEYS, definition: true };
const TARGET_KEYS: Record<keyof PromQuery, true> = {
  refId: true, datasource: true, hide: true, queryType: true, key: true, expr: true, legendFormat: true, format: true, instant: true,
  range: true, exemplar: true, interval: true, intervalFactor: true, editorMode: true,
};
/** The panel types used, and the keys of each one's options (from its panelcfg schema). */
const OPTION_KEYS: Record<string, Record<string, true>> = {
  timeseries: {
    legend: true, tooltip: true, orientation: true, timeCompare: true, disableKeyboardEvents: true, timezone: true, annotations: true,
  } satisfies Record<keyof TimeSeriesOptions, true>,
  stat: {
    colorMode: true, graphMode: true, justifyMode: true, percentChangeColorMode: true, showPercentChange: true, textMode: true, wideLayout: true,
    reduceOptions: true, orientation: true, text: true,
  } satisfies Record<keyof StatOptions, true>,
  'state-timeline': {
    alignValue: true, mergeValues: true, perPage: true, rowHeight: true, showValue: true, legend: true, tooltip: true, timezone: true, annotations: true,
  } satisfies Record<keyof StateTimelineOptions, true>,
  heatmap: {
    annotations: true, calculate: true, calculation: true, cellGap: true, cellRadius: true, cellValues: true, color: true, exemplars: true,
    filterValues: true, legend: true, rowsFrame: true, selectionMode: true, showValue: true, tooltip: true, yAxis: true,
  } satisfies Record<keyof HeatmapOptions, true>,
};

/** Recent: Grafana 10.4 writes 39; older schema versions get migrated on load, and change. */
const MIN_SCHEMA_VERSION = 39;
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

function unknownKeys(obj: object, allowed: Record<string, true>): string[] {
  return Object.keys(obj).filter((k) => !(k in allowed));
}

function overlaps(a: GridPos, b: GridPos): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/** Every problem of a dashboard, as messages; empty when it is well formed. */
export function dashboardProblems(d: DashboardDoc): string[] {
  const problems: string[] = [];
  const bad = (msg: string) => problems.push(msg);
  for (const k of unknownKeys(d, DASHBOARD_KEYS)) bad(`dashboard: unknown key ${k}`);
  if (typeof d.schemaVersion !== 'number' || d.schemaVersion < MIN_SCHEMA_VERSION) bad(`schemaVersion ${d.schemaVersion} < ${MIN_SCHEMA_VERSION}`);
  if (typeof d.uid !== 'string' || d.uid.length < 8 || d.uid.length > 40) bad(`uid must be 8-40 characters: ${d.uid}`);
  if (!d.title) bad('no title');

  const vars = d.templating?.list ?? [];
  for (const v of vars) for (const k of unknownKeys(v, VARIABLE_KEYS)) bad(`variable ${v.name}: unknown key ${k}`);
  const ds = vars.find((v) => v.name === 'datasource');
  if (ds?.type !== 'datasource' || ds.query !== 'prometheus') bad('no variable "datasource" of type datasource for prometheus');
  for (const name of ['namespace', 'pod']) {
    const v = vars.find((x) => x.name === name);
    if (v === undefined) bad(`no variable ${name}`);
    else if (v.type !== 'query' || typeof v.query !== 'string' || !v.query.startsWith('label_values(')) bad(`variable ${name}: not a label_values query`);
  }
  for (const v of vars) if (v.type === 'query' && !sameDatasource(v.datasource)) bad(`variable ${v.name}: data source is not \${datasource}`);
  const pod = vars.find((x) => x.name === 'pod');
  if (pod !== undefined && !(pod.multi && pod.includeAll && pod.allValue !== undefined)) bad('variable pod: must be a multi-value regex with an All value');

  // Hard-coded data source UIDs anywhere (panels, targets, variables): only the variable and
  // Grafana's built-in annotation source are allowed.
  walk(d, (key, value) => {
    if (key === 'datasource' && value !== null && typeof value === 'object') {
      const uid = (value as { uid?: unknown }).uid;
      if (uid !== undefined && uid !== '${datasource}' && uid !== '-- Grafana --') bad(`hard-coded data source uid ${String(uid)}`);
    }
  });

  const ids = new Set<number>();
  const placed: { title: string; pos: GridPos }[] = [];
  for (const p of allPanels(d)) {
    const name = `panel ${p.id} "${p.title}"`;
    if (typeof p.id !== 'number') bad(`${name}: no numeric id`);
    else if (ids.has(p.id)) bad(`${name}: duplicate id`);
    else ids.add(p.id);
    for (const k of unknownKeys(p, p.type === 'row' ? ROW_KEYS : PANEL_KEYS)) bad(`${name}: unknown key ${k}`);
    const g = p.gridPos;
    if (g === undefined) bad(`${name}: no gridPos`);
    else {
      for (const k of unknownKeys(g, GRID_KEYS)) bad(`${name}: gridPos: unknown key ${k}`);
      if (![g.h, g.w, g.x, g.y].every((n) => Number.isInteger(n) && n >= 0) || g.w < 1 || g.h < 1 || g.x + g.w > 24) bad(`${name}: gridPos ${JSON.stringify(g)} outside the 24-column grid`);
      for (const o of placed) if (overlaps(o.pos, g)) bad(`${name}: overlaps "${o.title}"`);
      placed.push({ title: p.title ?? '', pos: g });
    }
    if (p.type === 'row') continue;
    if (typeof p.title !== 'string' || p.title === '') bad(`${name}: no title`);
    const optionKeys = OPTION_KEYS[p.type ?? ''];
    if (optionKeys === undefined) bad(`${name}: panel type ${p.type} is not one of ${Object.keys(OPTION_KEYS).join(', ')}`);
    else for (const k of unknownKeys((p.options as object | undefined) ?? {}, optionKeys)) bad(`${name}: options: unknown key ${k}`);
    if (!sameDatasource(p.datasource)) bad(`${name}: data source is not \${datasource}`);
    const targets = p.targets ?? [];
    if (targets.length === 0) bad(`${name}: no targets`);
    const refIds = new Set<string>();
    for (const t of targets) {
      for (const k of unknownKeys(t, TARGET_KEYS)) bad(`${name} target ${t.refId}: unknown key ${k}`);
      if (typeof t.refId !== 'string' || t.refId === '' || refIds.has(t.refId)) bad(`${name}: missing or duplicate refId ${t.refId}`);
      refIds.add(t.refId ?? '');
      if (typeof t.expr !== 'string' || t.expr.trim() === '') bad(`${name} target ${t.refId}: no expr`);
      if (!sameDatasource(t.datasource)) bad(`${name} target ${t.refId}: data source is not \${datasource}`);
    }
  }
  return problems;
}

function sameDatasource(ds: unknown): boolean {
  return ds !== null && typeof ds === 'object' && (ds as { type?: unknown }).type === DATASOURCE.type && (ds as { uid?: unknown }).uid === DATASOURCE.uid;
}

function walk(value: unknown, visit: (key: string, value: unknown) => void): void {
  if (Array.isArray(value)) for (const v of value) walk(v, visit);
  else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      visit(k, v);
      walk(v, visit);
    }
  }
}

describe('Grafana dashboards follow the dashboard schema', () => {
  for (const [name, d] of Object.entries(dashboards())) {
    test(`${name}.json is well formed`, () => {
      assert.deepEqual(dashboardProblems(d), []);
    });
  }

  test('the two dashboards have distinct uids', () => {
    const { overview, operator } = dashboards();
    assert.notEqual(overview.uid, operator.uid);
  });

  // The checks are only worth something if they catch mistakes: break a copy, one way at a time.
  const breakages: [string, (d: DashboardDoc) => void, RegExp][] = [
    ['a misspelt gridPos', (d) => { const p = d.panels![1]; (p as Record<string, unknown>).gridpos = p.gridPos; delete p.gridPos; }, /no gridPos/],
    ['a panel off the grid', (d) => { d.panels![0].gridPos!.x = 20; }, /outside the 24-column grid|overlaps/],
    ['overlapping panels', (d) => { d.panels![1].gridPos = { ...d.panels![0].gridPos! }; }, /overlaps/],
    ['a duplicate id', (d) => { d.panels![1].id = d.panels![0].id; }, /duplicate id/],
    ['a hard-coded data source', (d) => { d.panels![0].targets![0].datasource = { type: 'prometheus', uid: 'P1809F7CD0C75ACF3' }; }, /hard-coded data source uid/],
    ['a target without expr', (d) => { delete d.panels![0].targets![0].expr; }, /no expr/],
    ['a misspelt target key', (d) => { (d.panels![0].targets![0] as Record<string, unknown>).legendformat = 'x'; }, /unknown key legendformat/],
    ['an unknown panel option', (d) => { (d.panels![0].options as Record<string, unknown>).colourMode = 'value'; }, /options: unknown key colourMode/],
    ['an unknown panel type', (d) => { d.panels![0].type = 'graph-old'; }, /panel type graph-old/],
    ['an old schema version', (d) => { d.schemaVersion = 16; }, /schemaVersion/],
    ['no pod variable', (d) => { d.templating!.list = d.templating!.list!.filter((v) => v.name !== 'pod'); }, /no variable pod/],
    ['no targets', (d) => { d.panels![0].targets = []; }, /no targets/],
  ];
  for (const [what, breakIt, expected] of breakages) {
    test(`the check catches ${what}`, () => {
      const d = dashboards().overview;
      breakIt(d);
      const problems = dashboardProblems(d);
      assert.ok(problems.some((p) => expected.test(p)), `expected a problem matching ${expected}, got ${JSON.stringify(problems)}`);
    });
  }
});
