/**
 * Imports go one way: cli → api → service → inference, gpu-pool → collective → trainer,
 * grpc (docs/ARCHITECTURE.md). This test reads the import graph of src/ and fails on any
 * import that goes up a layer or across to a peer folder, naming the file and the import.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { importGraph } from './import-graph.js';
import { folderOf, LAYERS, violation } from './layers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

describe('layers', () => {
  const edges = importGraph(ROOT);

  test('the graph is read (imports of every layer are found)', () => {
    assert.ok(edges.length > 300, `only ${edges.length} imports found`);
    const folders = new Set(edges.map((e) => folderOf(e.from)));
    for (const name of LAYERS.flat()) assert.ok(folders.has(name), `no imports read from src/${name}/`);
  });

  test('no import goes up a layer or across to a peer', () => {
    const broken = edges.map(violation).filter((v): v is string => v !== null);
    assert.deepEqual(broken, []);
  });

  test('the rule catches what it is for', () => {
    assert.match(violation({ from: 'src/service/jobs/job-service.ts', to: 'src/api/rest/http-errors.ts' }) ?? '', /up from service to api/);
    assert.match(violation({ from: 'src/gpu-pool/scheduler.ts', to: 'src/service/db/client.ts' }) ?? '', /up from gpu-pool to service/);
    assert.match(violation({ from: 'src/inference/grpc-server.ts', to: 'src/gpu-pool/proto.ts' }) ?? '', /across from inference to gpu-pool/);
    assert.match(violation({ from: 'src/service/db/jobs.ts', to: 'src/service/jobs/job-log.ts' }) ?? '', /up from src\/service\/db\//);
    assert.match(violation({ from: 'src/newthing/x.ts', to: 'src/trainer/errors.ts' }) ?? '', /on no layer/);
    assert.equal(violation({ from: 'src/api/rest/app.ts', to: 'src/service/jobs/job-service.ts' }), null);
    assert.equal(violation({ from: 'src/collective/group.ts', to: 'src/collective/links.ts' }), null);
    assert.equal(violation({ from: 'src/inference/onnx-export.test.ts', to: 'src/api/rest/app.ts' }), null);
  });
});
