/**
 * `npm run chaos -- --minutes 10 --seed 7 [--gateways 3 --workers 1-3 --rooms 64 --out f.json]`
 *
 * Runs the cluster as operated (real redis-server, gateways and broadcast workers as child
 * processes) under a seeded fault schedule, prints one summary and writes it as JSON. Exit code
 * 0 when every invariant held, 1 when one broke (the summary names the first), 2 on bad usage.
 * The same seed replays the same schedule, layout and traffic choices.
 */
import { parseArgs } from 'node:util';
import { runChaos } from './run';

const USAGE = `usage: node dist/test/chaos/cli.js [--minutes M] [--seed N] [--gateways G] [--workers MIN-MAX]
       [--rooms R] [--rate MSG_PER_S] [--lease-ms MS] [--heartbeat-ms MS] [--max-pause-ms MS]
       [--out summary.json] [--keep] [--quiet]`;

function int(name: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min}, got "${v}"`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string' },
      seed: { type: 'string' },
      gateways: { type: 'string' },
      workers: { type: 'string' },
      rooms: { type: 'string' },
      rate: { type: 'string' },
      'lease-ms': { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'max-pause-ms': { type: 'string' },
      out: { type: 'string' },
      keep: { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const minutes = int('minutes', values.minutes, 10, 0.1);
  const seed = Math.floor(int('seed', values.seed, Date.now() % 1_000_000, 0));
  const gateways = Math.floor(int('gateways', values.gateways, 3, 1));
  const w = /^(\d+)(?:-(\d+))?$/.exec(values.workers ?? '1-3');
  if (w === null) throw new Error(`--workers must be N or MIN-MAX, got "${values.workers}"`);
  const workersMin = Math.max(1, Number(w[1]));
  const workersMax = Math.max(workersMin, Number(w[2] ?? w[1]));
  const rooms = Math.floor(int('rooms', values.rooms, 64, 8));
  const res = await runChaos({
    seed,
    durationMs: Math.round(minutes * 60_000),
    gateways,
    workersMin,
    workersMax,
    rooms,
    rate: int('rate', values.rate, 150, 1),
    leaseMs: int('lease-ms', values['lease-ms'], 3000, 100),
    heartbeatMs: int('heartbeat-ms', values['heartbeat-ms'], 1000, 100),
    maxPauseMs: int('max-pause-ms', values['max-pause-ms'], 5000, 1000),
    out: values.out,
    keep: values.keep,
    log: values.quiet ? () => undefined : (l) => process.stderr.write(l + '\n'),
  });
  process.stdout.write(res.text + '\n');
  process.stdout.write(`summary: ${res.outPath}${res.summary.ok ? '' : `; logs and events: ${res.runDir}`}\n`);
  return res.summary.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  },
);
