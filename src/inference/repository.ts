/**
 * The model repository of the inference server: which models and versions are served,
 * their state (loading, ready, failed), their signatures and their dynamic batchers.
 *
 * The database is the truth (`models.serving_loaded` and the batching settings,
 * `model_versions`); this process mirrors it. It reads the index at start, again when
 * told that something changed (a job published a version, a model was loaded or
 * unloaded: `RepositoryChanges`), on a timer as a backstop, and when a request names a
 * model it does not know. So every API process serves the same models, and a restarted
 * one serves what was served before it stopped.
 *
 * Version policy: every version of a loaded model is loaded (models here are small); the
 * default version, used when a request names none, is the newest one that is not broken.
 */
import { DynamicBatcher, type BatchLimits } from './batcher.js';
import type { InferenceEngine } from './engine.js';
import { InferenceError, modelNotFound } from './errors.js';
import type { InferenceMetrics } from './metrics.js';
import type { TensorSignature } from './tensors.js';
import type { LoadedSignature } from './thread-messages.js';

/** A model as the database describes it. */
export interface ModelRecord {
  /** The owning tenant's id: model names are per tenant. */
  readonly tenant: string;
  /** The owning tenant's name (metrics labels). */
  readonly tenantName?: string;
  readonly name: string;
  readonly loaded: boolean;
  readonly maxBatchSize: number;
  readonly maxQueueDelayUs: number;
  readonly versions: ReadonlyArray<{ readonly version: number; readonly artifactPath: string }>;
}

export interface ServingSettings {
  readonly loaded?: boolean;
  readonly maxBatchSize?: number;
  readonly maxQueueDelayUs?: number;
}

/** Where the repository reads and writes its truth (the ModelStore over PostgreSQL). */
export interface RepositorySource {
  servingIndex(): Promise<ModelRecord[]>;
  /** Persist settings of tenant `tenant`'s model `name`; false when there is no such model. */
  setServing(tenant: string, name: string, settings: ServingSettings): Promise<boolean>;
}

/** Cross-process change notices (Redis pub/sub in the service). */
export interface RepositoryChanges {
  notify(): Promise<void>;
  subscribe(onChange: () => void): Promise<void>;
}

export const INPUT_NAME = 'input';
export const OUTPUT_NAME = 'logits';

export type VersionState = 'loading' | 'ready' | 'failed' | 'unloaded';

export interface ServedVersion {
  readonly model: string;
  readonly version: number;
  readonly input: TensorSignature;
  readonly output: TensorSignature;
  readonly batcher: DynamicBatcher;
  /** BN without running statistics: outputs depend on the batch (see effectiveLimits). */
  readonly batchDependent: boolean;
}

interface VersionEntry {
  readonly version: number;
  artifactPath: string;
  state: VersionState;
  reason: string | null;
  served: ServedVersion | null;
  loading: Promise<void> | null;
}

interface ModelEntry {
  readonly tenant: string;
  readonly name: string;
  /** The name in metrics and logs: `tenant/name`, or the name alone for the tenant `default`. */
  readonly label: string;
  loaded: boolean;
  limits: BatchLimits;
  readonly versions: Map<number, VersionEntry>;
}

export interface RepositoryOptions {
  readonly source: RepositorySource;
  readonly engine: InferenceEngine;
  readonly metrics?: InferenceMetrics;
  readonly changes?: RepositoryChanges;
  /** Backstop re-read of the index. @defaultValue 5000 */
  readonly refreshMs?: number;
  readonly log?: (message: string) => void;
}

const VERSION_TEXT = /^[1-9][0-9]{0,8}$/;

export class ModelRepository {
  private readonly models = new Map<string, ModelEntry>();
  private ready = false;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private refreshAgain = false;
  private lastMissRefresh = 0;
  private closed = false;

  constructor(private readonly options: RepositoryOptions) {}

