/**
 * The cluster data path, measured per published message: which Redis commands each hop sends
 * (from MONITOR, classified by the connection that sent them and the key they touch), the bytes
 * Redis reads and writes, and the CPU each process spends, at a fixed publish rate. This is the
 * map for making the cluster path cheaper (docs/performance.md, "Cluster data path").
 *
 *   node dist/load-tests/pathmap.js [--rooms 10] [--room-size 50] [--rate 200] [--seconds 10] [--ref]
 *
 * Two phases on the same cluster: a short one under MONITOR (command counts; MONITOR slows
 * Redis, so nothing else is measured then), and a longer one without it (bytes, round trips and
 * CPU). Round trips are counted where they cost: the reads and writes Redis does on its client
 * sockets (INFO stats total_reads_processed / total_writes_processed: one read per batch of
 * commands a client sent, one write per batch of replies), and the read and write system calls
 * of each process. `--ref` measures the build in LOADTEST_REF_ROOT instead of this one (a
 * before/after comparison with the same measuring code).
 */
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { procUsage, startCluster, type Target } from './targets';

interface Member {
  socket: Socket;
  buf: string;
  received: number;
}

function open(port: number, user: string, rooms: string[]): Promise<Member> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true });
    const m: Member = { socket, buf: '', received: 0 };
    let acks = 0;
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      m.buf += d.toString('latin1');
      let nl: number;
      while ((nl = m.buf.indexOf('\n')) !== -1) {
        const line = m.buf.slice(0, nl);
        m.buf = m.buf.slice(nl + 1);
        if (line.startsWith('{"type":"message"')) m.received++;
        else if (line.startsWith('{"type":"ok"') && ++acks === rooms.length) resolve(m);
      }
    });
    socket.write(JSON.stringify({ type: 'hello', user }) + '\n');
    for (const room of rooms) socket.write(JSON.stringify({ type: 'join_room', room, id: room }) + '\n');
  });
}

/** A RESP connection: send one command, read replies (or a MONITOR stream) as text. */
function redisConn(port: number): Promise<{ socket: Socket; command(...args: string[]): Promise<string>; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => resolve(api));
    socket.once('error', reject);
    let data = '';
    let waiter: ((s: string) => void) | null = null;
    const lines: string[] = [];
    socket.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      if (waiter !== null) {
        // Bulk replies of INFO and CLIENT LIST: wait for the whole payload.
        const m = /^\$(\d+)\r\n/.exec(data);
        if (m !== null && data.length >= m[0].length + Number(m[1]) + 2) {
          const w = waiter;
          waiter = null;
          const body = data.slice(m[0].length, m[0].length + Number(m[1]));
          data = data.slice(m[0].length + Number(m[1]) + 2);
          w(body);
        } else if (data.startsWith('+') && data.includes('\r\n')) {
          const w = waiter;
          waiter = null;
          const end = data.indexOf('\r\n');
          const body = data.slice(1, end);
          data = data.slice(end + 2);
          w(body);
        }
        return;
      }
      let nl: number;
      while ((nl = data.indexOf('\r\n')) !== -1) {
        lines.push(data.slice(0, nl));
        data = data.slice(nl + 2);
      }
    });
    const api = {
      socket,
      lines,
      command: (...args: string[]) =>
        new Promise<string>((res) => {
          waiter = res;
          socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
        }),
    };
  });
}

