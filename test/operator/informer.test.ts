// The informer's failure handling against a real HTTP server that plays a misbehaving API server:
// connections reset (ECONNRESET) must not make it hammer the server, and once the server answers
// it lists, watches, resumes from the last resourceVersion when a watch ends, and lists again
// after 410 Gone.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { ResilientInformer } from '../../operator/kube/informer';
import { kubeFrom } from '../../operator/kube/client';
import { silentLogger } from '../../services/telemetry/log';
import { waitFor } from '../helpers/wait';

interface Item {
  metadata: { name: string; namespace: string; resourceVersion: string };
}

test('resets are retried with backoff; then list, watch, resume from resourceVersion, relist on 410', async (t) => {
  let mode: 'reset' | 'serve' = 'reset';
  const requests: string[] = [];
  let watchCount = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    requests.push(req.url ?? '');
    if (mode === 'reset') {
      req.socket.destroy(); // ECONNRESET for the client
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.searchParams.get('watch') !== 'true') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ apiVersion: 'v1', kind: 'List', metadata: { resourceVersion: '10' }, items: [item('a', '10')] }));
      return;
    }
    watchCount++;
    res.writeHead(200, { 'content-type': 'application/json' });
    if (watchCount === 1) {
      // First watch: one event, then the server ends it (as API servers do after a timeout).
      res.end(JSON.stringify({ type: 'ADDED', object: item('b', '11') }) + '\n');
    } else if (watchCount === 2) {
      // Resumed from 11; history is gone: 410 in an ERROR event.
      res.end(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } }) + '\n');
    } else {
      res.write(JSON.stringify({ type: 'ADDED', object: item('c', '12') }) + '\n'); // and stay open
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;

  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const kube = kubeFrom(kc);
  const seen: string[] = [];
  const inf = new ResilientInformer<Item & { apiVersion?: string; kind?: string }>({
    kube,
    path: '/api/v1/things',
    list: async () => {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/things`);
      return (await res.json()) as { items: Item[]; metadata: { resourceVersion: string } };
    },
    log: silentLogger,
    onChange: (o, type) => seen.push(`${type}:${o.metadata.name}`),
    minBackoffMs: 200,
    maxBackoffMs: 1000,
  });
  t.after(() => inf.stop());
  void inf.start();

  // 3 s of resets: with backoff from 200 ms doubling to 1 s that is a handful of attempts, not
  // the thousands a tight retry loop would make.
  await new Promise((r) => setTimeout(r, 3000));
  const attempts = requests.length;
  assert.ok(attempts >= 2, `retried (${attempts} requests)`);
  assert.ok(attempts <= 10, `${attempts} requests in 3 s of resets: no flood`);
  assert.ok(inf.restarts >= 2);
  assert.equal(inf.hasSynced, false);

  mode = 'serve';
  await waitFor(() => seen.includes('add:c'), 15_000, 'list, watch, resume and relist', 20);
  assert.ok(inf.hasSynced);
  assert.deepEqual(seen.slice(0, 2), ['add:a', 'add:b']);
  const watches = requests.filter((u) => u.includes('watch=true'));
  assert.match(watches[0], /resourceVersion=10/, 'first watch from the list\'s resourceVersion');
  assert.match(watches[1], /resourceVersion=11/, 'a watch that ended resumes from the last event\'s resourceVersion');
  const lists = requests.filter((u) => !u.includes('watch=true') && u.startsWith('/api/v1/things'));
  assert.ok(lists.length >= 2, 'listed again after 410 Gone');
  // The relist is the truth: b is not in it any more, so it was deleted from the cache.
  assert.ok(seen.includes('delete:b'), seen.join(' '));
  assert.deepEqual(inf.list().map((o) => o.metadata.name).sort(), ['a', 'c']);
});

function item(name: string, rv: string): Item & { apiVersion: string; kind: string } {
  return { apiVersion: 'v1', kind: 'Thing', metadata: { name, namespace: 'ns', resourceVersion: rv } };
}
