/** Feature flag evaluation: the murmur3 hash, rollout distribution and monotonicity, beta users, shedding. */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { bucket, evaluate, FlagError, FlagStore, MAX_FLAGS, murmur3, parseFlag, parseFlagSet, type FeatureFlag } from '../../services/control/flags';

function flag(over: Partial<FeatureFlag> = {}): FeatureFlag {
  return { name: 'f', enabled: true, rolloutPercent: 100, betaUsers: [], nonCritical: false, description: '', ...over };
}

test('murmur3 x86_32 matches the reference vectors', () => {
  // Vectors from the reference implementation (SMHasher MurmurHash3_x86_32).
  const vectors: [string | Uint8Array, number, number][] = [
    ['', 0, 0],
    ['', 1, 0x514e28b7],
    ['', 0xffffffff, 0x81f16f39],
    [new Uint8Array([0, 0, 0, 0]), 0, 0x2362f9de],
    [new Uint8Array([0xff, 0xff, 0xff, 0xff]), 0, 0x76293b50],
    [new Uint8Array([0x21, 0x43, 0x65, 0x87]), 0, 0xf55b516b],
    [new Uint8Array([0x21, 0x43, 0x65, 0x87]), 0x5082edee, 0x2362f9de],
    [new Uint8Array([0x21, 0x43, 0x65]), 0, 0x7e4a8634],
    [new Uint8Array([0x21, 0x43]), 0, 0xa0f7b07a],
    [new Uint8Array([0x21]), 0, 0x72661cf4],
    ['aaaa', 0x9747b28c, 0x5a97808a],
    ['aaa', 0x9747b28c, 0x283e0130],
    ['aa', 0x9747b28c, 0x5d211726],
    ['a', 0x9747b28c, 0x7fa09ea6],
    ['abcd', 0x9747b28c, 0xf0478627],
    ['abc', 0x9747b28c, 0xc84a62dd],
    ['ab', 0x9747b28c, 0x74875592],
    ['Hello, world!', 0x9747b28c, 0x24884cba],
    ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
  ];
  for (const [input, seed, want] of vectors) {
    assert.equal(murmur3(input, seed), want, `murmur3(${JSON.stringify(typeof input === 'string' ? input : [...input])}, ${seed.toString(16)})`);
  }
  // UTF-8: the string and its bytes hash the same.
  assert.equal(murmur3('π€𝄞'), murmur3(Buffer.from('π€𝄞', 'utf8')));
});

test('rollout: the share of 100,000 users is within 1 percentage point of the target', () => {
  for (const pct of [1, 5, 25, 50, 75, 99]) {
    const f = flag({ name: `rollout-${pct}`, rolloutPercent: pct });
    let on = 0;
    for (let i = 0; i < 100_000; i++) if (evaluate(f, `user-${i}`)) on++;
    const share = on / 1000;
    assert.ok(Math.abs(share - pct) <= 1, `${pct}%: got ${share}%`);
  }
  assert.equal(evaluate(flag({ rolloutPercent: 0 }), 'anyone'), false);
  assert.equal(evaluate(flag({ rolloutPercent: 100 }), 'anyone'), true);
});

test('rollout is monotonic: raising the percentage keeps every user who was in', () => {
  const steps = [0, 5, 25, 50, 100];
  for (let i = 0; i < 20_000; i++) {
    const user = `u${i}`;
    let was = false;
    for (const pct of steps) {
      const now = evaluate(flag({ name: 'chat-v2', rolloutPercent: pct }), user);
      assert.ok(!was || now, `${user} left at ${pct}%`);
      was = now;
    }
  }
  assert.ok(bucket('chat-v2', 'u1') >= 0 && bucket('chat-v2', 'u1') < 100);
  // Buckets depend on the flag, so the same 5% of users do not get every experiment.
  let same = 0;
  for (let i = 0; i < 10_000; i++) if (bucket('a', `u${i}`) === bucket('b', `u${i}`)) same++;
  assert.ok(same < 300, `buckets of different flags coincide for ${same} of 10000 users`);
});

