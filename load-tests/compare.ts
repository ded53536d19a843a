#!/usr/bin/env node
/**
 * `npm run bench:compare OLD.json NEW.json`: the origin's regression rules applied to two result
 * files. A metric regresses when throughput (`*_per_s`) drops by more than 5%, memory (`*_mb`,
 * `*_bytes`) grows by more than 20%, or latency (`*_ms`) grows by more than 10%. Exit code 1 on
 * any regression, 2 on bad input.
 */
import { readFileSync } from 'node:fs';
import type { ResultFile } from './report';

export const RULES = { throughputDrop: 0.05, memoryGrowth: 0.2, latencyGrowth: 0.1 } as const;

export type MetricKind = 'throughput' | 'memory' | 'latency' | null;

export function metricKind(name: string): MetricKind {
  if (name.endsWith('_per_s')) return 'throughput';
  if (name.endsWith('_mb') || name.endsWith('_bytes')) return 'memory';
  if (name.endsWith('_ms')) return 'latency';
  return null;
}

export interface Comparison {
  run: string;
  metric: string;
  kind: Exclude<MetricKind, null>;
  old: number;
  new: number;
  /** Relative change, new / old - 1. */
  change: number;
  regression: boolean;
}

export function isRegression(kind: Exclude<MetricKind, null>, oldV: number, newV: number): boolean {
  if (kind === 'throughput') return newV < oldV * (1 - RULES.throughputDrop);
  if (kind === 'memory') return newV > oldV * (1 + RULES.memoryGrowth);
  return newV > oldV * (1 + RULES.latencyGrowth);
}

export function compare(oldR: ResultFile, newR: ResultFile): Comparison[] {
  const out: Comparison[] = [];
  const olds = new Map(oldR.runs.map((r) => [r.name, r]));
  for (const n of newR.runs) {
    const o = olds.get(n.name);
    if (o === undefined) continue;
    for (const [metric, nv] of Object.entries(n.metrics)) {
      const kind = metricKind(metric);
      const ov = o.metrics[metric];
      if (kind === null || typeof ov !== 'number' || typeof nv !== 'number') continue;
      out.push({ run: n.name, metric, kind, old: ov, new: nv, change: ov === 0 ? 0 : nv / ov - 1, regression: isRegression(kind, ov, nv) });
    }
  }
  return out;
}

function main(argv: string[]): number {
  if (argv.length !== 2) {
    process.stderr.write('usage: npm run bench:compare OLD.json NEW.json\n');
    return 2;
  }
  let files: ResultFile[];
  try {
    files = argv.map((f) => JSON.parse(readFileSync(f, 'utf8')) as ResultFile);
  } catch (err) {
    process.stderr.write(`bench:compare: ${(err as Error).message}\n`);
    return 2;
  }
  const rows = compare(files[0], files[1]);
  for (const r of rows) {
    const pct = (r.change * 100).toFixed(1);
    process.stdout.write(`${r.regression ? 'REGRESSION' : 'ok        '}  ${r.run.padEnd(28)} ${r.metric.padEnd(28)} ${String(r.old).padStart(12)} -> ${String(r.new).padStart(12)}  (${r.change >= 0 ? '+' : ''}${pct}%)\n`);
  }
  const bad = rows.filter((r) => r.regression).length;
  process.stdout.write(`\n${rows.length} metrics compared, ${bad} regression(s) (rules: throughput -${RULES.throughputDrop * 100}%, memory +${RULES.memoryGrowth * 100}%, latency +${RULES.latencyGrowth * 100}%)\n`);
  return bad > 0 ? 1 : 0;
}

if (require.main === module) process.exit(main(process.argv.slice(2)));
