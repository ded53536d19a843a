/**
 * The server processes a load test starts: how they are spawned (pinned to CPUs with `--pin`),
 * stopped, and found again when the generator itself is stopped. Every server child is kept in
 * one registry until it exits, so the CLI can stop them all on SIGINT/SIGTERM and kill what is
 * left when it exits any other way (a time bound, a failed worker): a benchmark must not leave
 * servers running on a shared machine.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { connect, createServer } from 'node:net';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * CPUs the servers run on (`--pin`, see cli.ts): `taskset -c <cpus> <command>`, so that they and
 * the generator do not preempt each other; null: anywhere.
 */
let serverCpus: string | null = null;

export function pinServers(cpus: string | null): void {
  serverCpus = cpus;
}

const live = new Set<ChildProcess>();

/** Spawn a server process (pinned when asked), registered until it exits. */
export function spawnServer(cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  const [c, a] = serverCpus === null ? [cmd, args] : ['taskset', ['-c', serverCpus, cmd, ...args]];
  const child = spawn(c, a, opts);
  if (child.pid !== undefined) {
    live.add(child);
    child.once('exit', () => live.delete(child));
  }
  return child;
}

/** SIGTERM, then SIGKILL after 5 s; resolves when the process has exited. */
export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Stop every server still running (each as stopChild does). */
export async function stopAllServers(): Promise<void> {
  await Promise.all([...live].map(stopChild));
}

/** Kill every server still running, synchronously (for process 'exit' handlers). */
export function killAllServers(): void {
  for (const c of live) c.kill('SIGKILL');
}

/** redis-server on a free port of 127.0.0.1 (never 6379), without persistence; resolves once it answers PING. */
export async function startRedis(): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const child = spawnServer('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port }, () => {
        s.write('PING\r\n');
      });
      s.once('data', (d: Buffer) => {
        s.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return { child, port };
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not start on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
