// Builds the dashboard (ui/src) into ui/dist with esbuild: one JavaScript bundle and one
// stylesheet named by their content hash (served as immutable), index.html pointing at
// them (served no-cache), and each file gzip- and brotli-compressed beside it. Run by
// `npm ci` (the `prepare` script) and `npm run build:ui`; the API serves ui/dist at /ui/.
// Everything comes from node_modules: no CDN, so the dashboard works offline.
//
//   node ui/build.mjs [--out DIR] [--quiet]
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { out: { type: 'string' }, quiet: { type: 'boolean' } } });
const out = values.out ?? join(root, 'dist');

const started = performance.now();
await rm(out, { recursive: true, force: true });
const result = await build({
  entryPoints: { app: join(root, 'src', 'main.tsx') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: join(out, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'eof',
  sourcemap: false,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => relative(out, p).split('\\').join('/'));
const js = outputs.find((p) => p.endsWith('.js'));
const css = outputs.find((p) => p.endsWith('.css'));
if (!js || !css) throw new Error(`ui build: expected a .js and a .css output, got ${outputs.join(', ')}`);

const index = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tas dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${css}">
<script type="module" src="${js}"></script>
</head>
<body>
<noscript>The tas dashboard needs JavaScript. The REST API is documented at <a href="/docs">/docs</a>.</noscript>
<div id="app"></div>
</body>
</html>
`;
await writeFile(join(out, 'index.html'), index);

// Compressed copies, so the server sends each file's bytes without compressing per request.
let raw = 0;
let gz = 0;
for (const file of await files(out)) {
  const bytes = await readFile(file);
  const g = gzipSync(bytes, { level: 9 });
  const b = brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });
  await writeFile(`${file}.gz`, g);
  await writeFile(`${file}.br`, b);
  raw += bytes.length;
  gz += g.length;
}
if (!values.quiet) {
  const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
  console.error(`[tas ui] built ${relative(process.cwd(), out) || '.'} in ${Math.round(performance.now() - started)} ms: ${kb(raw)} (${kb(gz)} gzipped)`);
}

async function files(dir) {
  const entries = await readdir(dir, { withFileTypes: true });
  const nested = await Promise.all(entries.map((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)])));
  return nested.flat();
}

