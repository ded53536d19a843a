/**
 * The operator's own Prometheus metrics (prefix switchboard_operator_, names in
 * docs/operator.md), in a registry of its own next to the default process and Node.js metrics.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({ name: 'switchboard_operator_reconciles_total', help: 'Reconciles by kind and result (ok, error, requeue).', labelNames: ['kind', 'result'] as const, registers: [this.registry] });
  readonly reconcileErrors = new Counter({ name: 'switchboard_operator_reconcile_errors_total', help: 'Reconciles that failed and will be retried with backoff.', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly reconcileDuration = new Histogram({
    name: 'switchboard_operator_reconcile_duration_seconds',
    help: 'Time one reconcile took.',
    labelNames: ['kind'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly decisions = new Counter({ name: 'switchboard_operator_scaling_decisions_total', help: 'Scaling decisions by direction (up, down, hold).', labelNames: ['namespace', 'switchboard', 'tier', 'direction'] as const, registers: [this.registry] });
  readonly desired = new Gauge({ name: 'switchboard_operator_desired_replicas', help: 'Replicas the operator wants for a tier.', labelNames: ['namespace', 'switchboard', 'tier'] as const, registers: [this.registry] });
  readonly current = new Gauge({ name: 'switchboard_operator_current_replicas', help: 'Replicas the tier\'s Deployment has.', labelNames: ['namespace', 'switchboard', 'tier'] as const, registers: [this.registry] });
  readonly overloaded = new Gauge({ name: 'switchboard_operator_overloaded', help: '1 while a Switchboard breaches a threshold (or within the hold period after).', labelNames: ['namespace', 'switchboard'] as const, registers: [this.registry] });
  readonly flagsShed = new Gauge({ name: 'switchboard_operator_flags_shed', help: 'nonCritical feature flags shed now.', labelNames: ['namespace', 'switchboard'] as const, registers: [this.registry] });
  readonly queryErrors = new Counter({ name: 'switchboard_operator_metrics_query_errors_total', help: 'Prometheus queries that failed or had no data.', labelNames: ['namespace', 'switchboard'] as const, registers: [this.registry] });
  readonly isLeader = new Gauge({ name: 'switchboard_operator_is_leader', help: '1 on the replica that holds the leader lease and acts.', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Forget the series of a Switchboard that is gone. */
  forget(namespace: string, switchboard: string): void {
    for (const tier of ['gateway', 'broadcast']) {
      this.desired.remove({ namespace, switchboard, tier });
      this.current.remove({ namespace, switchboard, tier });
    }
    this.overloaded.remove({ namespace, switchboard });
    this.flagsShed.remove({ namespace, switchboard });
  }
}
