/**
 * The gRPC binding of the Open Inference Protocol (`inference.GRPCInferenceService`,
 * proto/inference/grpc_predict_v2.proto), with the standard health service
 * (`grpc.health.v1.Health`) and server reflection beside it, so generic tools (grpcurl,
 * grpc_health_probe, Postman) discover and probe the server without a .proto.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { serverCredentials, type TlsFiles } from '../../grpc/tls-files.js';
import { PROTO_DIR } from '../../grpc/proto.js';
import { GRPC_STATUS, type GrpcAuthCode } from './grpc-status.js';
import { adminPrincipal, type Principal } from '../../service/tenants/principal.js';
import { InferenceError, toInferenceError } from '../../inference/errors.js';
import { infer, type InferInput, type InferOptions } from '../../inference/infer.js';
import type { ModelRepository } from '../../inference/repository.js';
import { PLATFORM, type ServerIdentity } from '../server-info.js';
import { decodeInferRequest, encodeInferResponse, encodeStreamInferResponse, type ModelInferRequestMsg, type ModelInferResponseMsg, type ModelStreamInferResponseMsg } from './inference-codec.js';
import { fromRaw, fromTyped, rawFp32 } from '../../inference/tensors.js';

export const INFERENCE_PROTO = `${PROTO_DIR}inference/grpc_predict_v2.proto`;
export const INFERENCE_SERVICE = 'inference.GRPCInferenceService';

/** proto-loader options: field names as in the .proto, int64 as JS numbers. */
export const PROTO_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

export interface InferenceGrpcOptions extends InferOptions {
  readonly repository: ModelRepository;
  readonly identity: ServerIdentity;
  /**
   * Who a call comes from (its `authorization` metadata), once per request; throws a
   * GrpcRefusal. Liveness, readiness and server metadata are not asked. @defaultValue the admin
   */
  readonly authorize?: (metadata: grpc.Metadata) => Promise<Principal>;
  readonly log?: (message: string) => void;
}

/** A call the binding refuses before inference sees it: no valid key, or its rate spent. */
export class GrpcRefusal extends Error {
  constructor(
    readonly code: GrpcAuthCode,
    message: string,
  ) {
    super(message);
    this.name = 'GrpcRefusal';
  }
}

interface NameVersionMsg {
  name: string;
  version: string;
}

type Unary<Req> = grpc.handleUnaryCall<Req, unknown>;

export function loadInferenceDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(INFERENCE_PROTO, PROTO_OPTIONS);
}

