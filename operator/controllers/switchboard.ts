/**
 * The Switchboard controller, in KEDA's shape (controllers/keda/scaledobject_controller.go):
 * reconcile only reconciles, and whatever happens it ends by writing the status.
 *
 *   1. get the Switchboard from the informer cache;
 *   2. not found -> done (forget what the scale handler kept about it);
 *   3. being deleted -> done (no finalizer: every child has an ownerReference, so the garbage
 *      collector removes them); its metrics loop stops, its flags' Redis connection closes;
 *   4. compute (the scale handler's decision, bounded by the spec) and server-side apply the
 *      ConfigMap, the Deployments and the Services (client, gRPC API, metrics);
 *   5. conditions: a step of 4 that failed is Ready=False with that step's reason and the
 *      API server's answer as the message;
 *   6. events, with the reason constants of api/types.ts: a failure is a Warning Event;
 *   7. status through the status subresource.
 *
 * Only then does a failure reach the work queue (as a ReconcileError), which retries with
 * backoff. The metrics loop and the threshold state live in the ScaleHandler, not here. Only the
 * leader runs either.
 */
import type { V1Deployment } from '@kubernetes/client-node';
import type { Logger } from '../../services/telemetry/log';
import {
  ConditionType, Plural, Reason,
  type Condition, type FeatureFlag, type Switchboard, type SwitchboardStatus, type Tier,
} from '../api/types';
import { apply, describe, isNotFound, patchStatus, type Kube } from '../kube/client';
import { keyOf, keyString, type ObjectKey } from '../kube/key';
import type { OperatorMetrics } from '../metrics';
import { apiService, configMap, deployment, gatewayService, metricsService, names } from '../resources';
import { TIERS, type EventSink, type ScaleHandler, type ScaleState } from '../scaling/handler';

export interface SwitchboardControllerDeps {
  readonly kube: Kube;
  readonly log: Logger;
  readonly events: EventSink;
  readonly metrics: Pick<OperatorMetrics, 'current' | 'desired' | 'overloaded' | 'flagsShed' | 'forget'>;
  readonly scale: ScaleHandler;
  readonly get: (key: ObjectKey) => Switchboard | undefined;
  /** FeatureFlags in a namespace (to report shed flags and to requeue them). */
  readonly flagsIn: (namespace: string) => readonly FeatureFlag[];
  readonly enqueueFlag: (key: ObjectKey) => void;
  /** The Switchboard is gone or going: close the flag publisher's connection to its Redis. */
  readonly forgetRedis: (key: ObjectKey) => void;
}

/** Reasons of a failed reconcile: Ready is False with one of them until a reconcile succeeds. */
export const FAILURE_REASONS: ReadonlySet<string> = new Set<Reason>([Reason.ReconcileFailed, Reason.ApplyFailed]);

/** A reconcile that failed after writing its status; the work queue retries it with backoff. */
export class ReconcileError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ReconcileError';
  }
}

interface Failure {
  readonly reason: Reason;
  readonly message: string;
  readonly err: unknown;
}

/** What step 4 got to: the scale state and the applied Deployments, or the step that failed. */
interface Outcome {
  readonly state?: ScaleState;
  readonly deployments?: Record<Tier, V1Deployment>;
  readonly failure?: Failure;
}

export class SwitchboardController {
  constructor(private readonly d: SwitchboardControllerDeps) {}

  async reconcile(key: ObjectKey): Promise<void> {
    // 1. get
    const sb = this.d.get(key);
    // 2. not found -> done
    if (sb === undefined) return this.forget(key);
    // 3. being deleted -> the garbage collector takes the children
    if (sb.metadata.deletionTimestamp) {
      this.d.scale.delete(key);
      return this.d.forgetRedis(key); // no flag is published to a Switchboard being deleted
    }
    // 4. compute and apply
    const outcome = await this.compute(sb);
    // 5. conditions
    const conditions = this.conditions(sb, outcome);
    // 6. events
    await this.recordEvents(sb, outcome);
    // 7. status
    await this.writeStatus(sb, outcome, conditions);
    if (outcome.failure) {
      throw new ReconcileError(outcome.failure.reason, `${keyString(key)}: ${outcome.failure.message}`, { cause: outcome.failure.err });
    }
  }

