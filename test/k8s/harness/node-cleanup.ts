// Run by a node's watchdog (node.ts) when the Node process that started the node died without
// stopping it (kill -9, OOM, a CI timeout): waits for the node lock, then removes what the node
// left, as the next start would (processes, containers, mounts, network namespaces, the bridge,
// its route, iptables chains, sysctls), and the paths given as arguments.
//
//   node dist/test/k8s/harness/node-cleanup.js [PATH ...]
import { cleanupOrphanedNode } from './node';

cleanupOrphanedNode(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`node-cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