test('a fractional rollout evaluates as the next whole percentage up, as it always did', () => {
  // Buckets are whole, so `bucket < 25.5` picks the same users as `bucket < 26`: the evaluation
  // files and Redis hashes holding fractions have had since before the CRD.
  for (const [frac, whole] of [[25.5, 26], [12.5, 13], [0.5, 1], [99.01, 100]] as const) {
    for (let i = 0; i < 5_000; i++) {
      const user = `u${i}`;
      assert.equal(evaluate(flag({ name: 'frac', rolloutPercent: frac }), user), evaluate(flag({ name: 'frac', rolloutPercent: whole }), user), `${frac}% vs ${whole}% for ${user}`);
    }
  }
  const store = new FlagStore();
  store.setSource('file', [flag({ name: 'tiny', rolloutPercent: 0.5 })]);
  assert.deepEqual(store.featureStates(), [['tiny', true]], 'a share above 0 reaches someone (bucket 0)');
});

test('beta users are always on while the flag is enabled, and off when it is not', () => {
  const f = flag({ rolloutPercent: 0, betaUsers: ['alice', 'bob'] });
  assert.equal(evaluate(f, 'alice'), true);
  assert.equal(evaluate(f, 'bob'), true);
  assert.equal(evaluate(f, 'carol'), false);
  assert.equal(evaluate({ ...f, enabled: false }, 'alice'), false);
});

test('FlagStore: undefined flags are on, later sources win, nonCritical flags are shed while overloaded', () => {
  const store = new FlagStore();
  assert.equal(store.isEnabled('history', 'u'), true);
  store.setSource('file', [flag({ name: 'history', enabled: false }), flag({ name: 'direct', nonCritical: true })]);
  assert.equal(store.isEnabled('history', 'u'), false);
  store.setSource('redis', [flag({ name: 'history', enabled: true })]);
  assert.equal(store.isEnabled('history', 'u'), true);
  assert.deepEqual({ ...store.flagsFor('u') }, { history: true, direct: true });

  const monitor = Object.assign(new EventEmitter(), { overloaded: false });
  store.attachMonitor(monitor);
  let changes = 0;
  store.on('change', () => changes++);
  monitor.overloaded = true;
  monitor.emit('overloaded');
  assert.equal(store.isEnabled('direct', 'u'), false);
  assert.equal(store.isEnabled('history', 'u'), true, 'critical flags are not shed');
  assert.deepEqual(store.featureStates(), [
    ['direct', false],
    ['history', true],
  ]);
  monitor.overloaded = false;
  monitor.emit('recovered');
  assert.equal(store.isEnabled('direct', 'u'), true);
  assert.equal(changes, 2);
  store.detachMonitor();
  assert.equal(monitor.listenerCount('overloaded'), 0);
});

test('flag documents: both shapes parse, bad values are rejected with the field named', () => {
  const a = parseFlagSet({ flags: { history: { rolloutPercent: 5, betaUsers: ['x'] } } });
  const b = parseFlagSet([{ name: 'history', rolloutPercent: 5, betaUsers: ['x'] }]);
  assert.deepEqual(a, b);
  assert.deepEqual(a[0], { name: 'history', enabled: true, rolloutPercent: 5, betaUsers: ['x'], nonCritical: false, description: '' });
  assert.throws(() => parseFlag({ name: 'x', rolloutPercent: 101 }), /rolloutPercent/);
  // Fractions are accepted and kept as written (files and hashes written before the CRD hold
  // them); only out-of-range and non-numbers are refused.
  assert.equal(parseFlag({ name: 'x', rolloutPercent: 25.5 }).rolloutPercent, 25.5);
  assert.equal(parseFlagSet({ flags: { x: { rolloutPercent: 0.5 } } })[0].rolloutPercent, 0.5);
  assert.equal(parseFlag({ name: 'x', rolloutPercent: 0 }).rolloutPercent, 0);
  assert.throws(() => parseFlag({ name: 'x', rolloutPercent: -0.5 }), /rolloutPercent must be a number 0-100/);
  assert.throws(() => parseFlag({ name: 'x', rolloutPercent: 100.5 }), /rolloutPercent must be a number 0-100/);
  assert.throws(() => parseFlag({ name: 'x', rolloutPercent: Number.NaN }), /rolloutPercent must be a number 0-100/);
  assert.throws(() => parseFlag({ name: 'x', rolloutPercent: '25' }), /rolloutPercent must be a number 0-100/);
  assert.throws(() => parseFlag({ name: 'x', enabled: 'yes' }), /enabled/);
  assert.throws(() => parseFlag({ name: 'x', betaUsers: [1] }), /betaUsers/);
  assert.throws(() => parseFlag({ name: 'bad name' }), FlagError);
  assert.throws(() => parseFlagSet([{ name: 'x' }, { name: 'x' }]), /twice/);
  assert.deepEqual(parseFlagSet(null), []);
});

