/**
 * Trained models and their versions. A job that succeeds publishes its artifact (the
 * safetensors file with the BN running statistics) as the next version of the model
 * named by the job; versions are numbered 1, 2, ... per model, and the newest is the
 * default. Metadata keeps what a user needs to trust the version: the job, its
 * evaluation, its recalibration record, the final BN statistics, the backend.
 */
import { stat } from 'node:fs/promises';
import type { ModelRecord, RepositorySource, ServingSettings } from '../../inference/repository.js';
import { Prisma, type PrismaClient } from '../db/client.js';
import { DEFAULT_TENANT_ID } from '../db/default-tenant.js';
import { DbError } from '../db/errors.js';
import { visibleTenant, type Principal } from '../tenants/principal.js';

export interface ModelVersionView {
  readonly model: string;
  readonly version: number;
  readonly jobId: string | null;
  readonly createdAt: string;
  readonly artifactBytes: number | null;
  readonly metadata: Prisma.JsonValue;
}

export interface ModelView {
  readonly name: string;
  /** The owning tenant's name. */
  readonly tenant: string;
  readonly createdAt: string;
  readonly latestVersion: number | null;
  readonly versions: number;
  readonly serving: { readonly loaded: boolean; readonly maxBatchSize: number; readonly maxQueueDelayUs: number };
}

export interface PublishInput {
  /** The owner (the job's tenant). @defaultValue the tenant `default` */
  readonly tenantId?: string;
  /** Unique per tenant. */
  readonly name: string;
  /** The job that trained it; null for an artifact imported without a job. */
  readonly jobId: string | null;
  readonly artifactPath: string;
  readonly metadata: Prisma.InputJsonValue;
}

export class ModelStore implements RepositorySource {
  constructor(private readonly prisma: PrismaClient) {}

  /**
   * Record `artifactPath` as the next version of model `name`; returns the version.
   * Idempotent per job: a job that already published (a run that was thought lost and
   * finished after all, beside its retry) gets its first version back, and no second
   * version is made.
   */
  async publish(input: PublishInput): Promise<number> {
    // Two jobs of one model finishing together race for the same next number; the
    // unique (model_id, version) index makes the loser retry with the next one.
    for (let tries = 0; ; tries++) {
      try {
        return await this.prisma.$transaction(async (tx) => {
          if (input.jobId !== null) {
            // The job's row lock orders two publications of one job: the second sees the first.
            await tx.$queryRaw`SELECT id FROM jobs WHERE id = ${input.jobId}::uuid FOR UPDATE`;
            const published = await tx.modelVersion.findFirst({ where: { jobId: input.jobId }, orderBy: { version: 'asc' }, select: { version: true } });
            if (published) return published.version;
          }
          const tenantId = input.tenantId ?? DEFAULT_TENANT_ID;
          const model = await tx.model.upsert({ where: { tenantId_name: { tenantId, name: input.name } }, create: { tenantId, name: input.name }, update: {} });
          const last = await tx.modelVersion.findFirst({ where: { modelId: model.id }, orderBy: { version: 'desc' }, select: { version: true } });
          const version = (last?.version ?? 0) + 1;
          await tx.modelVersion.create({ data: { modelId: model.id, version, jobId: input.jobId, artifactPath: input.artifactPath, metadata: input.metadata } });
          return version;
        });
      } catch (err) {
        if (tries < 5 && err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002') continue;
        throw err;
      }
    }
  }

  /** The models `who` may see: its tenant's, or every tenant's for the admin. */
  async list(who: Principal): Promise<ModelView[]> {
    const tenantId = visibleTenant(who);
    const models = await this.prisma.model.findMany({
      where: tenantId === null ? {} : { tenantId },
      orderBy: [{ name: 'asc' }, { tenantId: 'asc' }],
      include: { versions: { select: { version: true }, orderBy: { version: 'desc' } }, tenant: { select: { name: true } } },
    });
    return models.map((m) => ({
      name: m.name,
      tenant: m.tenant.name,
      createdAt: m.createdAt.toISOString(),
      latestVersion: m.versions[0]?.version ?? null,
      versions: m.versions.length,
      serving: { loaded: m.servingLoaded, maxBatchSize: m.maxBatchSize, maxQueueDelayUs: m.maxQueueDelayUs },
    }));
  }

  /** Every model with its serving settings and versions: what the inference server mirrors. */
  async servingIndex(): Promise<ModelRecord[]> {
    const models = await this.prisma.model.findMany({
      select: { tenantId: true, name: true, servingLoaded: true, maxBatchSize: true, maxQueueDelayUs: true, versions: { select: { version: true, artifactPath: true }, orderBy: { version: 'asc' } } },
    });
    return models.map((m) => ({ tenant: m.tenantId, name: m.name, loaded: m.servingLoaded, maxBatchSize: m.maxBatchSize, maxQueueDelayUs: m.maxQueueDelayUs, versions: m.versions }));
  }

  async setServing(tenantId: string, name: string, settings: ServingSettings): Promise<boolean> {
    const data = {
      ...(settings.loaded !== undefined ? { servingLoaded: settings.loaded } : {}),
      ...(settings.maxBatchSize !== undefined ? { maxBatchSize: settings.maxBatchSize } : {}),
      ...(settings.maxQueueDelayUs !== undefined ? { maxQueueDelayUs: settings.maxQueueDelayUs } : {}),
    };
    return (await this.prisma.model.updateMany({ where: { tenantId, name }, data })).count > 0;
  }

  /**
   * Version `version` of `who`'s model `name` ("latest": the newest). Names are per
   * tenant; the admin's are the tenant `default`'s.
   */
  async version(who: Principal, name: string, version: number | 'latest'): Promise<ModelVersionView & { artifactPath: string }> {
    const row = await this.prisma.modelVersion.findFirst({
      where: { model: { tenantId: who.tenantId, name }, ...(version === 'latest' ? {} : { version }) },
      orderBy: { version: 'desc' },
      include: { model: { select: { name: true } } },
    });
    if (!row) throw new DbError('TAS_ERR_NOT_FOUND', version === 'latest' ? `no model named ${JSON.stringify(name)}` : `model ${JSON.stringify(name)} has no version ${version}`);
    const bytes = await stat(row.artifactPath).then((s) => s.size, () => null);
    return {
      model: row.model.name,
      version: row.version,
      jobId: row.jobId,
      createdAt: row.createdAt.toISOString(),
      artifactBytes: bytes,
      metadata: row.metadata,
      artifactPath: row.artifactPath,
    };
  }

  /** The versions a job published (normally one). */
  async byJob(jobId: string): Promise<Array<{ model: string; version: number }>> {
    return (await this.byJobs([jobId])).get(jobId) ?? [];
  }

  /** The versions each of these jobs published, oldest first, in one query. */
  async byJobs(jobIds: readonly string[]): Promise<Map<string, Array<{ model: string; version: number }>>> {
    const rows = await this.prisma.modelVersion.findMany({ where: { jobId: { in: [...jobIds] } }, include: { model: { select: { name: true } } }, orderBy: { createdAt: 'asc' } });
    const out = new Map<string, Array<{ model: string; version: number }>>();
    for (const r of rows) if (r.jobId !== null) out.set(r.jobId, [...(out.get(r.jobId) ?? []), { model: r.model.name, version: r.version }]);
    return out;
  }
}
