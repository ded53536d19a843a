/**
 * The alert rules with the real promtool: `check rules` passes, `test rules` passes with the
 * unit tests in rules-test.yaml, and those unit tests cover every alert both firing and not.
 * Every alert carries a severity, a summary, a description and a runbook_url whose anchor is a
 * heading of docs/operations.md; the runbooks there and the alerts agree one to one.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { ALL_ERROR_CODES, ErrorInfo } from '../../services/protocol/errors';
import { requireTool } from '../helpers/prometheus';
import { repoFile } from './dashboards';

const RULES_PATH = 'charts/switchboard/rules/switchboard-alerts.yaml';
const TESTS_PATH = 'test/monitoring/rules-test.yaml';
const RUNBOOKS = 'docs/operations.md';

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

interface RuleTests {
  rule_files: string[];
  tests: { name?: string; alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
}

function alerts(): Rule[] {
  const file = parse(readFileSync(repoFile(RULES_PATH), 'utf8')) as { groups: { name: string; rules: Rule[] }[] };
  return file.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined);
}

function promtool(...args: string[]): { status: number | null; output: string } {
  // From the repository root, so the paths in messages are the ones a reader runs by hand.
  const r = spawnSync(requireTool('promtool'), args, { cwd: repoFile('.'), encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.error, undefined, `promtool could not run: ${String(r.error)}`);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
function anchor(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function headingAnchors(markdown: string): Set<string> {
  return new Set([...markdown.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => anchor(m[1])));
}

describe('alert rules', () => {
  test(`promtool check rules ${RULES_PATH}`, () => {
    const r = promtool('check', 'rules', RULES_PATH);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, new RegExp(`SUCCESS: ${alerts().length} rules found`));
  });

  test(`promtool test rules ${TESTS_PATH}`, () => {
    const r = promtool('test', 'rules', TESTS_PATH);
    assert.equal(r.status, 0, r.output);
    assert.match(r.output, /SUCCESS/);
  });

  test('the unit tests load this rules file and cover every alert, firing and not firing', () => {
    const spec = parse(readFileSync(repoFile(TESTS_PATH), 'utf8')) as RuleTests;
    assert.deepEqual(spec.rule_files, ['../../' + RULES_PATH]);
    const cases = spec.tests.flatMap((t) => t.alert_rule_test ?? []);
    const names = alerts().map((a) => a.alert!);
    for (const name of names) {
      const mine = cases.filter((c) => c.alertname === name);
      assert.ok(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${name}: no test case in which it fires`);
      assert.ok(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${name}: no test case in which it stays quiet`);
    }
    for (const c of cases) assert.ok(names.includes(c.alertname), `${TESTS_PATH} tests an alert that does not exist: ${c.alertname}`);
  });

  test('SwitchboardHighErrorRate and the dashboard\'s error ratio count exactly the server-side codes, as the overload monitor does', () => {
    // The monitor counts the codes ErrorInfo marks serverSide (services/telemetry/counters.ts).
    const serverSide = ALL_ERROR_CODES.filter((c) => ErrorInfo[c].serverSide).sort();
    assert.deepEqual(serverSide, ['internal', 'unavailable']);
    const codesIn = (expr: string): string[][] =>
      [...expr.matchAll(/switchboard_errors_total\{[^}]*code=~"([^"]+)"/g)].map((m) => m[1].split('|').sort());
    const alert = alerts().find((a) => a.alert === 'SwitchboardHighErrorRate')!;
    assert.deepEqual(codesIn(alert.expr), [serverSide], `the alert's codes: ${alert.expr}`);
    assert.match(alert.annotations!.description!, new RegExp(`\\(${serverSide.join(', ')}\\)`), 'the description names them');
    const overview = JSON.parse(readFileSync(repoFile('charts/switchboard/dashboards/overview.json'), 'utf8')) as { panels: { title?: string; targets?: { expr?: string }[] }[] };
    const ratio = overview.panels.find((p) => p.title === 'Server-side error ratio')!;
    assert.deepEqual(ratio.targets!.map((t) => codesIn(t.expr ?? '')).flat(), [serverSide], 'the dashboard panel\'s codes');
  });

  test('every alert has a severity, a summary, a description and a runbook in docs/operations.md', () => {
    const anchors = headingAnchors(readFileSync(repoFile(RUNBOOKS), 'utf8'));
    for (const a of alerts()) {
      assert.match(a.labels?.severity ?? '', /^(warning|critical)$/, `${a.alert}: severity`);
      assert.ok(a.annotations?.summary, `${a.alert}: summary`);
      assert.ok(a.annotations?.description, `${a.alert}: description`);
      const url = a.annotations?.runbook_url ?? '';
      const m = /^docs\/operations\.md#([\w-]+)$/.exec(url);
      assert.ok(m, `${a.alert}: runbook_url ${url} is not docs/operations.md#<anchor>`);
      assert.equal(m[1], anchor(a.alert!), `${a.alert}: runbook anchor`);
      assert.ok(anchors.has(m[1]), `${a.alert}: docs/operations.md has no heading for #${m[1]}`);
    }
  });

  test('the runbooks section documents exactly the alerts that exist', () => {
    const doc = readFileSync(repoFile(RUNBOOKS), 'utf8');
    const section = doc.split(/^## /m).find((s) => s.startsWith('Alerts and runbooks'));
    assert.ok(section, `${RUNBOOKS} has no "Alerts and runbooks" section`);
    const documented = [...section.matchAll(/^### (Switchboard\w+)\s*$/gm)].map((m) => m[1]).sort();
    assert.deepEqual(documented, alerts().map((a) => a.alert!).sort());
  });
});
