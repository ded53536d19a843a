/**
 * The container image, end to end, without a container engine: `npm run test:image` (not part of
 * `npm test`: the file is not named *.test.ts, because it builds an image, needs root and takes
 * minutes on a cold cache). .ci/run runs it after `npm test`.
 *
 * It builds dist-image/switchboard.oci.tar with scripts/build-image.sh (or takes the archive named
 * by SWITCHBOARD_IMAGE_TAR as is), unpacks it the way a runtime does (index.json -> manifest ->
 * config and layers, digests checked, whiteouts applied), checks the config and the filesystem,
 * then runs the entrypoint in the unpacked rootfs as the image's user, with the rootfs mounted
 * read-only and a tmpfs on /tmp (how the operator's pods run it): `switchboard --help`, the native
 * addons, and the default command serving a client `hello` with `welcome` until SIGTERM.
 *
 * Needs root, buildah, debootstrap and unshare(1). Without them it is skipped, except under CI,
 * where that is a failure.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';

const ROOT = resolve(__dirname, '../../..');
const BUILD_SCRIPT = join(ROOT, 'scripts/build-image.sh');
const PREBUILT = process.env.SWITCHBOARD_IMAGE_TAR;
const ARCHIVE = PREBUILT ?? join(ROOT, 'dist-image/switchboard.oci.tar');

function missingPrerequisites(): string[] {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root');
  const tools = PREBUILT === undefined ? ['unshare', 'tar', 'buildah', 'debootstrap'] : ['unshare', 'tar'];
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) missing.push(tool);
  }
  return missing;
}

const missing = missingPrerequisites();
const skip = missing.length > 0 && process.env.CI !== 'true' ? `needs ${missing.join(', ')}` : false;

interface ImageConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  WorkingDir?: string;
  ExposedPorts?: Record<string, object>;
  Labels?: Record<string, string>;
}
interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

let work = '';
let rootfs = '';
let config: ImageConfig = {};
const children = new Set<ChildProcess>();

function blobPath(dir: string, d: Descriptor): string {
  const [alg, hex] = d.digest.split(':');
  assert.equal(alg, 'sha256', `digest algorithm of ${d.digest}`);
  const path = join(dir, 'blobs', 'sha256', hex);
  const data = readFileSync(path);
  assert.equal(data.length, d.size, `size of ${d.digest}`);
  assert.equal(createHash('sha256').update(data).digest('hex'), hex, `content of ${d.digest}`);
  return path;
}

/** Inside rootfs, or throw: layer paths come from the archive. */
function under(base: string, rel: string): string {
  const p = resolve(base, rel);
  if (p !== base && !p.startsWith(base + sep)) throw new Error(`layer path escapes the rootfs: ${rel}`);
  return p;
}

