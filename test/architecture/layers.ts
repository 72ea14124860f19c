/**
 * The layers of src/, top to bottom, and the one rule between them: a file imports only
 * from its own folder or from a layer below. Folders on the same layer are independent
 * of each other. Test files (`*.test.ts`) may reach any layer, since integration tests
 * drive a lower layer through a higher one.
 */
import type { ImportEdge } from './import-graph.js';

export const LAYERS: readonly (readonly string[])[] = [
  ['cli'], // the tas command and the composition root (serve.ts)
  ['api'], // bindings: REST (fastify) and gRPC inference
  ['service'], // jobs, datasets, models, scheduling, persistence, start-up
  ['inference', 'gpu-pool'], // the inference service; the pool of devices and worker processes
  ['collective'], // the gRPC collective
  ['trainer', 'grpc'], // the training engine; what every gRPC end shares
];

/**
 * Inside a layer, parts that must stay below the rest of it: persistence is the service's
 * floor, so that it can be used by every part of the service and uses none of them.
 */
export const FLOORS: readonly { readonly folder: string; readonly mayImport: readonly string[] }[] = [
  { folder: 'src/service/db/', mayImport: ['src/service/db/', 'src/service/errors.ts'] },
];

/** The top folder of a path under src/ (`src/api/rest/app.ts` → `api`). */
export function folderOf(path: string): string {
  return path.split('/')[1] ?? '';
}

function layerOf(folder: string): number {
  return LAYERS.findIndex((names) => names.includes(folder));
}

/** Why this import breaks the layering, or null when it keeps it. */
export function violation(edge: ImportEdge): string | null {
  if (edge.from.endsWith('.test.ts')) return null;
  const from = folderOf(edge.from), to = folderOf(edge.to);
  const a = layerOf(from), b = layerOf(to);
  if (a < 0) return `${edge.from}: src/${from}/ is on no layer (add it to LAYERS)`;
  if (b < 0) return `${edge.from} imports ${edge.to}: src/${to}/ is on no layer (add it to LAYERS)`;
  if (from !== to) {
    if (b < a) return `${edge.from} imports ${edge.to}: up from ${from} to ${to}`;
    if (b === a) return `${edge.from} imports ${edge.to}: across from ${from} to ${to}, which share a layer`;
  }
  for (const floor of FLOORS) {
    if (edge.from.startsWith(floor.folder) && !floor.mayImport.some((p) => edge.to.startsWith(p)) && edge.to.startsWith(`src/${from}/`)) {
      return `${edge.from} imports ${edge.to}: up from ${floor.folder}, which may import only ${floor.mayImport.join(', ')} of its layer`;
    }
  }
  return null;
}
