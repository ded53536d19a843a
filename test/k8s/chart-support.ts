// What chart.test.ts and manifests.test.ts share: rendering the Helm chart, reading the
// operator's RBAC contract out of docs/operator.md, comparing RBAC rules as sets of
// (apiGroup, resource, verb), and asking the API server what a ServiceAccount token may do.
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { parseYamlObjects, repoRoot, waitFor, type ControlPlane, type KubeClient, type KubeObject } from './harness';

export const CHART_DIR = path.join(repoRoot(), 'charts', 'switchboard');

export interface RenderOptions {
  readonly release?: string;
  readonly namespace: string;
  /** Written to a values file and passed with -f. */
  readonly values?: Record<string, unknown>;
  /** Extra helm arguments, e.g. ['--set', 'a=b']. */
  readonly args?: readonly string[];
}

let valuesDir: string | undefined;

/** Writes values to a fresh file under the control plane's temp dir and returns its path. */
export async function writeValues(cp: ControlPlane, values: Record<string, unknown>): Promise<string> {
  valuesDir ??= await mkdtemp(path.join(cp.dir, 'values-'));
  const file = path.join(valuesDir, `values-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, stringify(values));
  return file;
}

/** `helm template` of the chart; returns the objects and the raw YAML. */
export async function renderChart(cp: ControlPlane, opts: RenderOptions): Promise<{ objects: KubeObject[]; yaml: string }> {
  const args = ['template', opts.release ?? 'sb', CHART_DIR, '--namespace', opts.namespace];
  if (opts.values) args.push('--values', await writeValues(cp, opts.values));
  args.push(...(opts.args ?? []));
  const { stdout } = await cp.helm(args);
  return { objects: parseYamlObjects(stdout), yaml: stdout };
}

/** The one object of that kind and name; fails the test when it is missing or repeated. */
export function find<T extends KubeObject = KubeObject>(objects: readonly KubeObject[], kind: string, name: string): T {
  const hits = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  assert.equal(hits.length, 1, `expected one ${kind}/${name} in [${objects.map((o) => `${o.kind}/${o.metadata.name}`).join(', ')}]`);
  return hits[0] as T;
}

export function kinds(objects: readonly KubeObject[]): string[] {
  return objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
}

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/**
 * Rules as a sorted list of "apiGroup resource verb" (empty group shown as core), with
 * " name=NAME" for each resource name a rule is limited to.
 */
export function flattenRules(rules: readonly PolicyRule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    for (const g of r.apiGroups) {
      for (const res of r.resources) {
        for (const v of r.verbs) {
          if (r.resourceNames === undefined) out.add(`${g || 'core'} ${res} ${v}`);
          else for (const n of r.resourceNames) out.add(`${g || 'core'} ${res} ${v} name=${n}`);
        }
      }
    }
  }
  return [...out].sort();
}

export interface RbacContract {
  /** The ClusterRole (or per-namespace Role) table. */
  readonly operator: PolicyRule[];
  /** The Secrets Role table: granted only in the namespaces the operator reads Secrets in. */
  readonly secrets: PolicyRule[];
  /** The leader-election Role table. */
  readonly leader: PolicyRule[];
}

/**
 * The three RBAC tables of docs/operator.md ("RBAC"), in this order: operator, secrets, leader.
 * Parsed from rows of
 * | `group` | `res`, `res` | verb, verb (comment) |, or, in a table whose header has a
 * resourceNames column, | `group` | `res` | `name` (comment) | verb, verb (comment) | (no name:
 * any object).
 */
export function rbacContract(): RbacContract {
  const doc = readFileSync(path.join(repoRoot(), 'docs', 'operator.md'), 'utf8');
  const section = doc.split(/^## /m).find((s) => s.startsWith('RBAC'));
  assert.ok(section, 'docs/operator.md has an RBAC section');
  const tables: PolicyRule[][] = [];
  let current: PolicyRule[] | undefined;
  let header: string[] = [];
  for (const line of section.split('\n')) {
    if (!line.startsWith('|')) {
      current = undefined;
      continue;
    }
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    if (cells[0] === 'apiGroups') {
      header = cells;
      continue;
    }
    if (/^-+$/.test(cells[0])) continue;
    if (!current) tables.push((current = []));
    const cell = (name: string): string => {
      const i = header.indexOf(name);
      assert.ok(i >= 0, `docs/operator.md RBAC table without a ${name} column`);
      return cells[i];
    };
    const unquote = (s: string): string => s.replace(/`/g, '').replace(/^""$/, '');
    const rule: PolicyRule = {
      apiGroups: [unquote(cell('apiGroups'))],
      resources: cell('resources').split(',').map((s) => unquote(s.trim())),
      verbs: cell('verbs').replace(/\(.*\)/, '').split(',').map((s) => s.trim()).filter((s) => s !== ''),
    };
    if (header.includes('resourceNames')) {
      const names = [...cell('resourceNames').replace(/\(.*\)/, '').matchAll(/`([^`]+)`/g)].map((m) => m[1]);
      if (names.length > 0) rule.resourceNames = names;
    }
    current.push(rule);
  }
  assert.equal(tables.length, 3, 'docs/operator.md has three RBAC tables (operator, secrets, leader)');
  return { operator: tables[0], secrets: tables[1], leader: tables[2] };
}

const ALL_VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];

interface Access {
  readonly verb: string;
  readonly group: string;
  /** resource or resource/subresource */
  readonly resource: string;
  /** undefined: cluster-wide */
  readonly namespace?: string;
  /** undefined: no particular object (list, or a create RBAC cannot name) */
  readonly name?: string;
}

function describe(a: Access): string {
  return `${a.verb} ${a.group || 'core'}/${a.resource}${a.name ? ` named ${a.name}` : ''}${a.namespace ? ` in ${a.namespace}` : ' cluster-wide'}`;
}

/** Whether RBAC rules grant an access: a rule with resourceNames only matches those names. */
function grants(rules: readonly PolicyRule[], a: Access): boolean {
  return rules.some((r) => r.apiGroups.includes(a.group) && r.resources.includes(a.resource) && r.verbs.includes(a.verb) &&
    (r.resourceNames === undefined || (a.name !== undefined && r.resourceNames.includes(a.name))));
}

/** SelfSubjectAccessReview as the client's identity. */
export async function canI(client: KubeClient, a: Access): Promise<boolean> {
  const [resource, subresource] = a.resource.split('/');
  const review = await client.create<{ status: { allowed: boolean } }>(
    '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews',
    {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: { verb: a.verb, group: a.group, resource, subresource, namespace: a.namespace, name: a.name } },
    },
  );
  return review.status.allowed;
}

export interface PermissionCheck {
  /** Namespaces the operator works in (a watched namespace, or any for a cluster-wide one). */
  readonly workNamespaces: readonly string[];
  /** Namespaces where it must have none of the operator table (watchNamespace mode). */
  readonly foreignNamespaces: readonly string[];
  /** Namespaces where it may read Secrets (the secrets table); everywhere else it may not. */
  readonly secretNamespaces: readonly string[];
  /** The operator's own namespace (leader Lease). */
  readonly ownNamespace: string;
  /** True when the operator table is granted cluster-wide. */
  readonly clusterWide: boolean;
}

/**
 * Checks, as the token's identity, that every verb of docs/operator.md's tables is allowed where
 * the operator needs it, and that every other verb on those resources, the same verbs elsewhere
 * (Secrets cluster-wide and outside secretNamespaces included) and a few powerful permissions
 * are denied.
 */
export async function checkOperatorPermissions(client: KubeClient, check: PermissionCheck): Promise<void> {
  const contract = rbacContract();
  const expectAllowed: Access[] = [];
  const expectDenied: Access[] = [];
  // What each place should grant: the operator table where it works (or everywhere, cluster-wide),
  // the secrets table where it reads Secrets, plus the leader table in its own namespace. Every verb on every resource either table
  // mentions is checked there, for no name, each name a rule is limited to, and another name.
  const places: Array<{ namespace?: string; rules: PolicyRule[] }> = [
    { namespace: undefined, rules: check.clusterWide ? contract.operator : [] },
  ];
  for (const ns of new Set([...check.workNamespaces, ...check.foreignNamespaces, ...check.secretNamespaces, check.ownNamespace])) {
    const works = check.clusterWide || check.workNamespaces.includes(ns);
    places.push({
      namespace: ns,
      rules: [
        ...(works ? contract.operator : []),
        ...(check.secretNamespaces.includes(ns) ? contract.secrets : []),
        ...(ns === check.ownNamespace ? contract.leader : []),
      ],
    });
  }
  const all = [...contract.operator, ...contract.secrets, ...contract.leader];
  const targets = new Map<string, { group: string; resource: string; names: Set<string | undefined> }>();
  for (const rule of all) {
    for (const group of rule.apiGroups) {
      for (const resource of rule.resources) {
        const key = `${group} ${resource}`;
        const t = targets.get(key) ?? { group, resource, names: new Set<string | undefined>([undefined]) };
        for (const n of rule.resourceNames ?? []) t.names.add(n).add(`not-${n}`);
        targets.set(key, t);
      }
    }
  }
  for (const { namespace, rules } of places) {
    for (const { group, resource, names } of targets.values()) {
      for (const name of names) {
        for (const verb of ALL_VERBS) {
          // Requests RBAC sees no object name in (a name of create is not known to it).
          if (name !== undefined && ['list', 'watch', 'deletecollection', 'create'].includes(verb)) continue;
          const a: Access = { verb, group, resource, namespace, name };
          (grants(rules, a) ? expectAllowed : expectDenied).push(a);
        }
      }
    }
  }
  const anyNs = check.workNamespaces[0];
  expectDenied.push(
    { verb: 'get', group: '', resource: 'pods', namespace: anyNs },
    { verb: 'create', group: '', resource: 'pods', namespace: anyNs },
    { verb: 'create', group: '', resource: 'pods/exec', namespace: anyNs },
    { verb: 'list', group: '', resource: 'nodes' },
    { verb: 'list', group: '', resource: 'namespaces' },
    { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterroles' },
    { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'rolebindings', namespace: anyNs },
    { verb: 'escalate', group: 'rbac.authorization.k8s.io', resource: 'roles', namespace: anyNs },
    { verb: 'bind', group: 'rbac.authorization.k8s.io', resource: 'clusterroles' },
    { verb: 'impersonate', group: '', resource: 'serviceaccounts', namespace: anyNs },
    { verb: 'create', group: '', resource: 'serviceaccounts/token', namespace: anyNs },
    { verb: 'update', group: 'apiextensions.k8s.io', resource: 'customresourcedefinitions' },
    { verb: 'create', group: 'autoscaling', resource: 'horizontalpodautoscalers', namespace: anyNs },
  );

  // RBAC reaches the authorizer through a watch-fed cache: wait for the first grant.
  await waitFor(`the operator's RBAC to take effect (${describe(expectAllowed[0])})`, 15_000, () => canI(client, expectAllowed[0]));
  const wrong: string[] = [];
  for (const a of expectAllowed) if (!(await canI(client, a))) wrong.push(`denied: ${describe(a)}`);
  for (const a of expectDenied) if (await canI(client, a)) wrong.push(`allowed: ${describe(a)}`);
  assert.deepEqual(wrong, [], 'the operator ServiceAccount has exactly the permissions of docs/operator.md');
  assert.ok(expectAllowed.length >= 20, `checked ${expectAllowed.length} grants`);
}
