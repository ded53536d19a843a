// The smallest Kubernetes REST client the tests need: requests as a given identity, resource
// paths from API discovery, and server-side apply. Deliberately not @kubernetes/client-node:
// tests of the operator should see the raw API (status codes, Status bodies), and the harness
// must not depend on the library whose use it is there to check.
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import { parseAllDocuments } from 'yaml';

/** Who a request is made as: a client certificate or a bearer token. */
export type Credentials =
  | { readonly certPem: string; readonly keyPem: string }
  | { readonly token: string };

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; namespace?: string; [key: string]: unknown };
  [key: string]: unknown;
}

export interface KubeResponse<T = unknown> {
  readonly status: number;
  readonly body: T;
}

export interface WatchEvent<T = KubeObject> {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  readonly object: T;
}

export interface RequestOptions {
  readonly body?: unknown;
  /** @default 'application/json' */
  readonly contentType?: string;
  readonly query?: Readonly<Record<string, string>>;
}

/** A non-2xx answer; reason is the Status reason (Forbidden, Invalid, NotFound, ...). */
export class KubeApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly body: unknown,
  ) {
    const s = body as { reason?: string; message?: string } | undefined;
    super(`${method} ${path}: ${status} ${s?.reason ?? ''} ${s?.message ?? JSON.stringify(body)}`.trim());
  }

  get reason(): string | undefined {
    return (this.body as { reason?: string } | undefined)?.reason;
  }
}

interface ApiResource {
  name: string;
  kind: string;
  namespaced: boolean;
}

export class KubeClient {
  private readonly agent: https.Agent;
  private readonly discovery = new Map<string, ApiResource[]>();

  constructor(
    readonly server: string,
    /** Undefined: trust the system's CAs. */
    private readonly caPem: string | undefined,
    private readonly credentials: Credentials,
  ) {
    // No keep-alive: a test file's process must be able to exit as soon as its tests are done.
    this.agent = new https.Agent({
      ca: caPem,
      ...('certPem' in credentials ? { cert: credentials.certPem, key: credentials.keyPem } : {}),
    });
  }

  /** The same API server as another identity. */
  as(credentials: Credentials): KubeClient {
    return new KubeClient(this.server, this.caPem, credentials);
  }

