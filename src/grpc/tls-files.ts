/**
 * Mutual TLS from PEM files, shared by every gRPC server and client of the project: the
 * grpc-js ones (worker control plane, inference) through the credentials below, and the
 * collective's (grpc-h2.ts, on node:tls) from the same files.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

export interface TlsFiles {
  /** PEM certificate chain of this process (used as server and as client certificate). */
  cert: string;
  /** PEM private key. */
  key: string;
  /** PEM CA bundle that signed every party's certificate (mutual TLS). */
  ca: string;
}

/** grpc-js server credentials: mutual TLS from the files, or plaintext. */
export function serverCredentials(tls?: TlsFiles): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(readFileSync(tls.ca), [{ cert_chain: readFileSync(tls.cert), private_key: readFileSync(tls.key) }], true);
}

/** grpc-js channel credentials: mutual TLS from the files, or plaintext. */
export function channelCredentials(tls?: TlsFiles): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(readFileSync(tls.ca), readFileSync(tls.key), readFileSync(tls.cert));
}
