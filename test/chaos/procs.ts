/**
 * The chaos run's server processes: gateways and broadcast workers as real child processes
 * (`node --unhandled-rejections=strict dist/services/cli.js <role>`), and one redis-server on a
 * fixed free port that can be paused (SIGSTOP/SIGCONT) and replaced by an empty one.
 *
 * Every exit is reported with whether the run had told the process to stop: a process that exits
 * on its own (a crash, an unhandled rejection) is a failure of the run. Logs go to one file per
 * process in the run directory; the last lines are kept in memory for failure reports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { CLI_PATH } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { hasExited } from '../helpers/process';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import type { ChaosEvent } from './events';

export type Role = 'gateway' | 'broadcast';

export interface ExitInfo {
  proc: string;
  code: number | null;
  signal: string | null;
  expected: boolean;
  told: string | null;
  tail: string[];
}

const TAIL = 40;

/** Every child started by this module, for the last-resort cleanup at exit. */
const live = new Set<ChildProcess>();
process.once('exit', () => killAllNow());

/**
 * SIGKILL every process this module started that is still running (paused ones included). For
 * test hooks: a run that completes stops everything itself; this covers one cut short.
 */
export function killAllNow(): number {
  const n = live.size;
  for (const p of live) p.kill('SIGKILL');
  return n;
}

export class RoleProcess {
  readonly proc: ChildProcess;
  readonly tail: string[] = [];
  /** The signal the run sent (null: not told to stop). */
  told: string | null = null;
  readonly exited: Promise<ExitInfo>;
  private readonly logFile: WriteStream;
  private listening = false;

  constructor(
    readonly name: string,
    readonly role: Role,
    readonly port: number,
    readonly adminPort: number,
    env: Record<string, string>,
    runDir: string,
    onExit: (info: ExitInfo) => void,
  ) {
    this.logFile = createWriteStream(join(runDir, `${name}.log`), { flags: 'a' });
    this.proc = spawn(process.execPath, ['--unhandled-rejections=strict', CLI_PATH, role], {
      cwd: runDir, // no stray .env
      env: {
        PATH: process.env.PATH ?? '',
        LOG_LEVEL: 'info',
        TCP_HOST: '127.0.0.1',
        TCP_PORT: String(port),
        ADMIN_PORT: String(adminPort),
        API_PORT: '-1',
        SERVER_ID: name,
        ...env,
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    live.add(this.proc);
    let buf = '';
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => {
      this.logFile.write(d);
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.tail.push(line);
        if (this.tail.length > TAIL) this.tail.shift();
        if (!this.listening && (line.includes('"msg":"listening"') || line.includes('"msg":"broadcast listening"'))) this.listening = true;
      }
    });
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.proc.once('exit', (code, signal) => {
        live.delete(this.proc);
        const info: ExitInfo = { proc: name, code, signal, expected: this.told !== null, told: this.told, tail: [...this.tail] };
        this.logFile.end(`# exit code=${code} signal=${signal} told=${this.told}\n`);
        onExit(info);
        resolve(info);
      });
    });
  }

  get running(): boolean {
    return !hasExited(this.proc);
  }

  async ready(timeoutMs = 20_000): Promise<void> {
    await waitFor(
      () => {
        if (!this.running) throw new Error(`${this.name} exited before listening: ${this.tail.slice(-5).join('\n')}`);
        return this.listening;
      },
      timeoutMs,
      `${this.name} to listen`,
      25,
    );
  }

  /** Send `signal` (recorded as told) and wait for the exit; SIGKILL after `killAfterMs`. */
  async stop(signal: NodeJS.Signals, killAfterMs = 15_000): Promise<ExitInfo> {
    if (this.running) {
      this.told ??= signal;
      this.proc.kill(signal);
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), killAfterMs);
      const info = await this.exited;
      clearTimeout(timer);
      return info;
    }
    return this.exited;
  }
}

export interface RoleEnv {
  redisUrl: string;
  heartbeatMs: number;
  leaseMs: number;
  shards: number;
}

/** Gateways and workers of one run; names are `gw<i>.<incarnation>` and `bc<n>`. */
export class Fleet {
  readonly gateways: (RoleProcess | null)[] = [];
  readonly gatewayPorts: number[] = [];
  readonly workers: RoleProcess[] = [];
  private incarnation = 0;
  private workerSeq = 0;

