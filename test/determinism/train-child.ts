/**
 * One training run in a process of its own, for determinism tests: the backend and its
 * threads come from the environment (TAS_BACKEND, TAS_COMPUTE_THREADS), as in a worker.
 * argv: specJson outDir [stopAfterGlobalStep]. Prints one JSON line: the backend, its
 * threads, the step it resumed from, and the final state's float32 values (or null when
 * the run stopped early).
 */
import { readFileSync } from 'node:fs';
import { initBackend } from '../../src/trainer/backend.js';
import { parseArtifact } from '../../src/trainer/artifact/artifact.js';
import { runLocalJob } from '../../src/trainer/engine/local-job.js';

const [specJson, outDir, stopAt] = process.argv.slice(2);
const backend = await initBackend(undefined, () => {});
const r = await runLocalJob(JSON.parse(specJson) as Record<string, unknown>, { outDir, ...(stopAt ? { stopAfterGlobalStep: Number(stopAt) } : {}) });
const state = r.artifactPath ? parseArtifact(new Uint8Array(readFileSync(r.artifactPath))).state : null;
const values = state ? Object.fromEntries([...state].map(([k, t]) => [k, Array.from(t.data)])) : null;
console.log(JSON.stringify({ backend: backend.name, threads: backend.threads, resumedFrom: r.resumedFrom, values }));
