/**
 * The result file and the summary table. A result file holds named runs, each with flat numeric
 * `metrics` whose name says how to compare them (compare.ts): `*_per_s` is throughput (higher is
 * better), `*_ms` latency and `*_mb` / `*_bytes` memory (lower is better). Every Switchboard run
 * with a baseline run of the same name also gets `ratios` (Switchboard / baseline); every other
 * target's run gets ratios to the standalone Switchboard run of the same name: the cluster, the
 * `switchboard-*` variants (`-text`: text-mode clients; `-traced`: tracing on at the default
 * sampler; `-lz4`, `-zstd`: compressed deliveries) and the peer servers (`nats`, `nats-cluster`,
 * `centrifugo`, `centrifugo-redis`: their figure / Switchboard's).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { machine } from './scenarios';

export interface Run {
  /** `<scenario>/<target>`, e.g. `fanout-max/switchboard`. */
  name: string;
  target: string;
  metrics: Record<string, number>;
  /** Switchboard / baseline for each metric both have. */
  ratios?: Record<string, number>;
  detail?: unknown;
}

export interface ResultFile {
  version: 1;
  date: string;
  machine: Record<string, unknown>;
  command: string;
  env: Record<string, string>;
  runs: Run[];
  notes: string[];
}

export function newResult(command: string, env: Record<string, string>): ResultFile {
  return { version: 1, date: new Date().toISOString(), machine: machine(), command, env, runs: [], notes: [] };
}

/** Fill `ratios` of every non-baseline run against the baseline run of the same scenario. */
export function addRatios(res: ResultFile): void {
  const byScenario = new Map<string, Run>();
  const standalone = new Map<string, Run>();
  for (const r of res.runs) if (r.target === 'baseline') byScenario.set(r.name.split('/')[0], r);
  for (const r of res.runs) if (r.target === 'switchboard') standalone.set(r.name.split('/')[0], r);
  for (const r of res.runs) {
    if (r.target === 'baseline') continue;
    // Standalone Switchboard is compared with the baseline; everything else with standalone
    // Switchboard in the same run: the cluster (issue 6's 0.25 rule), traced runs (issue 4: the
    // cost of tracing), the peer servers (issue 16).
    const b = r.target === 'switchboard' ? byScenario.get(r.name.split('/')[0]) : standalone.get(r.name.split('/')[0]);
    if (b === undefined) continue;
    r.ratios = {};
    for (const [k, v] of Object.entries(r.metrics)) {
      const bv = b.metrics[k];
      if (typeof bv === 'number' && bv !== 0) r.ratios[k] = Math.round((v / bv) * 1000) / 1000;
    }
  }
}

export function writeResult(path: string, res: ResultFile): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(res, null, 2) + '\n');
}

/** The headline metric of each run kind, shown first in the table. */
const HEADLINE = ['max_delivered_per_s', 'delivered_per_s', 'cycles_per_s', 'bytes_per_connection_bytes'];

export function table(res: ResultFile): string {
  const rows: string[][] = [['run', 'headline', 'x ref', 'p50 ms', 'p99 ms', 'p99.9 ms', 'ratio', 'srv cpu %', 'srv MB', 'gen cpu %', 'errors']];
  for (const r of res.runs) {
    const m = r.metrics;
    const key = HEADLINE.find((k) => m[k] !== undefined);
    const head = key === undefined ? '' : `${num(m[key])} ${key.replace(/_bytes$/, '').replace(/_/g, ' ')}`;
    const ratio = key !== undefined && r.ratios?.[key] !== undefined ? r.ratios[key].toFixed(2) : '';
    rows.push([
      r.name,
      head,
      ratio,
      opt(m.p50_ms),
      opt(m.p99_ms),
      opt(m.p999_ms),
      m.delivery_ratio === undefined ? '' : String(m.delivery_ratio),
      opt(m.server_cpu_pct),
      opt(m.server_rss_mb),
      opt(m.generator_cpu_pct),
      m.errors === undefined ? '' : String(m.errors),
    ]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(rows[0]), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function num(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

function opt(v: number | undefined): string {
  return v === undefined ? '' : String(v);
}