  private forget(key: ObjectKey): void {
    this.d.scale.delete(key);
    this.d.forgetRedis(key);
    this.d.metrics.forget(key.namespace, key.name);
    for (const ff of this.d.flagsIn(key.namespace)) this.d.enqueueFlag(keyOf(ff));
  }

  /** Step 4. Never throws: a failed step is returned with its reason and the API's answer. */
  private async compute(sb: Switchboard): Promise<Outcome> {
    const key = keyOf(sb);
    const { kube, scale } = this.d;
    let reason: Reason = Reason.ReconcileFailed;
    let step = 'read the Deployments';
    try {
      const seed = scale.has(key) ? undefined : await this.currentReplicas(sb);
      const state = scale.handle(sb, seed);
      reason = Reason.ApplyFailed;
      const applied = async <T extends { kind?: string; metadata?: { name?: string } }>(obj: T): Promise<T> => {
        step = `apply ${obj.kind} ${obj.metadata?.name}`;
        return apply(kube, obj);
      };
      await applied(configMap(sb));
      const deployments: Record<Tier, V1Deployment> = {
        gateway: await applied(deployment(sb, 'gateway', state.desired.gateway)),
        broadcast: await applied(deployment(sb, 'broadcast', state.desired.broadcast)),
      };
      await applied(gatewayService(sb));
      await applied(apiService(sb));
      await applied(metricsService(sb));
      // The state as it is now: a metrics round may have ended while the applies ran (one that
      // changed the replicas has asked for another reconcile, which applies them).
      return { state: scale.state(key) ?? state, deployments };
    } catch (err) {
      this.d.log.warn('reconcile step failed', { switchboard: keyString(key), step, reason, err: describe(err) });
      return { state: scale.state(key), failure: { reason, message: `${step}: ${describe(err)}`, err } };
    }
  }

