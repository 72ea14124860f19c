/**
 * Faults a worker injects on purpose, for the fault suite (test/faults/): off unless
 * `TAS_FAILPOINTS` is set in the worker's environment (a pool's workers inherit the
 * service's). Each fault is real where it surfaces: `wasm-trap` executes an out-of-bounds
 * load in a WebAssembly module, so the worker sees the very `RuntimeError: memory access
 * out of bounds` an engine that outgrew its heap throws, at a chosen training step.
 *
 *   TAS_FAILPOINTS='wasm-trap:job=<job name>,rank=<r>,step=<global step>,generation=<g>'
 *
 * (several separated by `;`; `generation` defaults to 1, the first attempt, so the
 * retry of the attempt runs clean).
 */

export interface Failpoint {
  readonly kind: 'wasm-trap';
  readonly job: string;
  readonly rank: number;
  readonly step: number;
  readonly generation: number;
}

export function parseFailpoints(raw: string | undefined): Failpoint[] {
  if (!raw) return [];
  return raw
    .split(';')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((spec) => {
      const [kind, args = ''] = spec.split(':', 2) as [string, string?];
      const kv = new Map(args.split(',').map((a) => a.split('=', 2) as [string, string]));
      const num = (k: string, d?: number) => {
        const v = kv.has(k) ? Number(kv.get(k)) : d;
        if (v === undefined || !Number.isInteger(v) || v < 0) throw new Error(`TAS_FAILPOINTS: ${spec}: ${k} must be an integer >= 0`);
        return v;
      };
      if (kind !== 'wasm-trap' || !kv.get('job')) throw new Error(`TAS_FAILPOINTS: ${spec}: expected wasm-trap:job=<name>,rank=<r>,step=<s>[,generation=<g>]`);
      return { kind, job: kv.get('job')!, rank: num('rank'), step: num('step'), generation: num('generation', 1) };
    });
}

/** The failpoint armed for this rank and step of a job, if any. */
export function armed(points: readonly Failpoint[], at: { job: string; rank: number; step: number; generation: number }): Failpoint | undefined {
  return points.find((p) => p.job === at.job && p.rank === at.rank && p.step === at.step && p.generation === at.generation);
}

// (module (memory 1) (func (export "f") (result i32) (i32.load (i32.const 70000))))
// One 64 KiB page; the load at 70000 is past its end.
const OUT_OF_BOUNDS = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
  0x03, 0x02, 0x01, 0x00, // function 0 has type 0
  0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1 page
  0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, // export "f" = function 0
  0x0a, 0x0b, 0x01, 0x09, 0x00, 0x41, 0xf0, 0xa2, 0x04, 0x28, 0x02, 0x00, 0x0b, // i32.const 70000; i32.load; end
]);

/** Throws the WebAssembly engine's own trap (a RuntimeError: memory access out of bounds). */
export function wasmTrap(): never {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(OUT_OF_BOUNDS));
  (instance.exports.f as () => number)();
  throw new Error('the out-of-bounds load did not trap');
}
