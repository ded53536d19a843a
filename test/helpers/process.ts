/** Child processes of tests: stop one and wait until it is gone; track a group for cleanup. */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';

/** Whether the process has exited (or was killed). */
export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Send `signal` and wait for the exit; with `killAfterMs`, SIGKILL if it is still there by then.
 * Resolves at once when the process is already gone.
 */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', killAfterMs?: number): Promise<void> {
  if (hasExited(child)) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  await exited;
  clearTimeout(timer);
}

const groups: ProcessGroup[] = [];
process.once('exit', () => {
  for (const g of groups) g.killNow();
});
// A test process ended by a signal (the runner cancelling a file that timed out, Ctrl-C) runs no
// 'exit' listeners by itself, and its children (redis-server, server roles) would outlive it.
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => process.exit(128 + constants.signals[sig]));

/**
 * Children and temporary directories of one kind of fixture. `stopAll()` kills the children still
 * running and removes the directories; whatever is left when the test process exits is killed
 * and removed then.
 */
export class ProcessGroup {
  private readonly running = new Set<ChildProcess>();
  private readonly dirs = new Set<string>();

  constructor() {
    groups.push(this);
  }

  /** Track a child until it exits. */
  add<C extends ChildProcess>(child: C): C {
    this.running.add(child);
    child.once('exit', () => this.running.delete(child));
    return child;
  }

  /** A fresh temporary directory, removed by stopAll() or at exit. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.dirs.add(dir);
    return dir;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.running].map((p) => stopChild(p, 'SIGKILL')));
    this.removeDirs();
  }

  /** Synchronous, for the exit hook. */
  killNow(): void {
    for (const p of this.running) p.kill('SIGKILL');
    this.removeDirs();
  }

  private removeDirs(): void {
    for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
    this.dirs.clear();
  }
}
