// Command lines on node:util parseArgs: its errors in one line of our words, and the options of
// `switchboard flags set`. (The role picker is covered end to end in test/integration/cli.test.ts.)
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseArgs } from 'node:util';
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
  });

  test('bad values and unknown options: the messages of the hand-written parser', () => {
    fails(['--enabled', 'maybe'], /^--enabled must be true or false$/);
    fails(['--non-critical', 'yes'], /^--non-critical must be true or false$/);
    fails(['--rollout', 'lots'], /^--rollout must be a number 0-100$/);
    fails(['--rollout', '250'], /rolloutPercent must be a number 0-100/);
    fails(['--enabled'], /^--enabled needs a value$/);
    fails(['--colour', 'red'], /^unknown option --colour$/);
    fails(['stray'], /^unexpected argument "stray"$/);
  });
});
