/**
 * Golden suite: every fixture in $GOLDEN_DIR (default test/golden/fixtures/pytorch, the
 * PyTorch fixtures kept in the repository) against PyTorch,
 * for every world size the fixture lists (training) or a set of uneven splits (BN steps,
 * running stats, recalibration); ranks in one process over the in-process collective,
 * and, for training and recalibration fixtures with more than one rank, as separate
 * processes over the gRPC collective. One line per case, then `N passed, N failed`;
 * exit 1 on any failure. Reads the format, not particular files.
 *   GOLDEN_TRANSPORTS=inproc,grpc (default both); `multihost`: each rank a process on a
 *   host of its own (a network namespace on a bridge, test/netns/hosts.ts; needs root),
 *   the ranks talking TCP across the hosts' links, every rank's results also checked
 *   bit for bit against the in-process group's (run with TAS_COMPUTE_THREADS=1, so both
 *   sides compute with the same BLAS thread count).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { initBackend } from '../../src/trainer/backend.js';
import { inProcessLauncher, useLauncher } from './cases.js';
import type { Check } from './fixture.js';
import { processLauncher, type RankPlacement } from './process-launcher.js';
import { makeNetwork, netnsUnavailable, type Network } from '../netns/hosts.js';
import type { RankLauncher } from './cases.js';
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
let skipped = 0;

// Hosts for the multihost transport: as many as the largest world, made once.
let network: Network | null = null;
const noNetns = transports.includes('multihost') ? netnsUnavailable() : null;
if (transports.includes('multihost') && !noNetns) network = await makeNetwork(4, { rateMbit: 1000 });
const placement = (w: number): RankPlacement[] => network!.hosts.slice(0, w).map((h) => ({ ip: h.ip, spawn: (c, a, o) => h.spawn(c, a, o) }));

/**
 * Where two results first differ, bit for bit (typed arrays by their bytes); null when
 * equal. A record's `at` (when it was made: a wall-clock time) is not a result.
 */
function firstDifference(a: unknown, b: unknown, path = 'result'): string | null {
  if (path.endsWith('.at') && typeof a === 'string' && typeof b === 'string' && !Number.isNaN(Date.parse(a)) && !Number.isNaN(Date.parse(b))) return null;
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b)) {
    const x = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    const y = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    if (x.equals(y)) return null;
    const i = x.findIndex((v, k) => v !== y[k]);
    return `${path}: bytes differ (lengths ${x.length}/${y.length}, first at byte ${i})`;
  }
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) ? null : `${path}: ${a} vs ${b}`;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return a === b ? null : `${path}: ${String(a)} vs ${String(b)}`;
  if (a instanceof Map && b instanceof Map) {
    for (const [k, v] of a) {
      const d = firstDifference(v, b.get(k), `${path}.${String(k)}`);
      if (d) return d;
    }
    return a.size === b.size ? null : `${path}: ${a.size} vs ${b.size} entries`;
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return `${path}: keys ${ka.join(',')} vs ${kb.join(',')}`;
  for (const k of ka) {
    const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
    if (d) return d;
  }
  return null;
}

/** Runs the ranks with `remote`, again in this process, and fails unless every rank's result is the same bits. */
function bitsEqualToInProcess(remote: RankLauncher): RankLauncher {
  return async (w, fn) => {
    const got = await remote(w, fn);
    const local = await inProcessLauncher(w, fn);
    const d = firstDifference(got, local);
    if (d) throw new Error(`ranks across hosts differ from the in-process group: ${d}`);
    return got;
  };
}

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
      if (transport !== 'inproc' && (w === 1 || (c.kind !== 'training' && c.kind !== 'precise_bn'))) continue;
      const label = transport === 'grpc' ? 'grpc-processes' : transport === 'multihost' ? `multihost (${w} namespace hosts, bits = in-process)` : 'in-process';
      const name = `${f.replace(/\.json$/, '')} [${c.kind}] world=${w} ${label}`;
      if (transport === 'multihost' && noNetns) {
        skipped++;
        console.log(`SKIP ${name}: ${noNetns}`);
        continue;
      }
      const t = performance.now();
      let stop = () => {};
      try {
        if (transport === 'grpc') {
          const p = await processLauncher(path, w);
          stop = p.stop;
          useLauncher(p.launcher);
        } else if (transport === 'multihost') {
          const p = await processLauncher(path, w, 120_000, placement(w));
          stop = p.stop;
          useLauncher(bitsEqualToInProcess(p.launcher));
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
await network?.close();
console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 ? 1 : 0);
