// Command lines on node:util parseArgs: its errors in one line of our words, the options of
// `switchboard flags set` and of the load generator. (The role picker is covered end to end in
// test/integration/cli.test.ts.)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseArgs } from 'node:util';
import { parseCommandLine, UsageError } from '../../load-tests/cli';
import { argsErrorMessage } from '../../services/control/args';
import { FlagError, parseFlag } from '../../services/control/flags';
import { applyFlagOptions } from '../../services/control/flags-cli';

function parseError(args: string[], allowPositionals = false): string {
  try {
    parseArgs({ args, options: { rollout: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals });
  } catch (err) {
    return argsErrorMessage(err);
  }
  return 'no error';
}

describe('argsErrorMessage', () => {
  // These follow parseArgs' messages; if a Node release rewords them, the fallback is its first line.
  test('unknown options, with or without positionals allowed', () => {
    assert.equal(parseError(['--verbose']), 'unknown option --verbose');
    assert.equal(parseError(['--verbose'], true), 'unknown option --verbose');
    assert.equal(parseError(['-x'], true), 'unknown option -x');
  });
  test('missing, ambiguous and unwanted values', () => {
    assert.equal(parseError(['--rollout']), '--rollout needs a value');
    assert.equal(parseError(['--rollout', '-5']), '--rollout needs a value (one that starts with "-" is written --rollout=-value)');
    assert.equal(parseError(['--help=yes']), '--help takes no value');
  });
  test('positionals where none are taken', () => {
    assert.equal(parseError(['stray']), 'unexpected argument "stray"');
  });
  test('anything else: the first line of its message', () => {
    assert.equal(argsErrorMessage(new Error('first\nsecond')), 'first');
    assert.equal(argsErrorMessage('text'), 'text');
  });
});

describe('switchboard flags set options', () => {
  const base = parseFlag({}, 'history');
  const fails = (args: string[], message: RegExp) =>
    assert.throws(
      () => applyFlagOptions(base, args),
      (err: unknown) => err instanceof FlagError && message.test(err.message),
      args.join(' '),
    );

  test('every option, as --opt value and --opt=value', () => {
    assert.deepEqual(applyFlagOptions(base, ['--enabled', 'false', '--rollout=25', '--beta', 'ada, grace,', '--non-critical=1', '--description', 'off for maintenance']), {
      name: 'history',
      enabled: false,
      rolloutPercent: 25,
      betaUsers: ['ada', 'grace'],
      nonCritical: true,
      description: 'off for maintenance',
    });
    assert.deepEqual(applyFlagOptions({ ...base, betaUsers: ['ada'] }, ['--beta', '']).betaUsers, [], 'empty --beta: none');
    assert.deepEqual(applyFlagOptions(base, []), base, 'no options: unchanged');
    assert.equal(applyFlagOptions(base, ['--description=-dash first']).description, '-dash first');
    // Fractions, as the file and Redis take them: the CLI can write back whatever they hold.
    assert.equal(applyFlagOptions(base, ['--rollout', '12.5']).rolloutPercent, 12.5);
  });

  test('bad values and unknown options: the messages of the hand-written parser', () => {
    fails(['--enabled', 'maybe'], /^--enabled must be true or false$/);
    fails(['--non-critical', 'yes'], /^--non-critical must be true or false$/);
    fails(['--rollout', 'lots'], /^--rollout must be a number 0-100$/);
    fails(['--rollout=-5'], /^--rollout must be a number 0-100$/);
    fails(['--rollout', '1e2'], /^--rollout must be a number 0-100$/);
    fails(['--rollout', '250'], /rolloutPercent must be a number 0-100/);
    fails(['--rollout', '100.5'], /rolloutPercent must be a number 0-100/);
    fails(['--enabled'], /^--enabled needs a value$/);
    fails(['--colour', 'red'], /^unknown option --colour$/);
    fails(['stray'], /^unexpected argument "stray"$/);
  });
});

describe('load-tests/cli.js command line', () => {
  test('the command and the options of load-tests/README.md and docs/performance.md', () => {
    assert.deepEqual(parseCommandLine(['fanout', '--sweep', '--targets', 'switchboard,baseline', '--sweep-start', '4000']), {
      cmd: 'fanout',
      o: { sweep: true, targets: 'switchboard,baseline', 'sweep-start': '4000' },
    });
    assert.deepEqual(parseCommandLine(['idle', '--targets', 'cluster', '--gateways', '3', '--connections', '30000', '--procs']).o, {
      targets: 'cluster',
      gateways: '3',
      connections: '30000',
      procs: true,
    });
    assert.deepEqual(parseCommandLine(['--rate=6000', 'tracing', '--no-confirm', '--pin', '0:1', '--out', 'r.json', '--mode', 'text', '--tick-ms', '2']), {
      cmd: 'tracing',
      o: { rate: '6000', 'no-confirm': true, pin: '0:1', out: 'r.json', mode: 'text', 'tick-ms': '2' },
    });
    assert.deepEqual(parseCommandLine(['suite', '--workers', '2', '--churn-rate', '2000', '--max-minutes', '90']).o, { workers: '2', 'churn-rate': '2000', 'max-minutes': '90' });
    assert.deepEqual(parseCommandLine(['peers', '--sweep', '--sweep-start', '4000', '--sweep-steps', '12', '--out', 'docs/perf/x.json']).o, { sweep: true, 'sweep-start': '4000', 'sweep-steps': '12', out: 'docs/perf/x.json' });
    assert.deepEqual(parseCommandLine(['suite', '--peers']), { cmd: 'suite', o: { peers: true } });
    assert.deepEqual(parseCommandLine([]), { cmd: '', o: {} });
    assert.deepEqual(parseCommandLine(['--help']), { cmd: '', o: { help: true } });
  });

  test('unknown options, bad numbers, missing values and a second command are usage errors', () => {
    const fails = (args: string[], message: RegExp) =>
      assert.throws(() => parseCommandLine(args), (err: unknown) => err instanceof UsageError && message.test(err.message), args.join(' '));
    fails(['fanout', '--rates', '100'], /^unknown option --rates$/);
    fails(['fanout', '--rate', 'fast'], /^--rate must be a number, got "fast"$/);
    fails(['fanout', '--duration='], /^--duration must be a number, got ""$/);
    fails(['fanout', '--rate'], /^--rate needs a value$/);
    fails(['fanout', '--sweep=yes'], /^--sweep takes no value$/);
    fails(['fanout', 'idle'], /^unexpected argument "idle"/);
  });
});