test('flags named like Object.prototype members are announced like any other', () => {
  // `__proto__` passes the name check; on a plain object `out["__proto__"] = false` set the
  // prototype instead, and the flag was missing from welcome.flags.
  const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
  const doc = JSON.parse(`{"flags":{${names.map((n) => `"${n}":{"enabled":false}`).join(',')}}}`) as unknown;
  const store = new FlagStore();
  store.setSource('file', parseFlagSet(doc));
  const out = store.flagsFor('u');
  assert.deepEqual(Object.keys(out).sort(), [...names].sort());
  for (const n of names) assert.equal(Object.getOwnPropertyDescriptor(out, n)?.value, false, n);
  const wire = JSON.parse(JSON.stringify(out)) as Record<string, unknown>;
  assert.deepEqual(Object.keys(wire).sort(), [...names].sort(), 'the JSON of welcome.flags carries every one');
  // An undefined flag is absent, not Object.prototype's function.
  const empty = new FlagStore().flagsFor('u');
  assert.equal(empty.constructor, undefined);
  assert.equal(JSON.stringify(empty), '{}');
});

/** `n` flags with distinct names of the longest allowed length (64 characters). */
function longNamed(n: number, prefix = 'f'): FeatureFlag[] {
  return Array.from({ length: n }, (_, i) => flag({ name: `${prefix}${String(i).padStart(63 - prefix.length, '0')}x`, enabled: false }));
}

test('at most MAX_FLAGS flags: past it a document or a store update is rejected and nothing changes', () => {
  assert.equal(MAX_FLAGS, 1000);
  const over = Object.fromEntries(Array.from({ length: MAX_FLAGS + 1 }, (_, i) => [`f${i}`, {}]));
  assert.throws(() => parseFlagSet({ flags: over }), /1001 flags, more than the limit of 1000/);
  assert.throws(() => parseFlagSet(Object.keys(over).map((name) => ({ name }))), /more than the limit/);
  assert.equal(parseFlagSet({ flags: Object.fromEntries(Object.entries(over).slice(1)) }).length, MAX_FLAGS);

  const store = new FlagStore();
  store.setSource('file', [flag({ name: 'history', enabled: false })]);
  let changes = 0;
  store.on('change', () => changes++);
  assert.throws(() => store.setSource('redis', longNamed(MAX_FLAGS + 1)), FlagError);
  // The file's 1 and Redis's 1,000 are 1,001 together: refused too, whoever sends them.
  assert.throws(() => store.setSource('redis', longNamed(MAX_FLAGS)), /with the other sources' flags/);
  assert.equal(changes, 0);
  assert.deepEqual(store.list().map((f) => f.name), ['history'], 'the last good set stays');
  store.setSource('redis', longNamed(MAX_FLAGS - 1));
  assert.equal(store.list().length, MAX_FLAGS);
});

test('a full flag set of the longest names fits welcome in the default frame limit many times over', () => {
  const store = new FlagStore();
  store.setSource('file', longNamed(MAX_FLAGS));
  const bytes = Buffer.byteLength(JSON.stringify(store.flagsFor('someone')));
  assert.ok(bytes <= MAX_FLAGS * 73 + 2, `${bytes} bytes`);
  assert.ok(bytes < 1024 * 1024 / 10, `${bytes} bytes against MAX_FRAME_BYTES 1 MiB`);
});