  constructor(
    private readonly env: RoleEnv,
    private readonly runDir: string,
    private readonly record: (ev: ChaosEvent) => void,
  ) {}

  private roleEnv(): Record<string, string> {
    return {
      REDIS_URL: this.env.redisUrl,
      HEARTBEAT_MS: String(this.env.heartbeatMs),
      LEASE_MS: String(this.env.leaseMs),
      STREAM_SHARDS: String(this.env.shards),
      SHUTDOWN_DRAIN_MS: '3000',
    };
  }

  private onExit = (info: ExitInfo) => {
    this.record({ t: Date.now(), e: 'exit', ...info });
  };

  async addGatewaySlots(n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      this.gatewayPorts.push(await freePort());
      this.gateways.push(null);
    }
  }

  /** Start gateway slot `i` on its fixed port. */
  async startGateway(i: number): Promise<RoleProcess> {
    const p = new RoleProcess(`gw${i}.${++this.incarnation}`, 'gateway', this.gatewayPorts[i], await freePort(), this.roleEnv(), this.runDir, this.onExit);
    this.gateways[i] = p;
    await p.ready();
    return p;
  }

  async startWorker(): Promise<RoleProcess> {
    const p = new RoleProcess(`bc${++this.workerSeq}`, 'broadcast', 0, await freePort(), this.roleEnv(), this.runDir, this.onExit);
    this.workers.push(p);
    await p.ready();
    return p;
  }

  liveWorkers(): RoleProcess[] {
    return this.workers.filter((w) => w.running && w.told === null);
  }

  liveGateways(): number[] {
    return this.gateways.flatMap((g, i) => (g !== null && g.running && g.told === null ? [i] : []));
  }

  all(): RoleProcess[] {
    return [...this.gateways.filter((g): g is RoleProcess => g !== null), ...this.workers];
  }

  /** SIGKILL everything still running (told, so not counted as unexpected). */
  async stopAll(): Promise<void> {
    await Promise.all(this.all().map((p) => p.stop('SIGKILL', 5000)));
  }
}

/**
 * The run's Redis: no persistence (`--save "" --appendonly no`), so a restart comes back EMPTY,
 * on the same port so every role reconnects to it. Pausing is SIGSTOP/SIGCONT of the process.
 */
export class ChaosRedis {
  private redis: RedisProcess | null = null;
  private paused = false;
  private told = false;
  private incarnation = 0;

  constructor(
    private readonly record: (ev: ChaosEvent) => void,
    private readonly port: number,
  ) {}

  static async create(record: (ev: ChaosEvent) => void): Promise<ChaosRedis> {
    return new ChaosRedis(record, await freePort());
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    // A new RedisProcess each time: a fresh empty directory, nothing to load.
    const r = new RedisProcess(this.port, ['--appendonly', 'no', '--save', '']);
    this.redis = r;
    this.told = false;
    const name = `redis.${++this.incarnation}`;
    await r.start();
    const proc = r.proc!;
    live.add(proc);
    const onExit = (code: number | null, signal: string | null) => {
      live.delete(proc);
      const expected = this.told || this.redis !== r;
      this.record({ t: Date.now(), e: 'exit', proc: name, code, signal, expected, told: expected ? 'SIGKILL' : null, tail: [] });
    };
    if (hasExited(proc)) onExit(proc.exitCode, proc.signalCode);
    else proc.once('exit', onExit);
  }

  pause(): void {
    if (this.redis?.proc == null || this.paused) return;
    this.paused = true;
    this.redis.proc.kill('SIGSTOP');
  }

  resume(): void {
    if (this.redis?.proc == null || !this.paused) return;
    this.paused = false;
    this.redis.proc.kill('SIGCONT');
  }

  /** SIGKILL (data gone with it) and wait for the exit. */
  async kill(): Promise<void> {
    const r = this.redis;
    if (r?.proc == null) return;
    this.told = true;
    const p = r.proc;
    if (this.paused) this.resume();
    if (!hasExited(p)) {
      const exited = new Promise((res) => p.once('exit', res));
      p.kill('SIGKILL');
      await exited;
    }
    r.proc = null;
  }
}
