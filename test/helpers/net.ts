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
