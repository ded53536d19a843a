#!/usr/bin/env node
/**
 * `node dist/load-tests/plot.js RESULT.json [MORE.json ...] [OUT.svg]`: a latency-vs-throughput chart
 * (delivered msg/s against p50 and p99 end-to-end latency, log scale) from the sweep steps of result files,
 * one line per target and percentile. Plain SVG, no dependencies.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { ResultFile } from './report';
import type { StepResult } from './scenarios';

const W = 760;
const H = 440;
const M = { l: 70, r: 190, t: 40, b: 50 };
const COLORS: Record<string, string> = { switchboard: '#1f77b4', baseline: '#7f7f7f', cluster: '#d62728' };

export function plot(res: ResultFile, title: string): string {
  const series: { label: string; color: string; dash: string; pts: [number, number][] }[] = [];
  for (const run of res.runs) {
    const steps = (run.detail as { steps?: StepResult[] } | undefined)?.steps;
    if (steps === undefined) continue;
    const sorted = [...steps].sort((a, b) => a.delivered_per_s - b.delivered_per_s);
    const color = COLORS[run.target] ?? '#2ca02c';
    series.push({ label: `${run.name} p99`, color, dash: '', pts: sorted.map((s) => [s.delivered_per_s, Math.max(0.01, s.latency_ms.p99)]) });
    series.push({ label: `${run.name} p50`, color, dash: '4 3', pts: sorted.map((s) => [s.delivered_per_s, Math.max(0.01, s.latency_ms.p50)]) });
  }
  const all = series.flatMap((s) => s.pts);
  const xMax = Math.max(1, ...all.map((p) => p[0])) * 1.05;
  const yMin = 0.1;
  const yMax = Math.max(100, ...all.map((p) => p[1]));
  const px = (x: number) => M.l + (x / xMax) * (W - M.l - M.r);
  const py = (y: number) => H - M.b - ((Math.log10(Math.max(y, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * (H - M.t - M.b);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${M.l}" y="22" font-size="14">${esc(title)}</text>`);
  for (let e = Math.ceil(Math.log10(yMin)); e <= Math.log10(yMax); e++) {
    const y = py(10 ** e);
    out.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${y}" y2="${y}" stroke="#ddd"/><text x="${M.l - 6}" y="${y + 4}" text-anchor="end">${10 ** e} ms</text>`);
  }
  const y50 = py(50);
  out.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${y50}" y2="${y50}" stroke="#d62728" stroke-dasharray="2 2"/><text x="${W - M.r - 4}" y="${y50 - 4}" text-anchor="end" fill="#d62728">p99 bound 50 ms</text>`);
  for (let i = 0; i <= 5; i++) {
    const x = (xMax / 5) * i;
    out.push(`<line x1="${px(x)}" x2="${px(x)}" y1="${H - M.b}" y2="${H - M.b + 4}" stroke="black"/><text x="${px(x)}" y="${H - M.b + 18}" text-anchor="middle">${(x / 1e6).toFixed(2)}M</text>`);
  }
  out.push(`<text x="${(M.l + W - M.r) / 2}" y="${H - 10}" text-anchor="middle">delivered messages per second</text>`);
  out.push(`<line x1="${M.l}" x2="${M.l}" y1="${M.t}" y2="${H - M.b}" stroke="black"/><line x1="${M.l}" x2="${W - M.r}" y1="${H - M.b}" y2="${H - M.b}" stroke="black"/>`);
  series.forEach((s, i) => {
    const d = s.pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/>`);
    for (const p of s.pts) out.push(`<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    const ly = M.t + 10 + i * 18;
    out.push(`<line x1="${W - M.r + 10}" x2="${W - M.r + 34}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2" ${s.dash ? `stroke-dasharray="${s.dash}"` : ''}/><text x="${W - M.r + 38}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

if (require.main === module) {
  // RESULT.json [RESULT2.json ...] [OUT.svg]: the runs of several result files in one chart
  // (e.g. a fan-out sweep and a cluster sweep).
  const args = process.argv.slice(2);
  const outp = args.length > 1 && args[args.length - 1].endsWith('.svg') ? args.pop()! : 'docs/latency-vs-throughput.svg';
  if (args.length === 0) {
    process.stderr.write('usage: node dist/load-tests/plot.js RESULT.json [RESULT2.json ...] [OUT.svg]\n');
    process.exit(2);
  }
  const files = args.map((f) => JSON.parse(readFileSync(f, 'utf8')) as ResultFile);
  const res: ResultFile = { ...files[0], runs: files.flatMap((f) => f.runs) };
  const svg = plot(res, `End-to-end latency vs delivered throughput (${res.date.slice(0, 10)}, ${String(res.machine.cpus)} cores)`);
  writeFileSync(outp, svg);
}