/** One layer onto rootfs: whiteouts first (they delete from the layers below), then the files. */
function applyLayer(layer: string, into: string): void {
  const names = execFileSync('tar', ['-tf', layer], { maxBuffer: 1 << 28 })
    .toString()
    .split('\n')
    .filter((n) => n !== '')
    .map((n) => n.replace(/^\.\//, ''));
  for (const name of names) {
    const base = name.split('/').pop() ?? '';
    if (!base.startsWith('.wh.')) continue;
    const parent = under(into, dirname(name));
    if (base === '.wh..wh..opq') {
      if (existsSync(parent)) for (const e of readdirSync(parent)) rmSync(join(parent, e), { recursive: true, force: true });
    } else {
      rmSync(under(into, join(dirname(name), base.slice('.wh.'.length))), { recursive: true, force: true });
    }
  }
  execFileSync('tar', ['-xf', layer, '-C', into, '--numeric-owner', '--exclude=.wh.*']);
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/**
 * A process of the image, as a runtime would start it: its own mount namespace in which the
 * rootfs is bind-mounted read-only, with /proc, a small /dev and a tmpfs on /tmp; chrooted there
 * with the image's working directory, uid and gid (no supplementary groups) and only the image's
 * environment plus `env`. Every step execs, so the returned child's pid is the entrypoint's.
 */
function runInImage(argv: string[], env: Record<string, string> = {}, user = config.User ?? '0'): ChildProcess {
  const [uid, gid = uid] = user.split(':');
  const setup = [
    'set -e',
    'R=$1; W=$2; U=$3; G=$4; shift 4',
    'mount --bind "$R" "$R"',
    'mount -t proc proc "$R/proc"',
    'mount -t tmpfs -o mode=755,nosuid tmpfs "$R/dev"',
    'for d in null zero full random urandom; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done',
    'ln -s /proc/self/fd "$R/dev/fd"',
    'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"',
    'mount -o remount,bind,ro "$R"',
    'exec unshare --root="$R" --wd="$W" --setgid="$G" --setuid="$U" -- "$@"',
  ].join('\n');
  const imageEnv = Object.fromEntries((config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const child = spawn(
    '/usr/bin/unshare',
    ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', setup, 'sh', rootfs, config.WorkingDir || '/', uid, gid, ...argv],
    { env: { ...imageEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function collect(child: ChildProcess): { done: Promise<Result>; output: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Result>((res) => child.on('close', (code, signal) => res({ code, signal, stdout, stderr })));
  return { done, output: () => `stdout:\n${stdout}\nstderr:\n${stderr}` };
}

async function runToEnd(argv: string[], env: Record<string, string> = {}, user?: string, timeoutMs = 30_000): Promise<Result> {
  const child = runInImage(argv, env, user);
  const { done } = collect(child);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    return await done;
  } finally {
    clearTimeout(timer);
  }
}

/** Connects, sends one text-mode hello, resolves with the first line the server answers. */
function helloLine(port: number): Promise<string> {
  return new Promise((res, rej) => {
    const sock = connect(port, '127.0.0.1');
    let buf = '';
    sock.setTimeout(5000, () => sock.destroy(new Error('no answer to hello within 5 s')));
    sock.on('connect', () => sock.write('{"type":"hello","user":"x"}\n'));
    sock.on('data', (c: Buffer) => {
      buf += c.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        sock.end();
        res(buf.slice(0, nl));
      }
    });
    sock.on('error', rej);
    sock.on('close', () => rej(new Error(`closed before a line; got ${JSON.stringify(buf)}`)));
  });
}

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((res, rej) => {
    const req = get({ host: '127.0.0.1', port, path, timeout: 5000 }, (r) => {
      r.resume();
      res(r.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
  });
}

before(async () => {
  if (skip) return;
  assert.deepEqual(missing, [], `the image test needs ${missing.join(', ')}: root, and apt-get install buildah debootstrap (.ci/run does)`);
  if (PREBUILT === undefined) {
    const started = Date.now();
    const build = spawn('bash', [BUILD_SCRIPT, ARCHIVE], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    build.stdout.pipe(process.stderr);
    build.stderr.pipe(process.stderr);
    const code = await new Promise<number | null>((res) => build.on('close', res));
    assert.equal(code, 0, `${BUILD_SCRIPT} failed`);
    process.stderr.write(`image test: build took ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
  assert.ok(existsSync(ARCHIVE), `${ARCHIVE} missing`);

  work = mkdtempSync(join(tmpdir(), 'switchboard-image-'));
  const oci = join(work, 'oci');
  rootfs = join(work, 'rootfs');
  execFileSync('mkdir', ['-p', oci, rootfs]);
  execFileSync('tar', ['-xf', ARCHIVE, '-C', oci]);
  const index = JSON.parse(readFileSync(join(oci, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  assert.equal(index.manifests.length, 1, 'one manifest in index.json');
  const manifest = JSON.parse(readFileSync(blobPath(oci, index.manifests[0]), 'utf8')) as { config: Descriptor; layers: Descriptor[] };
  const image = JSON.parse(readFileSync(blobPath(oci, manifest.config), 'utf8')) as { os: string; architecture: string; config: ImageConfig };
  assert.equal(image.os, 'linux');
  assert.equal(image.architecture, 'amd64');
  config = image.config;
  for (const layer of manifest.layers) applyLayer(blobPath(oci, layer), rootfs);
  rmSync(oci, { recursive: true, force: true });
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  if (work !== '') rmSync(work, { recursive: true, force: true });
});

test('image config: entrypoint switchboard, user 10001, ports, environment, labels', { skip }, () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; license: string };
  assert.deepEqual(config.Entrypoint, ['switchboard']);
  assert.deepEqual(config.Cmd, ['standalone']);
  assert.equal(config.User, '10001:10001');
  assert.equal(config.WorkingDir, '/app');
  assert.deepEqual(Object.keys(config.ExposedPorts ?? {}).sort(), ['4000/tcp', '4001/tcp', '4002/tcp']);
  assert.ok(config.Env?.includes('TCP_HOST=0.0.0.0'), `Env ${JSON.stringify(config.Env)}`);
  assert.ok(config.Env?.includes('NODE_ENV=production'), `Env ${JSON.stringify(config.Env)}`);
  const labels = config.Labels ?? {};
  assert.equal(labels['org.opencontainers.image.title'], 'switchboard');
  assert.equal(labels['org.opencontainers.image.version'], pkg.version);
  assert.equal(labels['org.opencontainers.image.licenses'], pkg.license);
  for (const key of ['description', 'revision', 'created', 'source']) {
    assert.ok(labels[`org.opencontainers.image.${key}`], `label org.opencontainers.image.${key}`);
  }
});

test('image filesystem: dist, production dependencies only, user 10001, no npm', { skip }, () => {
  const entry = join(rootfs, 'usr/local/bin/switchboard');
  assert.ok((statSync(entry).mode & 0o111) !== 0, 'switchboard is executable');
  assert.ok(existsSync(join(rootfs, 'app/dist/services/cli.js')));
  assert.ok(existsSync(join(rootfs, 'app/dist/services/api/switchboard.proto')), 'the gRPC .proto next to the compiled server');
  assert.ok(!existsSync(join(rootfs, 'app/dist/test')), 'no compiled tests');
  assert.match(readFileSync(join(rootfs, 'etc/passwd'), 'utf8'), /^[^:\n]+:x:10001:10001:/m);
  // /app is root's: the server cannot change its own code, read-only root or not.
  const app = statSync(join(rootfs, 'app'));
  assert.equal(app.uid, 0);
  assert.equal(app.mode & 0o022, 0, '/app not group/other writable');
  for (const tool of ['npm', 'npx']) assert.ok(!existsSync(join(rootfs, 'usr/local/bin', tool)), `${tool} removed`);

  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; optional?: boolean; devOptional?: boolean }>;
  };
  const nm = join(rootfs, 'app');
  const dev = Object.entries(lock.packages).filter(([k, v]) => k !== '' && v.dev === true);
  assert.ok(dev.length > 0, 'the lockfile has dev packages');
  const leaked = dev.map(([k]) => k).filter((k) => existsSync(join(nm, k)));
  assert.deepEqual(leaked, [], 'devDependencies in /app/node_modules');
  assert.ok(!existsSync(join(nm, 'node_modules/typescript')), 'typescript absent');
  const prod = Object.entries(lock.packages).filter(([k, v]) => k !== '' && !v.dev && !v.optional && !v.devOptional);
  const absent = prod.map(([k]) => k).filter((k) => !lstatSync(join(nm, k), { throwIfNoEntry: false }));
  assert.deepEqual(absent, [], 'production dependencies missing from /app/node_modules');
  for (const native of ['node_modules/@antoniomuso/lz4-napi-linux-x64-gnu', 'node_modules/@mongodb-js/zstd-linux-x64-gnu']) {
    assert.ok(existsSync(join(nm, native)), `${native} (prebuilt glibc x64 binary)`);
  }
});

test('switchboard --help runs in the image', { skip }, async () => {
  const r = await runToEnd([...(config.Entrypoint ?? []), '--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Usage: switchboard/);
});

test("SWITCHBOARD_NODE_FLAGS goes on node's command line (the operator's GC flags)", { skip }, async () => {
  const ok = await runToEnd([...(config.Entrypoint ?? []), '--help'], { SWITCHBOARD_NODE_FLAGS: '--single-threaded-gc' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^Usage: switchboard/);
  // A flag node does not know makes node itself refuse to start: the variable really reaches it.
  const bad = await runToEnd([...(config.Entrypoint ?? []), '--help'], { SWITCHBOARD_NODE_FLAGS: '--no-such-node-flag' });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /bad option: --no-such-node-flag/);
});

test('runs as 10001 with no other groups, /tmp writable; the harness root is really read-only', { skip }, async () => {
  const r = await runToEnd(['/bin/sh', '-c', 'id -u; id -g; id -G; touch /tmp/x && echo tmp-ok']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['10001', '10001', '10001', 'tmp-ok']);
  // As root, so that permissions cannot be what stops the write: the server tests below prove
  // the image works with a read-only root only if the root is read-only.
  const ro = await runToEnd(['/bin/sh', '-c', 'touch /app/x'], {}, '0:0');
  assert.notEqual(ro.code, 0);
  assert.match(ro.stderr, /Read-only file system/);
});

test('native addons (lz4-napi, @mongodb-js/zstd) load and round-trip in the image', { skip }, async () => {
  const script = `
    const lz4 = require('lz4-napi'), zstd = require('@mongodb-js/zstd'), b = Buffer.from('switchboard '.repeat(100));
    if (!lz4.uncompressSync(lz4.compressSync(b)).equals(b)) throw new Error('lz4');
    zstd.compress(b, 3).then(zstd.decompress).then((d) => { if (!d.equals(b)) throw new Error('zstd'); console.log('ok'); });`;
  const r = await runToEnd(['node', '-e', script]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'ok');
});

test('the default command serves hello -> welcome on TCP_PORT and stops on SIGTERM', { skip }, async () => {
  const [tcp, admin, api] = [await freePort(), await freePort(), await freePort()];
  const child = runInImage([...(config.Entrypoint ?? []), ...(config.Cmd ?? [])], {
    TCP_PORT: String(tcp),
    ADMIN_PORT: String(admin),
    API_PORT: String(api),
  });
  const { done, output } = collect(child);
  let exited = false;
  void done.then(() => (exited = true));
  try {
    let line = '';
    const deadline = Date.now() + 30_000;
    for (;;) {
      assert.ok(!exited, `the server exited early\n${output()}`);
      try {
        line = await helloLine(tcp);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`no welcome within 30 s: ${String(err)}\n${output()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const welcome = JSON.parse(line) as { type: string; user: string };
    assert.equal(welcome.type, 'welcome', line);
    assert.equal(welcome.user, 'x', line);
    assert.equal(await httpStatus(admin, '/healthz'), 200, 'admin port answers on 0.0.0.0');
  } finally {
    child.kill('SIGTERM');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const r = await done;
  clearTimeout(timer);
  assert.equal(r.signal, null, `killed, not drained\n${output()}`);
  assert.equal(r.code, 0, `exit code after SIGTERM\n${output()}`);
});
