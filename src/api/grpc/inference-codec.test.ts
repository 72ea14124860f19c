import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { Rng } from '../../trainer/math/rng.js';
import { decodeInferRequest, encodeInferResponse, encodeStreamInferResponse, WireError, type ModelInferResponseMsg, type ModelStreamInferResponseMsg } from './inference-codec.js';
import { loadInferenceDefinition } from './inference-server.js';

// proto-loader's (de)serializers for the same messages: the reference.
const svc = (grpc.loadPackageDefinition(loadInferenceDefinition()) as unknown as { inference: { GRPCInferenceService: grpc.ServiceClientConstructor } }).inference.GRPCInferenceService.service;
const infer = svc.ModelInfer!;
const stream = svc.ModelStreamInfer!;

const rng = new Rng(11);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.next() * xs.length)]!;
const int = (n: number) => Math.floor(rng.next() * n);
const NAMES = ['', 'm', 'quickstart-spirals-syncbn', 'modèle-ü', '模型', 'a'.repeat(300)];
const DIMS = [0, 1, 3, 127, 128, 300, 16384, 2 ** 31, 2 ** 40, -1, -2];

function randomRequest(): Record<string, unknown> {
  const inputs = Array.from({ length: int(3) }, () => ({ name: pick(NAMES), datatype: pick(['FP32', 'INT64', 'UINT8', '']), shape: Array.from({ length: int(5) }, () => pick(DIMS)) }));
  return {
    model_name: pick(NAMES),
    model_version: pick(['', '1', '12']),
    id: pick(['', 'req-1', 'ü'.repeat(70)]),
    inputs,
    outputs: Array.from({ length: int(3) }, () => ({ name: pick(NAMES) })),
    raw_input_contents: Array.from({ length: int(3) }, () => Buffer.from(Array.from({ length: pick([0, 1, 8, 200]) }, () => int(256)))),
  };
}

/** The fields the serving code reads, from either decoder. */
function visible(m: unknown): unknown {
  const r = m as { model_name: string; model_version: string; id: string; inputs: Array<{ name: string; datatype: string; shape: number[]; contents: unknown }>; outputs: Array<{ name: string }>; raw_input_contents: Buffer[] };
  return {
    model_name: r.model_name,
    model_version: r.model_version,
    id: r.id,
    inputs: r.inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, contents: t.contents })),
    outputs: r.outputs.map((o) => ({ name: o.name })),
    raw_input_contents: r.raw_input_contents.map((b) => [...b]),
  };
}

describe('grpc codec: ModelInferRequest', () => {
  test('decodes 500 random requests exactly as proto-loader does', () => {
    for (let i = 0; i < 500; i++) {
      const bytes = infer.requestSerialize(randomRequest());
      const ours = decodeInferRequest(bytes);
      assert.ok(ours, `request ${i} fell back`);
      assert.deepEqual(visible(ours), visible(infer.requestDeserialize(bytes)), `request ${i}`);
    }
  });

  test('skips fields unknown to the .proto, and accepts an unpacked shape', () => {
    const bytes = infer.requestSerialize({ model_name: 'm', inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3] }] });
    // field 99 varint 5, field 98 fixed64, field 97 bytes "ab", field 96 fixed32
    const extra = Buffer.from([0x98, 0x06, 0x05, 0x91, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x8a, 0x06, 0x02, 0x61, 0x62, 0x85, 0x06, 1, 2, 3, 4]);
    const withExtra = Buffer.concat([extra, bytes, extra]);
    assert.deepEqual(visible(decodeInferRequest(withExtra)), visible(infer.requestDeserialize(withExtra)));
    // inputs { name "x" shape 4 shape 5 } with unpacked shape entries
    const unpacked = Buffer.from([0x2a, 0x07, 0x0a, 0x01, 0x78, 0x18, 0x04, 0x18, 0x05]);
    assert.deepEqual(visible(decodeInferRequest(unpacked)), visible(infer.requestDeserialize(unpacked)));
  });

  test('leaves parameters and typed contents to proto-loader (null)', () => {
    const param = { parameters: { priority: { int64_param: 3 } } };
    assert.equal(decodeInferRequest(infer.requestSerialize({ model_name: 'm', ...param })), null);
    assert.equal(decodeInferRequest(infer.requestSerialize({ inputs: [{ name: 'x', ...param }] })), null);
    assert.equal(decodeInferRequest(infer.requestSerialize({ inputs: [{ name: 'x', contents: { fp32_contents: [1, 2] } }] })), null);
    assert.equal(decodeInferRequest(infer.requestSerialize({ outputs: [{ name: 'y', ...param }] })), null);
  });

  test('truncated bytes are a WireError or the message proto-loader reads, never another', () => {
    const bytes = infer.requestSerialize({ model_name: 'model', id: 'abc', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2] }], raw_input_contents: [Buffer.alloc(8, 1)] });
    for (let cut = 1; cut < bytes.length; cut++) {
      const part = bytes.subarray(0, cut);
      let ref: unknown;
      try {
        ref = infer.requestDeserialize(part);
      } catch {
        ref = 'error';
      }
      let ours: unknown;
      try {
        ours = decodeInferRequest(part);
      } catch (e) {
        assert.ok(e instanceof WireError, String(e));
        ours = 'error';
      }
      // protobufjs reads some truncated fields as empty; this decoder refuses them.
      if (ours !== 'error') assert.deepEqual(visible(ours), visible(ref), `cut at ${cut}`);
      else if (ref === 'error') assert.equal(ours, ref);
    }
  });
});

