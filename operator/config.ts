/**
 * The operator's settings (docs/operator.md, "Settings", checked against this table by a test),
 * declared as a table like the server's SETTINGS and loaded by the same machinery
 * (services/control/config.ts: `.env` and the environment, the same kinds, so `true`/`false`/
 * `1`/`0` are the booleans here as there). A bad value is a ConfigError naming the key (exit 2).
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError, loadSettingsTable, type LoadOptions, type SettingDefinition } from '../services/control/config';

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
  /** The operator's own Deployment in `namespace`, the leader Lease's owner. @default '' (no owner) */
  ownerDeployment: string;
}

/** Every operator setting, in the order docs/operator.md lists them. */
export const OPERATOR_SETTINGS: readonly SettingDefinition[] = [
  { key: 'KUBECONFIG', kind: 'string', default: '', doc: 'kubeconfig path; empty: the pod\'s ServiceAccount in a cluster, else ~/.kube/config.' },
  { key: 'WATCH_NAMESPACE', kind: 'string', default: '', doc: 'Watch one namespace only (then a Role suffices); empty: all namespaces.' },
  { key: 'OPERATOR_NAMESPACE', kind: 'string', default: '', doc: 'Where the leader Lease lives; empty: POD_NAMESPACE, else the ServiceAccount\'s namespace, else default.' },
  { key: 'POD_NAMESPACE', kind: 'string', default: '', doc: 'The pod\'s namespace (downward API); used when OPERATOR_NAMESPACE is empty.' },
  { key: 'OPERATOR_ADMIN_PORT', kind: 'int', default: '8081', min: -1, doc: 'Admin HTTP port for /metrics, /stats, /healthz, /readyz. 0 picks a free port; -1 disables it.' },
  { key: 'OPERATOR_ADMIN_HOST', kind: 'string', default: '0.0.0.0', doc: 'Address of the admin HTTP listener.' },
  { key: 'LEADER_ELECTION', kind: 'bool', default: 'true', doc: 'Off: this replica always acts (run one replica only).' },
  { key: 'LEASE_NAME', kind: 'string', default: 'switchboard-operator', doc: 'Name of the coordination.k8s.io Lease.' },
  { key: 'LEASE_DURATION_MS', kind: 'int', default: '15000', min: 1000, unit: 'ms', doc: 'A dead leader is replaced after this long.' },
  { key: 'RESYNC_MS', kind: 'int', default: '30000', min: 100, unit: 'ms', doc: 'Every Switchboard and FeatureFlag is reconciled at least this often.' },
  { key: 'POD_NAME', kind: 'string', default: '', doc: 'This replica\'s identity in the Lease; empty: hostname-pid.' },
  { key: 'OPERATOR_DEPLOYMENT', kind: 'string', default: '', doc: 'The operator\'s own Deployment in OPERATOR_NAMESPACE: the owner of the leader Lease, which is garbage-collected with it; no Lease is created while it is missing. Empty: no owner.' },
];

const SA_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function serviceAccountNamespace(): string {
  try {
    return readFileSync(SA_NAMESPACE, 'utf8').trim();
  } catch {
    return 'default';
  }
}

/** Load and validate the operator's settings. Throws ConfigError on the first invalid value. */
export function loadOperatorConfig(env: NodeJS.ProcessEnv = process.env, opts: Omit<LoadOptions, 'env'> = {}): OperatorConfig {
  const v = loadSettingsTable(OPERATOR_SETTINGS, { ...opts, env });
  const str = (k: string) => v.get(k) as string;
  const num = (k: string) => v.get(k) as number;
  const adminPort = num('OPERATOR_ADMIN_PORT');
  if (adminPort > 65535) throw new ConfigError('OPERATOR_ADMIN_PORT', 'a port number 0-65535 (-1 disables)', String(adminPort));
  return {
    kubeconfig: str('KUBECONFIG') || undefined,
    watchNamespace: str('WATCH_NAMESPACE'),
    namespace: str('OPERATOR_NAMESPACE') || str('POD_NAMESPACE') || serviceAccountNamespace(),
    adminPort,
    adminHost: str('OPERATOR_ADMIN_HOST') || '0.0.0.0',
    leaderElection: v.get('LEADER_ELECTION') as boolean,
    leaseName: str('LEASE_NAME') || 'switchboard-operator',
    leaseDurationMs: num('LEASE_DURATION_MS'),
    resyncMs: num('RESYNC_MS'),
    identity: str('POD_NAME') || `${hostname()}-${process.pid}`,
    ownerDeployment: str('OPERATOR_DEPLOYMENT'),
  };
}