const HOPS: [string, RegExp][] = [
  ['gateway: ingress XADD', /^gw "XADD" "sb:in:/],
  ['broadcast: read ingress (XREADGROUP)', /^bcs "XREADGROUP"/],
  ['broadcast: routing set (SMEMBERS)', /^bc "SMEMBERS" "sb:room:/],
  ['broadcast: sequence + history script (EVALSHA)', /^bc "EVALSHA"/],
  ['  inside the script (HMGET, HINCRBY, XADD history, ...)', /^lua /],
  ['broadcast: egress XADD', /^bc "XADD" "sb:out:/],
  ['broadcast: XACK', /^bcs? "XACK"/],
  ['broadcast: XTRIM ingress', /^bcs? "XTRIM"/],
  ['gateway: read egress (XREAD)', /^gwe "XREAD"/],
];

function classify(line: string, names: Map<string, string>): string {
  // 1712345678.123456 [0 127.0.0.1:5555] "XADD" "sb:in:{3}" ...   or   [0 lua] "HINCRBY" ...
  const m = /^\+?\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(line);
  if (m === null) return '';
  const who = m[1] === 'lua' ? 'lua' : (names.get(m[1]) ?? '?');
  const tag = who === 'lua' ? 'lua' : who.startsWith('sb-gw-') ? (who.endsWith('-egress') ? 'gwe' : 'gw') : /^sb-bc-.*-s\d+$/.test(who) ? 'bcs' : who.startsWith('sb-bc-') ? 'bc' : '?';
  // ioredis sends some command names in lower case.
  const rest = m[2].replace(/^"([a-zA-Z]+)"/, (_, c: string) => `"${c.toUpperCase()}"`);
  const text = `${tag} ${rest}`;
  for (const [hop, re] of HOPS) if (re.test(text)) return hop;
  return `other: ${tag} ${rest.split(' ')[0]}`;
}

async function publishFor(members: Member[][], rooms: string[], rate: number, seconds: number): Promise<number> {
  let sent = 0;
  const total = Math.round(rate * seconds);
  const start = Date.now();
  const payload = 'x'.repeat(80);
  while (sent < total) {
    const due = Math.min(total, Math.floor(((Date.now() - start) / 1000) * rate));
    for (; sent < due; sent++) {
      const r = sent % rooms.length;
      members[r][sent % members[r].length].socket.write(`{"type":"send_chat","room":"${rooms[r]}","data":{"p":"${payload}","n":${sent}}}\n`);
    }
    await new Promise((res) => setTimeout(res, 2));
  }
  return sent;
}

async function settle(members: Member[][], expected: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const got = () => members.flat().reduce((n, m) => n + m.received, 0);
  while (got() < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

function info(text: string, key: string): number {
  return Number(new RegExp(`^${key}:(\\d+)`, 'm').exec(text)?.[1] ?? 0);
}

/** `INFO commandstats` as command -> calls. */
function commandCalls(text: string): Map<string, number> {
  const calls = new Map<string, number>();
  for (const m of text.matchAll(/^cmdstat_(\S+):calls=(\d+),usec=(\d+)/gm)) {
    calls.set(m[1], Number(m[2]));
    calls.set(`${m[1]} µs`, Number(m[3]));
  }
  return calls;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rooms: { type: 'string', default: '10' },
      'room-size': { type: 'string', default: '50' },
      rate: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '10' },
      'monitor-messages': { type: 'string', default: '400' },
      ref: { type: 'boolean', default: false },
    },
  });
  const nRooms = Number(values.rooms);
  const size = Number(values['room-size']);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const refRoot = process.env.LOADTEST_REF_ROOT;
  if (values.ref === true && (refRoot === undefined || refRoot === '')) throw new Error('--ref needs LOADTEST_REF_ROOT (a built checkout)');
  const cli = values.ref === true ? join(refRoot!, 'dist', 'services', 'cli.js') : undefined;
  const target: Target = await startCluster(2, { STREAM_SHARDS: '8' }, 1, 'cluster', cli);
  try {
    const rooms = Array.from({ length: nRooms }, (_, i) => `path-${i}`);
    const members: Member[][] = [];
    for (let r = 0; r < nRooms; r++) {
      const list: Member[] = [];
      for (let i = 0; i < size; i++) list.push(await open(target.ports[i % target.ports.length], `u${r}-${i}`, [rooms[r]]));
      members.push(list);
    }
    const redis = await redisConn(target.redisPort!);
    const names = new Map<string, string>();
    for (const line of (await redis.command('CLIENT', 'LIST')).split('\n')) {
      const addr = /addr=(\S+)/.exec(line)?.[1];
      const name = /name=(\S*)/.exec(line)?.[1];
      if (addr !== undefined && name !== undefined && name !== '') names.set(addr, name);
    }
    // Phase 1: command counts under MONITOR.
    await publishFor(members, rooms, rate, 1); // warm up
    await settle(members, rate * size);
    const mon = await redisConn(target.redisPort!);
    mon.socket.write('MONITOR\r\n');
    await new Promise((r) => setTimeout(r, 200));
    const monitored = Number(values['monitor-messages']);
    const before1 = members.flat().reduce((n, m) => n + m.received, 0);
    await publishFor(members, rooms, Math.min(rate, monitored), monitored / Math.min(rate, monitored));
    await settle(members, before1 + monitored * size);
    await new Promise((r) => setTimeout(r, 300));
    mon.socket.destroy();
    const counts = new Map<string, number>();
    for (const line of mon.lines) {
      const hop = classify(line, names);
      if (hop !== '') counts.set(hop, (counts.get(hop) ?? 0) + 1);
    }
    // Phase 2: bytes and CPU without MONITOR.
    const info0 = await redis.command('INFO', 'stats');
    const cmd0 = commandCalls(await redis.command('INFO', 'commandstats'));
    const use0 = (target.processes ?? []).map((p) => procUsage([p.pid]));
    const before2 = members.flat().reduce((n, m) => n + m.received, 0);
    const t0 = Date.now();
    const sent = await publishFor(members, rooms, rate, seconds);
    await settle(members, before2 + sent * size);
    const elapsed = (Date.now() - t0) / 1000;
    const info1 = await redis.command('INFO', 'stats');
    const cmd1 = commandCalls(await redis.command('INFO', 'commandstats'));
    const use1 = (target.processes ?? []).map((p) => procUsage([p.pid]));
    const cpu0 = use0.map((u) => u.cpuS);
    const cpu1 = use1.map((u) => u.cpuS);
    const per = (n: number) => Math.round((n / sent) * 1000) / 1000;
    const delivered = members.flat().reduce((n, m) => n + m.received, 0) - before2;
    const out = {
      date: new Date().toISOString(),
      build: values.ref === true ? refRoot : 'this checkout',
      workload: { rooms: nRooms, roomSize: size, connections: nRooms * size, rate, seconds, payloadBytes: 100 },
      commandsPerMessage: Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, Math.round((v / monitored) * 1000) / 1000])),
      // At the asked rate (phase 2), by command name, scripts' inner commands included.
      redisCallsPerMessageAtRate: Object.fromEntries(
        [...cmd1]
          .map(([k, v]) => [k, per(v - (cmd0.get(k) ?? 0))] as const)
          .filter(([k, v]) => v > 0 && !['info', 'client|list', 'monitor'].includes(k))
          .sort((a, b) => b[1] - a[1]),
      ),
      redisBytesPerMessage: {
        in: Math.round((info(info1, 'total_net_input_bytes') - info(info0, 'total_net_input_bytes')) / sent),
        out: Math.round((info(info1, 'total_net_output_bytes') - info(info0, 'total_net_output_bytes')) / sent),
      },
      redisSocketOpsPerMessage: {
        reads: per(info(info1, 'total_reads_processed') - info(info0, 'total_reads_processed')),
        writes: per(info(info1, 'total_writes_processed') - info(info0, 'total_writes_processed')),
      },
      syscallsPerMessage: Object.fromEntries(
        (target.processes ?? []).map((p, i) => [p.role, { read: per(use1[i].syscr - use0[i].syscr), write: per(use1[i].syscw - use0[i].syscw) }]),
      ),
      delivered: { expected: sent * size, got: delivered },
      cpuMicrosPerMessage: Object.fromEntries((target.processes ?? []).map((p, i) => [p.role, Math.round(((cpu1[i] - cpu0[i]) / sent) * 1e6 * 10) / 10])),
      cpuMicrosPerDelivery: Math.round((((cpu1.reduce((a, b) => a + b, 0) - cpu0.reduce((a, b) => a + b, 0)) / Math.max(1, delivered)) * 1e6) * 10) / 10,
      elapsedS: elapsed,
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    redis.socket.destroy();
    for (const m of members.flat()) m.socket.destroy();
  } finally {
    await target.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`pathmap: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
