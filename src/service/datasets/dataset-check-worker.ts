/**
 * Worker-thread entry of `checkInWorker` (./dataset-check.ts): runs one check on
 * `workerData`, posts one `CheckReply` and ends (nothing else keeps the thread alive).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { checkUpload, type CheckReply, type CheckRequest } from './dataset-check.js';

async function main(port: NonNullable<typeof parentPort>): Promise<void> {
  let reply: CheckReply;
  try {
    reply = { ok: true, result: await checkUpload(workerData as CheckRequest) };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    const extra = e as Error & { code?: unknown; field?: unknown };
    reply = {
      ok: false,
      error: {
        name: e.name,
        message: e.message,
        ...(typeof extra.code === 'string' ? { code: extra.code } : {}),
        ...(typeof extra.field === 'string' ? { field: extra.field } : {}),
      },
    };
  }
  port.postMessage(reply);
}

if (parentPort) await main(parentPort);
