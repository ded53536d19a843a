// Draws the e2e run's own samples (dist/e2e/results.json, written by switchboard.e2e.ts) as an
// SVG: gateway and broadcast replicas (Deployment spec and Ready pods) against the load the
// gateways reported to Prometheus, with the test's steps marked.
//
//   node dist/test/e2e/plot.js [results.json] [out.svg]     (default: dist/e2e/results.json -> dist/e2e/replicas-and-load.svg)
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LoadSample } from './support';

interface Results {
  timings: Record<string, number>;
  samples: LoadSample[];
  marks: Array<{ t: number; label: string }>;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function plot(results: Results, title: string): string {
  const W = 960, H = 440, L = 60, R = 70, T = 40, B = 60;
  const pw = W - L - R, ph = H - T - B;
  const s = results.samples;
  if (s.length === 0) return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="60"><text x="10" y="30">no samples</text></svg>`;
  const t0 = s[0].t, t1 = s[s.length - 1].t;
  const x = (t: number) => L + ((t - t0) / Math.max(1, t1 - t0)) * pw;
  const maxRep = Math.max(4, ...s.map((p) => Math.max(p.gatewayReplicas, p.broadcastReplicas)));
  const yRep = (v: number) => T + ph - (v / (maxRep + 1)) * ph;
  const maxRate = Math.max(1, ...s.map((p) => p.deliveredPerSec ?? 0));
  // The smallest 1, 2 or 5 x 10^k above the peak.
  const decade = Math.pow(10, Math.floor(Math.log10(maxRate * 1.05)));
  const niceMax = [1, 2, 5, 10].map((m) => m * decade).find((v) => v >= maxRate * 1.05) ?? 10 * decade;
  const yRate = (v: number) => T + ph - (v / niceMax) * ph;
  const step = (get: (p: LoadSample) => number) => s.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.t).toFixed(1)},${yRep(get(p)).toFixed(1)}` +
    (i + 1 < s.length ? ` L${x(s[i + 1].t).toFixed(1)},${yRep(get(p)).toFixed(1)}` : '')).join(' ');
  const line = (get: (p: LoadSample) => number | null) => {
    let d = '';
    let pen = false;
    for (const p of s) {
      const v = get(p);
      if (v === null || !Number.isFinite(v)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${yRate(v).toFixed(1)} `;
      pen = true;
    }
    return d;
  };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`);
  // axes and grid
  for (let v = 0; v <= maxRep + 1; v++) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${yRep(v)}" y2="${yRep(v)}" stroke="#eee"/>`);
    out.push(`<text x="${L - 8}" y="${yRep(v) + 4}" text-anchor="end">${v}</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const v = (niceMax * i) / 4;
    out.push(`<text x="${L + pw + 8}" y="${yRate(v) + 4}" fill="#b45309">${Math.round(v)}</text>`);
  }
  const span = (t1 - t0) / 1000;
  const tick = span > 600 ? 120 : span > 300 ? 60 : 30;
  for (let sec = 0; sec <= span; sec += tick) {
    const px = x(t0 + sec * 1000);
    out.push(`<line x1="${px}" x2="${px}" y1="${T + ph}" y2="${T + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${px}" y="${T + ph + 18}" text-anchor="middle">${sec}s</text>`);
  }
  out.push(`<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="14" y="${T + ph / 2}" transform="rotate(-90 14 ${T + ph / 2})" text-anchor="middle">replicas</text>`);
  out.push(`<text x="${W - 14}" y="${T + ph / 2}" transform="rotate(90 ${W - 14} ${T + ph / 2})" text-anchor="middle" fill="#b45309">delivered msg/s, connections</text>`);
  // marks
  for (const m of results.marks) {
    if (m.t < t0 || m.t > t1) continue;
    out.push(`<line x1="${x(m.t)}" x2="${x(m.t)}" y1="${T}" y2="${T + ph}" stroke="#999" stroke-dasharray="3,3"/>`);
    out.push(`<text x="${x(m.t) + 3}" y="${T + 12}" font-size="10" fill="#555" transform="rotate(90 ${x(m.t) + 3} ${T + 12})">${esc(m.label)}</text>`);
  }
  // series
  out.push(`<path d="${line((p) => p.deliveredPerSec)}" fill="none" stroke="#f59e0b" stroke-width="1.5"/>`);
  out.push(`<path d="${line((p) => p.connections)}" fill="none" stroke="#a16207" stroke-width="1" stroke-dasharray="4,2"/>`);
  out.push(`<path d="${step((p) => p.gatewayReplicas)}" fill="none" stroke="#2563eb" stroke-width="2"/>`);
  out.push(`<path d="${step((p) => p.gatewayReady)}" fill="none" stroke="#93c5fd" stroke-width="2" stroke-dasharray="5,3"/>`);
  out.push(`<path d="${step((p) => p.broadcastReplicas)}" fill="none" stroke="#16a34a" stroke-width="2"/>`);
  out.push(`<path d="${step((p) => p.broadcastReady)}" fill="none" stroke="#86efac" stroke-width="2" stroke-dasharray="5,3"/>`);
  // legend
  const legend: Array<[string, string, string]> = [
    ['#2563eb', '', 'gateway replicas (Deployment)'], ['#93c5fd', '5,3', 'gateway pods Ready'],
    ['#16a34a', '', 'broadcast replicas'], ['#86efac', '5,3', 'broadcast pods Ready'],
    ['#f59e0b', '', 'delivered msg/s (Prometheus)'], ['#a16207', '4,2', 'connections (Prometheus)'],
  ];
  legend.forEach(([color, dash, label], i) => {
    const lx = L + (i % 3) * 290, ly = H - 30 + Math.floor(i / 3) * 16;
    out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`);
    out.push(`<text x="${lx + 30}" y="${ly}">${esc(label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

if (require.main === module) {
  const root = path.resolve(__dirname, '../../..');
  const input = process.argv[2] ?? path.join(root, 'dist', 'e2e', 'results.json');
  const output = process.argv[3] ?? path.join(root, 'dist', 'e2e', 'replicas-and-load.svg');
  const results = JSON.parse(readFileSync(input, 'utf8')) as Results;
  writeFileSync(output, plot(results, 'Switchboard on the e2e node: replicas and load over the run'));
  process.stdout.write(`${output}\n`);
}
