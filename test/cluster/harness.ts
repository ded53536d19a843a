/**
 * Real components for cluster tests: the compiled CLI's roles as child processes (redis-server
 * comes from test/helpers/redis). Everything started here, and every redis-server, is stopped by
 * `stopAll`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { CLI_PATH } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { hasExited, ProcessGroup, stopChild } from '../helpers/process';
import { stopAllRedis } from '../helpers/redis';
import { waitFor, type WaitOptions } from '../helpers/wait';

/** Poll options of the harness's probes: a probe that throws (connection refused...) is retried. */
export const PROBE: WaitOptions = { intervalMs: 25, retryErrors: true };

const roles = new ProcessGroup();

export interface RoleProcess {
  proc: ChildProcess;
  port: number;
  adminPort: number;
  logs: string[];
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Spawn `switchboard <role>` and wait until it says it is listening. */
export async function spawnRole(role: 'gateway' | 'broadcast' | 'standalone', env: Record<string, string>, opts: { nofile?: number } = {}): Promise<RoleProcess> {
  const port = role === 'broadcast' ? 0 : await freePort();
  const adminPort = await freePort();
  // Strict: an unhandled rejection anywhere in a role is a crash, and so a test failure.
  const args = ['--unhandled-rejections=strict', CLI_PATH, role];
  // With a descriptor limit: through a shell that lowers it, then execs node in its place.
  const [cmd, argv] = opts.nofile === undefined ? [process.execPath, args] : ['/bin/sh', ['-c', `ulimit -n ${opts.nofile} && exec "$0" "$@"`, process.execPath, ...args]];
  const proc = spawn(cmd, argv, {
    env: { ...process.env, LOG_LEVEL: 'info', TCP_HOST: '127.0.0.1', TCP_PORT: String(port), ADMIN_PORT: String(adminPort), API_PORT: '-1', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  roles.add(proc);
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
  await waitFor(
    () => {
      if (hasExited(proc)) throw new Error(`${role} exited: ${logs.join('\n')}`);
      return logs.some((l) => l.includes('"listening"') || l.includes('"broadcast listening"'));
    },
    10_000,
    `${role} to listen`,
    25,
  );
  return {
    proc,
    port,
    adminPort,
    logs,
    kill: (signal: NodeJS.Signals = 'SIGKILL') => stopChild(proc, signal),
  };
}

export async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

export async function stopAll(): Promise<void> {
  await roles.stopAll();
  await stopAllRedis();
}
