// The docs agree with the code: every error code and disconnect reason of the registry is in
// docs/protocol.md (and nothing else is), and every configuration key is in README.md's table.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, test } from 'node:test';
import { SETTINGS } from '../../services/control';
import { ALL_ERROR_CODES, DisconnectReason, DisconnectReconnect, ErrorInfo } from '../../services/protocol';
import { Counters, DropReason } from '../../services/telemetry/counters';
import { GatewayMetrics } from '../../services/telemetry/metrics';

const ROOT = resolve(__dirname, '../../..');
const read = (p: string) => readFileSync(resolve(ROOT, p), 'utf8');

/** Rows of the markdown table under a heading: the cells of each `| ... |` line. */
function tableUnder(md: string, heading: string): string[][] {
  const start = md.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `heading "${heading}" not found`);
  const rest = md.slice(start + heading.length + 2);
  const end = rest.search(/\n#{1,6} /);
  const section = end === -1 ? rest : rest.slice(0, end);
  return section
    .split('\n')
    .filter((l) => l.startsWith('|') && !/^\|\s*-/.test(l))
    .slice(1) // header row
    .map((l) => l.split('|').slice(1, -1).map((c) => c.trim()));
}

const unquote = (cell: string) => cell.replace(/^`|`$/g, '');

describe('docs/protocol.md', () => {
  const md = read('docs/protocol.md');
  test('lists exactly the error codes of the registry', () => {
    const rows = tableUnder(md, '## Error codes');
    const documented = rows.map((r) => unquote(r[0]));
    assert.deepEqual([...documented].sort(), [...ALL_ERROR_CODES].sort());
    for (const r of rows) {
      const code = unquote(r[0]) as keyof typeof ErrorInfo;
      assert.equal(r[1], ErrorInfo[code].closes ? 'yes' : 'no', `"closes" column of ${code}`);
    }
  });
  test('lists exactly the disconnect reasons, with whether to reconnect', () => {
    const rows = tableUnder(md, '## Disconnect reasons');
    assert.deepEqual(rows.map((r) => unquote(r[0])).sort(), Object.values(DisconnectReason).sort());
    for (const r of rows) {
      const reason = unquote(r[0]) as DisconnectReason;
      assert.equal(r[1], DisconnectReconnect[reason] ? 'yes' : 'no', `"reconnect" column of ${reason}`);
    }
  });
});

describe('README.md', () => {
  const md = read('README.md');
  test('the configuration table has every setting with its default', () => {
    const rows = tableUnder(md, '## Configuration');
    const byKey = new Map(rows.map((r) => [unquote(r[0]), r]));
    for (const s of SETTINGS) {
      const row = byKey.get(s.key);
      assert.ok(row, `${s.key} is missing from README.md`);
      const cell = unquote(row[1]);
      assert.equal(cell === '(empty)' ? '' : cell, s.default, `default of ${s.key}`);
    }
    assert.equal(byKey.size, SETTINGS.length, 'no undocumented extra keys');
  });
  test('links the protocol and architecture docs and names the two commands', () => {
    assert.match(md, /docs\/protocol\.md/);
    assert.match(md, /docs\/architecture\.md/);
    assert.match(md, /npm start/);
    assert.match(md, /npm test/);
    assert.match(md, /npm ci/);
  });
});

describe('docs/operations.md', () => {
  const md = read('docs/operations.md');
  // The metric table is a public interface (dashboards, alerts and the operator query it): it
  // names exactly what a gateway exports, and every dropped_total reason it lists is counted.
  test('the metric table lists exactly the metrics a gateway exports', async () => {
    const rows = tableUnder(md, '## Metrics');
    const documented = rows.map((r) => unquote(r[0]));
    const metrics = new GatewayMetrics({
      counters: new Counters(),
      overloaded: () => false,
      eventLoopLagSeconds: () => 0,
      streamPending: () => 0,
      features: () => [],
    });
    const exported = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith('switchboard_'));
    assert.deepEqual([...documented].sort(), [...new Set(exported)].sort());
  });
  test('dropped_total names exactly the reasons the code counts', () => {
    const row = tableUnder(md, '## Metrics').find((r) => unquote(r[0]) === 'switchboard_dropped_total');
    assert.ok(row, 'switchboard_dropped_total is documented');
    const named = [...row[3].matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);
    assert.deepEqual(named.sort(), Object.values(DropReason).sort());
  });
});