  /** Any request; never throws for an HTTP status, only for transport errors. */
  request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<KubeResponse<T>> {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries(options.query ?? {})) url.searchParams.set(k, v);
    const payload = options.body === undefined ? undefined
      : typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload !== undefined) {
      headers['content-type'] = options.contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    if ('token' in this.credentials) headers.authorization = `Bearer ${this.credentials.token}`;
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method, agent: this.agent, headers, timeout: 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = parseMaybeJson(Buffer.concat(chunks).toString('utf8'));
          resolve({ status: res.statusCode ?? 0, body: body as T });
        });
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname}: timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * Watches a collection: yields events until the server ends the watch (after timeoutSeconds)
   * or the consumer stops iterating, which closes the connection.
   */
  async *watch<T = KubeObject>(path: string, query: Readonly<Record<string, string>> = {}): AsyncGenerator<WatchEvent<T>> {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries({ timeoutSeconds: '60', ...query, watch: 'true' })) url.searchParams.set(k, v);
    const headers: Record<string, string> = { accept: 'application/json' };
    if ('token' in this.credentials) headers.authorization = `Bearer ${this.credentials.token}`;
    const req = https.request(url, { method: 'GET', agent: this.agent, headers });
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.once('error', reject);
      req.end();
    });
    try {
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        for await (const c of res) chunks.push(c as Buffer);
        const text = Buffer.concat(chunks).toString('utf8');
        throw new KubeApiError('GET', `${path}?watch=true`, res.statusCode ?? 0, parseMaybeJson(text));
      }
      // One JSON event per line. Not readline: it re-emits the abort of an early stop as an
      // unhandled 'error'.
      let buffered = '';
      res.setEncoding('utf8');
      for await (const chunk of res as AsyncIterable<string>) {
        buffered += chunk;
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line !== '') yield JSON.parse(line) as WatchEvent<T>;
        }
      }
    } finally {
      res.on('error', () => {}); // stopping early aborts the response: that is the point
      req.destroy();
    }
  }

  /** Like request(), but a non-2xx status throws KubeApiError. */
  async call<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.request<T>(method, path, options);
    if (res.status < 200 || res.status > 299) throw new KubeApiError(method, path, res.status, res.body);
    return res.body;
  }

  get<T = KubeObject>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  create<T = KubeObject>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, { body });
  }

  /**
   * The REST path of a kind (collection when name is undefined), from API discovery. Discovery
   * of a just-established CRD can lag, so an unknown kind is looked up again for a few seconds.
   */
  async resourcePath(apiVersion: string, kind: string, namespace?: string, name?: string): Promise<string> {
    const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    let resource: ApiResource | undefined;
    for (let attempt = 0; ; attempt++) {
      resource = (await this.resources(base, attempt > 0)).find((r) => r.kind === kind && !r.name.includes('/'));
      if (resource || attempt >= 20) break;
      await sleep(250);
    }
    if (!resource) throw new Error(`API discovery at ${base} has no kind ${kind}`);
    let path = base;
    if (resource.namespaced) {
      if (!namespace) throw new Error(`${kind} is namespaced: give a namespace`);
      path += `/namespaces/${encodeURIComponent(namespace)}`;
    }
    path += `/${resource.name}`;
    return name === undefined ? path : `${path}/${encodeURIComponent(name)}`;
  }

  /**
   * Server-side apply of one object, a list of them, or YAML (several documents allowed), in
   * order. CustomResourceDefinitions are waited on until Established, so a CRD and resources of
   * its kind can be applied in one call. Returns the objects as the server stored them.
   */
  async apply(input: string | KubeObject | readonly KubeObject[], options: ApplyOptions = {}): Promise<KubeObject[]> {
    const objects = typeof input === 'string' ? parseYamlObjects(input)
      : Array.isArray(input) ? input as readonly KubeObject[] : [input as KubeObject];
    const out: KubeObject[] = [];
    for (const obj of objects) {
      const name = obj.metadata?.name;
      if (!obj.apiVersion || !obj.kind || !name) throw new Error(`cannot apply an object without apiVersion, kind and metadata.name: ${JSON.stringify(obj).slice(0, 200)}`);
      const ns = obj.metadata.namespace ?? options.namespace;
      const path = await this.resourcePath(obj.apiVersion, obj.kind, ns, name);
      const body = ns && !obj.metadata.namespace ? { ...obj, metadata: { ...obj.metadata, namespace: ns } } : obj;
      const applied = await this.call<KubeObject>('PATCH', path, {
        body,
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: options.fieldManager ?? 'switchboard-test', force: 'true' },
      });
      if (obj.kind === 'CustomResourceDefinition' && options.waitForEstablished !== false) {
        await this.waitForEstablished(name);
      }
      out.push(applied);
    }
    return out;
  }

  /** Waits until a CRD reports Established=True (its API is served). */
  async waitForEstablished(crdName: string, timeoutMs = 30_000): Promise<void> {
    const path = `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crdName}`;
    await waitFor(`CRD ${crdName} Established`, timeoutMs, async () => {
      const crd = await this.get<{ status?: { conditions?: { type: string; status: string }[] } }>(path);
      return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ?? false;
    });
  }

  private async resources(base: string, refresh: boolean): Promise<ApiResource[]> {
    const cached = this.discovery.get(base);
    if (cached && !refresh) return cached;
    const res = await this.request<{ resources?: ApiResource[] }>('GET', base);
    const list = res.status === 200 ? res.body.resources ?? [] : [];
    this.discovery.set(base, list);
    return list;
  }
}

export interface ApplyOptions {
  /** Namespace for namespaced objects that name none. */
  readonly namespace?: string;
  /** @default 'switchboard-test' */
  readonly fieldManager?: string;
  /** @default true */
  readonly waitForEstablished?: boolean;
}

/** The non-empty documents of a YAML stream, as objects. */
export function parseYamlObjects(text: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`bad YAML: ${doc.errors[0].message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) throw new Error('a YAML document is not an object');
    out.push(value as KubeObject);
  }
  return out;
}

/**
 * Polls check() every intervalMs until it returns true, and fails after timeoutMs with the last
 * error it threw, if any. Tests wait this way, never with fixed sleeps.
 */
export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>, intervalMs = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`, { cause: last });
    }
    await sleep(intervalMs);
  }
}

/** JSON if it parses (API objects, Status), else the text (/readyz answers "ok"). */
function parseMaybeJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
