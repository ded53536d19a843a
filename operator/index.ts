/**
 * The operator process (`switchboard operator`): informers on Switchboards and FeatureFlags run
 * on every replica so a new leader starts warm; the work queues, the scale handler's metrics
 * loops and every write run only on the replica holding the leader Lease: every write (to the API
 * server and to a Switchboard's Redis) first asks `mayWrite`, which answers from the local clock
 * against the last renewal, so neither a paused leader that resumes nor a reconcile still running
 * after a step-down writes. Admin HTTP: /metrics,
 * /stats, /healthz, /readyz, served by the same admin module as the server roles' admin port.
 */
import { AdminServer } from '../services/admin';
import type { Logger } from '../services/telemetry/log';
import { GROUP, Plural, VERSION, type FeatureFlag, type Switchboard } from './api/types';
import type { OperatorConfig } from './config';
import { FeatureFlagController } from './controllers/featureflag';
import { SwitchboardController } from './controllers/switchboard';
import { FlagPublisher } from './flag-publisher';
import { describe, kubeFrom, loadKube, type Kube } from './kube/client';
import { EventRecorder } from './kube/events';
import { ResilientInformer } from './kube/informer';
import { keyOf, keyString, type ObjectKey } from './kube/key';
import { LeaderElector } from './kube/leader';
import { WorkQueue } from './kube/queue';
import { OperatorMetrics } from './metrics';
import { MetricsScaleHandler } from './scaling/handler';

export { loadOperatorConfig, OPERATOR_SETTINGS, type OperatorConfig } from './config';
export type { ObjectKey } from './kube/key';
export { MetricsScaleHandler, type ScaleHandler, type ScaleState } from './scaling/handler';
export { decide, type ScalingDecision, type ScalingInput } from './scaling/policy';

/** Keys of one kind reconciled at once (never the same key twice). */
export const QUEUE_WORKERS = 4;
/** A reconcile still running after this long fails (retried with backoff) and frees its worker. */
export const RECONCILE_TIMEOUT_MS = 30_000;
/** A step-down or shutdown waits this long at most for the reconciles still running. */
export const STOP_TIMEOUT_MS = 5_000;
/** A Redis command of a flag publish, or connecting, without an answer fails after this long. */
export const REDIS_COMMAND_TIMEOUT_MS = 2_000;
/** A whole flag publish (one FeatureFlag to one Switchboard's Redis) fails after this long. */
export const PUBLISH_TIMEOUT_MS = 5_000;

export class Operator {
  readonly metrics = new OperatorMetrics();
  private readonly kube: Kube;
  private readonly switchboards: ResilientInformer<Switchboard>;
  private readonly flags: ResilientInformer<FeatureFlag>;
  private readonly sbQueue: WorkQueue;
  private readonly ffQueue: WorkQueue;
  private readonly scale: MetricsScaleHandler;
  private readonly sbController: SwitchboardController;
  private readonly ffController: FeatureFlagController;
  private readonly publisher: FlagPublisher;
  private readonly elector: LeaderElector | null;
  private admin: AdminServer | null = null;
  private resync: NodeJS.Timeout | null = null;
  private acting = false;
  /** A step-down still waiting for its queues; acting again starts after it. */
  private stopping: Promise<void> | null = null;

