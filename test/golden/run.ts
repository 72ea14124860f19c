/**
 * Golden suite: every fixture in $GOLDEN_DIR (default test/golden/fixtures/pytorch, the
 * PyTorch fixtures kept in the repository) against PyTorch,
 * for every world size the fixture lists (training) or a set of uneven splits (BN steps,
 * running stats, recalibration); ranks in one process over the in-process collective,
 * and, for training and recalibration fixtures with more than one rank, as separate
 * processes over the gRPC collective. One line per case, then `N passed, N failed`;
 * exit 1 on any failure. Reads the format, not particular files.
 *   GOLDEN_TRANSPORTS=inproc,grpc (default both)
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend } from '../../src/trainer/backend.js';
import { inProcessLauncher, useLauncher } from './cases.js';
import type { Check } from './fixture.js';
import { processLauncher } from './process-launcher.js';
import { caseFor } from './run-case.js';

type Json = Record<string, unknown>;

const dir = resolve(process.env.GOLDEN_DIR ?? join(import.meta.dirname, 'fixtures/pytorch'));
const transports = (process.env.GOLDEN_TRANSPORTS ?? 'inproc,grpc').split(',').map((s) => s.trim());
if (!existsSync(dir)) {
  console.error(`golden: no fixture directory ${dir}; set GOLDEN_DIR`);
  process.exit(1);
}
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) {
  console.error(`golden: no *.json fixtures in ${dir}`);
  process.exit(1);
}
const backend = await initBackend(undefined, () => {});
// CI builds the native addon: there the default backend must be native, not a fallback.
if (process.env.TAS_REQUIRE_NATIVE === '1' && (process.env.TAS_BACKEND ?? 'auto') === 'auto' && backend.name !== 'native') {
  console.error(`golden: TAS_REQUIRE_NATIVE=1 but the backend is ${backend.name} (${backend.reasons.join('; ')})`);
  process.exit(1);
}
console.log(`golden: ${files.length} fixtures in ${dir}, backend ${backend.name}, transports ${transports.join('+')}`);
let passed = 0;
let failed = 0;

function report(name: string, checks: Check[], ms: number): void {
  const bad = checks.filter((k) => !k.ok);
  const worst = checks.reduce((m, k) => Math.max(m, Number.isFinite(k.err) ? k.err : Infinity), 0);
  if (bad.length === 0 && checks.length > 0) {
    passed++;
    console.log(`ok   ${name}: ${checks.length} checks, worst rel err ${worst.toExponential(2)} (${ms.toFixed(0)} ms)`);
    for (const k of checks.filter((c) => c.note)) console.log(`       note: ${k.note}`);
  } else {
    failed++;
    console.log(`FAIL ${name}: ${bad.length}/${checks.length} checks failed (${ms.toFixed(0)} ms)`);
    for (const b of bad.slice(0, 8)) console.log(`       ${b.detail}`);
  }
}

for (const f of files) {
  const path = join(dir, f);
  const fx = JSON.parse(readFileSync(path, 'utf8')) as Json;
  const c = caseFor(fx);
  if (!c) {
    console.log(`FAIL ${f}: unknown fixture kind (keys: ${Object.keys(fx).join(', ')})`);
    failed++;
    continue;
  }
  for (const transport of transports) {
    for (const w of c.worlds) {
      if (transport === 'grpc' && (w === 1 || (c.kind !== 'training' && c.kind !== 'precise_bn'))) continue;
      const name = `${f.replace(/\.json$/, '')} [${c.kind}] world=${w} ${transport === 'grpc' ? 'grpc-processes' : 'in-process'}`;
      const t = performance.now();
      let stop = () => {};
      try {
        if (transport === 'grpc') {
          const p = await processLauncher(path, w);
          stop = p.stop;
          useLauncher(p.launcher);
        } else useLauncher(inProcessLauncher);
        report(name, await c.run(fx, w), performance.now() - t);
      } catch (e) {
        failed++;
        console.log(`FAIL ${name}: ${(e as Error).stack?.split('\n').slice(0, 3).join(' | ')}`);
      } finally {
        stop();
      }
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
