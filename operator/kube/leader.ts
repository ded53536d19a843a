/**
 * Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * the holder renews spec.renewTime every retry period; a candidate takes the Lease over once
 * renewTime + leaseDurationSeconds has passed. Every write is a replace carrying the
 * resourceVersion it read, so two candidates racing for an expired Lease cannot both win (the
 * loser gets 409 Conflict). A leader that cannot renew within the lease duration steps down
 * before another replica could have taken over.
 */
import { V1MicroTime, type V1Lease } from '@kubernetes/client-node';
import type { Logger } from '../../services/telemetry/log';
import { describe, isConflict, isNotFound, type Kube } from './client';

export interface LeaderElectionOptions {
  readonly kube: Kube;
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  /** @default 15000 */
  readonly leaseDurationMs?: number;
  /** How often to renew or try to acquire. @default leaseDurationMs / 5 */
  readonly retryPeriodMs?: number;
  readonly log: Logger;
  readonly onStartedLeading: () => void;
  readonly onStoppedLeading: () => void;
}

export class LeaderElector {
  private timer: NodeJS.Timeout | null = null;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;
  private readonly durationMs: number;
  private readonly retryMs: number;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.durationMs = opts.leaseDurationMs ?? 15_000;
    this.retryMs = opts.retryPeriodMs ?? Math.max(200, Math.floor(this.durationMs / 5));
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    void this.round();
  }

  /** Stop campaigning; a leader releases the Lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.leading) {
      this.setLeading(false);
      try {
        const lease = await this.read();
        if (lease?.spec?.holderIdentity === this.opts.identity) {
          lease.spec.holderIdentity = undefined;
          lease.spec.renewTime = undefined;
          lease.spec.acquireTime = undefined;
          await this.opts.kube.coordination.replaceNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace, body: lease });
        }
      } catch (err) {
        this.opts.log.warn('could not release the leader lease', { err: describe(err) });
      }
    }
  }

  private async round(): Promise<void> {
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      this.opts.log.warn('leader election round failed', { err: describe(err) });
    }
    if (this.leading && Date.now() - this.lastRenew > this.durationMs) {
      this.opts.log.error('could not renew the leader lease in time: stepping down');
      this.setLeading(false);
    }
    if (!this.stopped) {
      this.timer = setTimeout(() => void this.round(), this.retryMs);
      this.timer.unref();
    }
  }

  private async read(): Promise<V1Lease | null> {
    try {
      return await this.opts.kube.coordination.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { kube, namespace, name, identity } = this.opts;
    const now = new V1MicroTime();
    const durationSeconds = Math.max(1, Math.ceil(this.durationMs / 1000));
    const lease = await this.read();
    if (lease === null) {
      try {
        await kube.coordination.createNamespacedLease({
          namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        this.renewed();
      } catch (err) {
        if (!isConflict(err)) throw err; // 409: another replica created it first
      }
      return;
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    if (holder === identity) {
      spec.renewTime = now;
      spec.leaseDurationSeconds = durationSeconds;
    } else {
      const renewedAt = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
      const expiresAt = renewedAt + (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
      if (holder && Date.now() < expiresAt) {
        if (this.leading) this.setLeading(false);
        return;
      }
      spec.holderIdentity = identity;
      spec.acquireTime = now;
      spec.renewTime = now;
      spec.leaseDurationSeconds = durationSeconds;
      spec.leaseTransitions = (spec.leaseTransitions ?? 0) + (holder ? 1 : 0);
    }
    lease.spec = spec;
    try {
      await kube.coordination.replaceNamespacedLease({ name, namespace, body: lease });
      this.renewed();
    } catch (err) {
      if (isConflict(err)) return; // someone else wrote it since we read it; try next round
      throw err;
    }
  }

  private renewed(): void {
    this.lastRenew = Date.now();
    if (!this.leading) this.setLeading(true);
  }

  private setLeading(v: boolean): void {
    if (this.leading === v) return;
    this.leading = v;
    this.opts.log.info(v ? 'became the leader' : 'no longer the leader', { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity });
    if (v) this.opts.onStartedLeading();
    else this.opts.onStoppedLeading();
  }
}
