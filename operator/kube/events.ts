/**
 * Kubernetes Events about the objects the operator manages (core/v1 Events, so `kubectl
 * describe` shows them). Reasons come from the Reason constants in api/types.ts. The same
 * reason and message for the same object is recorded at most once a minute, so a condition
 * that persists does not flood the API.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../services/telemetry/log';
import type { Reason } from '../api/types';
import { describe, isNotLeader, type Kube } from './client';

export interface EventTarget {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace: string; uid?: string };
}

export class EventRecorder {
  private readonly recent = new Map<string, number>();

  constructor(
    private readonly kube: Kube,
    private readonly log: Logger,
    private readonly component = 'switchboard-operator',
  ) {}

  async record(obj: EventTarget, type: 'Normal' | 'Warning', reason: Reason, message: string): Promise<void> {
    const key = `${obj.metadata.namespace}/${obj.metadata.name}/${reason}/${message}`;
    const now = Date.now();
    if ((this.recent.get(key) ?? 0) > now - 60_000) return;
    this.recent.set(key, now);
    if (this.recent.size > 1000) for (const [k, t] of this.recent) if (t < now - 60_000) this.recent.delete(k);
    const ts = new Date();
    try {
      await this.kube.core.createNamespacedEvent({
        namespace: obj.metadata.namespace,
        body: {
          metadata: { name: `${obj.metadata.name}.${randomBytes(8).toString('hex')}`, namespace: obj.metadata.namespace },
          involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, namespace: obj.metadata.namespace, uid: obj.metadata.uid },
          reason,
          message: message.slice(0, 1024),
          type,
          source: { component: this.component },
          reportingComponent: this.component,
          firstTimestamp: ts,
          lastTimestamp: ts,
          count: 1,
        },
      });
    } catch (err) {
      // Not sent (this replica may not write now): the next leader may record it.
      if (isNotLeader(err)) this.recent.delete(key);
      // Events are best effort: never fail a reconcile over one.
      this.log.warn('could not record event', { reason, err: describe(err) });
    }
  }
}
