/** Loads the pool's .proto contracts (proto/ is the source of truth) at run time. */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export function loadProto(file: string): grpc.GrpcObject {
  return grpc.loadPackageDefinition(protoLoader.loadSync(`${PROTO_DIR}${file}`, LOADER_OPTIONS));
}

/** tas.worker.v1.Worker service definition and client constructor. */
export function workerProto(): { service: grpc.ServiceDefinition; Client: grpc.ServiceClientConstructor } {
  const pkg = loadProto('worker.proto') as unknown as { tas: { worker: { v1: { Worker: grpc.ServiceClientConstructor } } } };
  const Client = pkg.tas.worker.v1.Worker;
  return { service: Client.service, Client };
}
