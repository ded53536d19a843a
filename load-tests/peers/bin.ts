/**
 * Finds the peer servers that load-tests/peers/tools.sh builds. They live in a cache outside the
 * repository, keyed by the versions pinned in versions.env beside this file's source, so a
 * checkout that bumps a version fails fast here instead of measuring a stale binary.
 */
import { accessSync, constants, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export const PeerBinary = {
  natsServer: 'nats-server',
  centrifugo: 'centrifugo',
} as const;
export type PeerBinary = (typeof PeerBinary)[keyof typeof PeerBinary];

const VERSION_KEY: Record<PeerBinary, string> = {
  'nats-server': 'NATS_SERVER_VERSION',
  centrifugo: 'CENTRIFUGO_VERSION',
};

/** load-tests/peers/versions.env, found from this file as .ts or as dist/load-tests/peers/*.js. */
function versionsFile(): string {
  let dir = __dirname;
  for (;;) {
    const f = join(dir, 'load-tests', 'peers', 'versions.env');
    try {
      accessSync(f);
      return f;
    } catch {
      const parent = dirname(dir);
      if (parent === dir) throw new Error(`cannot find load-tests/peers/versions.env above ${__dirname}`);
      dir = parent;
    }
  }
}

/** KEY=value lines of versions.env. */
export function peerVersions(): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(versionsFile(), 'utf8').split('\n')) {
    const m = /^\s*([A-Z_]+)=(\S*)\s*$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

export function peersCacheDir(): string {
  return process.env.SWITCHBOARD_PEERS_CACHE || join(homedir(), '.cache', 'switchboard-peers');
}

/**
 * The binary's path, or an error saying how to build it: a missing peer is a broken benchmark
 * or test environment, never a reason to skip.
 */
export function peerBinary(name: PeerBinary): { path: string; version: string } {
  const version = peerVersions()[VERSION_KEY[name]];
  if (!version) throw new Error(`load-tests/peers/versions.env has no ${VERSION_KEY[name]}`);
  const path = join(peersCacheDir(), name, version, name);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`${name} ${version} not found at ${path}. Run \`bash load-tests/peers/tools.sh\` to build it from the Go module proxy (a few minutes the first time, cached after).`);
  }
  return { path, version };
}
