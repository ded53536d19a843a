/**
 * Real components for cluster tests: redis-server processes on free ports (never 6379), and the
 * compiled CLI's roles as child processes. Everything started here is stopped by `stopAll`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const CLI = resolve(__dirname, '../../services/cli.js');

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const started = new Set<ChildProcess>();
const dirs: string[] = [];

export function redisCli(port: number, ...args: string[]): string {
  const r = spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

export class RedisProcess {
  proc: ChildProcess | null = null;
  readonly dir: string;
  constructor(
    readonly port: number,
    private readonly extra: string[] = [],
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'sb-redis-'));
    dirs.push(this.dir);
  }
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }
  async start(): Promise<this> {
    if (!spawnSync('which', ['redis-server']).stdout?.length) throw new Error('redis-server is not installed (apt-get install redis-server)');
    const p = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--dir', this.dir, ...this.extra], {
      stdio: 'ignore',
    });
    this.proc = p;
    started.add(p);
    p.once('exit', () => started.delete(p));
    await waitFor(`redis on ${this.port}`, () => {
      try {
        return redisCli(this.port, 'ping') === 'PONG';
      } catch {
        return false;
      }
    });
    return this;
  }
  /** Graceful stop: the append-only file is flushed, so a restart keeps every accepted entry. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (p === null || p.exitCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await gone;
    this.proc = null;
  }
}

export interface RoleProcess {
  proc: ChildProcess;
  port: number;
  adminPort: number;
  logs: string[];
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Spawn `switchboard <role>` and wait until it says it is listening. */
export async function spawnRole(role: 'gateway' | 'broadcast' | 'standalone', env: Record<string, string>): Promise<RoleProcess> {
  const port = role === 'broadcast' ? 0 : await freePort();
  const adminPort = await freePort();
  const proc = spawn(process.execPath, [CLI, role], {
    env: { ...process.env, LOG_LEVEL: 'info', TCP_HOST: '127.0.0.1', TCP_PORT: String(port), ADMIN_PORT: String(adminPort), API_PORT: '-1', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  started.add(proc);
  proc.once('exit', () => started.delete(proc));
  const logs: string[] = [];
  let buf = '';
  proc.stderr!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      logs.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  await waitFor(`${role} to listen`, () => {
    if (proc.exitCode !== null) throw new Error(`${role} exited: ${logs.join('\n')}`);
    return logs.some((l) => l.includes('"listening"') || l.includes('"broadcast listening"'));
  });
  return {
    proc,
    port,
    adminPort,
    logs,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill(signal);
      await gone;
    },
  };
}

export async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

export async function stopAll(): Promise<void> {
  const procs = [...started];
  await Promise.all(
    procs.map(
      (p) =>
        new Promise<void>((r) => {
          if (p.exitCode !== null || p.signalCode !== null) return r();
          p.once('exit', () => r());
          p.kill('SIGKILL');
        }),
    ),
  );
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}
