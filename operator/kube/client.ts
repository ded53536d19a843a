/**
 * The operator's view of the API server: one KubeConfig (a kubeconfig file or the pod's
 * ServiceAccount), the typed API groups it uses, and server-side apply of the objects it owns
 * (field manager `switchboard-operator`, forced: the operator owns those fields).
 */
import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubernetesObject,
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

export function loadKube(kubeconfigPath?: string): Kube {
  const config = new KubeConfig();
  if (kubeconfigPath) config.loadFromFile(kubeconfigPath);
  else config.loadFromDefault();
  return kubeFrom(config);
}

export function kubeFrom(config: KubeConfig): Kube {
  return {
    config,
    core: config.makeApiClient(CoreV1Api),
    apps: config.makeApiClient(AppsV1Api),
    custom: config.makeApiClient(CustomObjectsApi),
    coordination: config.makeApiClient(CoordinationV1Api),
    objects: KubernetesObjectApi.makeApiClient(config),
  };
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
