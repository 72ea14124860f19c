/**
 * The project's import graph, read from the sources with TypeScript's own scanner
 * (`ts.preProcessFile`: static imports, `import type`, re-exports, dynamic `import()`),
 * plus the modules a file starts as a thread or process (`new URL('./x.ts', import.meta.url)`).
 * Only imports of files inside the tree are edges; packages are not.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';

export interface ImportEdge {
  /** Importing file, relative to the root (`src/api/rest/app.ts`). */
  readonly from: string;
  /** Imported file, relative to the root. */
  readonly to: string;
}

const STARTED_MODULE = /new URL\(\s*'(\.{1,2}\/[^']+\.ts)'\s*,\s*import\.meta\.url\s*\)/g;

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules' && entry.name !== 'generated') out.push(...sourceFiles(path));
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

/** Every import between the `.ts` files under `root/dir`, as paths relative to `root`. */
export function importGraph(root: string, dir = 'src'): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const file of sourceFiles(join(root, dir))) {
    const text = readFileSync(file, 'utf8');
    const specifiers = ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
    for (const m of text.matchAll(STARTED_MODULE)) specifiers.push(m[1]!);
    for (const spec of specifiers) {
      if (!spec.startsWith('./') && !spec.startsWith('../')) continue;
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
      const to = relative(root, target).split(sep).join('/');
      if (!to.startsWith(`${dir}/`) || !to.endsWith('.ts')) continue;
      edges.push({ from: relative(root, file).split(sep).join('/'), to });
    }
  }
  return edges;
}
