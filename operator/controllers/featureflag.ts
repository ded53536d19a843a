/**
 * The FeatureFlag controller, in KEDA's order: get; not found -> done; being deleted -> remove
 * the flag from every Redis it was published to, then drop the finalizer; ensure the finalizer;
 * compute the effective state per target Switchboard (enabled, and not shed while that
 * Switchboard is overloaded); publish; status.
 */
import type { FeatureFlag as ServerFlag } from '../../services/control';
import type { Logger } from '../../services/telemetry/log';
import { FLAG_FINALIZER, FlagReason, Plural, flagNameOf, type FeatureFlag, type FeatureFlagStatus, type Switchboard } from '../api/types';
import { describe, isNotFound, patchObject, patchStatus, type Kube } from '../kube/client';
import { keyString, type ObjectKey } from '../kube/key';
import type { FlagPublisher } from '../flag-publisher';

export interface FeatureFlagControllerDeps {
  readonly kube: Kube;
  readonly log: Logger;
  readonly publisher: FlagPublisher;
  readonly get: (key: ObjectKey) => FeatureFlag | undefined;
  readonly switchboardsIn: (namespace: string) => readonly Switchboard[];
  /** Whether a Switchboard sheds nonCritical flags now (the scale handler's state). */
  readonly overloaded: (key: ObjectKey) => boolean;
}

export function targetsOf(ff: FeatureFlag, switchboards: readonly Switchboard[]): Switchboard[] {
  const wanted = ff.spec.switchboards;
  return switchboards.filter((sb) => !sb.metadata.deletionTimestamp && (!wanted?.length || wanted.includes(sb.metadata.name)));
}

/** The flag as the servers read it from `sb:flags`, with the operator's decision applied. */
export function serverFlag(ff: FeatureFlag, effective: boolean): ServerFlag {
  return {
    name: flagNameOf(ff),
    enabled: effective,
    rolloutPercent: ff.spec.rolloutPercent,
    betaUsers: ff.spec.betaUsers ?? [],
    nonCritical: ff.spec.nonCritical,
    description: ff.spec.description ?? '',
  };
}

export class FeatureFlagController {
  constructor(private readonly d: FeatureFlagControllerDeps) {}

  /** `signal`: the work queue's deadline for this reconcile (publishes stop when it fires). */
  async reconcile(key: ObjectKey, signal?: AbortSignal): Promise<void> {
    const { namespace, name } = key;
    const ff = this.d.get(key);
    if (ff === undefined) return;
    const targets = targetsOf(ff, this.d.switchboardsIn(namespace));

    if (ff.metadata.deletionTimestamp) {
      if (!(ff.metadata.finalizers ?? []).includes(FLAG_FINALIZER)) return;
      for (const sb of targets) await this.d.publisher.remove(sb, flagNameOf(ff), signal);
      await this.patchFinalizers(ff, (ff.metadata.finalizers ?? []).filter((f) => f !== FLAG_FINALIZER));
      this.d.log.info('flag unpublished', { flag: keyString(key), from: targets.map((t) => t.metadata.name) });
      return;
    }
    if (!(ff.metadata.finalizers ?? []).includes(FLAG_FINALIZER)) {
      await this.patchFinalizers(ff, [...(ff.metadata.finalizers ?? []), FLAG_FINALIZER]);
    }

    const published: string[] = [];
    const failed: string[] = [];
    let shedOn: string[] = [];
    // To every target at once: each publish is bounded, and one Redis that does not answer must
    // not delay the others by its bound.
    await Promise.all(targets.map(async (sb) => {
      const shed = ff.spec.enabled && ff.spec.nonCritical && this.d.overloaded({ namespace, name: sb.metadata.name });
      if (shed) shedOn.push(sb.metadata.name);
      try {
        await this.d.publisher.write(sb, serverFlag(ff, ff.spec.enabled && !shed), signal);
        published.push(sb.metadata.name);
      } catch (err) {
        failed.push(sb.metadata.name);
        this.d.log.warn('could not publish flag', { flag: keyString(key), switchboard: sb.metadata.name, err: describe(err) });
      }
    }));
    shedOn = shedOn.sort();
    failed.sort();

    let reason: FlagReason;
    let message: string;
    if (targets.length === 0) {
      reason = FlagReason.NoSwitchboard;
      message = ff.spec.switchboards?.length ? `none of ${ff.spec.switchboards.join(', ')} exists in ${namespace}` : `no Switchboard in ${namespace}`;
    } else if (failed.length > 0) {
      reason = FlagReason.RedisUnavailable;
      message = `could not publish to ${failed.join(', ')}; retrying`;
    } else if (!ff.spec.enabled) {
      reason = FlagReason.Disabled;
      message = 'spec.enabled is false';
    } else if (shedOn.length > 0) {
      reason = FlagReason.Overloaded;
      message = `shed while ${shedOn.join(', ')} breach${shedOn.length === 1 ? 'es' : ''} a threshold`;
    } else {
      reason = FlagReason.Enabled;
      message = `${ff.spec.rolloutPercent}% of users plus ${ff.spec.betaUsers?.length ?? 0} beta users`;
    }
    const status: FeatureFlagStatus = {
      observedGeneration: ff.metadata.generation,
      effective: targets.length > 0 && ff.spec.enabled && shedOn.length === 0 && failed.length === 0,
      reason,
      message,
      publishedTo: published.sort(),
    };
    await patchStatus(this.d.kube, Plural.FeatureFlag, namespace, name, status);
    if (failed.length > 0) throw new Error(`flag ${keyString(key)}: Redis unavailable for ${failed.join(', ')}`);
  }

  private async patchFinalizers(ff: FeatureFlag, finalizers: string[]): Promise<void> {
    try {
      await patchObject(this.d.kube, Plural.FeatureFlag, ff.metadata.namespace, ff.metadata.name, {
        metadata: { finalizers, resourceVersion: ff.metadata.resourceVersion },
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
