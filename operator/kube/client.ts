/**
 * The operator's view of the API server: one KubeConfig (a kubeconfig file or the pod's
 * ServiceAccount), the typed API groups it uses, and server-side apply of the objects it owns
 * (field manager `switchboard-operator`, forced: the operator owns those fields).
 *
 * A Kube made with a WriteGate asks it before every request that is not a read, as the last step
 * before the request is sent: the leader's work goes through such a Kube, so a replica that is
 * not the leader, or whose Lease has not been renewed recently (a process paused past its lease,
 * still believing it leads), writes nothing. The gate is below every write path (apply, status,
 * finalizers, Events, and any added later), not in each caller.
 */
import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  createConfiguration,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  ServerConfiguration,
  setHeaderOptions,
  type Configuration,
  type KubernetesObject,
  type Middleware,
} from '@kubernetes/client-node';
import { FIELD_MANAGER, GROUP, VERSION } from '../api/types';

export interface Kube {
  readonly config: KubeConfig;
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;
  readonly custom: CustomObjectsApi;
  readonly coordination: CoordinationV1Api;
  readonly objects: KubernetesObjectApi;
}

/** Whether this process may write now; asked immediately before each write. */
export type WriteGate = () => boolean;

/** A write refused by the WriteGate: nothing was sent. */
export class NotLeaderError extends Error {
  constructor(what: string) {
    super(`not writing (not the leader, or its lease is not fresh): ${what}`);
    this.name = 'NotLeaderError';
  }
}

export function isNotLeader(err: unknown): boolean {
  return err instanceof NotLeaderError;
}

export function loadKube(kubeconfigPath?: string, gate?: WriteGate): Kube {
  const config = new KubeConfig();
  if (kubeconfigPath) config.loadFromFile(kubeconfigPath);
  else config.loadFromDefault();
  return kubeFrom(config, gate);
}

export function kubeFrom(config: KubeConfig, gate?: WriteGate): Kube {
  if (!gate) {
    return {
      config,
      core: config.makeApiClient(CoreV1Api),
      apps: config.makeApiClient(AppsV1Api),
      custom: config.makeApiClient(CustomObjectsApi),
      coordination: config.makeApiClient(CoordinationV1Api),
      objects: KubernetesObjectApi.makeApiClient(config),
    };
  }
  // What KubeConfig.makeApiClient builds, plus the gate as middleware: middleware runs after the
  // request is built and authenticated (which may wait on a token), right before it is sent.
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error('No active cluster!');
  const conf = createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: config },
    promiseMiddleware: [gateMiddleware(gate)],
  });
  return {
    config,
    core: new CoreV1Api(conf),
    apps: new AppsV1Api(conf),
    custom: new CustomObjectsApi(conf),
    coordination: new CoordinationV1Api(conf),
    objects: GatedObjectApi.make(config, conf),
  };
}

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);

function gateMiddleware(gate: WriteGate): Middleware {
  return {
    pre: async (ctx) => {
      const method = ctx.getHttpMethod();
      if (!READS.has(method) && !gate()) throw new NotLeaderError(`${method} ${new URL(ctx.getUrl()).pathname}`);
      return ctx;
    },
    post: async (rsp) => rsp,
  };
}

/** KubernetesObjectApi.makeApiClient with a given configuration (setDefaultNamespace is protected). */
class GatedObjectApi extends KubernetesObjectApi {
  static make(kc: KubeConfig, conf: Configuration): KubernetesObjectApi {
    const api = new GatedObjectApi(conf);
    api.setDefaultNamespace(kc);
    return api;
  }
}

/** HTTP status of an API error (0 for network errors). */
export function statusOf(err: unknown): number {
  if (err instanceof ApiException) return err.code;
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return 0;
}

export function isNotFound(err: unknown): boolean {
  return statusOf(err) === 404;
}

export function isConflict(err: unknown): boolean {
  return statusOf(err) === 409;
}

/** A short description of an API error, without bodies that might hold secrets. */
export function describe(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as { message?: string; reason?: string } | string | undefined;
    const msg = typeof body === 'string' ? safeParse(body) : body;
    return `${err.code} ${msg?.reason ?? ''} ${msg?.message ?? ''}`.trim();
  }
  return (err as Error)?.message ?? String(err);
}

function safeParse(s: string): { message?: string; reason?: string } | undefined {
  try {
    return JSON.parse(s) as { message?: string; reason?: string };
  } catch {
    return { message: s.slice(0, 200) };
  }
}

/** Server-side apply: creates or updates the fields this operator manages. */
export async function apply<T extends KubernetesObject>(kube: Kube, obj: T): Promise<T> {
  return kube.objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
}

/** JSON merge patch of a custom resource's status subresource. */
export async function patchStatus(kube: Kube, plural: string, namespace: string, name: string, status: unknown): Promise<void> {
  await kube.custom.patchNamespacedCustomObjectStatus(
    { group: GROUP, version: VERSION, plural, namespace, name, body: { status }, fieldManager: FIELD_MANAGER },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

/** JSON merge patch of a custom resource (metadata such as finalizers). */
export async function patchObject(kube: Kube, plural: string, namespace: string, name: string, body: unknown): Promise<void> {
  await kube.custom.patchNamespacedCustomObject(
    { group: GROUP, version: VERSION, plural, namespace, name, body, fieldManager: FIELD_MANAGER },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}