function randomResponse(raw: boolean): ModelInferResponseMsg {
  const outputs = Array.from({ length: 1 + int(2) }, () => {
    const shape = Array.from({ length: 1 + int(3) }, () => pick([0, 1, 3, 200, 2 ** 33]));
    const values = Float32Array.from({ length: int(40) }, () => (rng.next() - 0.5) * 10 ** int(12));
    return { name: pick(NAMES), datatype: 'FP32', shape, ...(raw ? {} : { contents: { fp32_contents: values } }) };
  });
  return {
    model_name: pick(NAMES),
    model_version: pick(['', '1', '7']),
    id: pick(['', 'x', 'ü'.repeat(70)]),
    outputs,
    raw_output_contents: raw ? outputs.map(() => Buffer.from(Float32Array.from({ length: int(30) }, () => rng.next()).buffer)) : [],
  };
}

/** A decoded message as JSON values (Buffers as `{type, data}`), for comparison. */
const plain = (v: unknown) => JSON.parse(JSON.stringify(v)) as unknown;
/** The response as proto-loader's serializer takes it: typed contents as arrays, bytes as Buffers. */
const forProtoLoader = (r: Partial<ModelInferResponseMsg>) => ({ ...r, outputs: r.outputs?.map((t) => ({ ...t, ...(t.contents ? { contents: { fp32_contents: Array.from(t.contents.fp32_contents) } } : {}) })) });

describe('grpc codec: responses', () => {
  // proto-loader writes empty strings that proto3 may omit (we do), so the bytes can
  // differ; what a decoder reads from them must not.
  test('ModelInferResponse: 300 random responses read back as proto-loader encodes them', () => {
    for (let i = 0; i < 300; i++) {
      const r = randomResponse(i % 2 === 0);
      assert.deepEqual(plain(infer.responseDeserialize(encodeInferResponse(r))), plain(infer.responseDeserialize(infer.responseSerialize(forProtoLoader(r)))), `response ${i}`);
    }
  });

  test('ModelStreamInferResponse: answers and errors read back as proto-loader encodes them', () => {
    for (let i = 0; i < 200; i++) {
      const m: ModelStreamInferResponseMsg =
        i % 3 === 0 ? { error_message: pick(["unexpected shape for input 'x'", 'é']), infer_response: { model_name: pick(NAMES), model_version: '', id: pick(['', 'a']) } } : { error_message: '', infer_response: randomResponse(i % 2 === 0) };
      assert.deepEqual(plain(stream.responseDeserialize(encodeStreamInferResponse(m))), plain(stream.responseDeserialize(stream.responseSerialize({ ...m, infer_response: forProtoLoader(m.infer_response) }))), `message ${i}`);
    }
  });
});
