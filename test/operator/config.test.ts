// The operator's settings are loaded by the server's machinery (issue 15 item 2): the same
// parsing per kind (booleans above all), the same ConfigError, the same `.env` handling; and
// docs/operator.md's Settings table lists exactly the operator's table.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadOperatorConfig, OPERATOR_SETTINGS } from '../../operator/config';
import { ConfigError, loadConfig } from '../../services/control/config';

const none = { dotEnvPath: null };
const op = (env: Record<string, string>) => loadOperatorConfig(env, none);

/** A value's fate: the boolean it parses to, or the ConfigError's expectation. */
function fate(load: () => boolean): boolean | string {
  try {
    return load();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return `error: expected ${err.expected}`;
  }
}

test('booleans parse exactly as the server\'s do', () => {
  for (const value of ['true', 'false', 'TRUE', 'False', '1', '0', 'yes', 'no', 'on', 'off', 'enabled', ' true']) {
    const server = fate(() => loadConfig({ env: { REDIS_CLUSTER: value }, dotEnvPath: null }).redisCluster);
    const operator = fate(() => op({ LEADER_ELECTION: value }).leaderElection);
    assert.deepEqual(operator, server, `LEADER_ELECTION=${JSON.stringify(value)}`);
  }
  assert.throws(() => op({ LEADER_ELECTION: 'yes' }), { name: 'ConfigError', message: 'invalid LEADER_ELECTION="yes": expected true or false' });
});

test('defaults, integers and the admin port', () => {
  const c = op({ POD_NAMESPACE: 'ops' });
  assert.deepEqual({ ...c, identity: undefined }, {
    kubeconfig: undefined, watchNamespace: '', namespace: 'ops', adminPort: 8081, adminHost: '0.0.0.0', leaderElection: true,
    leaseName: 'switchboard-operator', leaseDurationMs: 15_000, resyncMs: 30_000, identity: undefined, ownerDeployment: '',
  });
  assert.match(c.identity, /-\d+$/, 'hostname-pid');
  assert.equal(op({ OPERATOR_NAMESPACE: 'a', POD_NAMESPACE: 'b' }).namespace, 'a');
  assert.equal(op({ POD_NAME: 'operator-0' }).identity, 'operator-0');
  assert.equal(op({ LEASE_NAME: '' }).leaseName, 'switchboard-operator', 'empty is the default');
  assert.equal(op({ OPERATOR_ADMIN_PORT: '-1' }).adminPort, -1, '-1 disables');
  assert.equal(op({ OPERATOR_ADMIN_PORT: '0' }).adminPort, 0);
  for (const [key, value] of [['OPERATOR_ADMIN_PORT', '70000'], ['OPERATOR_ADMIN_PORT', '-2'], ['LEASE_DURATION_MS', '999'], ['RESYNC_MS', '1.5'], ['RESYNC_MS', ''], ['RESYNC_MS', '3000000000'], ['LEASE_DURATION_MS', '2147483648']]) {
    assert.throws(() => op({ [key]: value }), (err: unknown) => err instanceof ConfigError && err.key === key, `${key}=${value}`);
  }
});

test('a .env file is read like the server\'s, the environment winning', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'operator-env-'));
  const file = path.join(dir, '.env');
  writeFileSync(file, '# operator\nLEASE_NAME=from-file\nRESYNC_MS="5000"\nleader_election=false\n');
  const c = loadOperatorConfig({ RESYNC_MS: '7000' }, { dotEnvPath: file });
  assert.equal(c.leaseName, 'from-file');
  assert.equal(c.resyncMs, 7000);
  assert.equal(c.leaderElection, false, 'keys are matched case-insensitively in .env');
});

test('docs/operator.md lists every operator setting, in the table\'s order, with its default', () => {
  const doc = readFileSync(path.join(__dirname, '..', '..', '..', 'docs', 'operator.md'), 'utf8');
  const section = doc.slice(doc.indexOf('\n## Settings\n'));
  const rows = section.split('\n## ')[1].split('\n').filter((l) => /^\| `[A-Z_]+` \|/.test(l)).map((l) => l.split('|').map((c) => c.trim()));
  assert.deepEqual(rows.map((r) => r[1].replace(/`/g, '')), OPERATOR_SETTINGS.map((s) => s.key));
  for (const s of OPERATOR_SETTINGS) {
    const row = rows.find((r) => r[1] === `\`${s.key}\``)!;
    if (s.default !== '') assert.ok(row[2].replace(/`/g, '').includes(s.default), `${s.key}: the documented default ${row[2]} says ${s.default}`);
  }
});
