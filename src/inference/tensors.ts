/**
 * Open Inference Protocol tensors, decoded and checked against a model's signature. Pure:
 * no I/O, so every rule is unit-tested alone. Both bindings use it: gRPC (typed
 * `InferTensorContents` or `raw_input_contents` bytes) and REST (JSON `data`, flat or
 * nested row-major).
 *
 * The models take float32. Inputs may also come as FP64 or as the integer types a
 * classifier's inputs use (uint8 pixels, int64 token or category ids); they are converted
 * to float32 on the way in. BOOL, BYTES and FP16/BF16 are refused with Triton's message.
 */
import { InferenceError, shapeText } from './errors.js';

export const INPUT_DATATYPES = ['FP32', 'FP64', 'INT8', 'INT16', 'INT32', 'INT64', 'UINT8', 'UINT16', 'UINT32', 'UINT64'] as const;
export type InputDatatype = (typeof INPUT_DATATYPES)[number];

const BYTE_SIZE: Readonly<Record<InputDatatype, number>> = {
  FP32: 4,
  FP64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
};

/** Inclusive value range of each integer type (JSON and typed contents are checked against it). */
const INT_RANGE: Readonly<Partial<Record<InputDatatype, readonly [number, number]>>> = {
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-2147483648, 2147483647],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 4294967295],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
};

/** A model's input or output as metadata shows it; -1 marks the batch dimension. */
export interface TensorSignature {
  readonly name: string;
  readonly datatype: 'FP32';
  readonly shape: readonly number[];
}

/** What a request says about one input tensor (either binding). */
export interface InputHeader {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

/** The typed-contents message of the gRPC binding (proto-loader with longs as numbers). */
export interface TypedContents {
  readonly bool_contents?: readonly boolean[];
  readonly int_contents?: ArrayLike<number>;
  readonly int64_contents?: ArrayLike<number>;
  readonly uint_contents?: ArrayLike<number>;
  readonly uint64_contents?: ArrayLike<number>;
  readonly fp32_contents?: ArrayLike<number>;
  readonly fp64_contents?: ArrayLike<number>;
  readonly bytes_contents?: readonly Uint8Array[];
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function isInputDatatype(d: string): d is InputDatatype {
  return (INPUT_DATATYPES as readonly string[]).includes(d);
}

/**
 * Check an input's datatype and shape against the model's signature; returns the batch
 * size (the first dimension) and the datatype it may be decoded as.
 */
export function checkInput(model: string, sig: TensorSignature, t: InputHeader): { rows: number; datatype: InputDatatype } {
  if (!isInputDatatype(t.datatype)) {
    throw new InferenceError('DATATYPE_MISMATCH', `inference input data-type is '${t.datatype}', model expects '${sig.datatype}' for '${model}'`);
  }
  const ok =
    t.shape.length === sig.shape.length &&
    t.shape.every((d, i) => Number.isSafeInteger(d) && d >= 0 && (sig.shape[i] === -1 || sig.shape[i] === d));
  if (!ok) {
    throw new InferenceError('SHAPE_MISMATCH', `unexpected shape for input '${t.name}' for model '${model}'. Expected ${shapeText(sig.shape)}, got ${shapeText(t.shape)}`);
  }
  return { rows: t.shape[0]!, datatype: t.datatype };
}

function countMismatch(model: string, name: string, expected: number, got: number): InferenceError {
  return new InferenceError('INVALID_INPUT', `unexpected number of elements for input '${name}' for model '${model}'. Expected ${expected}, got ${got}`);
}

function checkIntegers(model: string, name: string, datatype: InputDatatype, values: ArrayLike<number>): void {
  const range = INT_RANGE[datatype];
  if (!range) return;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < range[0] || v > range[1]) {
      throw new InferenceError('INVALID_INPUT', `input '${name}' for model '${model}': element ${i} (${v}) is not a ${datatype} value`);
    }
  }
}

/** The largest finite float32, the datatype the models compute in. */
const FLOAT32_MAX = 3.4028234663852886e38;

/**
 * Floating-point inputs must be finite numbers the model's float32 can hold: a NaN, an
 * infinity or a value that overflows float32 (1e300) would only come back as NaN or null
 * outputs, so it is refused naming the input and the element.
 */
function checkFloats(model: string, name: string, datatype: InputDatatype, values: ArrayLike<number>): void {
  if (datatype !== 'FP32' && datatype !== 'FP64') return;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    // v - v is 0 for every finite v, NaN for NaN and the infinities: one subtraction per value.
    if (v - v === 0 && Math.abs(v) <= FLOAT32_MAX) continue;
    if (Number.isNaN(v) || !Number.isFinite(v)) throw new InferenceError('INVALID_INPUT', `input '${name}' for model '${model}': element ${i} is ${v}; inputs must be finite`);
    // Beyond the largest float32 but rounding to it is still a float32 value.
    if (!Number.isFinite(Math.fround(v))) {
      throw new InferenceError('INVALID_INPUT', `input '${name}' for model '${model}': element ${i} (${v}) is out of the FP32 range (at most ${FLOAT32_MAX.toPrecision(8)} in magnitude)`);
    }
  }
}

