/**
 * The `tas` client's connection to a running service: its URL (TAS_URL, default
 * http://127.0.0.1:8000) and API key (TAS_API_KEY, else `<data>/admin.key` when present,
 * the data directory being TAS_DATA_DIR or ./data), sent as a Bearer header. Errors come
 * back as one `ClientError` per failure: the API's code, message and field, or why the
 * service could not be reached.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_URL = 'http://127.0.0.1:8000';

export interface ClientConfig {
  readonly url: string;
  readonly key: string | null;
  /** Where the key came from, for messages ("TAS_API_KEY", "data/admin.key"). */
  readonly keySource: string | null;
}

export function clientConfig(env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const url = (env.TAS_URL ?? DEFAULT_URL).replace(/\/+$/, '');
  if (env.TAS_API_KEY) return { url, key: env.TAS_API_KEY.trim(), keySource: 'TAS_API_KEY' };
  const file = join(env.TAS_DATA_DIR ?? 'data', 'admin.key');
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (key) return { url, key, keySource: file };
  } catch {
    // no key file: no key
  }
  return { url, key: null, keySource: null };
}

/** A request that failed: the API's error, or the service out of reach (status 0). */
export class ClientError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | null,
    readonly field: string | null,
  ) {
    super(message);
  }

  /** One line naming the code and the field. */
  line(): string {
    return `error${this.code ? ` ${this.code}` : this.status ? ` HTTP ${this.status}` : ''}${this.field ? ` (${this.field})` : ''}: ${this.message}`;
  }
}

export interface Answer<T> {
  readonly status: number;
  readonly body: T;
  readonly etag: string | null;
}

export class TasClient {
  constructor(readonly config: ClientConfig) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.config.key ? { authorization: `Bearer ${this.config.key}` } : {}), ...extra };
  }

  /** Any request; a 304 answers with a null body. Anything but 2xx/304 throws ClientError. */
  async request<T>(method: string, path: string, options: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Answer<T>> {
    let r: Response;
    try {
      r = await fetch(`${this.config.url}${path}`, {
        method,
        headers: this.headers({ ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers }),
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (e) {
      if (options.signal?.aborted) throw e;
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new ClientError(`cannot reach tas at ${this.config.url} (${cause?.code ?? cause?.message ?? (e as Error).message}); is it running (npm start)? set TAS_URL to another address`, 0, null, null);
    }
    if (r.status === 304) return { status: 304, body: null as T, etag: r.headers.get('etag') };
    const text = await r.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = text;
    }
    if (!r.ok) throw this.failure(r.status, body);
    return { status: r.status, body: body as T, etag: r.headers.get('etag') };
  }

  get<T>(path: string, options: { headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Answer<T>> {
    return this.request<T>('GET', path, options);
  }

  post<T>(path: string, body?: unknown, headers?: Record<string, string>): Promise<Answer<T>> {
    return this.request<T>('POST', path, { ...(body !== undefined ? { body } : {}), ...(headers ? { headers } : {}) });
  }

  private failure(status: number, body: unknown): ClientError {
    const error = typeof body === 'object' && body !== null ? (body as { error?: unknown }).error : undefined;
    if (typeof error === 'object' && error !== null) {
      const e = error as { code?: unknown; message?: unknown; field?: unknown };
      let message = typeof e.message === 'string' ? e.message : `HTTP ${status}`;
      if (status === 401) message += this.config.key ? ` (the key from ${this.config.keySource} was refused)` : ' (set TAS_API_KEY, or run where <data>/admin.key is readable)';
      return new ClientError(message, status, typeof e.code === 'string' ? e.code : null, typeof e.field === 'string' ? e.field : null);
    }
    // The inference routes answer the Open Inference Protocol's {"error": "..."}.
    if (typeof error === 'string') return new ClientError(error, status, null, null);
    return new ClientError(typeof body === 'string' && body ? body.slice(0, 300) : `HTTP ${status}`, status, null, null);
  }
}
