// Certificates for one test control plane: a throwaway CA, the apiserver's serving certificate,
// client certificates for any identity a test needs, and the key pair that signs ServiceAccount
// tokens. Node's crypto cannot issue X.509 certificates, so this drives the openssl CLI. For a
// cluster whose CA key the tests do not hold, the CertificateSigningRequest API signs instead.
import { execFile } from 'node:child_process';
import { generateKeyPair, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { KubeApiError, waitFor, type KubeClient } from './client';

const run = promisify(execFile);
const generateKeyPairAsync = promisify(generateKeyPair);

/** Certificates are valid for two days: long enough for any test run, useless afterwards. */
const DAYS = '2';
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export interface CertFiles {
  readonly certPath: string;
  readonly keyPath: string;
  readonly certPem: string;
  readonly keyPem: string;
}

export interface ClientIdentity {
  /** The Kubernetes user name (certificate CN). */
  readonly user: string;
  /** Kubernetes groups (certificate O), e.g. system:masters. */
  readonly groups?: readonly string[];
}

export class Pki {
  private constructor(
    readonly dir: string,
    readonly ca: CertFiles,
    /** Signs ServiceAccount tokens (private, PKCS#8 PEM) and verifies them (public, SPKI PEM). */
    readonly serviceAccountKeyPath: string,
    readonly serviceAccountPublicKeyPath: string,
  ) {}

  static async create(dir: string): Promise<Pki> {
    await openssl(dir, ['req', '-x509', '-new', ...EC_KEY, '-keyout', 'ca.key', '-out', 'ca.crt',
      '-days', DAYS, '-subj', '/CN=switchboard-test-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']);
    const sa = await generateKeyPairAsync('ec', {
      namedCurve: 'P-256',
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const saKey = path.join(dir, 'sa.key');
    const saPub = path.join(dir, 'sa.pub');
    await writeFile(saKey, sa.privateKey, { mode: 0o600 });
    await writeFile(saPub, sa.publicKey);
    return new Pki(dir, await load(dir, 'ca'), saKey, saPub);
  }

  /** A serving certificate for 127.0.0.1/localhost and the in-cluster names of the API. */
  serving(name: string, extraIps: readonly string[] = []): Promise<CertFiles> {
    const sans = ['DNS:localhost', 'DNS:kubernetes', 'DNS:kubernetes.default',
      'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local',
      'IP:127.0.0.1', ...extraIps.map((ip) => `IP:${ip}`)];
    return this.issue(name, `/CN=${name}`, [
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${sans.join(',')}`,
    ]);
  }

  /** A client certificate: the API server authenticates it as identity.user in identity.groups. */
  client(fileName: string, identity: ClientIdentity): Promise<CertFiles> {
    return this.issue(fileName, subjectOf(identity), [
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=clientAuth',
    ]);
  }

  private async issue(name: string, subject: string, extensions: string[]): Promise<CertFiles> {
    if (!/^[\w.-]+$/.test(name)) throw new Error(`bad certificate file name ${JSON.stringify(name)}`);
    await writeFile(path.join(this.dir, `${name}.ext`), ['basicConstraints=CA:FALSE', ...extensions].join('\n') + '\n');
    await openssl(this.dir, ['req', '-new', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
    await openssl(this.dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key',
      '-set_serial', `0x${randomBytes(16).toString('hex')}`, '-days', DAYS,
      '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
    return load(this.dir, name);
  }
}

/** Kubernetes reads the user from CN and the groups from O. */
function subjectOf(identity: ClientIdentity): string {
  return [...(identity.groups ?? []).map((g) => `/O=${escapeDn(g)}`), `/CN=${escapeDn(identity.user)}`].join('');
}

function escapeDn(value: string): string {
  return value.replace(/[\\/=+,]/g, (c) => `\\${c}`);
}

async function load(dir: string, name: string): Promise<CertFiles> {
  const certPath = path.join(dir, `${name}.crt`);
  const keyPath = path.join(dir, `${name}.key`);
  return {
    certPath,
    keyPath,
    certPem: await readFile(certPath, 'utf8'),
    keyPem: await readFile(keyPath, 'utf8'),
  };
}

async function openssl(cwd: string, args: string[]): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error('openssl not found: the Kubernetes test harness needs it to issue certificates (apt-get install openssl)', { cause: err });
    }
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

/** A key and certificate signing request for identity. */
async function createCsr(dir: string, fileName: string, identity: ClientIdentity): Promise<{ keyPath: string; keyPem: string; csrPem: string }> {
  await openssl(dir, ['req', '-new', ...EC_KEY, '-keyout', `${fileName}.key`, '-out', `${fileName}.csr`, '-subj', subjectOf(identity)]);
  const keyPath = path.join(dir, `${fileName}.key`);
  return { keyPath, keyPem: await readFile(keyPath, 'utf8'), csrPem: await readFile(path.join(dir, `${fileName}.csr`), 'utf8') };
}

/**
 * A client certificate for identity signed by the cluster's own CA through the
 * CertificateSigningRequest API (signer kubernetes.io/kube-apiserver-client), approved by the
 * admin client. The CSR object is deleted afterwards.
 */
export async function issueThroughCsrApi(admin: KubeClient, dir: string, fileName: string, identity: ClientIdentity): Promise<CertFiles> {
  const { keyPath, keyPem, csrPem } = await createCsr(dir, fileName, identity);
  const name = `switchboard-test-${fileName}-${Date.now().toString(36)}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-');
  const csrPath = `/apis/certificates.k8s.io/v1/certificatesigningrequests/${name}`;
  const csr = await admin.create<Record<string, unknown>>('/apis/certificates.k8s.io/v1/certificatesigningrequests', {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    metadata: { name },
    spec: {
      request: Buffer.from(csrPem).toString('base64'),
      signerName: 'kubernetes.io/kube-apiserver-client',
      usages: ['client auth'],
      expirationSeconds: 3600,
    },
  });
  try {
    await admin.call('PUT', `${csrPath}/approval`, {
      body: { ...csr, status: { conditions: [{ type: 'Approved', status: 'True', reason: 'SwitchboardTest', message: 'approved by the test harness' }] } },
    });
    let certPem = '';
    await waitFor(`CSR ${name} to be signed`, 30_000, async () => {
      const got = await admin.get<{ status?: { certificate?: string } }>(csrPath);
      certPem = got.status?.certificate ? Buffer.from(got.status.certificate, 'base64').toString('utf8') : '';
      return certPem !== '';
    });
    const certPath = path.join(dir, `${fileName}.crt`);
    await writeFile(certPath, certPem);
    return { certPath, keyPath, certPem, keyPem };
  } finally {
    await admin.call('DELETE', csrPath).catch((err: unknown) => {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err;
    });
  }
}
