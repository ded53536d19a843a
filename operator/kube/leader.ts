/**
 * Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * the holder renews spec.renewTime every retry period; a candidate takes the Lease over once
 * renewTime + leaseDurationSeconds has passed. Every write is a replace carrying the
 * resourceVersion it read, so two candidates racing for an expired Lease cannot both win (the
 * loser gets 409 Conflict).
 *
 * Leading is a claim on the local clock, as client-go's renewDeadline: a replica leads only while
 * less than renewDeadlineMs has passed since the start of its last successful renewal, which is
 * shorter than the lease duration others wait out before taking over. `holds` answers that and is
 * asked before every write (the operator's WriteGate), not the `leading` flag alone: a process
 * paused past its lease (SIGSTOP, a long GC, a frozen VM) resumes with its timers due and its flag
 * still set, and would otherwise write for as long as its next round takes to find out that
 * another replica took over. It writes nothing until it has renewed again. A leader that cannot
 * renew within the deadline steps down.
 *
 * The Lease is not left behind: a leader that stops cleanly deletes it (only the version that
 * names it as holder: a precondition on uid and resourceVersion), and with `ownerDeployment` the
 * Lease carries an ownerReference to the operator's own Deployment, so the garbage collector
 * removes it with the Deployment (helm uninstall) even when no replica could delete it: killed
 * with -9, or stopped after the uninstall had already removed its RBAC. The owner is the
 * Deployment, not a Pod: every replica, standby or leader, names the same owner, and a Lease
 * owned by the leader's Pod would be deleted under a new leader when that Pod went.
 */
import { V1MicroTime, type V1Lease, type V1OwnerReference } from '@kubernetes/client-node';
import type { Logger } from '../../services/telemetry/log';
import { describe, isConflict, isNotFound, type Kube } from './client';

export interface LeaderElectionOptions {
  readonly kube: Kube;
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  /** @default 15000 */
  readonly leaseDurationMs?: number;
  /**
   * How long after the start of its last successful renewal a leader may still write. Shorter
   * than the lease duration: the margin covers the time between the check and the write landing,
   * and clock drift. @default two thirds of leaseDurationMs (client-go's 10 s of 15 s)
   */
  readonly renewDeadlineMs?: number;
  /** How often to renew or try to acquire. @default leaseDurationMs / 5 */
  readonly retryPeriodMs?: number;
  /**
   * The operator's own Deployment, in `namespace`: the Lease's owner. While it is missing or
   * being deleted (an uninstall in progress) no Lease is created. @default undefined (no owner)
   */
  readonly ownerDeployment?: string;
  readonly log: Logger;
  readonly onStartedLeading: () => void;
  /** On a clean stop the Lease is deleted only after a promise returned here settles. */
  readonly onStoppedLeading: () => void | Promise<void>;
}

/** The owner Deployment is gone or going: the operator is being uninstalled. */
class OwnerGone extends Error {}

export class LeaderElector {
  private timer: NodeJS.Timeout | null = null;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;
  /** The round in progress: stop() waits for it, so no write of it lands after the delete. */
  private inflight: Promise<void> | null = null;
  private ownerGoneLogged = false;
  private readonly durationMs: number;
  private readonly retryMs: number;
  private readonly deadlineMs: number;

