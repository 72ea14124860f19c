/**
 * An inference thread: holds the loaded models and runs their eval-mode forward, so the
 * event loop that serves requests never computes (a batch of a large model would
 * otherwise stall every other request and the gRPC keepalives). Started by
 * `InferenceEngine`; talks only through `thread-messages.ts`.
 */
import { parentPort } from 'node:worker_threads';
import { readArtifact } from '../trainer/artifact/artifact.js';
import { initBackend } from '../trainer/backend.js';
import { TrainerError } from '../trainer/errors.js';
import { predict, servable, type ServableModel } from './predict.js';
import type { FromThread, ToThread } from './thread-messages.js';

const port = parentPort;
if (!port) throw new Error('inference-thread.ts runs as a worker thread');

const models = new Map<string, ServableModel>();
const send = (m: FromThread, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

async function handle(m: ToThread): Promise<void> {
  try {
    switch (m.kind) {
      case 'load': {
        const s = servable(await readArtifact(m.artifactPath));
        models.get(m.key)?.model.dispose();
        models.set(m.key, s);
        send({ kind: 'loaded', id: m.id, signature: { inputShape: [...s.inputShape], outputShape: [...s.outputShape], batchDependent: s.batchDependent } });
        return;
      }
      case 'unload':
        models.get(m.key)?.model.dispose();
        models.delete(m.key);
        send({ kind: 'unloaded', id: m.id });
        return;
      case 'infer': {
        const s = models.get(m.key);
        if (!s) {
          send({ kind: 'error', id: m.id, code: 'MODEL_NOT_READY', message: `model ${m.key} is not loaded` });
          return;
        }
        const t0 = performance.now();
        const output = await predict(s, m.input, m.rows);
        send({ kind: 'result', id: m.id, output, computeMs: performance.now() - t0 }, [output.buffer as ArrayBuffer]);
        return;
      }
    }
  } catch (e) {
    // Trainer errors (a shape the model refuses, a corrupt artifact) carry a message fit
    // for the caller; anything else is reported as internal.
    const message = e instanceof TrainerError ? e.message : `${(e as Error).name}: ${(e as Error).message}`;
    send({ kind: 'error', id: m.id, code: e instanceof TrainerError && e.code === 'TAS_ERR_SHAPE' ? 'INVALID_INPUT' : 'INTERNAL', message });
  }
}

const backend = await initBackend(undefined, () => undefined);
// Messages are handled one at a time, in order: a batch's forward awaits the backend, and
// overlapping two on one backend only interleaves their kernels.
let chain: Promise<void> = Promise.resolve();
port.on('message', (m: ToThread) => {
  chain = chain.then(() => handle(m));
});
send({ kind: 'ready', backend: backend.name });
