/**
 * `tas` command line. Until the service lands (REST, queue, worker pool), `tas train`
 * runs a job spec on this machine with N in-process ranks.
 *
 *   tas train <spec.json> [--out DIR] [--data-dir DIR] [--no-resume] [--quiet]
 *   tas validate <spec.json>
 */
import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { initBackend } from '../trainer/backend.js';
import { resolveTrainSpec } from '../trainer/engine/job-spec.js';
import { runLocalJob } from '../trainer/engine/local-job.js';
import { TrainerError } from '../trainer/errors.js';

const USAGE = `usage:
  tas train <spec.json> [--out DIR] [--data-dir DIR] [--no-resume] [--quiet]
  tas validate <spec.json>`;

async function readSpec(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `${path}: ${(e as Error).message}`);
  }
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { out: { type: 'string' }, 'data-dir': { type: 'string' }, 'no-resume': { type: 'boolean' }, quiet: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  const [cmd, specPath] = positionals;
  if (values.help || !cmd || !specPath) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const raw = await readSpec(specPath);
  if (cmd === 'validate') {
    const s = resolveTrainSpec(raw);
    console.log(JSON.stringify({ valid: true, workers: s.workers, local_batch_sizes: s.localBatchSizes, epochs: s.epochs }));
    return 0;
  }
  if (cmd !== 'train') {
    console.log(USAGE);
    return 2;
  }
  const backend = await initBackend();
  const outDir = resolve(values.out ?? join(process.env.TAS_DATA_DIR ?? 'data', 'runs', basename(specPath).replace(/\.json$/, '')));
  const started = performance.now();
  let lastPrint = 0;
  const result = await runLocalJob(raw, {
    outDir,
    dataDir: values['data-dir'] ?? dirname(resolve(specPath)),
    resume: !values['no-resume'],
    onStep: (m) => {
      const now = performance.now();
      if (values.quiet || (now - lastPrint < 1000 && m.globalStep !== m.totalSteps)) return;
      lastPrint = now;
      const t = m.timings;
      console.log(
        JSON.stringify({
          step: m.globalStep,
          of: m.totalSteps,
          epoch: m.epoch + 1,
          loss: +m.loss.toFixed(5),
          accuracy: +m.accuracy.toFixed(4),
          lr: m.lr,
          samples_per_s: Math.round(m.samplesPerSec),
          ms: { compute: +t.computeMs.toFixed(2), bn_sync_fwd: +t.bnForwardSyncMs.toFixed(2), bn_sync_bwd: +t.bnBackwardSyncMs.toFixed(2), grad_sync: +t.gradSyncMs.toFixed(2) },
        }),
      );
    },
  });
  console.log(
    JSON.stringify({
      done: result.rank0.completed,
      backend: backend.name,
      workers: result.spec.workers,
      steps: result.rank0.globalSteps,
      resumed_from_step: result.resumedFrom,
      evaluation: result.rank0.evaluation,
      recalibration: result.rank0.recalibration?.mode ?? null,
      artifact: result.artifactPath,
      seconds: +((performance.now() - started) / 1000).toFixed(2),
    }),
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof TrainerError) {
      console.error(`error ${e.code}${e.field ? ` (${e.field})` : ''}: ${e.message}`);
      process.exitCode = 1;
    } else {
      console.error(e);
      process.exitCode = 70;
    }
  },
);
