// Kubeconfig files: written for helm, kubectl and the code under test, and read when the tests
// run against an existing cluster (kind, minikube, ...) instead of a local control plane
// (SWITCHBOARD_K8S_KUBECONFIG names an admin kubeconfig).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import type { Credentials } from './client';

export interface ClusterConnection {
  readonly server: string;
  /** Undefined: the server's certificate is checked against the system's trusted CAs. */
  readonly caPem: string | undefined;
  readonly credentials: Credentials;
}

interface NamedEntry<T> {
  name: string;
  [key: string]: T | string;
}

interface KubeconfigFile {
  'current-context'?: string;
  contexts?: NamedEntry<{ cluster: string; user: string }>[];
  clusters?: NamedEntry<{ server: string; 'certificate-authority'?: string; 'certificate-authority-data'?: string }>[];
  users?: NamedEntry<Record<string, unknown>>[];
}

/**
 * Server, CA and credentials of a kubeconfig's context (its current one by default). Only
 * client certificates and tokens are supported: exec plugins and auth providers would make the
 * tests depend on cloud tooling.
 */
export async function readKubeconfig(file: string, context?: string): Promise<ClusterConnection> {
  const config = parse(await readFile(file, 'utf8')) as KubeconfigFile;
  const base = path.dirname(file);
  const entry = <T>(list: NamedEntry<T>[] | undefined, name: string | undefined, key: string, what: string): T => {
    const found = list?.find((e) => e.name === name)?.[key] as T | undefined;
    if (!found) throw new Error(`${file}: no ${what} ${JSON.stringify(name)}`);
    return found;
  };
  const ctx = entry(config.contexts, context ?? config['current-context'], 'context', 'context');
  const cluster = entry(config.clusters, ctx.cluster, 'cluster', 'cluster');
  const user = entry(config.users, ctx.user, 'user', 'user');
  const inline = async (dataKey: string, fileKey: string, from: Record<string, unknown>): Promise<string | undefined> => {
    if (typeof from[dataKey] === 'string') return Buffer.from(from[dataKey] as string, 'base64').toString('utf8');
    if (typeof from[fileKey] === 'string') return readFile(path.resolve(base, from[fileKey] as string), 'utf8');
    return undefined;
  };
  const caPem = await inline('certificate-authority-data', 'certificate-authority', cluster);
  const certPem = await inline('client-certificate-data', 'client-certificate', user);
  const keyPem = await inline('client-key-data', 'client-key', user);
  let credentials: Credentials;
  if (certPem && keyPem) credentials = { certPem, keyPem };
  else if (typeof user.token === 'string') credentials = { token: user.token };
  else if (typeof user.tokenFile === 'string') credentials = { token: (await readFile(path.resolve(base, user.tokenFile), 'utf8')).trim() };
  else {
    throw new Error(`${file}: user ${ctx.user} has neither a client certificate nor a token. Give the tests a ` +
      'kubeconfig with one (kind and minikube write client certificates; for others, a ServiceAccount ' +
      'bound to cluster-admin and `kubectl create token`).');
  }
  return { server: cluster.server, caPem, credentials };
}

/** A kubeconfig with one cluster, user and context (credentials inline), as YAML. */
export function renderKubeconfig(server: string, caPem: string | undefined, user: string, credentials: Credentials): string {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const auth = 'token' in credentials ? { token: credentials.token }
    : { 'client-certificate-data': b64(credentials.certPem), 'client-key-data': b64(credentials.keyPem) };
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'switchboard-test', cluster: { server, ...(caPem ? { 'certificate-authority-data': b64(caPem) } : {}) } }],
    users: [{ name: user, user: auth }],
    contexts: [{ name: 'switchboard-test', context: { cluster: 'switchboard-test', user } }],
    'current-context': 'switchboard-test',
  });
}