  /** A restarted operator (or a new leader) continues from the replicas the Deployments have. */
  private async currentReplicas(sb: Switchboard): Promise<Partial<Record<Tier, number>>> {
    const seed: Partial<Record<Tier, number>> = {};
    for (const tier of TIERS) {
      try {
        const dep = await this.d.kube.apps.readNamespacedDeployment({ name: names.deployment(sb.metadata.name, tier), namespace: sb.metadata.namespace });
        if (typeof dep.spec?.replicas === 'number') seed[tier] = dep.spec.replicas;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return seed;
  }

  /** Step 5. What is not known after a failure is Unknown, never a guess. */
  private conditions(sb: Switchboard, o: Outcome): Condition[] {
    const prev = new Map((sb.status?.conditions ?? []).map((c) => [c.type, c]));
    const gen = sb.metadata.generation;
    const cond = (type: ConditionType, status: Condition['status'], reason: string, message: string): Condition => {
      const p = prev.get(type);
      const lastTransitionTime = p && p.status === status ? p.lastTransitionTime : new Date().toISOString();
      return { type, status, observedGeneration: gen, lastTransitionTime, reason, message };
    };
    const tf = (b: boolean): Condition['status'] => (b ? 'True' : 'False');
    const { state, deployments: deps, failure } = o;
    const out: Condition[] = [];

    if (failure) {
      out.push(cond(ConditionType.Ready, 'False', failure.reason, failure.message));
    } else {
      const available = TIERS.map((t) => deps![t].status?.availableReplicas ?? 0);
      const ready = available.every((n) => n > 0);
      out.push(cond(ConditionType.Ready, tf(ready), ready ? Reason.Available : Reason.Unavailable,
        `gateway ${available[0]}/${deps!.gateway.spec?.replicas ?? 0} available, broadcast ${available[1]}/${deps!.broadcast.spec?.replicas ?? 0} available`));
    }

    if (deps && state) {
      const scaling = TIERS.some((t) => (deps[t].spec?.replicas ?? 0) !== (deps[t].status?.replicas ?? 0));
      out.push(cond(ConditionType.Scaling, tf(scaling),
        scaling ? (state.lastDirection === 'down' ? Reason.ScaledDown : state.lastDirection === 'up' ? Reason.ScaledUp : Reason.Reconciled) : Reason.Stable,
        `desired gateway ${state.desired.gateway}, broadcast ${state.desired.broadcast}`));
    } else {
      out.push(cond(ConditionType.Scaling, 'Unknown', failure!.reason, 'the Deployments were not applied: see Ready'));
    }

    if (state) {
      out.push(cond(ConditionType.Overloaded, tf(state.overloaded), state.overloaded ? Reason.ThresholdBreached : Reason.WithinThresholds,
        state.breaches.length > 0 ? state.breaches.join('; ') : state.overloaded ? `holding for ${sb.spec.thresholds.holdSeconds}s after the last breach` : 'all thresholds clear'));
      out.push(state.metrics === 'unknown'
        ? cond(ConditionType.MetricsUnavailable, 'Unknown', Reason.MetricsPending, state.metricsMessage)
        : cond(ConditionType.MetricsUnavailable, tf(state.metrics === 'unavailable'),
          sb.spec.prometheus ? (state.metrics === 'unavailable' ? Reason.MetricsUnavailable : Reason.MetricsAvailable) : Reason.NoPrometheus,
          state.metricsMessage));
    } else {
      out.push(cond(ConditionType.Overloaded, 'Unknown', failure!.reason, 'not measured yet: see Ready'));
      out.push(cond(ConditionType.MetricsUnavailable, 'Unknown', failure!.reason, 'not measured yet: see Ready'));
    }
    return out;
  }

  /** Step 6. A failure is a Warning (at most once a minute per message); recovering is Normal. */
  private async recordEvents(sb: Switchboard, o: Outcome): Promise<void> {
    if (o.failure) {
      await this.d.events.record(sb, 'Warning', o.failure.reason, o.failure.message);
      return;
    }
    const ready = sb.status?.conditions?.find((c) => c.type === ConditionType.Ready);
    if (ready && FAILURE_REASONS.has(ready.reason)) {
      await this.d.events.record(sb, 'Normal', Reason.Reconciled, `reconciled again after ${ready.reason}`);
    }
  }

  /** Step 7, through the status subresource. What a failure left unknown is left as it was. */
  private async writeStatus(sb: Switchboard, o: Outcome, conditions: Condition[]): Promise<void> {
    const { namespace, name } = sb.metadata;
    const labels = { namespace, switchboard: name };
    const { state, deployments: deps } = o;
    const replicas = deps && { gateway: deps.gateway.spec?.replicas ?? 0, broadcast: deps.broadcast.spec?.replicas ?? 0 };
    const shed = state ? this.shedFlags(sb, state) : undefined;
    for (const tier of TIERS) {
      if (replicas) this.d.metrics.current.set({ ...labels, tier }, replicas[tier]);
      if (state) this.d.metrics.desired.set({ ...labels, tier }, state.desired[tier]);
    }
    if (state) this.d.metrics.overloaded.set(labels, state.overloaded ? 1 : 0);
    if (shed) this.d.metrics.flagsShed.set(labels, shed.length);

    const status: SwitchboardStatus = {
      observedGeneration: sb.metadata.generation,
      conditions,
      ...(replicas ? { replicas } : {}),
      ...(state
        ? {
            desiredReplicas: { ...state.desired },
            overloaded: state.overloaded,
            breaches: [...state.breaches],
            shedFlags: shed,
            ...(state.observed ? { observed: state.observed } : {}),
            ...(state.lastScaleTime ? { lastScaleTime: state.lastScaleTime } : {}),
            ...(state.lastBreachAt > 0 ? { lastBreachTime: new Date(state.lastBreachAt).toISOString() } : {}),
          }
        : {}),
    };
    try {
      await patchStatus(this.d.kube, Plural.Switchboard, namespace, name, status);
    } catch (err) {
      if (isNotFound(err)) return; // deleted meanwhile: its delete event forgets it
      await this.d.events.record(sb, 'Warning', Reason.StatusUpdateFailed, `write status: ${describe(err)}`);
      throw new ReconcileError(Reason.StatusUpdateFailed, `${namespace}/${name}: write status: ${describe(err)}`, { cause: err });
    }
  }

  private shedFlags(sb: Switchboard, state: ScaleState): string[] {
    if (!state.overloaded) return [];
    return this.d.flagsIn(sb.metadata.namespace)
      .filter((ff) => ff.spec.enabled && ff.spec.nonCritical && (!ff.spec.switchboards?.length || ff.spec.switchboards.includes(sb.metadata.name)))
      .map((ff) => ff.metadata.name)
      .sort();
  }
}
