/**
 * The inference threads, seen from the serving event loop: each thread holds every loaded
 * model (models here are small next to a thread's memory) and runs one batch at a time; a
 * batch goes to the thread with the least work queued. A thread that dies is replaced and
 * given the loaded models again; the batches it held fail as UNAVAILABLE.
 */
import { Worker } from 'node:worker_threads';
import type { BatchRun } from './batcher.js';
import { InferenceError } from './errors.js';
import type { FromThread, LoadedSignature, ToThread } from './thread-messages.js';

const THREAD_MAIN = new URL('./inference-thread.ts', import.meta.url);

/**
 * Worker threads do not inherit this process's module hooks (Node 20), so a thread that
 * runs TypeScript first registers tsx itself (resolved from here, whatever the working
 * directory), then imports its entry.
 */
function startThread(): Worker {
  if (!THREAD_MAIN.pathname.endsWith('.ts')) return new Worker(THREAD_MAIN);
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(THREAD_MAIN.href)}); });`;
  return new Worker(boot, { eval: true });
}

interface Waiter {
  resolve(m: FromThread): void;
  reject(e: Error): void;
}

class InferenceThread {
  readonly worker: Worker;
  readonly ready: Promise<string>;
  private readonly waiters = new Map<number, Waiter>();
  private nextId = 1;
  /** Requests sent and not answered (the dispatch load measure). */
  get outstanding(): number {
    return this.waiters.size;
  }

  constructor(onExit: (t: InferenceThread, why: string) => void) {
    this.worker = startThread();
    this.ready = new Promise<string>((resolve, reject) => {
      const onMessage = (m: FromThread) => {
        if (m.kind === 'ready') {
          resolve(m.backend);
          return;
        }
        const w = this.waiters.get(m.id);
        if (!w) return;
        this.waiters.delete(m.id);
        if (m.kind === 'error') w.reject(new InferenceError(m.code, m.message));
        else w.resolve(m);
      };
      this.worker.on('message', onMessage);
      this.worker.once('error', (e) => reject(e));
      this.worker.once('exit', (code) => {
        const why = `inference thread exited (code ${code})`;
        reject(new Error(why));
        for (const w of this.waiters.values()) w.reject(new InferenceError('UNAVAILABLE', why));
        this.waiters.clear();
        onExit(this, why);
      });
    });
  }

  request(m: DistributiveOmit<ToThread, 'id'>, transfer: ArrayBuffer[] = []): Promise<FromThread> {
    const id = this.nextId++;
    return new Promise<FromThread>((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
      this.worker.postMessage({ ...m, id }, transfer);
    });
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export interface EngineOptions {
  /** Inference threads. @defaultValue 1 */
  readonly threads?: number;
  readonly log?: (message: string) => void;
}

export class InferenceEngine {
  private threads: InferenceThread[] = [];
  /** Loaded models by key, so a replacement thread can load them again. */
  private readonly loaded = new Map<string, string>();
  private closing = false;

  private constructor(
    private readonly options: EngineOptions,
    /** The tfjs backend the threads run (wasm here; tensorflow where tfjs-node loads). */
    public backend: string,
  ) {}

  static async start(options: EngineOptions = {}): Promise<InferenceEngine> {
    const engine = new InferenceEngine(options, '');
    const n = Math.max(1, options.threads ?? 1);
    engine.threads = Array.from({ length: n }, () => engine.spawn());
    try {
      engine.backend = (await Promise.all(engine.threads.map((t) => t.ready)))[0]!;
    } catch (e) {
      await engine.close();
      throw e;
    }
    options.log?.(`inference: ${n} thread(s), tensor backend ${engine.backend}`);
    return engine;
  }

  get threadCount(): number {
    return this.threads.length;
  }

  private spawn(): InferenceThread {
    return new InferenceThread((dead, why) => {
      if (this.closing) return;
      this.options.log?.(`${why}; starting a new one`);
      const fresh = this.spawn();
      this.threads = this.threads.map((t) => (t === dead ? fresh : t));
      void fresh.ready.then(
        () => Promise.all([...this.loaded].map(([key, artifactPath]) => fresh.request({ kind: 'load', key, artifactPath }))),
        (e: Error) => this.options.log?.(`inference thread failed to start: ${e.message}`),
      );
    });
  }

  /** Load (or reload) a model on every thread; resolves with its signature. */
  async load(key: string, artifactPath: string): Promise<LoadedSignature> {
    const answers = await Promise.all(
      this.threads.map(async (t) => {
        await t.ready;
        return t.request({ kind: 'load', key, artifactPath });
      }),
    );
    this.loaded.set(key, artifactPath);
    const first = answers[0]!;
    if (first.kind !== 'loaded') throw new InferenceError('INTERNAL', `unexpected answer ${first.kind} to load`);
    return first.signature;
  }

  async unload(key: string): Promise<void> {
    this.loaded.delete(key);
    await Promise.all(this.threads.map((t) => t.request({ kind: 'unload', key })));
  }

  /** Run one batch on the least busy thread. `input`'s buffer is transferred (unusable after). */
  async run(key: string, input: Float32Array, rows: number): Promise<BatchRun> {
    if (this.closing) throw new InferenceError('UNAVAILABLE', 'the inference server is stopping');
    let t = this.threads[0]!;
    for (const u of this.threads) if (u.outstanding < t.outstanding) t = u;
    // A view into a larger buffer cannot be transferred alone: copy it out first.
    const own = input.byteOffset === 0 && input.byteLength === input.buffer.byteLength ? input : input.slice();
    const m = await t.request({ kind: 'infer', key, rows, input: own }, [own.buffer as ArrayBuffer]);
    if (m.kind !== 'result') throw new InferenceError('INTERNAL', `unexpected answer ${m.kind} to infer`);
    return { output: m.output, computeMs: m.computeMs };
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }
}
