/**
 * Compression benchmark: what lz4 and zstd cost per message and how many bytes they save, on
 * compressible payloads (chat-like JSON) and on random ones (base64 of random bytes, what
 * encrypted or already-compressed data looks like), at several sizes.
 *
 *   npx tsc -p tsconfig.json && node dist/load-tests/compression-bench.js [--seconds-per-case 0.5] [--out FILE]
 *
 * Per case it measures, single-threaded and in-process: compress and decompress time per message
 * (mean over as many messages as fit in the time budget), the compressed size, and what the server
 * would actually send (the compressed frame only when smaller: random payloads go out plain, so the
 * cost of trying is the whole cost). It also measures a fan-out of one message to 1000 recipients
 * through Outbound.binaryFor, which compresses once per codec, to show that per-recipient cost is
 * a cache lookup. Results go to stdout as a table and to a JSON file.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { argsErrorMessage } from '../services/control/args';
import { Codec, compressBody, decompressBody, Outbound } from '../services/protocol';

interface Row {
  payload: 'compressible' | 'random';
  bytes: number;
  codec: 'lz4' | 'zstd';
  compressUs: number;
  decompressUs: number;
  compressedBytes: number;
  /** Bytes on the wire after the "only when smaller" rule, as a share of the original. */
  sentRatio: number;
  savedPercent: number;
  messages: number;
}

/** --seconds-per-case S [0.5] and --out FILE; anything else is an error. */
function options(): { secondsPerCase: number; out: string } {
  let values;
  try {
    ({ values } = parseArgs({ options: { 'seconds-per-case': { type: 'string', default: '0.5' }, out: { type: 'string' } }, strict: true }));
  } catch (err) {
    throw new Error(argsErrorMessage(err));
  }
  const secondsPerCase = Number(values['seconds-per-case']);
  if (!(secondsPerCase > 0)) throw new Error(`--seconds-per-case must be a number > 0, got "${values['seconds-per-case']}"`);
  return { secondsPerCase, out: values.out ?? `load-tests/results/compression-${new Date().toISOString().replace(/[:.]/g, '-')}.json` };
}

function chatJson(n: number): Buffer {
  const users = ['alice', 'bob', 'carol', 'dave'];
  const words = ['the', 'deploy', 'is', 'green', 'again', 'after', 'the', 'rollback', 'of', 'build', '4711', 'ok', 'thanks', 'see', 'logs'];
  const msgs: object[] = [];
  let i = 0;
  let size = 2;
  while (size < n) {
    const text = Array.from({ length: 8 + (i % 7) }, (_, k) => words[(i * 3 + k) % words.length]).join(' ');
    const m = { type: 'message', room: 'ops', from: users[i % users.length], data: { text, at: 1_700_000_000_000 + i * 137 }, seq: i + 1 };
    msgs.push(m);
    size += JSON.stringify(m).length + 1;
    i++;
  }
  return Buffer.from(JSON.stringify(msgs)).subarray(0, n);
}

function randomJson(n: number): Buffer {
  const s = JSON.stringify({ type: 'message', data: randomBytes(n).toString('base64') });
  return Buffer.from(s).subarray(0, n);
}

async function timeLoop(budgetMs: number, fn: () => unknown): Promise<{ us: number; n: number }> {
  // Warm up, then run until the budget is spent.
  for (let i = 0; i < 20; i++) await fn();
  const t0 = process.hrtime.bigint();
  let n = 0;
  const deadline = t0 + BigInt(Math.round(budgetMs * 1e6));
  while (process.hrtime.bigint() < deadline || n < 50) {
    await fn();
    n++;
  }
  return { us: Number(process.hrtime.bigint() - t0) / 1000 / n, n };
}

async function measure(payload: Row['payload'], bytes: number, codecName: Row['codec'], budgetMs: number): Promise<Row> {
  const data = payload === 'compressible' ? chatJson(bytes) : randomJson(bytes);
  const codec = codecName === 'lz4' ? Codec.Lz4 : Codec.Zstd;
  const packed = await compressBody(codec, data);
  const c = await timeLoop(budgetMs, () => compressBody(codec, data));
  const d = await timeLoop(budgetMs, () => decompressBody(codec, packed, 64 * 1024 * 1024));
  const sent = Math.min(packed.length, data.length);
  return {
    payload,
    bytes,
    codec: codecName,
    compressUs: round(c.us),
    decompressUs: round(d.us),
    compressedBytes: packed.length,
    sentRatio: round(sent / data.length, 3),
    savedPercent: round((1 - sent / data.length) * 100, 1),
    messages: c.n,
  };
}

/**
 * One message to `n` recipients per codec: the first binaryFor compresses, the rest are cache
 * hits. Median of 5 runs of: the first call, and each later call.
 */
async function fanout(n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [name, codec] of [['lz4', Codec.Lz4], ['zstd', Codec.Zstd]] as const) {
    const firsts: number[] = [];
    const rests: number[] = [];
    for (let rep = 0; rep < 5; rep++) {
      const msg = new Outbound(JSON.stringify({ type: 'message', room: 'r', data: chatJson(8192).toString() }));
      msg.binary();
      const t0 = process.hrtime.bigint();
      if (msg.binaryFor(codec, 512) === null) await new Promise<void>((res) => msg.binaryFor(codec, 512, { frameReady: res }));
      const t1 = process.hrtime.bigint();
      for (let i = 1; i < n; i++) msg.binaryFor(codec, 512);
      const t2 = process.hrtime.bigint();
      firsts.push(Number(t1 - t0) / 1000);
      rests.push(Number(t2 - t1) / 1000 / (n - 1));
    }
    const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
    out[`${name}_first_us`] = round(median(firsts));
    out[`${name}_per_further_recipient_us`] = round(median(rests), 3);
  }
  return out;
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

async function main(opts: { secondsPerCase: number; out: string }): Promise<void> {
  const budgetMs = opts.secondsPerCase * 1000;
  const rows: Row[] = [];
  for (const payload of ['compressible', 'random'] as const) {
    for (const bytes of [512, 2048, 16_384, 65_536]) {
      for (const codec of ['lz4', 'zstd'] as const) rows.push(await measure(payload, bytes, codec, budgetMs));
    }
  }
  const fan = await fanout(1000);
  const head = ['payload', 'bytes', 'codec', 'compress us', 'decompress us', 'compressed', 'saved %'];
  const lines = [head, ...rows.map((r) => [r.payload, String(r.bytes), r.codec, String(r.compressUs), String(r.decompressUs), String(r.compressedBytes), String(r.savedPercent)])];
  const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  for (const l of lines) process.stdout.write(l.map((c, i) => c.padStart(widths[i])).join('  ') + '\n');
  process.stdout.write(`fan-out of one 8 KiB message to 1000 recipients: ${JSON.stringify(fan)}\n`);
  const out = resolve(opts.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ node: process.version, at: new Date().toISOString(), rows, fanout: fan }, null, 2) + '\n');
  process.stdout.write(`written ${out}\n`);
}

let opts: { secondsPerCase: number; out: string };
try {
  opts = options();
} catch (err) {
  process.stderr.write(`compression-bench: ${(err as Error).message}\nusage: node dist/load-tests/compression-bench.js [--seconds-per-case 0.5] [--out FILE]\n`);
  process.exit(2);
}
main(opts).catch((err: unknown) => {
  process.stderr.write(`compression-bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
