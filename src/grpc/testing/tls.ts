/** Test certificates: a throwaway CA and one cert for localhost/127.0.0.1, made with openssl. */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TlsFiles } from '../tls-files.js';

export function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Writes ca.pem, rank.pem and rank.key into `dir` (valid for one day). */
export function makeTestCerts(dir: string): TlsFiles {
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  o(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=tas-test-ca']);
  o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'rank.key', '-out', 'rank.csr', '-subj', '/CN=localhost']);
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  o(['x509', '-req', '-in', 'rank.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'rank.pem', '-days', '1', '-extfile', 'ext.cnf']);
  return { cert: join(dir, 'rank.pem'), key: join(dir, 'rank.key'), ca: join(dir, 'ca.pem') };
}
