// One sampled room message is one trace across every process it passes through:
// gateway receive -> bus publish -> broadcast route -> gateway deliver. An OTLP/HTTP receiver in
// the test (JSON protocol) collects the spans that the CLI processes export.
//
// The scenario is written against a Topology so that the cluster variant (gateway + broadcast
// processes over Redis) can be added next to the standalone one.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { switchboardService } from '../../services/api';
import { spawnRole, type RoleProcess } from '../cluster/harness';
import { spawnCli } from '../helpers/cli';
import { freePort } from '../helpers/net';
import { RedisProcess } from '../helpers/redis';
import { waitFor } from '../helpers/wait';
import { helloClient } from '../helpers/wire';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  service: string;
}

/** A minimal OTLP/HTTP trace receiver: POST /v1/traces with JSON bodies. */
class OtlpReceiver {
  private constructor(
    private readonly server: Server,
    readonly port: number,
    readonly spans: OtlpSpan[],
  ) {}

  static async start(): Promise<OtlpReceiver> {
    const spans: OtlpSpan[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        if (req.method === 'POST' && req.url === '/v1/traces') {
          try {
            spans.push(...parseExport(body));
          } catch (err) {
            res.writeHead(400).end(String(err));
            return;
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return new OtlpReceiver(server, (server.address() as { port: number }).port, spans);
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

interface AnyValue {
  stringValue?: string;
}

function parseExport(body: string): OtlpSpan[] {
  const doc = JSON.parse(body) as {
    resourceSpans?: {
      resource?: { attributes?: { key: string; value: AnyValue }[] };
      scopeSpans?: { spans?: { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number }[] }[];
    }[];
  };
  const out: OtlpSpan[] = [];
  for (const rs of doc.resourceSpans ?? []) {
    const service = rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({ traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId || undefined, name: s.name, kind: s.kind, service });
      }
    }
  }
  return out;
}

/** Where the two clients connect (the same gateway or two), and how to stop everything. */
interface Deployment {
  alicePort: number;
  bobPort: number;
  stop(): Promise<void>;
}

interface Topology {
  name: string;
  /** Start the processes with the tracing environment added to each. */
  start(otelEnv: Record<string, string>): Promise<Deployment>;
  /** service.name expected on each stage's span. */
  services: Record<(typeof STAGES)[number], string>;
  /** Gateways with a member of the room: one `gateway deliver` span each. */
  gateways: number;
}

const STAGES = ['gateway receive', 'bus publish', 'broadcast route', 'gateway deliver'] as const;

const standalone: Topology = {
  name: 'standalone',
  async start(otelEnv) {
    const p = spawnCli(['standalone'], { TCP_PORT: '0', ADMIN_PORT: '-1', ...otelEnv });
    leftovers.push(() => p.kill());
    const port = await p.listening();
    return { alicePort: port, bobPort: port, stop: async () => p.kill() };
  },
  services: {
    'gateway receive': 'switchboard-standalone',
    'bus publish': 'switchboard-standalone',
    'broadcast route': 'switchboard-standalone',
    'gateway deliver': 'switchboard-standalone',
  },
  gateways: 1,
};

/** Two gateways and a broadcast worker over a real redis-server: the context crosses 3 processes. */
const cluster: Topology = {
  name: 'cluster',
  async start(otelEnv) {
    const redis = await RedisProcess.start();
    const env = { REDIS_URL: redis.url, STREAM_SHARDS: '2', ...otelEnv };
    const procs: RoleProcess[] = [];
    const stop = async () => {
      await Promise.all(procs.map((p) => p.kill()));
      await redis.stop();
    };
    leftovers.push(stop);
    procs.push(await spawnRole('broadcast', env));
    const gw1 = await spawnRole('gateway', env);
    procs.push(gw1);
    const gw2 = await spawnRole('gateway', env);
    procs.push(gw2);
    return { alicePort: gw1.port, bobPort: gw2.port, stop };
  },
  services: {
    'gateway receive': 'switchboard-gateway',
    'bus publish': 'switchboard-gateway',
    'broadcast route': 'switchboard-broadcast',
    'gateway deliver': 'switchboard-gateway',
  },
  gateways: 2,
};

/** Stops for whatever a failed start left running. */
const leftovers: (() => unknown)[] = [];

async function oneMessageOneTrace(topology: Topology, t: { after(fn: () => unknown): void }): Promise<void> {
  const receiver = await OtlpReceiver.start();
  t.after(() => receiver.close());
  const dep = await topology.start({
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.port}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_TRACES_SAMPLER: 'always_on',
    OTEL_BSP_SCHEDULE_DELAY: '100',
  });
  t.after(() => dep.stop());

  const alice = await helloClient(dep.alicePort, 'alice');
  const bob = await helloClient(dep.bobPort, 'bob');
  t.after(() => {
    alice.destroy();
    bob.destroy();
  });
  await alice.join('traced');
  await bob.join('traced');
  const ok = await alice.request({ type: 'send_chat', room: 'traced', data: 'follow me' });
  assert.equal(ok.type, 'ok');
  await bob.next((m) => m.type === 'message' && m.data === 'follow me', 5000, 'bob to get the message');

  const byName = (name: string) => receiver.spans.filter((s) => s.name === name);
  await waitFor(
    () => STAGES.every((n) => byName(n).length > 0) && byName('gateway deliver').length >= topology.gateways,
    15_000,
    `spans of every stage (${topology.name})`,
    50,
  );
  const [receive, publish, route] = STAGES.slice(0, 3).map((n) => {
    const list = byName(n);
    assert.equal(list.length, 1, `one "${n}" span, got ${list.length}`);
    return list[0];
  });
  const delivers = byName('gateway deliver');
  assert.equal(delivers.length, topology.gateways, 'one gateway deliver span per gateway with members');
  const all = [receive, publish, route, ...delivers];
  const traceIds = new Set(all.map((s) => s.traceId));
  assert.equal(traceIds.size, 1, `one trace id, got ${[...traceIds].join(', ')}`);
  assert.match(receive.traceId, /^[0-9a-f]{32}$/);
  assert.equal(receive.parentSpanId, undefined, 'gateway receive is the root');
  assert.equal(publish.parentSpanId, receive.spanId, 'bus publish is a child of gateway receive');
  assert.equal(route.parentSpanId, publish.spanId, 'broadcast route is a child of bus publish');
  for (const d of delivers) assert.equal(d.parentSpanId, route.spanId, 'gateway deliver is a child of broadcast route');
  for (const s of all) {
    assert.equal(s.service, topology.services[s.name as (typeof STAGES)[number]], `service.name of "${s.name}"`);
  }
}

describe('tracing of one room message', () => {
  after(async () => {
    for (const stop of leftovers.splice(0)) await stop();
  });
  test('standalone: receive -> publish -> route -> deliver share one trace with the right parents', (t) => oneMessageOneTrace(standalone, t));
  test('cluster: the trace crosses gateway -> Redis -> broadcast -> Redis -> two gateways', (t) => oneMessageOneTrace(cluster, t));

  // The gRPC Publish is the same call as send_chat (publishChat): it is traced the same way.
  test('gRPC Publish: receive -> publish -> route -> deliver, one trace like send_chat', async (t) => {
    const receiver = await OtlpReceiver.start();
    t.after(() => receiver.close());
    const key = 'trace-api-key-0123456789';
    const apiPort = await freePort();
    const p = spawnCli(['standalone'], {
      TCP_PORT: '0',
      ADMIN_PORT: '-1',
      API_HOST: '127.0.0.1',
      API_PORT: String(apiPort),
      API_KEY: key,
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_TRACES_SAMPLER: 'always_on',
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });
    t.after(() => p.kill());
    const port = await p.listening();
    const bob = await helloClient(port, 'bob');
    t.after(() => bob.destroy());
    await bob.join('traced-api');
    const Ctor = switchboardService();
    const api = new Ctor(`127.0.0.1:${apiPort}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, (...a: unknown[]) => unknown>;
    t.after(() => api.close());
    const md = new grpc.Metadata();
    md.set('x-api-key', key);
    // The API starts right after the client port: retry until it answers.
    await waitFor(
      () =>
        new Promise<boolean>((resolve) =>
          api.Publish({ room: 'traced-api', data: JSON.stringify('from the api') }, md, { deadline: Date.now() + 2000 }, (err: grpc.ServiceError | null) => resolve(err === null)),
        ),
      10_000,
      'a gRPC Publish to be accepted',
      100,
    );
    await bob.next((m) => m.type === 'message' && m.data === 'from the api', 5000, 'bob to get the published message');
    const byName = (name: string) => receiver.spans.filter((s) => s.name === name);
    await waitFor(() => STAGES.every((n) => byName(n).length > 0), 15_000, 'spans of every stage (gRPC Publish)', 50);
    const receive = byName('gateway receive')[0];
    const publish = byName('bus publish').find((s) => s.parentSpanId === receive.spanId);
    assert.ok(publish !== undefined, 'bus publish is a child of gateway receive');
    assert.ok(byName('gateway deliver').some((d) => d.traceId === receive.traceId), 'the delivery is in the same trace');
  });
});
