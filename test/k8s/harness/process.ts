// A child process that cannot outlive the test that started it. stop() is the normal path; a
// process-exit hook covers a test file that ends without running its after() hooks; and a small
// watchdog shell kills the child when this Node process dies without running any JavaScript at
// all (SIGKILL, OOM), so no etcd or apiserver is left holding ports on the machine.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, closeSync, openSync, readFileSync } from 'node:fs';

export interface ManagedProcessOptions {
  /** Shown in errors, e.g. "etcd". */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** stdout and stderr are appended here. */
  readonly logPath: string;
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Removed by the watchdog after it kills an orphaned child (e.g. the control plane's temp dir). */
  readonly orphanCleanupPath?: string;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

const live = new Set<ManagedProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) p.killNow();
  });
}

export class ManagedProcess {
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;
  private readonly child: ChildProcess;
  private readonly watchdog: ChildProcess;

  private constructor(readonly options: ManagedProcessOptions) {
    installExitHook();
    const log = openSync(options.logPath, 'a');
    try {
      this.child = spawn(options.command, options.args, {
        cwd: options.cwd,
        env: options.env ?? process.env,
        stdio: ['ignore', log, log],
      });
    } finally {
      closeSync(log);
    }
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        live.delete(this);
        this.watchdog.kill('SIGKILL');
        resolve(this.exitStatus);
      });
      this.child.once('error', (err) => {
        this.exitStatus = { code: -1, signal: null };
        live.delete(this);
        this.watchdog.kill('SIGKILL');
        resolve(this.exitStatus);
        // Surfaces through logTail(): the usual cause is a missing or non-executable binary.
        appendNote(options.logPath, `spawn ${options.command} failed: ${err.message}`);
      });
    });
    this.watchdog = spawn('sh', ['-c',
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null; [ -z "$3" ] || rm -rf "$3"',
      'switchboard-k8s-watchdog', String(process.pid), String(this.child.pid ?? 0), options.orphanCleanupPath ?? ''],
    { stdio: 'ignore', detached: true });
    this.watchdog.unref();
    live.add(this);
  }

  static start(options: ManagedProcessOptions): ManagedProcess {
    return new ManagedProcess(options);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Undefined while running. */
  get status(): ExitStatus | undefined {
    return this.exitStatus;
  }

  /** The last lines of the process's log, for error messages. */
  logTail(lines = 30): string {
    try {
      const text = readFileSync(this.options.logPath, 'utf8').trimEnd().split('\n');
      return text.slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves once the process has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.exitStatus) return;
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.killNow();
        resolve();
      }, graceMs);
    });
    await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    await this.exited;
  }

  /** Synchronous SIGKILL, usable from a process 'exit' hook. */
  killNow(): void {
    if (this.exitStatus) return;
    this.child.kill('SIGKILL');
    this.watchdog.kill('SIGKILL');
  }
}

function appendNote(logPath: string, note: string): void {
  try {
    appendFileSync(logPath, `\n${note}\n`);
  } catch {
    // The log is best effort; the exit status still reports the failure.
  }
}
