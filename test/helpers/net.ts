/** Network helpers for tests that start real components. */
import { createServer } from 'node:net';

/**
 * Ports handed out are taken from below Linux's ephemeral range (32768-60999: what listen(0) and
 * every outgoing connection pick from), so that neither a client socket of the test nor another
 * component's listen(0) can take a port between our check and the component's bind; and none is
 * handed out twice in one process (listen(0) twice in a row once returned the same port, and a
 * gateway's client and admin ports collided). FREE_PORT_LOW + 10000 stays below the range too
 * (freePortPair: a Redis Cluster node's bus port).
 */
const FREE_PORT_LOW = 10_000;
const FREE_PORT_HIGH = 22_767;
const handedOut = new Set<number>();
let nextCandidate = FREE_PORT_LOW + ((process.pid * 7919) % (FREE_PORT_HIGH - FREE_PORT_LOW + 1));

/** A port that was free a moment ago (127.0.0.1), below the ephemeral range, new to this process. */
export async function freePort(): Promise<number> {
  for (let tries = 0; tries <= FREE_PORT_HIGH - FREE_PORT_LOW; tries++) {
    const port = nextCandidate;
    nextCandidate = port >= FREE_PORT_HIGH ? FREE_PORT_LOW : port + 1;
    if (handedOut.has(port) || !(await canListen(port))) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free port in ${FREE_PORT_LOW}-${FREE_PORT_HIGH}`);
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
    if (port + offset <= 65535 && (await canListen(port + offset))) {
      handedOut.add(port + offset);
      return port;
    }
  }
  throw new Error(`no free port pair (port, port + ${offset}) in 100 tries`);
}
