// What the end-to-end suite needs around the node: the images (built when missing), the chart's
// values for this node, a sampler of replicas and load for the picture in docs/, and timings.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, type ImageArchive, type KubeObject, type NodeCluster } from '../k8s/harness';
import { plot } from './plot';
import type { Prometheus } from './prometheus';

export const ROOT = repoRoot();
export const VERSION = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** What the Containerfile copies from the checkout: a change to any of it makes the image stale. */
const IMAGE_INPUTS = ['Containerfile', 'package.json', 'package-lock.json', 'tsconfig.json', 'services', 'operator'];

/** The newest modification time (ms) of a file or any file under a directory. */
function newestMtime(p: string): number {
  const st = statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return readdirSync(p).reduce((max, name) => Math.max(max, newestMtime(path.join(p, name))), 0);
}

/**
 * The Switchboard image (scripts/build-image.sh, or SWITCHBOARD_IMAGE_TAR) and the embedded
 * Redis's (scripts/build-redis-image.sh), under the names the chart's pods ask the CRI for. The
 * Switchboard image is built when missing or older than a file it is built from, so the suite
 * never tests yesterday's operator or server (CI: the archive test:image has just built).
 */
export function ensureImages(log: (line: string) => void): ImageArchive[] {
  const switchboard = process.env.SWITCHBOARD_IMAGE_TAR ?? path.join(ROOT, 'dist-image', 'switchboard.oci.tar');
  const redis = path.join(ROOT, 'dist-image', 'redis.oci.tar');
  const build = (script: string, out: string) => {
    const started = Date.now();
    const r = spawnSync('bash', [path.join(ROOT, 'scripts', script), out], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`scripts/${script} failed (${r.status}):\n${(r.stderr || '').slice(-4000)}`);
    log(`${script}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  };
  if (!existsSync(switchboard)) build('build-image.sh', switchboard);
  else if (process.env.SWITCHBOARD_IMAGE_TAR === undefined) {
    const changed = IMAGE_INPUTS.filter((f) => newestMtime(path.join(ROOT, f)) > statSync(switchboard).mtimeMs);
    if (changed.length > 0) {
      log(`${path.relative(ROOT, switchboard)} is older than ${changed.join(', ')}: rebuilding it`);
      build('build-image.sh', switchboard);
    }
  }
  build('build-redis-image.sh', redis); // reuses a current archive at once
  return [
    { archive: switchboard, names: [`docker.io/library/switchboard:${VERSION}`] },
    { archive: redis, names: ['docker.io/library/redis:7'] },
  ];
}

/** Milliseconds since start, for timings and samples. */
export class Clock {
  readonly start = Date.now();
  readonly timings: Record<string, number> = {};
  now(): number {
    return Date.now() - this.start;
  }
  /** Records a duration in seconds under `name`. */
  record(name: string, ms: number): void {
    this.timings[name] = Math.round(ms / 100) / 10;
  }
}

export interface LoadSample {
  t: number;
  gatewayReplicas: number;
  gatewayReady: number;
  broadcastReplicas: number;
  broadcastReady: number;
  connections: number | null;
  deliveredPerSec: number | null;
  receivedPerSec: number | null;
}

/** Samples the Deployments and Prometheus every second, for docs/e2e-replicas-and-load.svg. */
export class Sampler {
  readonly samples: LoadSample[] = [];
  readonly marks: Array<{ t: number; label: string }> = [];
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly node: NodeCluster,
    private readonly prom: Prometheus,
    private readonly clock: Clock,
    private readonly ns: string,
    private readonly name: string,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sample(), 1000);
    this.timer.unref();
  }

  mark(label: string): void {
    this.marks.push({ t: this.clock.now(), label });
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const dep = async (tier: string) => {
        const r = await this.node.cp.client.request<KubeObject & { spec?: { replicas?: number }; status?: { readyReplicas?: number } }>(
          'GET', `/apis/apps/v1/namespaces/${this.ns}/deployments/${this.name}-${tier}`);
        return r.status === 200 ? [r.body.spec?.replicas ?? 0, r.body.status?.readyReplicas ?? 0] : [0, 0];
      };
      const sel = `namespace="${this.ns}", pod=~"${this.name}-gateway-.+"`;
      const q = (e: string) => this.prom.scalar(e).catch(() => undefined);
      const [[gw, gwReady], [bc, bcReady], conns, delivered, received] = await Promise.all([
        dep('gateway'), dep('broadcast'),
        q(`sum(switchboard_connections{${sel}})`),
        q(`sum(rate(switchboard_messages_delivered_total{${sel}}[10s]))`),
        q(`sum(rate(switchboard_messages_received_total{${sel}}[10s]))`),
      ]);
      this.samples.push({
        t: this.clock.now(), gatewayReplicas: gw, gatewayReady: gwReady, broadcastReplicas: bc, broadcastReady: bcReady,
        connections: conns ?? null, deliveredPerSec: delivered ?? null, receivedPerSec: received ?? null,
      });
    } catch {
      // a missed sample is a gap in the picture, not a failure
    } finally {
      this.busy = false;
    }
  }
}

/** Writes the run's timings and samples (results.json) and their picture (replicas-and-load.svg) to dist/e2e/; returns the JSON's path. */
export function writeResults(clock: Clock, sampler: Sampler | undefined, extra: Record<string, unknown> = {}): string {
  const dir = path.join(ROOT, 'dist', 'e2e');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'results.json');
  const results = { timings: clock.timings, samples: sampler?.samples ?? [], marks: sampler?.marks ?? [], ...extra };
  writeFileSync(file, JSON.stringify(results, null, 2));
  writeFileSync(path.join(dir, 'replicas-and-load.svg'), plot(results, 'Switchboard on the e2e node: replicas and load over the run'));
  return file;
}
