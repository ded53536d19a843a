/**
 * A real Prometheus for tests (the Debian package's `prometheus` binary): it scrapes the given
 * targets every `scrapeIntervalMs`, answers instant queries, takes new targets with a config
 * reload, and can be stopped and brought back on the same port and data directory.
 *
 *   const prom = await PrometheusProcess.start({ targets: [{ address: `127.0.0.1:${admin}`, labels: { namespace: 'ns', pod: 'gw-0' } }] });
 *   const up = await prom.query('up{job="switchboard"}');
 *
 * Every target is its own static_config (job "switchboard") carrying its labels. Prometheus applies
 * targets about 5 s after a start or reload (its discovery throttle), so wait for the first
 * scrape with a bound of 15 s or so. A missing binary fails the test (never skips it).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './net';
import { hasExited, ProcessGroup, stopChild } from './process';
import { waitFor } from './wait';

export interface ScrapeTarget {
  /** host:port of a /metrics endpoint. */
  address: string;
  /** Labels attached to every series scraped from this target (e.g. namespace, pod). */
  labels?: Record<string, string>;
}

export interface PrometheusOptions {
  targets: ScrapeTarget[];
  /** Scrape and rule evaluation interval; default 1000. */
  scrapeIntervalMs?: number;
  /** Absolute paths of rule files to load. */
  ruleFiles?: string[];
  /** Port of the web/API listener; default a free one. */
  port?: number;
}

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

/** Path of a required binary; fails (never skips) when it is not installed. */
export function requireTool(name: string): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/local/bin'])) {
    const p = `${dir}/${name}`;
    if (dir !== '' && existsSync(p)) return p;
  }
  assert.fail(`${name} is not installed (Debian package "prometheus"; .ci/run installs it)`);
}

const JOB = 'switchboard';
const LOG_LINES = 500;

/** Every Prometheus started here; what is left at exit is killed and its directory removed. */
const group = new ProcessGroup();

interface ApiAnswer {
  status: 'success' | 'error';
  errorType?: string;
  error?: string;
  data?: { resultType: string; result: unknown };
}

/** A Prometheus sample value: a decimal string, or NaN / +Inf / -Inf. */
function parseValue(v: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  return Number(v);
}

export class PrometheusProcess {
  /** Prometheus's log (stderr) lines, the last 500; quoted in error messages. */
  readonly log: string[] = [];
  private child: ChildProcess | null = null;
  private targets: ScrapeTarget[];

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly bin: string,
    private readonly opts: PrometheusOptions,
  ) {
    this.targets = opts.targets;
  }

  static async start(opts: PrometheusOptions): Promise<PrometheusProcess> {
    const bin = requireTool('prometheus');
    const dir = group.tempDir('switchboard-prometheus-');
    const p = new PrometheusProcess(opts.port ?? (await freePort()), dir, bin, opts);
    p.writeConfig();
    await p.launch();
    return p;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  private get configFile(): string {
    return join(this.dir, 'prometheus.yml');
  }

  /** The configuration, as JSON (which is YAML). */
  private writeConfig(): void {
    const interval = `${this.opts.scrapeIntervalMs ?? 1000}ms`;
    const config = {
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      rule_files: this.opts.ruleFiles ?? [],
      scrape_configs: [
        {
          job_name: JOB,
          static_configs: this.targets.map((t) => ({ targets: [t.address], labels: t.labels ?? {} })),
        },
      ],
    };
    writeFileSync(this.configFile, JSON.stringify(config, null, 2) + '\n');
  }

  private logTail(): string {
    return this.log.slice(-30).join('\n');
  }

  private async launch(): Promise<void> {
    const args = [
      `--config.file=${this.configFile}`,
      `--storage.tsdb.path=${join(this.dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${this.port}`,
      '--web.enable-lifecycle',
      '--log.level=info',
    ];
    const child = group.add(spawn(this.bin, args, { stdio: ['ignore', 'ignore', 'pipe'] }));
    this.child = child;
    let spawnError: Error | undefined;
    child.once('error', (err) => (spawnError = err));
    let rest = '';
    child.stderr!.on('data', (d: Buffer) => {
      const lines = (rest + d.toString('utf8')).split('\n');
      rest = lines.pop()!;
      this.log.push(...lines);
      if (this.log.length > LOG_LINES) this.log.splice(0, this.log.length - LOG_LINES);
    });
    await waitFor(
      async () => {
        if (spawnError !== undefined) throw new Error(`prometheus could not run: ${spawnError.message}`);
        if (hasExited(child)) {
          throw new Error(`prometheus exited (${child.signalCode ?? child.exitCode}):\n${this.logTail()}`);
        }
        try {
          return (await fetch(`${this.url}/-/ready`)).status === 200;
        } catch {
          return false;
        }
      },
      20_000,
      `prometheus on port ${this.port} to be ready`,
      100,
    ).catch((err: Error) => {
      if (!err.message.startsWith('timed out')) throw err;
      throw new Error(`${err.message}; its log:\n${this.logTail()}`);
    });
  }

  /** An instant query (/api/v1/query); throws on an API error. A scalar comes back as one sample without labels. */
  async query(promql: string): Promise<Sample[]> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const text = await res.text();
    let body: ApiAnswer;
    try {
      body = JSON.parse(text) as ApiAnswer;
    } catch {
      throw new Error(`prometheus query ${promql}: HTTP ${res.status}: ${text}`);
    }
    if (body.status !== 'success' || body.data === undefined) {
      throw new Error(`prometheus query ${promql}: ${body.errorType ?? `HTTP ${res.status}`}: ${body.error ?? text}`);
    }
    const { resultType, result } = body.data;
    switch (resultType) {
      case 'vector':
        return (result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: parseValue(r.value[1]) }));
      case 'scalar':
        return [{ metric: {}, value: parseValue((result as [number, string])[1]) }];
      default:
        throw new Error(`prometheus query ${promql}: a ${resultType} result; query() takes instant vectors and scalars`);
    }
  }

  /** Replace the scrape targets: rewrite the configuration and reload it (POST /-/reload). */
  async setTargets(targets: ScrapeTarget[]): Promise<void> {
    this.targets = targets;
    this.writeConfig();
    if (this.child === null) return; // stopped: restart() reads the new configuration
    const res = await fetch(`${this.url}/-/reload`, { method: 'POST' });
    if (res.status !== 200) throw new Error(`prometheus reload: HTTP ${res.status}: ${await res.text()}\n${this.logTail()}`);
  }

  /** SIGTERM and wait for the exit (SIGKILL after 5 s). The data directory is kept for restart(). */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    await stopChild(child, 'SIGTERM', 5000);
  }

  /** Stop if running, then start again on the same port and data directory, and wait until ready. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }
}
