// The logger (pino underneath): the line format callers and log readers rely on, levels,
// child fields, errors without stacks, secret-looking keys redacted, and no line lost when the
// process exits right after logging.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { createLogger, REDACTED, silentLogger, type LogLevel } from '../../services/telemetry/log';

function capture(level: LogLevel = 'debug', base: Record<string, unknown> = {}) {
  const raw: string[] = [];
  const log = createLogger(level, base, (l) => raw.push(l));
  const lines = () => raw.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, raw, lines };
}

describe('log', () => {
  test('one JSON object a line: level name, ISO ts, msg, fields; no pid or hostname', () => {
    const { log, raw, lines } = capture('debug', { role: 'standalone' });
    log.info('listening', { port: 4000 });
    assert.equal(raw.length, 1);
    assert.ok(raw[0].endsWith('}\n') && !raw[0].slice(0, -1).includes('\n'), raw[0]);
    const [rec] = lines();
    assert.equal(rec.level, 'info');
    assert.equal(rec.msg, 'listening');
    assert.equal(rec.port, 4000);
    assert.equal(rec.role, 'standalone');
    assert.equal(typeof rec.ts, 'string');
    assert.equal(new Date(rec.ts as string).toISOString(), rec.ts);
    assert.deepEqual(Object.keys(rec).sort(), ['level', 'msg', 'port', 'role', 'ts']);
  });

  test('levels: below the minimum is dropped; silent writes nothing', () => {
    const { log, lines } = capture('warn');
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    assert.deepEqual(lines().map((r) => [r.level, r.msg]), [['warn', 'w'], ['error', 'e']]);
    const silent = capture('silent');
    silent.log.error('nothing');
    silent.log.child({ a: 1 }).error('nothing');
    assert.equal(silent.raw.length, 0);
    silentLogger.error('nothing either'); // must not throw
    const all = capture('debug');
    all.log.debug('d');
    assert.equal(all.lines()[0].level, 'debug');
  });

  test('child fields are merged, the call fields win over them (each key once), and the parent is unchanged', () => {
    const { log, raw, lines } = capture('info', { role: 'gateway' });
    const c = log.child({ server: 's1', component: 'api' });
    c.child({ session: 7 }).info('a', { component: 'flags', role: 'gateway' });
    log.info('b');
    assert.equal(raw[0].match(/"component"/g)?.length, 1, raw[0]);
    assert.equal(raw[0].match(/"role"/g)?.length, 1, raw[0]);
    const [a, b] = lines();
    assert.equal(a.role, 'gateway');
    assert.equal(a.server, 's1');
    assert.equal(a.session, 7);
    assert.equal(a.component, 'flags');
    assert.equal(b.server, undefined);
  });

  test('err: an Error becomes {message, name}, never a stack; other values are kept', () => {
    const { log, raw, lines } = capture();
    log.error('handler failed', { err: new TypeError('boom') });
    log.warn('retrying', { err: 'connection refused' });
    log.child({ err: new RangeError('in a child') }).info('c');
    const [a, b, c] = lines();
    assert.deepEqual(a.err, { message: 'boom', name: 'TypeError' });
    assert.equal(b.err, 'connection refused');
    assert.deepEqual(c.err, { message: 'in a child', name: 'RangeError' });
    assert.ok(!raw.join('').includes('at '), 'no stack frames');
  });

  test('secret-looking keys are redacted, at the top, one and two levels down, and in child fields', () => {
    const { log, raw, lines } = capture();
    log.child({ token: 'child-token-1' }).warn('oops', {
      authSecret: 'top-secret-1',
      apiKey: 'api-key-1',
      password: 'pw-1',
      req: { headers: { authorization: 'Bearer header-1' }, token: 'tok-1' },
      user: 'ada',
    });
    const [rec] = lines();
    assert.equal(rec.token, REDACTED);
    assert.equal(rec.authSecret, REDACTED);
    assert.equal(rec.apiKey, REDACTED);
    assert.equal(rec.password, REDACTED);
    assert.deepEqual(rec.req, { headers: { authorization: REDACTED }, token: REDACTED });
    assert.equal(rec.user, 'ada');
    for (const secret of ['child-token-1', 'top-secret-1', 'api-key-1', 'pw-1', 'header-1', 'tok-1']) assert.ok(!raw[0].includes(secret), `${secret} leaked: ${raw[0]}`);
  });

  test("redactedConfig's markers ('<set>', '' for unset) pass: the start-up line still says whether a secret is set", () => {
    const { log, lines } = capture();
    log.info('starting', { config: { authSecret: '<set>', apiKey: '', tcpPort: 4000 } });
    assert.deepEqual(lines()[0].config, { authSecret: '<set>', apiKey: '', tcpPort: 4000 });
  });

  test('lines logged just before process.exit reach stderr (synchronous destination)', () => {
    const script = `
      const { createLogger } = require(${JSON.stringify(require.resolve('../../services/telemetry/log'))});
      const log = createLogger('info', { role: 'test' });
      for (let i = 0; i < 5000; i++) log.info('line', { i, pad: 'x'.repeat(100) });
      log.info('stopped');
      process.exit(0);
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    assert.equal(r.status, 0, r.stderr.slice(-2000));
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 5001);
    assert.equal((JSON.parse(lines[lines.length - 1]) as Record<string, unknown>).msg, 'stopped');
  });
});