  /** Read the index and load what is served; the server is ready when this resolves. */
  async start(): Promise<void> {
    await this.refresh();
    await this.options.changes?.subscribe(() => void this.refresh().catch((e: Error) => this.options.log?.(`model index refresh failed: ${e.message}`)));
    this.timer = setInterval(() => void this.refresh().catch((e: Error) => this.options.log?.(`model index refresh failed: ${e.message}`)), this.options.refreshMs ?? 5000);
    this.timer.unref();
    this.ready = true;
  }

  isReady(): boolean {
    return this.ready && !this.closed;
  }

  /** Re-read the index and apply it; concurrent calls share one read (and one follow-up). */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.refreshAgain = false;
          await this.apply(await this.options.source.servingIndex());
        } while (this.refreshAgain && !this.closed);
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  private async apply(records: ModelRecord[]): Promise<void> {
    const seen = new Set<string>();
    const loads: Promise<void>[] = [];
    for (const r of records) {
      const scope = scoped(r.tenant, r.name);
      seen.add(scope);
      let m = this.models.get(scope);
      if (!m) {
        const label = r.tenantName === undefined || r.tenantName === 'default' ? r.name : `${r.tenantName}/${r.name}`;
        m = { tenant: r.tenant, name: r.name, label, loaded: r.loaded, limits: limitsOf(r), versions: new Map() };
        this.models.set(scope, m);
      }
      m.loaded = r.loaded;
      m.limits = limitsOf(r);
      for (const v of r.versions) {
        let e = m.versions.get(v.version);
        if (!e) {
          e = { version: v.version, artifactPath: v.artifactPath, state: 'unloaded', reason: null, served: null, loading: null };
          m.versions.set(v.version, e);
        }
        e.artifactPath = v.artifactPath;
        // A version that failed to load stays failed until an explicit load retries it.
        if (m.loaded && e.state === 'unloaded') loads.push(this.loadVersion(m, e));
        if (!m.loaded && e.state !== 'unloaded') loads.push(this.unloadVersion(m, e, 'unloaded on request'));
        e.served?.batcher.setLimits(effectiveLimits(m.limits, e.served));
      }
      for (const [version, e] of m.versions) {
        if (!r.versions.some((v) => v.version === version)) {
          loads.push(this.unloadVersion(m, e, 'deleted'));
          m.versions.delete(version);
        }
      }
    }
    for (const [scope, m] of this.models) {
      if (seen.has(scope)) continue;
      for (const e of m.versions.values()) loads.push(this.unloadVersion(m, e, 'deleted'));
      this.models.delete(scope);
    }
    await Promise.all(loads);
  }

  private loadVersion(m: ModelEntry, e: VersionEntry): Promise<void> {
    if (e.loading) return e.loading;
    e.state = 'loading';
    e.loading = (async () => {
      try {
        const sig = await this.options.engine.load(keyOf(m, e.version), e.artifactPath);
        const served = this.serve(m, e.version, sig);
        if (!m.loaded || this.closed) {
          // Unloaded while it was loading.
          served.batcher.close(notReady(m.name, e.version, 'unloaded on request'));
          await this.options.engine.unload(keyOf(m, e.version));
          e.state = 'unloaded';
          return;
        }
        e.served = served;
        e.state = 'ready';
        e.reason = null;
        this.options.log?.(`serving ${m.label} version ${e.version} (input ${JSON.stringify(served.input.shape)}, output ${JSON.stringify(served.output.shape)})`);
      } catch (err) {
        e.state = 'failed';
        e.reason = (err as Error).message;
        this.options.log?.(`could not load ${m.label} version ${e.version}: ${e.reason}`);
      } finally {
        e.loading = null;
      }
    })();
    return e.loading;
  }

  private serve(m: ModelEntry, version: number, sig: LoadedSignature): ServedVersion {
    const rowSize = sig.inputShape.reduce((a, b) => a * b, 1);
    const outRowSize = sig.outputShape.reduce((a, b) => a * b, 1);
    const key = keyOf(m, version);
    const v = String(version);
    const batcher = new DynamicBatcher({
      ...effectiveLimits(m.limits, sig),
      rowSize,
      outRowSize,
      maxInFlight: this.options.engine.threadCount,
      run: (input, rows) => this.options.engine.run(key, input, rows),
      onBatch: (b) => this.options.metrics?.batchRan(m.label, v, b.rows, b.computeMs),
    });
    return {
      model: m.name,
      version,
      input: { name: INPUT_NAME, datatype: 'FP32', shape: [-1, ...sig.inputShape] },
      output: { name: OUTPUT_NAME, datatype: 'FP32', shape: [-1, ...sig.outputShape] },
      batcher,
      batchDependent: sig.batchDependent,
    };
  }

  private async unloadVersion(m: ModelEntry, e: VersionEntry, why: string): Promise<void> {
    if (e.loading) await e.loading;
    const served = e.served;
    e.served = null;
    e.state = 'unloaded';
    e.reason = why;
    if (served) {
      served.batcher.close(notReady(m.name, e.version, why));
      await this.options.engine.unload(keyOf(m, e.version)).catch(() => undefined);
      this.options.log?.(`unloaded ${m.label} version ${e.version} (${why})`);
    }
  }

  /**
   * The version a request names ("" = the default) of tenant `tenant`'s model `name`,
   * ready to run; waits while it loads. Another tenant's model of that name is not found.
   */
  async resolve(tenant: string, name: string, version: string): Promise<ServedVersion> {
    let m = this.models.get(scoped(tenant, name));
    if (!m && Date.now() - this.lastMissRefresh > 1000) {
      // A model published since the last read: look once more before saying no (at most
      // once a second, so a client calling a wrong name cannot hammer the database).
      this.lastMissRefresh = Date.now();
      await this.refresh();
      m = this.models.get(scoped(tenant, name));
    }
    if (!m) throw modelNotFound(name);
    if (version !== '' && !VERSION_TEXT.test(version)) throw modelNotFound(name, version);
    const e = version === '' ? this.defaultVersion(m) : m.versions.get(Number(version));
    if (!e) throw version === '' ? new InferenceError('MODEL_NOT_READY', `model '${name}' has no versions`) : modelNotFound(name, version);
    if (e.loading) await e.loading;
    if (e.state !== 'ready' || !e.served) throw notReady(name, e.version, e.state === 'failed' ? `failed to load: ${e.reason}` : (e.reason ?? e.state));
    return e.served;
  }

  /** Newest version that is not broken (loading counts: it will be ready in a moment). */
  private defaultVersion(m: ModelEntry): VersionEntry | undefined {
    const newestFirst = [...m.versions.values()].sort((a, b) => b.version - a.version);
    return newestFirst.find((e) => e.state === 'ready' || e.state === 'loading') ?? newestFirst[0];
  }

  /** ModelReady: exists, is loaded, not loading. */
  modelReady(tenant: string, name: string, version: string): boolean {
    const m = this.models.get(scoped(tenant, name));
    if (!m || (version !== '' && !VERSION_TEXT.test(version))) return false;
    const e = version === '' ? this.defaultVersion(m) : m.versions.get(Number(version));
    return e?.state === 'ready';
  }

  /** Model metadata: every version's name, and the signature of the named (or default) one. */
  async metadata(tenant: string, name: string, version: string): Promise<{ name: string; versions: string[]; served: ServedVersion }> {
    const served = await this.resolve(tenant, name, version);
    const m = this.models.get(scoped(tenant, name))!;
    const versions = [...m.versions.keys()].sort((a, b) => a - b).map(String);
    return { name, versions, served };
  }

  /** Load a model (all its versions) and keep it loaded across restarts. */
  async load(tenant: string, name: string): Promise<void> {
    await this.persist(tenant, name, { loaded: true });
    await this.changed();
    const m = this.models.get(scoped(tenant, name));
    const failed = m ? [...m.versions.values()].filter((e) => e.state === 'failed') : [];
    if (failed.length > 0) {
      // An explicit load retries versions that failed before.
      await Promise.all(failed.map((e) => this.loadVersion(m!, e)));
    }
    const still = m ? [...m.versions.values()].find((e) => e.state === 'failed') : undefined;
    if (still) throw new InferenceError('INTERNAL', `failed to load '${name}' version ${still.version}: ${still.reason}`);
  }

  /** Unload a model (all its versions) and keep it unloaded across restarts. */
  async unload(tenant: string, name: string): Promise<void> {
    await this.persist(tenant, name, { loaded: false });
    await this.changed();
  }

  /** Change a model's dynamic-batching settings (persisted; every API process applies them). */
  async configure(tenant: string, name: string, limits: Partial<BatchLimits>): Promise<void> {
    await this.persist(tenant, name, {
      ...(limits.maxBatchSize !== undefined ? { maxBatchSize: limits.maxBatchSize } : {}),
      ...(limits.maxQueueDelayMs !== undefined ? { maxQueueDelayUs: Math.round(limits.maxQueueDelayMs * 1000) } : {}),
    });
    await this.changed();
  }

  private async persist(tenant: string, name: string, settings: ServingSettings): Promise<void> {
    if (!(await this.options.source.setServing(tenant, name, settings))) throw modelNotFound(name);
  }

  private async changed(): Promise<void> {
    await this.refresh();
    await this.options.changes?.notify();
  }

  /** Every known version of tenant `tenant`'s models (null: every tenant's) and its state (the repository index). */
  list(tenant: string | null): Array<{ name: string; version: string; state: VersionState; reason: string | null; maxBatchSize: number; maxQueueDelayMs: number }> {
    const out = [];
    const models = [...this.models.values()].filter((m) => tenant === null || m.tenant === tenant);
    for (const m of models.sort((a, b) => a.name.localeCompare(b.name) || a.tenant.localeCompare(b.tenant))) {
      for (const e of [...m.versions.values()].sort((a, b) => a.version - b.version)) {
        out.push({ name: m.name, version: String(e.version), state: e.state, reason: e.reason, ...m.limits });
      }
    }
    return out;
  }

  /** Requests waiting or running, per served version (the pending-requests gauge). */
  *pending(): Iterable<{ model: string; version: string; count: number }> {
    for (const m of this.models.values()) {
      for (const e of m.versions.values()) if (e.served) yield { model: m.label, version: String(e.version), count: e.served.batcher.pending };
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    const stopping = new InferenceError('UNAVAILABLE', 'the inference server is stopping');
    for (const m of this.models.values()) for (const e of m.versions.values()) e.served?.batcher.close(stopping);
    await this.refreshing?.catch(() => undefined);
  }
}

/** A model's place in the repository: names are per tenant. */
function scoped(tenant: string, name: string): string {
  return `${tenant}\u0000${name}`;
}

/** A version's key in the inference threads. */
function keyOf(m: ModelEntry, version: number): string {
  return `${scoped(m.tenant, m.name)}\u0000${version}`;
}

function limitsOf(r: ModelRecord): BatchLimits {
  return { maxBatchSize: r.maxBatchSize, maxQueueDelayMs: r.maxQueueDelayUs / 1000 };
}

/** A model whose eval output depends on its batch (BN without running statistics) is never batched across requests. */
function effectiveLimits(limits: BatchLimits, s: { batchDependent: boolean }): BatchLimits {
  return s.batchDependent ? { maxBatchSize: 1, maxQueueDelayMs: 0 } : limits;
}

function notReady(name: string, version: number, why: string): InferenceError {
  return new InferenceError('MODEL_NOT_READY', `model '${name}' version ${version} is not ready: ${why}`);
}
