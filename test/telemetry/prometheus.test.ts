// A real Prometheus (the Debian package's /usr/bin/prometheus) scrapes a gateway under a little
// load every second; the queries dashboards and the operator use come back non-empty and plausible.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startServer, type TestServer } from '../helpers/server';
import { waitFor } from '../helpers/wait';
import { ChatLoad, freePort, requireTool } from './tools';

interface PromVector {
  status: string;
  data: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

class Prometheus {
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly dir: string,
    readonly log: string[],
  ) {}

  static async start(target: string): Promise<Prometheus> {
    const bin = requireTool('prometheus');
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-prometheus-'));
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  scrape_timeout: 1s',
        '  evaluation_interval: 1s',
        'scrape_configs:',
        '  - job_name: switchboard',
        '    static_configs:',
        `      - targets: ['${target}']`,
        '',
      ].join('\n'),
    );
    const port = await freePort();
    const child = spawn(bin, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const log: string[] = [];
    child.stderr!.on('data', (d: Buffer) => log.push(d.toString('utf8')));
    const p = new Prometheus(child, port, dir, log);
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${log.join('')}`);
        try {
          return (await fetch(`http://127.0.0.1:${port}/-/ready`)).status === 200;
        } catch {
          return false;
        }
      },
      20_000,
      'prometheus to be ready',
      100,
    );
    return p;
  }

  async query(expr: string): Promise<PromVector['data']['result']> {
    const res = await fetch(`http://127.0.0.1:${this.port}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as PromVector;
    assert.equal(body.status, 'success', JSON.stringify(body));
    return body.data.result;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('a real Prometheus scraping a gateway', () => {
  let srv: TestServer;
  let prom: Prometheus;
  let load: ChatLoad;

  before(async () => {
    srv = await startServer({ adminPort: 0 });
    load = await ChatLoad.start(srv.port, 'prom-room', 2); // ~200 msg/s in, ~400 deliveries/s
    prom = await Prometheus.start(`127.0.0.1:${srv.server.addresses().adminPort}`);
  });

  after(async () => {
    load?.stop();
    await prom?.stop();
    await srv?.close();
  });

  test('the target is up', async () => {
    const up = await waitFor(async () => {
      const r = await prom.query('up{job="switchboard"}');
      return r.length > 0 && r[0].value[1] === '1' ? r : undefined;
    }, 15_000, 'up == 1', 200);
    assert.equal(up!.length, 1);
  });

  test('rate(switchboard_messages_delivered_total) is non-empty and plausible', async (t) => {
    const r = await waitFor(async () => {
      const v = await prom.query('rate(switchboard_messages_delivered_total[5s])');
      return v.length > 0 && Number(v[0].value[1]) > 0 ? v : undefined;
    }, 20_000, 'a non-zero delivery rate', 250);
    const rate = Number(r![0].value[1]);
    t.diagnostic(`delivery rate ${rate.toFixed(1)}/s`);
    // The load sends ~200 msg/s to a room of two: ~400 deliveries/s; a slow CI box does less.
    assert.ok(rate > 20 && rate < 5000, `delivery rate ${rate}/s`);
    const received = await prom.query('sum(rate(switchboard_messages_received_total{type="send_chat"}[5s]))');
    assert.ok(received.length === 1 && Number(received[0].value[1]) > 10, JSON.stringify(received));
  });

  test('the p99 from the latency histogram is non-empty and plausible', async (t) => {
    const r = await waitFor(async () => {
      const v = await prom.query('histogram_quantile(0.99, sum by (le) (rate(switchboard_delivery_latency_seconds_bucket[5s])))');
      return v.length > 0 && Number.isFinite(Number(v[0].value[1])) ? v : undefined;
    }, 20_000, 'a finite p99', 250);
    const p99 = Number(r![0].value[1]);
    t.diagnostic(`p99 delivery latency ${(p99 * 1000).toFixed(3)} ms`);
    assert.ok(p99 > 0 && p99 < 1, `p99 ${p99}s`);
  });

  test('the default process metrics are scraped too', async () => {
    const r = await prom.query('process_resident_memory_bytes{job="switchboard"}');
    assert.equal(r.length, 1);
    assert.ok(Number(r[0].value[1]) > 10 * 1024 * 1024);
  });
});
