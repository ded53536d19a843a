// Prometheus for the single-node cluster (built by `bash test/k8s/tools.sh node` from its Go
// module: Debian's package has no Kubernetes service discovery): it discovers the pods with
// kubernetes_sd_configs against the test API server, with the scrape configuration the
// Prometheus Operator would generate from the chart's own ServiceMonitors (rendered by
// `helm template`), and listens on the node's address so the operator's pods can query it.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitFor, type KubeObject, type NodeCluster } from '../k8s/harness';
import { freePorts } from '../k8s/harness/components';
import { ManagedProcess } from '../k8s/harness/process';

interface RelabelConfig {
  sourceLabels?: string[];
  targetLabel?: string;
  action?: string;
  regex?: string;
  replacement?: string;
  separator?: string;
}

interface ServiceMonitor extends KubeObject {
  spec: {
    namespaceSelector?: { matchNames?: string[] };
    selector: { matchLabels?: Record<string, string> };
    endpoints: Array<{ port: string; path?: string; interval?: string; scrapeTimeout?: string; honorLabels?: boolean; relabelings?: RelabelConfig[] }>;
  };
}

/** A Prometheus label name for a Kubernetes label, as service discovery spells it. */
function sdLabel(kind: string, key: string): string {
  return `__meta_kubernetes_${kind}_label_${key.replace(/[^a-zA-Z0-9_]/g, '_')}`;
}

/**
 * The scrape configs the Prometheus Operator generates for ServiceMonitors (role endpoints: keep
 * the selected Services' endpoints on the named port, then the default target labels, then the
 * ServiceMonitor's own relabelings), pointed at the test API server. Covers the fields the
 * chart's ServiceMonitors use.
 */
export function scrapeConfigsFor(monitors: readonly KubeObject[], sd: Record<string, unknown>, intervalOverride?: string): unknown[] {
  const out: unknown[] = [];
  for (const m of monitors as ServiceMonitor[]) {
    if (m.kind !== 'ServiceMonitor') continue;
    m.spec.endpoints.forEach((ep, i) => {
      const keep: unknown[] = Object.entries(m.spec.selector.matchLabels ?? {}).map(([k, v]) => ({
        source_labels: [sdLabel('service', k), `__meta_kubernetes_service_labelpresent_${k.replace(/[^a-zA-Z0-9_]/g, '_')}`],
        regex: `(${v});true`,
        action: 'keep',
      }));
      const relabelings = (ep.relabelings ?? []).map((r) => ({
        ...(r.sourceLabels ? { source_labels: r.sourceLabels } : {}),
        ...(r.targetLabel ? { target_label: r.targetLabel } : {}),
        ...(r.action ? { action: r.action.toLowerCase() } : {}),
        ...(r.regex ? { regex: r.regex } : {}),
        ...(r.replacement !== undefined ? { replacement: r.replacement } : {}),
        ...(r.separator ? { separator: r.separator } : {}),
      }));
      out.push({
        job_name: `serviceMonitor/${m.metadata.namespace}/${m.metadata.name}/${i}`,
        honor_labels: ep.honorLabels ?? false,
        scrape_interval: intervalOverride ?? ep.interval ?? '30s',
        scrape_timeout: intervalOverride ?? ep.scrapeTimeout ?? '10s',
        metrics_path: ep.path ?? '/metrics',
        kubernetes_sd_configs: [{ role: 'endpoints', namespaces: { names: m.spec.namespaceSelector?.matchNames ?? [m.metadata.namespace] }, ...sd }],
        relabel_configs: [
          ...keep,
          { source_labels: ['__meta_kubernetes_endpoint_port_name'], regex: ep.port, action: 'keep' },
          // The Prometheus Operator's default target labels.
          { source_labels: ['__meta_kubernetes_namespace'], target_label: 'namespace' },
          { source_labels: ['__meta_kubernetes_service_name'], target_label: 'service' },
          { source_labels: ['__meta_kubernetes_pod_name'], target_label: 'pod' },
          { source_labels: ['__meta_kubernetes_pod_container_name'], target_label: 'container' },
          { source_labels: ['__meta_kubernetes_service_name'], target_label: 'job' },
          { target_label: 'endpoint', replacement: ep.port },
          ...relabelings,
        ],
      });
    });
  }
  return out;
}

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export class Prometheus {
  private constructor(
    private readonly process: ManagedProcess,
    readonly dir: string,
    /** http://<node address>:<port>: reachable from the host and from pods. */
    readonly url: string,
  ) {}

  static async start(node: NodeCluster, monitors: readonly KubeObject[], interval: string): Promise<Prometheus> {
    const dir = await mkdtemp(path.join(tmpdir(), 'switchboard-e2e-prometheus-'));
    const cp = node.cp;
    const admin = cp.admin as { certPem: string; keyPem: string };
    await writeFile(path.join(dir, 'client.crt'), admin.certPem);
    await writeFile(path.join(dir, 'client.key'), admin.keyPem, { mode: 0o600 });
    const sd = {
      api_server: cp.server,
      tls_config: { ca_file: cp.caPath, cert_file: path.join(dir, 'client.crt'), key_file: path.join(dir, 'client.key') },
    };
    const config = {
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      scrape_configs: scrapeConfigsFor(monitors, sd, interval),
    };
    await writeFile(path.join(dir, 'prometheus.yml'), JSON.stringify(config, null, 2));
    const [port] = await freePorts(1);
    const url = `http://${node.address}:${port}`;
    const p = ManagedProcess.start({
      name: 'prometheus',
      command: node.tools.paths.prometheus,
      logPath: path.join(dir, 'prometheus.log'),
      orphanCleanupPath: dir,
      args: [
        `--config.file=${path.join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=${node.address}:${port}`,
        '--log.level=warn',
      ],
    });
    const prom = new Prometheus(p, dir, url);
    try {
      await waitFor('prometheus /-/ready', 30_000, async () => {
        if (p.status) throw new Error(`prometheus exited: ${p.logTail()}`);
        return (await fetch(`${url}/-/ready`)).ok;
      });
    } catch (err) {
      await prom.stop();
      throw err;
    }
    return prom;
  }

  async query(promql: string): Promise<Sample[]> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
    if (body.status !== 'success' || !body.data) throw new Error(`prometheus query ${promql}: ${body.error ?? res.status}`);
    if (body.data.resultType !== 'vector') throw new Error(`prometheus query ${promql}: ${body.data.resultType}`);
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** The value of a query answering one number, or undefined when it has no data. */
  async scalar(promql: string): Promise<number | undefined> {
    const r = await this.query(promql);
    return r.length === 0 ? undefined : r[0].value;
  }

  logTail(): string {
    return this.process.logTail();
  }

  async stop(): Promise<void> {
    await this.process.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
