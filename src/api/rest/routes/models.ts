/** /v1/models: trained models, their versions, the safetensors artifact download and its ONNX export. */
import { createReadStream } from 'node:fs';
import type { FastifyPluginAsync } from 'fastify';
import { exportOnnx } from '../../../inference/onnx-export.js';
import type { ModelStore } from '../../../service/models/model-store.js';
import { readArtifact, type LoadedArtifact } from '../../../trainer/artifact/artifact.js';
import { TrainerError } from '../../../trainer/errors.js';
import { ApiError } from '../http-errors.js';

export interface ModelRouteOptions {
  readonly models: ModelStore;
}

const errorResponse = { $ref: 'ApiError#' } as const;
const versionParams = {
  type: 'object',
  required: ['name', 'version'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 200 }, version: { type: 'string', pattern: '^([1-9][0-9]{0,8}|latest)$' } },
} as const;

function versionOf(v: string): number | 'latest' {
  return v === 'latest' ? 'latest' : Number(v);
}

const fileStem = (model: string, version: number) => `${model.replace(/[^\w.-]/g, '_')}-v${version}`;

export const modelRoutes: FastifyPluginAsync<ModelRouteOptions> = async (app, { models }) => {
  app.get('/v1/models', { schema: { tags: ['models'], summary: "Models and their latest versions (a tenant's own; every tenant's for the admin)" } }, async (request) => ({
    models: (await models.list(request.principal)).map((m) => ({
      name: m.name,
      tenant: m.tenant,
      created_at: m.createdAt,
      latest_version: m.latestVersion,
      versions: m.versions,
      // Inference: loaded or not (POST /v2/repository/models/:name/load|unload) and dynamic batching.
      serving: { loaded: m.serving.loaded, max_batch_size: m.serving.maxBatchSize, max_queue_delay_microseconds: m.serving.maxQueueDelayUs },
    })),
  }));

  app.get<{ Params: { name: string; version: string } }>(
    '/v1/models/:name/versions/:version',
    { schema: { tags: ['models'], summary: 'One version (a number, or "latest"): job, evaluation, recalibration, final BN statistics', params: versionParams, response: { 200: { $ref: 'ModelVersion#' }, 404: errorResponse } } },
    async (request) => {
      const v = await models.version(request.principal, request.params.name, versionOf(request.params.version));
      return { model: v.model, version: v.version, job_id: v.jobId, created_at: v.createdAt, artifact_bytes: v.artifactBytes, metadata: v.metadata };
    },
  );

  app.get<{ Params: { name: string; version: string } }>(
    '/v1/models/:name/versions/:version/artifact',
    { schema: { tags: ['models'], summary: 'Download the safetensors artifact (PyTorch state_dict names, BN running statistics included)', params: versionParams } },
    async (request, reply) => {
      const v = await models.version(request.principal, request.params.name, versionOf(request.params.version));
      if (v.artifactBytes === null) throw new ApiError('TAS_ERR_NOT_FOUND', `the artifact of ${v.model} version ${v.version} is missing from the artifact directory`);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-length', String(v.artifactBytes))
        .header('content-disposition', `attachment; filename="${fileStem(v.model, v.version)}.safetensors"`)
        .send(createReadStream(v.artifactPath));
    },
  );

  app.get<{ Params: { name: string; version: string } }>(
    '/v1/models/:name/versions/:version/onnx',
    {
      schema: {
        tags: ['models'],
        summary: 'The version as an ONNX model (opset 17, eval mode: BatchNorm with the stored running statistics); input "input" [batch, ...input_shape], output "logits"',
        params: versionParams,
        response: { 404: errorResponse, 422: errorResponse },
      },
    },
    async (request, reply) => {
      const v = await models.version(request.principal, request.params.name, versionOf(request.params.version));
      if (v.artifactBytes === null) throw new ApiError('TAS_ERR_NOT_FOUND', `the artifact of ${v.model} version ${v.version} is missing from the artifact directory`);
      let artifact: LoadedArtifact;
      try {
        artifact = await readArtifact(v.artifactPath);
      } catch (err) {
        // A corrupt or newer-format artifact is a stored model this server cannot export.
        if (err instanceof TrainerError) throw new ApiError('TAS_ERR_NOT_EXPORTABLE', err.message);
        throw err;
      }
      // OnnxExportError becomes 422 TAS_ERR_NOT_EXPORTABLE in toApiError.
      const bytes = exportOnnx(artifact, { name: v.model, version: v.version });
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="${fileStem(v.model, v.version)}.onnx"`)
        .send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    },
  );
};
