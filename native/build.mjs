// Builds the optional native addons with node-gyp:
//   native/          tas_sum      the collective's float32 sums (needs a C compiler)
//   native/compute/  tas_compute  the trainer's kernels (needs a C compiler and OpenBLAS)
// Each builds on its own; one that cannot is reported in one line saying what to install.
// `--optional` (npm ci's prepare step) always exits 0: without the addons, the JS sums
// and the wasm backend run.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const optional = process.argv.includes('--optional');

function nodeGyp() {
  // npm gives its scripts the path of the node-gyp it bundles.
  const bundled = process.env.npm_config_node_gyp;
  if (bundled && existsSync(bundled)) return [process.execPath, bundled];
  const beside = join(dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js');
  if (existsSync(beside)) return [process.execPath, beside];
  return ['node-gyp'];
}

// Node's own headers, where this Node was installed with them (npm passes its nodedir).
function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = join(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include/node/node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

function have(cmd, args = ['--version']) {
  return spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;
}

const CBLAS_DIRS = ['/usr/include', '/usr/include/x86_64-linux-gnu', '/usr/include/aarch64-linux-gnu', '/usr/include/openblas', '/usr/local/include', '/opt/homebrew/opt/openblas/include', '/usr/local/opt/openblas/include'];

const addons = [
  { dir: here, name: 'tas_sum', without: 'the collective uses its JS sums', needs: [] },
  {
    dir: join(here, 'compute'),
    name: 'tas_compute',
    without: 'training and serving use the wasm backend, several times slower',
    needs: [() => (CBLAS_DIRS.some((d) => existsSync(join(d, 'cblas.h'))) ? null : 'OpenBLAS not found (Debian/Ubuntu: apt-get install libopenblas-dev)')],
  },
];

const compiler = have('cc') || have('gcc') || have('clang') ? null : 'no C compiler (Debian/Ubuntu: apt-get install build-essential)';
let failed = 0;
for (const a of addons) {
  const missing = compiler ?? a.needs.map((check) => check()).find((m) => m !== null) ?? null;
  let why = missing;
  if (!why) {
    const [cmd, ...pre] = nodeGyp();
    const r = spawnSync(cmd, [...pre, 'rebuild', ...nodedirArgs()], { cwd: a.dir, encoding: 'utf8' });
    if (r.status !== 0) {
      const lines = `${r.stderr ?? ''}\n${r.stdout ?? ''}`.split('\n');
      const first = lines.find((l) => /\berror\b:/.test(l)) ?? lines.find((l) => /gyp ERR!/.test(l) && !/gyp ERR! (stack|cwd|node -v|node-gyp -v|not ok|System|command)/.test(l));
      why = `node-gyp failed: ${(first ?? r.error?.message ?? `exit ${r.status}`).trim()}`;
    }
  }
  if (why) {
    failed++;
    console.log(`tas: native ${a.name} not built: ${why}; ${a.without}`);
  } else {
    console.log(`tas: native ${a.name} built`);
  }
}
process.exit(failed > 0 && !optional ? 1 : 0);