/** Add the inference service to `server`. */
export function addInferenceService(server: grpc.Server, options: InferenceGrpcOptions, definition = loadInferenceDefinition()): void {
  const pkg = grpc.loadPackageDefinition(definition) as unknown as { inference: { GRPCInferenceService: grpc.ServiceClientConstructor } };
  const repo = options.repository;
  const authorize = options.authorize ?? (async () => adminPrincipal());

  /** Errors as gRPC statuses; unexpected ones are logged and sent as an opaque INTERNAL. */
  const fail = (cb: grpc.sendUnaryData<unknown>, e: unknown) => {
    if (e instanceof GrpcRefusal) return cb({ code: GRPC_STATUS[e.code], details: e.message });
    const err = toInferenceError(e);
    if (err.code === 'INTERNAL') options.log?.(`inference error: ${(e as Error)?.stack ?? String(e)}`);
    cb({ code: GRPC_STATUS[err.code], details: err.message });
  };

  /** One ModelInferRequest, answered in the form asked (raw bytes for raw requests, what Triton's clients send and read; typed contents otherwise). */
  const inferMessage = async (who: Principal, r: ModelInferRequestMsg): Promise<ModelInferResponseMsg> => {
    const raw = r.raw_input_contents.length > 0;
    // Checks only this binding can make (counted as failures like the shared ones).
    const check = () => {
      if (raw && r.inputs.some((i) => i.contents !== null)) {
        throw new InferenceError('INVALID_INPUT', `contents field must not be specified when using raw_input_contents for model '${r.model_name}'`);
      }
      if (raw && r.raw_input_contents.length !== r.inputs.length) {
        throw new InferenceError('INVALID_INPUT', `expected ${r.inputs.length} raw input contents but got ${r.raw_input_contents.length} for model '${r.model_name}'`);
      }
    };
    const inputs: InferInput[] = r.inputs.map((t, i) => ({
      name: t.name,
      datatype: t.datatype,
      shape: t.shape,
      decode: (model, checked) => (raw ? fromRaw(model, checked, r.raw_input_contents[i]!) : fromTyped(model, checked, t.contents ?? {})),
    }));
    const res = await infer(repo, { tenant: who.tenantId, model: r.model_name, version: r.model_version, id: r.id, inputs, outputs: r.outputs.map((x) => x.name), check }, 'grpc', options);
    return {
      model_name: res.model,
      model_version: res.version,
      id: res.id,
      outputs: res.outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, ...(raw ? {} : { contents: { fp32_contents: t.data } }) })),
      raw_output_contents: raw ? res.outputs.map((t) => rawFp32(t.data)) : [],
    };
  };

  const ModelInfer: Unary<ModelInferRequestMsg> = (call, cb) => {
    authorize(call.metadata).then((who) => inferMessage(who, call.request)).then(
      (res) => cb(null, res),
      (e: unknown) => fail(cb, e),
    );
  };

  /**
   * Triton's streaming extension: each request is answered when it completes (not in
   * order; clients match by id), a failed one with `error_message`; the server half-closes
   * once the client has and every answer is written.
   */
  const ModelStreamInfer = (call: grpc.ServerDuplexStream<ModelInferRequestMsg, ModelStreamInferResponseMsg>) => {
    const write = coalescedWriter(call);
    let inFlight = 0;
    let ended = false;
    const settle = () => {
      inFlight--;
      if (ended && inFlight === 0) call.end();
    };
    call.on('data', (r: ModelInferRequestMsg) => {
      inFlight++;
      // Each request on the stream is one request of the key's (its rate counts each).
      authorize(call.metadata).then((who) => inferMessage(who, r)).then(
        (res) => {
          if (!call.cancelled) write({ error_message: '', infer_response: res });
          settle();
        },
        (e: unknown) => {
          const err = e instanceof GrpcRefusal ? e : toInferenceError(e);
          if (err.code === 'INTERNAL') options.log?.(`inference error: ${(e as Error)?.stack ?? String(e)}`);
          if (!call.cancelled) write({ error_message: err.message, infer_response: { model_name: r.model_name, model_version: r.model_version, id: r.id } });
          settle();
        },
      );
    });
    call.on('end', () => {
      ended = true;
      if (inFlight === 0) call.end();
    });
    // A client that goes away: answers still in flight are dropped (call.cancelled).
    call.on('error', () => undefined);
  };

  // The two inference RPCs decode and encode with the hand-written codec (proto-loader's
  // conversions were the larger part of a request's cost); requests using fields it leaves
  // alone (parameters, typed contents) go through proto-loader.
  const base = pkg.inference.GRPCInferenceService.service;
  const viaCodec = <Res>(m: grpc.MethodDefinition<unknown, unknown>, encode: (r: Res) => Buffer): grpc.MethodDefinition<ModelInferRequestMsg, Res> => ({
    ...(m as unknown as grpc.MethodDefinition<ModelInferRequestMsg, Res>),
    requestDeserialize: (b: Buffer) => decodeInferRequest(b) ?? (m.requestDeserialize(b) as ModelInferRequestMsg),
    responseSerialize: encode,
  });
  const service: grpc.ServiceDefinition = {
    ...base,
    ModelInfer: viaCodec<ModelInferResponseMsg>(base.ModelInfer!, encodeInferResponse),
    ModelStreamInfer: viaCodec<ModelStreamInferResponseMsg>(base.ModelStreamInfer!, encodeStreamInferResponse),
  };
  server.addService(service, {
    ServerLive: ((_call, cb) => cb(null, { live: true })) as Unary<unknown>,
    ServerReady: ((_call, cb) => cb(null, { ready: repo.isReady() })) as Unary<unknown>,
    ModelReady: ((call, cb) => {
      authorize(call.metadata).then(
        (who) => cb(null, { ready: repo.modelReady(who.tenantId, call.request.name, call.request.version) }),
        (e: unknown) => fail(cb, e),
      );
    }) as Unary<NameVersionMsg>,
    ServerMetadata: ((_call, cb) => cb(null, { name: options.identity.name, version: options.identity.version, extensions: [...options.identity.extensions] })) as Unary<unknown>,
    ModelMetadata: ((call, cb) => {
      authorize(call.metadata).then((who) => repo.metadata(who.tenantId, call.request.name, call.request.version)).then(
        (m) =>
          cb(null, {
            name: m.name,
            versions: m.versions,
            platform: PLATFORM,
            inputs: [m.served.input],
            outputs: [m.served.output],
          }),
        (e: unknown) => fail(cb, e),
      );
    }) as Unary<NameVersionMsg>,
    ModelInfer,
    ModelStreamInfer,
  });
}

