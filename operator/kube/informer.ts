/**
 * A resilient informer over @kubernetes/client-node's ListWatch: list, then watch from the
 * list's resourceVersion; a watch that ends is resumed from the last resourceVersion seen; a 410
 * Gone (history compacted) makes it list again (ListWatch does both). What ListWatch does not do
 * is come back after an error (ECONNRESET, API server restarting, 5xx): it reports the error and
 * stops. Here every error restarts it after a capped exponential backoff with jitter, so a flapping
 * API server is not flooded; the backoff resets only once a watch delivers events again (a list
 * that succeeds followed by a watch that fails at once keeps backing off).
 */
import { makeInformer, type Informer, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import type { Logger } from '../../services/telemetry/log';
import type { Kube } from './client';

export interface ResilientInformerOptions<T extends KubernetesObject> {
  readonly kube: Kube;
  /** API path to list/watch, e.g. /apis/switchboard.dev/v1alpha1/switchboards. */
  readonly path: string;
  readonly list: () => Promise<{ items: T[]; metadata?: { resourceVersion?: string } }>;
  readonly log: Logger;
  /** Called for every add, update and delete. */
  readonly onChange: (obj: T, type: 'add' | 'update' | 'delete') => void;
  /** @default 500 */
  readonly minBackoffMs?: number;
  /** @default 30000 */
  readonly maxBackoffMs?: number;
}

export class ResilientInformer<T extends KubernetesObject> {
  private readonly informer: Informer<T> & ObjectCache<T>;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private synced = false;
  private listed = false;
  /** Restarts after errors (for tests and logs). */
  restarts = 0;

  constructor(private readonly opts: ResilientInformerOptions<T>) {
    const list = async () => {
      const res = await opts.list();
      this.listed = true;
      return res;
    };
    this.informer = makeInformer(opts.kube.config, opts.path, list as never);
    this.informer.on('add', (o) => this.event(o, 'add'));
    this.informer.on('update', (o) => this.event(o, 'update'));
    this.informer.on('delete', (o) => this.event(o, 'delete'));
    this.informer.on('connect', () => {
      if (this.failures > 0) opts.log.info('watch reconnecting', { path: opts.path, attempt: this.failures });
    });
    this.informer.on('error', (err: unknown) => this.failed(err));
  }

  /** True once the first list completed. */
  get hasSynced(): boolean {
    return this.synced;
  }

  list(namespace?: string): readonly T[] {
    return this.informer.list(namespace);
  }

  get(name: string, namespace: string): T | undefined {
    return this.informer.get(name, namespace);
  }

  async start(): Promise<void> {
    this.stopped = false;
    const before = this.failures;
    try {
      // ListWatch reports a failed list through its error callback and resolves anyway.
      await this.informer.start();
      if (this.failures === before && this.listed) this.synced = true;
    } catch (err) {
      this.failed(err);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    await this.informer.stop();
  }

  private event(obj: T, type: 'add' | 'update' | 'delete'): void {
    this.synced = true;
    this.failures = 0;
    this.opts.onChange(obj, type);
  }

  private failed(err: unknown): void {
    if (this.stopped || this.restartTimer !== null) return;
    this.failures++;
    const min = this.opts.minBackoffMs ?? 500;
    const max = this.opts.maxBackoffMs ?? 30_000;
    const delay = Math.min(max, min * 2 ** Math.min(this.failures - 1, 16)) * (0.5 + Math.random() / 2);
    this.opts.log.warn('watch failed, restarting with backoff', {
      path: this.opts.path,
      err: (err as Error)?.message ?? String(err),
      delayMs: Math.round(delay),
      attempt: this.failures,
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopped) return;
      this.restarts++;
      void this.start();
    }, delay);
  }
}