  constructor(
    readonly config: OperatorConfig,
    private readonly log: Logger,
  ) {
    this.kube = loadKube(config.kubeconfig, () => this.mayWrite());
    const ns = config.watchNamespace;
    const path = (plural: string) => (ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${plural}` : `/apis/${GROUP}/${VERSION}/${plural}`);
    const list = (plural: string) => () =>
      (ns
        ? this.kube.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural })
        : this.kube.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as Promise<{ items: never[] }>;

    this.switchboards = new ResilientInformer<Switchboard>({
      kube: this.kube, path: path(Plural.Switchboard), list: list(Plural.Switchboard), log,
      onChange: (sb) => {
        this.sbQueue.add(keyOf(sb));
        for (const ff of this.flags.list(sb.metadata.namespace)) this.ffQueue.add(keyOf(ff));
      },
    });
    this.flags = new ResilientInformer<FeatureFlag>({
      kube: this.kube, path: path(Plural.FeatureFlag), list: list(Plural.FeatureFlag), log,
      onChange: (ff) => {
        this.ffQueue.add(keyOf(ff));
        for (const sb of this.switchboards.list(ff.metadata.namespace)) this.sbQueue.add(keyOf(sb)); // shedFlags in status
      },
    });

    const events = new EventRecorder(this.kube, log);
    this.publisher = new FlagPublisher(this.kube, log, () => this.mayWrite(), { commandTimeoutMs: REDIS_COMMAND_TIMEOUT_MS, publishTimeoutMs: PUBLISH_TIMEOUT_MS });
    this.scale = new MetricsScaleHandler({
      log, events, metrics: this.metrics,
      onUpdate: (k) => this.sbQueue.add(k),
      onOverloadChange: (k) => {
        for (const ff of this.flags.list(k.namespace)) this.ffQueue.add(keyOf(ff));
      },
    });
    this.sbController = new SwitchboardController({
      kube: this.kube, log, events, metrics: this.metrics, scale: this.scale,
      get: (k) => this.switchboards.get(k.name, k.namespace),
      flagsIn: (n) => this.flags.list(n),
      enqueueFlag: (k) => this.ffQueue.add(k),
      forgetRedis: (k) => this.publisher.forget(k),
    });
    this.ffController = new FeatureFlagController({
      kube: this.kube, log, publisher: this.publisher,
      get: (k) => this.flags.get(k.name, k.namespace),
      switchboardsIn: (n) => this.switchboards.list(n),
      overloaded: (k) => this.scale.overloaded(k),
    });
    this.sbQueue = this.queue('Switchboard', (k) => this.sbController.reconcile(k));
    this.ffQueue = this.queue('FeatureFlag', (k, signal) => this.ffController.reconcile(k, signal));

    this.elector = config.leaderElection
      ? new LeaderElector({
          // Not the gated client: the Lease is how this replica becomes allowed to write.
          kube: kubeFrom(this.kube.config),
          namespace: config.namespace,
          name: config.leaseName,
          identity: config.identity,
          leaseDurationMs: config.leaseDurationMs,
          ownerDeployment: config.ownerDeployment || undefined,
          log,
          onStartedLeading: () => this.startActing(),
          // On a clean stop the Lease is deleted once the queues have stopped: the next leader
          // starts only after this one's last write.
          onStoppedLeading: () => this.stopActing(),
        })
      : null;
  }

  get isLeader(): boolean {
    return this.acting;
  }

  /**
   * Whether a write may be sent now: acting (the queues run), and with leader election, the
   * Lease renewed within the renew deadline. `acting` alone is not enough: it stays set through
   * a pause longer than the lease, until the next election round has read the Lease again.
   */
  mayWrite(): boolean {
    return this.acting && (this.elector === null || this.elector.holds);
  }

  get ready(): boolean {
    return this.readiness().ready;
  }

  /** Ready once both informers have listed (a follower is ready too: it is warm for takeover). */
  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (!this.switchboards.hasSynced) reasons.push('switchboards not listed yet');
    if (!this.flags.hasSynced) reasons.push('featureflags not listed yet');
    return { ready: reasons.length === 0, reasons };
  }

  /** /stats of the admin port. */
  stats(): Record<string, unknown> {
    return {
      role: 'operator',
      identity: this.config.identity,
      leader: this.acting,
      watchNamespace: this.config.watchNamespace || null,
      switchboards: this.switchboards.list().length,
      featureFlags: this.flags.list().length,
      queued: { Switchboard: this.sbQueue.length, FeatureFlag: this.ffQueue.length },
    };
  }

  /** The admin port actually bound (after start). */
  get adminPort(): number {
    return this.admin?.port ?? -1;
  }

  async start(): Promise<void> {
    if (this.config.adminPort >= 0) await this.listenAdmin();
    await Promise.all([this.switchboards.start(), this.flags.start()]);
    if (this.elector) this.elector.start();
    else this.startActing();
    this.log.info('operator started', {
      identity: this.config.identity,
      watchNamespace: this.config.watchNamespace || '(all)',
      leaderElection: this.config.leaderElection,
      adminPort: this.adminPort,
    });
  }

  async stop(): Promise<void> {
    if (this.elector) await this.elector.stop();
    await this.stopActing();
    await Promise.all([this.switchboards.stop(), this.flags.stop()]);
    await this.publisher.close();
    await this.admin?.close();
  }

  private queue(kind: 'Switchboard' | 'FeatureFlag', reconcile: (key: ObjectKey, signal: AbortSignal) => Promise<void>): WorkQueue {
    return new WorkQueue(
      async (key, signal) => {
        const end = this.metrics.reconcileDuration.startTimer({ kind });
        try {
          await reconcile(key, signal);
          this.metrics.reconciles.inc({ kind, result: 'ok' });
        } catch (err) {
          this.metrics.reconciles.inc({ kind, result: 'error' });
          this.metrics.reconcileErrors.inc({ kind });
          throw err;
        } finally {
          end();
        }
      },
      {
        baseDelayMs: 100,
        maxDelayMs: 60_000,
        concurrency: QUEUE_WORKERS,
        timeoutMs: RECONCILE_TIMEOUT_MS,
        stopTimeoutMs: STOP_TIMEOUT_MS,
        onError: (key, err, attempt) => this.log.warn('reconcile failed, retrying with backoff', { kind, key: keyString(key), attempt, err: describe(err) }),
      },
    );
  }

  private startActing(): void {
    if (this.acting) return;
    if (this.stopping) {
      // Leading again before the last step-down finished (the elector does not wait for it):
      // starting the queues now would run a second loop beside the one still stopping.
      void this.stopping.then(() => {
        if (this.elector === null || this.elector.isLeader) this.startActing();
      });
      return;
    }
    this.acting = true;
    this.metrics.isLeader.set(1);
    this.sbQueue.start();
    this.ffQueue.start();
    const all = () => {
      // A flag reconcile that was publishing while its Switchboard was deleted may have connected
      // again after the delete closed the connection: whatever is not a Switchboard now goes.
      if (this.switchboards.hasSynced) this.publisher.retain(this.switchboards.list().map(keyOf));
      for (const sb of this.switchboards.list()) this.sbQueue.add(keyOf(sb));
      for (const ff of this.flags.list()) this.ffQueue.add(keyOf(ff));
    };
    all();
    this.resync = setInterval(all, this.config.resyncMs);
    this.resync.unref();
  }

  private stopActing(): Promise<void> {
    if (!this.acting) return this.stopping ?? Promise.resolve();
    // Synchronously: from here mayWrite is false, so a reconcile still running writes nothing.
    this.acting = false;
    this.metrics.isLeader.set(0);
    if (this.resync) clearInterval(this.resync);
    this.stopping = (async () => {
      await Promise.all([this.sbQueue.stop(), this.ffQueue.stop()]);
      // After the queues: a reconcile still running would otherwise start a loop again (or connect).
      this.scale.stopAll();
      await this.publisher.close(); // a follower publishes nothing
    })().finally(() => {
      this.stopping = null;
    });
    return this.stopping;
  }

  private async listenAdmin(): Promise<void> {
    this.admin = new AdminServer(
      {
        stats: () => this.stats(),
        readiness: () => this.readiness(),
        metrics: async () => ({ contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() }),
      },
      { host: this.config.adminHost, port: this.config.adminPort, onListenerError: (err) => this.log.warn('admin listener error', { code: err.code }) },
    );
    await this.admin.listen();
  }

}
