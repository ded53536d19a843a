/**
 * The operator's settings (docs/operator.md, "Settings"), from the environment. A bad value is
 * a ConfigError naming the key, like the server's settings (exit code 2).
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError } from '../services/control/config';

export interface OperatorConfig {
  /** @default undefined (in-cluster ServiceAccount, or ~/.kube/config) */
  kubeconfig?: string;
  /** @default '' (all namespaces) */
  watchNamespace: string;
  /** Namespace of the leader Lease. @default POD_NAMESPACE, else the ServiceAccount's, else 'default' */
  namespace: string;
  /** @default 8081; 0 picks a free port; -1 disables */
  adminPort: number;
  /** @default '0.0.0.0' */
  adminHost: string;
  /** @default true */
  leaderElection: boolean;
  /** @default 'switchboard-operator' */
  leaseName: string;
  /** @default 15000 */
  leaseDurationMs: number;
  /** @default 30000 */
  resyncMs: number;
  /** This replica's name in the Lease. @default POD_NAME, else hostname-pid */
  identity: string;
}

const SA_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function int(env: NodeJS.ProcessEnv, key: string, def: number, min: number): number {
  const raw = env[key];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(key, `an integer >= ${min}`, raw);
  return n;
}

function bool(env: NodeJS.ProcessEnv, key: string, def: boolean): boolean {
  const raw = env[key];
  if (raw === undefined || raw === '') return def;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(key, 'true or false', raw);
}

function ownNamespace(env: NodeJS.ProcessEnv): string {
  if (env.OPERATOR_NAMESPACE) return env.OPERATOR_NAMESPACE;
  if (env.POD_NAMESPACE) return env.POD_NAMESPACE;
  try {
    return readFileSync(SA_NAMESPACE, 'utf8').trim();
  } catch {
    return 'default';
  }
}

export function loadOperatorConfig(env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  return {
    kubeconfig: env.KUBECONFIG || undefined,
    watchNamespace: env.WATCH_NAMESPACE ?? '',
    namespace: ownNamespace(env),
    adminPort: int(env, 'OPERATOR_ADMIN_PORT', 8081, -1),
    adminHost: env.OPERATOR_ADMIN_HOST || '0.0.0.0',
    leaderElection: bool(env, 'LEADER_ELECTION', true),
    leaseName: env.LEASE_NAME || 'switchboard-operator',
    leaseDurationMs: int(env, 'LEASE_DURATION_MS', 15_000, 1000),
    resyncMs: int(env, 'RESYNC_MS', 30_000, 100),
    identity: env.POD_NAME || `${hostname()}-${process.pid}`,
  };
}
