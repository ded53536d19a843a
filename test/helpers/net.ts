/** Network helpers for tests that start real components. */
import { createServer } from 'node:net';

/** A port that was free a moment ago: listen on 127.0.0.1:0, close, return the port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Whether 127.0.0.1:port can be listened on right now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * A port that was free a moment ago together with port + `offset` (a Redis Cluster node also
 * listens on its port + 10000, the cluster bus; an ephemeral port taken there made it exit).
 */
export async function freePortPair(offset: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = await freePort();
    if (port + offset <= 65535 && (await canListen(port + offset))) return port;
  }
  throw new Error(`no free port pair (port, port + ${offset}) in 100 tries`);
}
