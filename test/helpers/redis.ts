/**
 * A real redis-server for tests: on a given or free port (never 6379, so a developer's own Redis
 * is never touched), in its own temporary directory, with the append-only file on so a graceful
 * stop and a start again keep every accepted write. Every process started here is tracked:
 * `stopAllRedis()` kills leftovers and removes the directories, and whatever is still around when
 * the test process exits is killed then.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort, freePortPair } from './net';
import { hasExited, ProcessGroup, stopChild } from './process';
import { waitFor } from './wait';

const group = new ProcessGroup();

/** Whether redis-server can be run (for `skip` conditions). */
export function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0;
}

/** Run `redis-cli -p PORT args...` and return its trimmed output; throws when it fails. */
export function redisCli(port: number, ...args: string[]): string {
  const r = spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`redis-cli could not run (apt-get install redis-tools): ${r.error.message}`);
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
    if (port === 6379) throw new Error('RedisProcess: refusing port 6379 (a real Redis may be there); use a free port');
    this.dir = group.tempDir('sb-redis-');
  }

  /**
   * Start a redis-server on a free port; `extraArgs` are appended to its command line. The port is
   * only known free a moment before the server binds it: if another process took it meanwhile,
   * start again on another one (a few times).
   */
  static async start(extraArgs: string[] = []): Promise<RedisProcess> {
    return startOnFreePort(async () => new RedisProcess(await freePort(), extraArgs));
  }

  /**
   * Start a Redis Cluster node (cluster mode on, its own nodes file): on a port whose cluster-bus
   * port (+10000) is free too, and on another pair if the one chosen was taken before the server
   * bound it (both ports are only known free a moment before), a few times.
   */
  static async startClusterNode(nodeTimeoutMs = 2000): Promise<RedisProcess> {
    return startOnFreePort(async () => {
      const port = await freePortPair(10_000);
      return new RedisProcess(port, ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', String(nodeTimeoutMs)]);
    });
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** `redis-cli` against this server. */
  cli(...args: string[]): string {
    return redisCli(this.port, ...args);
  }

  /** Start (or start again, on the same port and directory) and wait until it answers. */
  async start(): Promise<this> {
    if (!hasRedisServer()) throw new Error('redis-server is not installed (apt-get install redis-server)');
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--dir', this.dir, ...this.extra];
    const p = group.add(spawn('redis-server', args, { stdio: 'ignore' }));
    this.proc = p;
    let spawnError: Error | undefined;
    p.once('error', (err) => (spawnError = err));
    await waitFor(
      () => {
        if (spawnError !== undefined) throw new Error(`redis-server could not run: ${spawnError.message}`);
        if (hasExited(p)) throw new Error(`redis-server on port ${this.port} exited (${p.signalCode ?? p.exitCode})`);
        try {
          // Ours answering, not another server that already had the port.
          return Number(/^process_id:(\d+)/m.exec(redisCli(this.port, 'info', 'server'))?.[1]) === p.pid;
        } catch {
          return false;
        }
      },
      10_000,
      `redis-server on port ${this.port}`,
      25,
    );
    return this;
  }

  /** A crash (SIGKILL): nothing is flushed; a start again loads what was on disk (AOF or RDB). */
  async kill(): Promise<void> {
    const p = this.proc;
    if (p === null) return;
    this.proc = null;
    await stopChild(p, 'SIGKILL');
  }

  /** Graceful stop: the append-only file is flushed, so a restart keeps every accepted entry. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (p === null) return;
    this.proc = null;
    await stopChild(p, 'SIGTERM');
  }
}

/** Start what `make` returns, on a new port each try, up to 5 tries. */
async function startOnFreePort(make: () => Promise<RedisProcess>): Promise<RedisProcess> {
  let last: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await make();
    try {
      return await r.start();
    } catch (err) {
      last = err;
      await r.stop();
    }
  }
  throw last;
}

/** Kill every redis-server still running (SIGKILL) and remove their directories. */
export function stopAllRedis(): Promise<void> {
  return group.stopAll();
}
