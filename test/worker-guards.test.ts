/**
 * A worker's two guards, on real worker processes: it refuses a job that cannot fit its
 * memory before allocating anything (and stays sound), and a tensor engine that failed
 * (a real WebAssembly trap, injected by TAS_FAILPOINTS) ends the rank with TAS_ERR_ENGINE
 * and makes the worker exit to be restarted.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CollectiveError } from '../src/collective/collective-error.js';
import { assignDevices } from '../src/gpu-pool/device.js';
import { armed, parseFailpoints, wasmTrap } from '../src/gpu-pool/failpoints.js';
import { runJobOnWorkers, startLocalWorker, stopLocalWorkers, type LocalWorker } from '../src/gpu-pool/pool.js';
import { WorkerClient } from '../src/gpu-pool/worker-client.js';
import { ENGINE_FAILURE_EXIT_CODE, engineFailure } from '../src/gpu-pool/worker-service.js';
import { TrainerError } from '../src/trainer/errors.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'tas-guards-'));
  dirs.push(d);
  return d;
};
const started: LocalWorker[] = [];
after(async () => {
  await stopLocalWorkers(started);
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

const QUICKSTART = JSON.parse(readFileSync(new URL('../examples/quickstart.json', import.meta.url), 'utf8')) as { model: { layers: Array<Record<string, unknown>> } } & Record<string, unknown>;
/** The quickstart on one worker, `epochs` long. */
const oneRank = (name: string, epochs = 2, firstOut = 64) => ({
  ...QUICKSTART,
  name,
  epochs,
  workers: 1,
  model: { ...QUICKSTART.model, layers: QUICKSTART.model.layers.map((l, i) => (i === 0 ? { ...l, out: firstOut } : l)) },
});

/** A worker started with `env` added to this process's environment. */
async function worker(env: Record<string, string>): Promise<LocalWorker> {
  const w = await startLocalWorker(assignDevices(1)[0]!, { env });
  started.push(w);
  return w;
}

describe('engineFailure', () => {
  it('tells an engine that may be corrupt from errors that leave it sound', () => {
    let trap: unknown;
    try {
      wasmTrap();
    } catch (e) {
      trap = e;
    }
    assert.match(engineFailure(trap) ?? '', /^WebAssembly trap: memory access out of bounds/);
    let alloc: unknown;
    try {
      new ArrayBuffer(Number.MAX_SAFE_INTEGER);
    } catch (e) {
      alloc = e;
    }
    assert.match(engineFailure(alloc) ?? '', /^out of memory: /);
    assert.match(engineFailure(new Error('Aborted(OOM). Build with -sASSERTIONS for more info.')) ?? '', /^engine abort/);
    // Training and collective errors are not the engine's, whatever their words.
    assert.equal(engineFailure(new CollectiveError('rank 1 unreachable', 1)), null);
    assert.equal(engineFailure(new TrainerError('TAS_ERR_NUMERIC', 'loss is NaN; out of memory?')), null);
    assert.equal(engineFailure(new Error('ECONNRESET')), null);
  });

  it('failpoints: parsed from TAS_FAILPOINTS, armed for one rank, step and generation', () => {
    const points = parseFailpoints('wasm-trap:job=a,rank=1,step=40; wasm-trap:job=b,rank=0,step=3,generation=2');
    assert.ok(armed(points, { job: 'a', rank: 1, step: 40, generation: 1 }));
    assert.equal(armed(points, { job: 'a', rank: 1, step: 40, generation: 2 }), undefined);
    assert.equal(armed(points, { job: 'a', rank: 0, step: 40, generation: 1 }), undefined);
    assert.ok(armed(points, { job: 'b', rank: 0, step: 3, generation: 2 }));
    assert.throws(() => parseFailpoints('wasm-trap:rank=1'), /expected wasm-trap:job=/);
    assert.deepEqual(parseFailpoints(undefined), []);
  });
});

describe('worker guards (real worker processes)', () => {
  it('refuses a job that cannot fit its memory before allocating, naming the layer; then runs one that fits', async () => {
    const w = await worker({ TAS_WORKER_MEMORY_MIB: '400' });
    const client = new WorkerClient(w.address);
    try {
      const info = await client.info();
      assert.equal(info.memory_limit_bytes, 400 * 2 ** 20);
      assert.equal(info.needs_restart, false);
      // 200,000 values per row, held for 512 rows by the eval pass, and 200,000 x 64 weights in layers[3]: well over 400 MiB.
      await assert.rejects(runJobOnWorkers(oneRank('too-big', 2, 200_000), [w.address], { outDir: tmp(), resume: false }), (e: unknown) => {
        assert.ok(e instanceof TrainerError, String(e));
        assert.equal(e.code, 'TAS_ERR_OUT_OF_MEMORY');
        assert.match(e.message, /model\.layers\[0\]: the job needs about .* more than the 400 MiB this worker \(cpu 0, \w+ backend\) has/);
        return true;
      });
      // Nothing was allocated: the worker's memory is what it was, and it trains the next job.
      assert.ok((await client.info()).rss_bytes < 400 * 2 ** 20);
      const ok = await runJobOnWorkers(oneRank('fits'), [w.address], { outDir: tmp(), resume: false });
      assert.ok(ok.done.completed);
    } finally {
      client.close();
    }
  });

  it('a WebAssembly trap mid-training: TAS_ERR_ENGINE, and the worker exits to be restarted', async () => {
    const w = await worker({ TAS_FAILPOINTS: 'wasm-trap:job=trap,rank=0,step=3' });
    const exited = once(w.process, 'exit');
    await assert.rejects(runJobOnWorkers(oneRank('trap'), [w.address], { outDir: tmp(), resume: false }), (e: unknown) => {
      assert.ok(e instanceof TrainerError, String(e));
      assert.equal(e.code, 'TAS_ERR_ENGINE');
      assert.match(e.message, /rank 0 \(worker 127\.0\.0\.1:\d+\): the worker's tensor engine failed \(WebAssembly trap: memory access out of bounds\); the worker restarts/);
      return true;
    });
    const [code] = (await exited) as [number | null];
    assert.equal(code, ENGINE_FAILURE_EXIT_CODE);
  });
});
