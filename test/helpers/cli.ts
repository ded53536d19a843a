/** Spawn the compiled CLI (`node dist/services/cli.js`) as a child process, in an empty directory. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { waitFor } from './wait';

export const CLI_PATH = resolve(__dirname, '../../services/cli.js');

export interface CliProcess {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** Parsed JSON log lines from stderr. */
  logs(): Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Wait for the `listening` log line and return the client port. */
  listening(timeoutMs?: number): Promise<number>;
  kill(): void;
}

export function tempDir(prefix = 'switchboard-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * Start the CLI. The environment is minimal (PATH plus `env`) and the working directory is a
 * fresh temporary directory unless `cwd` is given, so no stray .env or variable leaks in.
 */
export function spawnCli(args: string[], env: Record<string, string> = {}, cwd = tempDir()): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const collect = (into: string[]) => {
    let rest = '';
    return (chunk: Buffer) => {
      rest += chunk.toString('utf8');
      const lines = rest.split('\n');
      rest = lines.pop()!;
      into.push(...lines);
    };
  };
  child.stdout!.on('data', collect(stdout));
  child.stderr!.on('data', collect(stderr));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal })),
  );
  const logs = () =>
    stderr.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  return {
    child,
    stdout,
    stderr,
    logs,
    exited,
    async listening(timeoutMs = 8000) {
      const rec = await waitFor(() => logs().find((r) => r.msg === 'listening'), timeoutMs, 'the listening log line');
      return rec!.port as number;
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
