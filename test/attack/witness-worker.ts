/**
 * The well-behaved witness of an attack test, in a worker thread so that the attack traffic the
 * test's main thread generates cannot delay its measurements: it says hello, then pings every
 * `everyMs` (one ping in flight at a time) and reports each round trip. Only runs as a worker.
 */
import { connect } from 'node:net';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';

export interface WitnessConfig {
  port: number;
  user: string;
  everyMs: number;
}

/** Messages to the parent. */
export type WitnessReport =
  | { kind: 'ready' }
  | { kind: 'rtt'; ms: number }
  | { kind: 'message'; msg: Record<string, unknown> }
  | { kind: 'closed' }
  | { kind: 'error'; error: string };

function run(cfg: WitnessConfig): void {
  const post = (r: WitnessReport) => parentPort!.postMessage(r);
  const socket = connect({ host: '127.0.0.1', port: cfg.port, noDelay: true });
  let buf = '';
  let seq = 0;
  let sentAt = 0;
  let pending = '';
  let stopped = false;
  const ping = () => {
    if (stopped) return;
    pending = `w${++seq}`;
    sentAt = performance.now();
    socket.write(JSON.stringify({ type: 'ping', id: pending }) + '\n');
  };
  socket.on('connect', () => socket.write(JSON.stringify({ type: 'hello', user: cfg.user, id: 'hello' }) + '\n'));
  socket.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (msg.id === 'hello') {
        if (msg.type !== 'welcome') post({ kind: 'error', error: `hello failed: ${line}` });
        else {
          post({ kind: 'ready' });
          ping();
        }
      } else if (msg.id === pending) {
        // A pong is a round trip; anything else (rate_limited) is reported, and pinging goes on.
        if (msg.type === 'pong') post({ kind: 'rtt', ms: performance.now() - sentAt });
        else post({ kind: 'message', msg });
        setTimeout(ping, cfg.everyMs);
      } else post({ kind: 'message', msg });
    }
  });
  socket.on('error', (err) => post({ kind: 'error', error: err.message }));
  socket.on('close', () => post({ kind: 'closed' }));
  parentPort!.on('message', (m: string) => {
    if (m === 'stop') {
      stopped = true;
      socket.destroy();
    }
  });
}

if (!isMainThread && parentPort !== null && (workerData as { witness?: WitnessConfig } | null)?.witness !== undefined) {
  run((workerData as { witness: WitnessConfig }).witness);
}