/** The contents field that carries `datatype` in the gRPC binding. */
function typedField(datatype: InputDatatype, c: TypedContents): ArrayLike<number> | undefined {
  switch (datatype) {
    case 'FP32':
      return c.fp32_contents;
    case 'FP64':
      return c.fp64_contents;
    case 'INT8':
    case 'INT16':
    case 'INT32':
      return c.int_contents;
    case 'INT64':
      return c.int64_contents;
    case 'UINT8':
    case 'UINT16':
    case 'UINT32':
      return c.uint_contents;
    case 'UINT64':
      return c.uint64_contents;
  }
}

/** gRPC typed contents as float32. */
export function fromTyped(model: string, t: InputHeader & { datatype: InputDatatype }, contents: TypedContents): Float32Array {
  const expected = elementCount(t.shape);
  const values = typedField(t.datatype, contents) ?? [];
  if (values.length !== expected) throw countMismatch(model, t.name, expected, values.length);
  checkIntegers(model, t.name, t.datatype, values);
  checkFloats(model, t.name, t.datatype, values);
  return Float32Array.from(values);
}

/** `raw_input_contents` bytes (row-major, little-endian) as float32. */
export function fromRaw(model: string, t: InputHeader & { datatype: InputDatatype }, bytes: Uint8Array): Float32Array {
  const count = elementCount(t.shape);
  const size = BYTE_SIZE[t.datatype];
  if (bytes.byteLength !== count * size) {
    throw new InferenceError('INVALID_INPUT', `input byte size mismatch for input '${t.name}' for model '${model}'. Expected ${count * size}, got ${bytes.byteLength}`);
  }
  if (t.datatype === 'FP32' && LITTLE_ENDIAN) {
    // A view when the bytes sit 4-aligned in the message buffer (the batcher copies the
    // rows into its batch); protobuf `bytes` may sit at any offset, so else a copy.
    let values: Float32Array;
    if (bytes.byteOffset % 4 === 0) {
      values = new Float32Array(bytes.buffer, bytes.byteOffset, count);
    } else {
      values = new Float32Array(count);
      new Uint8Array(values.buffer).set(bytes);
    }
    checkFloats(model, t.name, t.datatype, values);
    return values;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  if (t.datatype === 'FP32' || t.datatype === 'FP64') {
    const wide = new Float64Array(count);
    for (let i = 0; i < count; i++) wide[i] = readLE(view, t.datatype, i * size);
    checkFloats(model, t.name, t.datatype, wide);
    out.set(wide);
    return out;
  }
  for (let i = 0; i < count; i++) out[i] = readLE(view, t.datatype, i * size);
  return out;
}

function readLE(v: DataView, d: InputDatatype, off: number): number {
  switch (d) {
    case 'FP32':
      return v.getFloat32(off, true);
    case 'FP64':
      return v.getFloat64(off, true);
    case 'INT8':
      return v.getInt8(off);
    case 'INT16':
      return v.getInt16(off, true);
    case 'INT32':
      return v.getInt32(off, true);
    case 'INT64':
      return Number(v.getBigInt64(off, true));
    case 'UINT8':
      return v.getUint8(off);
    case 'UINT16':
      return v.getUint16(off, true);
    case 'UINT32':
      return v.getUint32(off, true);
    case 'UINT64':
      return Number(v.getBigUint64(off, true));
  }
}

/** REST JSON `data`: flat row-major, or nested arrays of the tensor's shape. */
export function fromJson(model: string, t: InputHeader & { datatype: InputDatatype }, data: unknown): Float32Array {
  const expected = elementCount(t.shape);
  const flat: number[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x);
    } else if (typeof v === 'number') {
      flat.push(v);
    } else {
      throw new InferenceError('INVALID_INPUT', `input '${t.name}' for model '${model}': data must hold numbers, got ${JSON.stringify(v) ?? String(v)}`);
    }
  };
  walk(data);
  if (flat.length !== expected) throw countMismatch(model, t.name, expected, flat.length);
  checkIntegers(model, t.name, t.datatype, flat);
  checkFloats(model, t.name, t.datatype, flat);
  return Float32Array.from(flat);
}

/** Float32 values as protocol raw bytes (little-endian), without a copy on little-endian hosts. */
export function rawFp32(values: Float32Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i]!, i * 4);
  return out;
}
