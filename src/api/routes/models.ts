/** /v1/models: trained models, their versions, and the safetensors artifact download. */
import { createReadStream } from 'node:fs';
import type { FastifyPluginAsync } from 'fastify';
import type { ModelStore } from '../../service/models.js';
import { ApiError } from '../errors.js';

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

export const modelRoutes: FastifyPluginAsync<ModelRouteOptions> = async (app, { models }) => {
  app.get('/v1/models', { schema: { tags: ['models'], summary: 'Models and their latest versions' } }, async () => ({
    models: (await models.list()).map((m) => ({ name: m.name, created_at: m.createdAt, latest_version: m.latestVersion, versions: m.versions })),
  }));

  app.get<{ Params: { name: string; version: string } }>(
    '/v1/models/:name/versions/:version',
    { schema: { tags: ['models'], summary: 'One version (a number, or "latest"): job, evaluation, recalibration, final BN statistics', params: versionParams, response: { 200: { $ref: 'ModelVersion#' }, 404: errorResponse } } },
    async (request) => {
      const v = await models.version(request.params.name, versionOf(request.params.version));
      return { model: v.model, version: v.version, job_id: v.jobId, created_at: v.createdAt, artifact_bytes: v.artifactBytes, metadata: v.metadata };
    },
  );

  app.get<{ Params: { name: string; version: string } }>(
    '/v1/models/:name/versions/:version/artifact',
    { schema: { tags: ['models'], summary: 'Download the safetensors artifact (PyTorch state_dict names, BN running statistics included)', params: versionParams } },
    async (request, reply) => {
      const v = await models.version(request.params.name, versionOf(request.params.version));
      if (v.artifactBytes === null) throw new ApiError(404, 'TAS_ERR_NOT_FOUND', `the artifact of ${v.model} version ${v.version} is missing from the artifact directory`);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-length', String(v.artifactBytes))
        .header('content-disposition', `attachment; filename="${v.model.replace(/[^\w.-]/g, '_')}-v${v.version}.safetensors"`)
        .send(createReadStream(v.artifactPath));
    },
  );
};
