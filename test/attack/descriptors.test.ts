// Attack class: descriptor exhaustion by a connection flood. With MAX_CONNECTIONS left at 0 the
// limit comes from RLIMIT_NOFILE and the flood is refused before descriptors run out; with a
// limit set above what the descriptors allow, accept(2) fails with EMFILE and the server backs
// off instead of crashing (the monitor's /proc reads used to throw EMFILE from a timer).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { descriptorLimit, effectiveMaxConnections } from '../../services/gateway/descriptors';
import { waitFor } from '../helpers/wait';
import { assertRssWithin, assertWitnessServed, peakRss, RawClient, settledRss, startTarget, Witness } from './harness';

const NOFILE = 256;

async function flood(port: number, n: number): Promise<RawClient[]> {
  const out: RawClient[] = [];
  for (let i = 0; i < n; i++) {
    const c = RawClient.openNoWait(port);
    c.socket.once('connect', () => c.line({ type: 'hello', user: `flood-${i}`, id: 'hello' }));
    out.push(c);
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  return out;
}

test('MAX_CONNECTIONS derived from the descriptor limit: a flood is refused, the witness served', async (t) => {
  const target = await startTarget({ OVERLOAD_INTERVAL_MS: '100' }, { nofile: NOFILE });
  t.after(() => target.stop());
  const max = Math.floor(NOFILE * 0.9) - 32;
  assert.equal(await target.metric('switchboard_connections_max'), max);
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const before = await settledRss(target);
  const { peak, result: attackers } = await peakRss(target, async () => {
    const a = await flood(target.port, 2 * NOFILE);
    t.after(() => a.forEach((c) => c.destroy()));
    await waitFor(() => a.filter((c) => c.closed || c.lines.length > 0).length === a.length, 10_000, 'every flood connection to be welcomed or refused');
    return a;
  });
  const welcomed = attackers.filter((c) => c.lines.some((m) => m.type === 'welcome')).length;
  assert.ok(welcomed > 0 && welcomed < max, `${welcomed} flood connections were let in, the limit is ${max}`);
  // Past the limit a newcomer is refused, or takes the place of the oldest connection that has not
  // said hello yet (eviction.ts): either way at most `max` are held.
  const refused = (await target.metric('switchboard_connections_rejected_total{reason="limit"}')) ?? 0;
  const evicted = (await target.metric('switchboard_connections_rejected_total{reason="evicted"}')) ?? 0;
  assert.ok(refused + evicted >= attackers.length - max, `${refused} refused and ${evicted} evicted of ${attackers.length}`);
  assert.equal(await target.metric('switchboard_connections_rejected_total{reason="accept_error"}'), 0, 'descriptors never ran out');
  assert.equal((await target.stats()).connections, welcomed + 1);
  await assertWitnessServed(witness);
  for (const c of attackers) c.destroy();
  await waitFor(async () => (await target.stats()).connections === 0, 5000, 'the flood to be gone');
  const late = await RawClient.open(target.port);
  t.after(() => late.destroy());
  await late.hello('late');
  assertRssWithin(before, peak, undefined, 'peak RSS');
  assertRssWithin(before, await settledRss(target));
  assert.equal(target.child.exitCode, null, 'the server is still up');
});

test('out of descriptors (MAX_CONNECTIONS above RLIMIT_NOFILE): accept errors back off, nothing crashes', async (t) => {
  const target = await startTarget({ MAX_CONNECTIONS: '100000', OVERLOAD_INTERVAL_MS: '100' }, { nofile: NOFILE });
  t.after(() => target.stop());
  const witness = await Witness.start(target.port, t);
  await witness.served(5);
  const attackers = await flood(target.port, 2 * NOFILE);
  t.after(() => attackers.forEach((c) => c.destroy()));
  await waitFor(() => attackers.filter((c) => c.closed || c.lines.length > 0).length === attackers.length, 10_000, 'every flood connection to be welcomed or dropped');
  // Several monitor intervals pass with no descriptor to spare: its /proc reads fail, quietly.
  await witness.served(50);
  await assertWitnessServed(witness);
  for (const c of attackers) c.destroy();
  await waitFor(async () => ((await target.stats().catch(() => ({ connections: -1 }))).connections as number) === 0, 5000, 'the flood to be gone');
  // Descriptors did run out: the flood was cut short (libuv accepts and closes what it cannot
  // keep), and the monitor's RSS reads failed with EMFILE, without taking the process down.
  const welcomed = attackers.filter((c) => c.lines.some((m) => m.type === 'welcome')).length;
  assert.ok(welcomed < NOFILE, `${welcomed} of ${attackers.length} flood connections got in`);
  assert.ok(((await target.stats()).monitor_read_failures as number) > 0, 'the monitor never ran out of descriptors');
  // The backoff ends: clients get in again.
  const late = await waitFor(
    async () => {
      const c = await RawClient.open(target.port);
      c.line({ type: 'hello', user: 'late', id: 'hello' });
      const ok = await c.waitFor((m) => m.id === 'hello', 1000).then(() => true, () => false);
      if (!ok) c.destroy();
      return ok ? c : undefined;
    },
    8000,
    'a new client to be welcomed after the backoff',
  );
  t.after(() => late.destroy());
  assert.equal(target.child.exitCode, null, 'the server is still up');
  assert.equal(target.logs().filter((l) => l.level === 'error').length, 0, JSON.stringify(target.logs().filter((l) => l.level === 'error')));
});

test('the derived limit: RLIMIT_NOFILE read from /proc/self/limits, 90% less 32; a set MAX_CONNECTIONS wins', () => {
  const limits = (soft: string) =>
    `Limit                     Soft Limit           Hard Limit           Units\nMax processes             63556                63556                processes\nMax open files            ${soft}                 1048576              files\n`;
  assert.equal(descriptorLimit(limits('1024')), 1024);
  assert.equal(descriptorLimit(limits('unlimited')), null);
  assert.equal(descriptorLimit('garbage'), null);
  assert.equal(effectiveMaxConnections(0, 1024), 889);
  assert.equal(effectiveMaxConnections(0, 20), 1);
  assert.equal(effectiveMaxConnections(0, null), 0);
  assert.equal(effectiveMaxConnections(500, 1024), 500);
  // This process's own limit is readable here (Linux).
  assert.ok((descriptorLimit() ?? 0) > 0);
});