/**
 * A writer for a server stream whose messages written in one turn of the event loop leave
 * together. grpc-js's server stream (a Node Writable) hands its transport one message at a
 * time and the next only once the previous has reached the socket: one `writev` and one
 * event-loop turn per message, so a batch of 64 answers took 64 turns. Here the stream is
 * corked for the rest of the turn, and given a `_writev` (Node's Writable contract) that
 * passes everything buffered to its own `_write` at once; HTTP/2 then sends the burst in
 * one or two socket writes. Order is kept: chunks reach `_write` in the order written.
 */
function coalescedWriter<T>(call: grpc.ServerDuplexStream<unknown, T>): (message: T) => void {
  const stream = call as unknown as {
    _write(chunk: T, encoding: BufferEncoding, cb: (e?: Error | null) => void): void;
    _writev?(chunks: Array<{ chunk: T; encoding: BufferEncoding }>, cb: (e?: Error | null) => void): void;
  };
  stream._writev = (chunks, cb) => {
    let left = chunks.length;
    let first: Error | null = null;
    for (const c of chunks) {
      stream._write(c.chunk, c.encoding, (e) => {
        first ??= e ?? null;
        if (--left === 0) cb(first);
      });
    }
  };
  let corked = false;
  const uncork = () => {
    corked = false;
    call.uncork();
  };
  return (message) => {
    if (!corked) {
      corked = true;
      call.cork();
      process.nextTick(uncork);
    }
    call.write(message);
  };
}

export interface InferenceGrpcServer {
  readonly port: number;
  readonly address: string;
  /** What the standard health service answers. */
  setServing(serving: boolean): void;
  close(): Promise<void>;
}

export interface StartGrpcOptions extends InferenceGrpcOptions {
  readonly host: string;
  readonly port: number;
  readonly tls?: TlsFiles;
  /** Largest request message; larger ones fail with RESOURCE_EXHAUSTED. @defaultValue 32 MiB */
  readonly maxMessageBytes?: number;
}

/** Serve inference, health and reflection on one port. */
export async function startInferenceGrpcServer(options: StartGrpcOptions): Promise<InferenceGrpcServer> {
  const maxBytes = options.maxMessageBytes ?? 32 * 1024 * 1024;
  // channelz off: it records every call and message (what grpc-js costs per call, here for nothing).
  const server = new grpc.Server({ 'grpc.max_receive_message_length': maxBytes, 'grpc.max_send_message_length': -1, 'grpc.enable_channelz': 0 });
  const definition = loadInferenceDefinition();
  addInferenceService(server, options, definition);

  // NOT_SERVING until the repository is read and loaded (`setServing`), so a probe does
  // not send traffic to a server still loading its models (triton#7014).
  const health = new HealthImplementation({ '': 'NOT_SERVING', [INFERENCE_SERVICE]: 'NOT_SERVING' });
  health.addToServer(server);
  const setServing = (serving: boolean) => {
    for (const name of ['', INFERENCE_SERVICE]) health.setStatus(name, serving ? 'SERVING' : 'NOT_SERVING');
  };

  // Reflection describes both services it serves.
  new ReflectionService({ ...definition, ...protoLoader.loadSync(healthProtoPath, PROTO_OPTIONS) }).addToServer(server);

  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${host}:${options.port}`, serverCredentials(options.tls), (err, p) => (err ? reject(err) : resolve(p))));
  return {
    port,
    address: `${options.host === '0.0.0.0' ? '127.0.0.1' : options.host}:${port}`,
    setServing,
    close: () =>
      new Promise<void>((resolve) => {
        setServing(false);
        const t = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      }),
  };
}
