/**
 * `npm run cluster`: a local cluster in one command. Uses REDIS_URL when set, otherwise starts a
 * redis-server on a free port itself; then starts 2 gateways and 1 broadcast worker as child
 * processes, prints their ports, and stops everything on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const children: ChildProcess[] = [];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function start(cmd: string, args: string[], env: Record<string, string>, name: string): ChildProcess {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit'] });
  child.once('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`cluster: ${name} exited (${signal ?? code}); stopping\n`);
    void stop();
  });
  children.push(child);
  return child;
}

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)));
  process.exit(0);
}

async function main(): Promise<void> {
  let redisUrl = process.env.REDIS_URL ?? '';
  if (redisUrl === '') {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-redis-'));
    start('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--dir', dir], {}, 'redis-server');
    redisUrl = `redis://127.0.0.1:${port}`;
  }
  const cli = join(__dirname, 'cli.js');
  const lines = [`redis      ${redisUrl}`];
  for (let i = 1; i <= 2; i++) {
    const [tcp, admin] = [await freePort(), await freePort()];
    start(process.execPath, [cli, 'gateway'], { REDIS_URL: redisUrl, TCP_PORT: String(tcp), ADMIN_PORT: String(admin), API_PORT: '-1', LOG_LEVEL: 'warn' }, `gateway ${i}`);
    lines.push(`gateway ${i}  tcp 127.0.0.1:${tcp}  admin http://127.0.0.1:${admin}/stats`);
  }
  const bcAdmin = await freePort();
  start(process.execPath, [cli, 'broadcast'], { REDIS_URL: redisUrl, ADMIN_PORT: String(bcAdmin), LOG_LEVEL: 'warn' }, 'broadcast');
  lines.push(`broadcast  admin http://127.0.0.1:${bcAdmin}/stats`);
  process.stdout.write(`Switchboard local cluster (Ctrl-C stops it):\n  ${lines.join('\n  ')}\n`);
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(`cluster: ${String(err)}\n`);
  void stop();
});