  constructor(private readonly opts: LeaderElectionOptions) {
    this.durationMs = opts.leaseDurationMs ?? 15_000;
    this.retryMs = opts.retryPeriodMs ?? Math.max(200, Math.floor(this.durationMs / 5));
    this.deadlineMs = opts.renewDeadlineMs ?? Math.floor((this.durationMs * 2) / 3);
    if (!(this.deadlineMs < this.durationMs)) throw new Error(`renewDeadlineMs (${this.deadlineMs}) must be shorter than leaseDurationMs (${this.durationMs})`);
    if (!(this.deadlineMs > this.retryMs)) throw new Error(`renewDeadlineMs (${this.deadlineMs}) must be longer than retryPeriodMs (${this.retryMs})`);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Whether this replica may act as the leader now: it leads and renewed the Lease less than the
   * renew deadline ago, by the local clock. Ask it immediately before each write.
   */
  get holds(): boolean {
    return this.leading && Date.now() - this.lastRenew < this.deadlineMs;
  }

  start(): void {
    this.stopped = false;
    this.round();
  }

  /**
   * Stop campaigning. A leader stops acting (onStoppedLeading settles), then deletes the Lease if
   * it still holds it, so another replica takes over at once and an uninstall leaves no Lease.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    await this.inflight;
    if (!this.leading) return;
    this.leading = false;
    this.opts.log.info('no longer the leader', { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity, reason: 'stopping' });
    try {
      await this.opts.onStoppedLeading();
    } catch (err) {
      this.opts.log.warn('stopping the leader\'s work failed', { err: describe(err) });
    }
    try {
      const lease = await this.read();
      if (lease?.spec?.holderIdentity === this.opts.identity) {
        const { uid, resourceVersion } = lease.metadata ?? {};
        await this.opts.kube.coordination.deleteNamespacedLease({
          name: this.opts.name, namespace: this.opts.namespace, body: { preconditions: { uid, resourceVersion } },
        });
        this.opts.log.info('deleted the leader lease', { lease: `${this.opts.namespace}/${this.opts.name}` });
      }
    } catch (err) {
      // 404: already gone (garbage-collected with its owner); 409: written by someone since.
      if (!isNotFound(err)) this.opts.log.warn('could not delete the leader lease', { err: describe(err) });
    }
  }

  private round(): void {
    this.inflight = this.attempt();
  }

  private async attempt(): Promise<void> {
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      if (err instanceof OwnerGone) {
        if (!this.ownerGoneLogged) this.opts.log.warn('not taking the leader lease', { reason: err.message });
        this.ownerGoneLogged = true;
      } else {
        this.opts.log.warn('leader election round failed', { err: describe(err) });
      }
    }
    if (this.leading && Date.now() - this.lastRenew >= this.deadlineMs) {
      this.opts.log.error('could not renew the leader lease in time: stepping down');
      this.setLeading(false);
    }
    if (!this.stopped) {
      this.timer = setTimeout(() => this.round(), this.retryMs);
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

  /**
   * The ownerReference to the operator's Deployment, or undefined without ownerDeployment.
   * Throws OwnerGone when the Deployment is missing or being deleted.
   */
  private async owner(): Promise<V1OwnerReference | undefined> {
    const name = this.opts.ownerDeployment;
    if (!name) return undefined;
    let uid: string | undefined;
    try {
      const d = await this.opts.kube.apps.readNamespacedDeployment({ name, namespace: this.opts.namespace });
      if (d.metadata?.deletionTimestamp) throw new OwnerGone(`its owner Deployment ${this.opts.namespace}/${name} is being deleted`);
      uid = d.metadata?.uid;
    } catch (err) {
      if (isNotFound(err)) throw new OwnerGone(`its owner Deployment ${this.opts.namespace}/${name} does not exist (OPERATOR_DEPLOYMENT)`);
      throw err;
    }
    if (!uid) throw new Error(`Deployment ${this.opts.namespace}/${name} has no uid`);
    this.ownerGoneLogged = false;
    // Not blockOwnerDeletion: that would need update on the Deployment's finalizers.
    return { apiVersion: 'apps/v1', kind: 'Deployment', name, uid };
  }

  /** True when the Lease lacks the owner it should have (created by an operator without one). */
  private lacksOwner(lease: V1Lease): boolean {
    const name = this.opts.ownerDeployment;
    return !!name && !(lease.metadata?.ownerReferences ?? []).some((r) => r.kind === 'Deployment' && r.name === name);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { kube, namespace, name, identity } = this.opts;
    // The renewal counts from here, not from the answer: others time the lease from the
    // renewTime written, and a slow round must not stretch this replica's claim past theirs.
    const started = Date.now();
    const now = new V1MicroTime(started);
    const durationSeconds = Math.max(1, Math.ceil(this.durationMs / 1000));
    const lease = await this.read();
    if (lease === null) {
      const owner = await this.owner();
      try {
        await kube.coordination.createNamespacedLease({
          namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace, ...(owner ? { ownerReferences: [owner] } : {}) },
            spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        this.renewed(started);
      } catch (err) {
        if (!isConflict(err)) throw err;
        // 409: another replica created it first. A leader whose Lease was deleted under it (by
        // the garbage collector, or by hand) and lost this race is no longer the leader.
        if (this.leading) this.setLeading(false);
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
    if (this.lacksOwner(lease)) {
      // A Lease made by an operator without an owner: adopt it into the Deployment. Best effort:
      // holding an existing Lease does not depend on it, creating one does (above).
      const owner = await this.owner().catch((err: unknown) => {
        this.opts.log.warn('could not give the leader lease its owner', { err: describe(err) });
        return undefined;
      });
      if (owner) lease.metadata = { ...lease.metadata, ownerReferences: [...(lease.metadata?.ownerReferences ?? []), owner] };
    }
    try {
      await kube.coordination.replaceNamespacedLease({ name, namespace, body: lease });
      this.renewed(started);
    } catch (err) {
      if (isConflict(err)) return; // someone else wrote it since we read it; try next round
      throw err;
    }
  }

  private renewed(at: number): void {
    this.lastRenew = at;
    if (!this.leading) this.setLeading(true);
  }

  private setLeading(v: boolean): void {
    if (this.leading === v) return;
    this.leading = v;
    this.opts.log.info(v ? 'became the leader' : 'no longer the leader', { lease: `${this.opts.namespace}/${this.opts.name}`, identity: this.opts.identity });
    if (v) this.opts.onStartedLeading();
    else void Promise.resolve(this.opts.onStoppedLeading()).catch((err: unknown) => this.opts.log.warn('stopping the leader\'s work failed', { err: describe(err) }));
  }
}
