// The dashboard's REST client: the public API, same origin, with the API key (when the
// service asks for one) as a Bearer header on every call. A 401 asks the person for a key
// (kept in sessionStorage, for this tab only) and retries the call with it.

const KEY_STORAGE = 'tas.apiKey';

export interface ApiErrorBody {
  code: string;
  message: string;
  field?: string;
}

/** An answer other than 2xx/304, with the API's error when it sent one. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly error: ApiErrorBody | null,
    message: string,
  ) {
    super(message);
  }
  get field(): string | undefined {
    return this.error?.field;
  }
}

type KeyListener = (asking: boolean, reason: string | null) => void;
const listeners = new Set<KeyListener>();
let pendingKey: { promise: Promise<void>; resolve: () => void; reason: string } | null = null;

export function apiKey(): string | null {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null;
  }
}

/** Stores the key for this tab and resumes the calls that waited for one. */
export function setApiKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  if (key && pendingKey) {
    const p = pendingKey;
    pendingKey = null;
    p.resolve();
  }
  for (const l of listeners) l(pendingKey !== null, pendingKey?.reason ?? null);
}

/** Hear when the dashboard needs a key (the key dialog). */
export function onKeyRequest(listener: KeyListener): () => void {
  listeners.add(listener);
  listener(pendingKey !== null, pendingKey?.reason ?? null);
  return () => listeners.delete(listener);
}

/** Resolves once a person entered a key. */
function askForKey(reason: string): Promise<void> {
  if (!pendingKey) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    pendingKey = { promise, resolve, reason };
    for (const l of listeners) l(true, reason);
  }
  return pendingKey.promise;
}

export function authHeaders(): Record<string, string> {
  const key = apiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function errorOf(r: Response): Promise<ApiFailure> {
  const text = await r.text().catch(() => '');
  let error: ApiErrorBody | null = null;
  try {
    const body = JSON.parse(text) as { error?: unknown };
    if (typeof body.error === 'object' && body.error !== null) error = body.error as ApiErrorBody;
    // The inference routes answer the Open Inference Protocol's {"error": "..."}.
    else if (typeof body.error === 'string') error = { code: `HTTP_${r.status}`, message: body.error };
  } catch {
    // not JSON
  }
  return new ApiFailure(r.status, error, error ? error.message : `${r.status} ${r.statusText}${text ? `: ${text.slice(0, 200)}` : ''}`);
}

/** fetch with the key; a 401 waits for a key and tries again. */
export async function call(path: string, init: RequestInit = {}): Promise<Response> {
  for (;;) {
    const r = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers as Record<string, string> | undefined) } });
    if (r.status !== 401) return r;
    const failure = await errorOf(r);
    await askForKey(apiKey() ? `The key was refused (${failure.message}).` : 'This service needs an API key.');
  }
}

export async function getJson<T>(path: string, init: RequestInit = {}): Promise<T> {
  const r = await call(path, init);
  if (!r.ok) throw await errorOf(r);
  return (await r.json()) as T;
}

export async function sendJson<T>(method: 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
  const r = await call(path, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!r.ok) throw await errorOf(r);
  const text = await r.text();
  return (text ? JSON.parse(text) : null) as T;
}

/** One conditional GET: 304 gives `null` (nothing new). */
export async function getIfChanged<T>(path: string, etag: string | null, signal: AbortSignal): Promise<{ body: T; etag: string | null } | null> {
  const r = await call(path, { signal, headers: etag ? { 'if-none-match': etag } : {} });
  if (r.status === 304) return null;
  if (!r.ok) throw await errorOf(r);
  return { body: (await r.json()) as T, etag: r.headers.get('etag') };
}

/**
 * An upload with progress (fetch reports none): the file is the request body, as the
 * dataset API takes it. A 401 asks for a key and sends it again.
 */
export function upload<T>(path: string, file: Blob, onProgress: (sent: number, total: number) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader('content-type', file.type || 'application/octet-stream');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiFailure(0, null, 'the upload failed: the connection was lost'));
    xhr.onload = async () => {
      const r = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      if (xhr.status === 401) {
        const failure = await errorOf(r);
        await askForKey(apiKey() ? `The key was refused (${failure.message}).` : 'This service needs an API key.');
        upload<T>(path, file, onProgress).then(resolve, reject);
      } else if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText) as T);
      else reject(await errorOf(r));
    };
    xhr.send(file);
  });
}

/** Downloads a file through the API (with the key), saving it under its own name. */
export async function download(path: string, fallbackName: string): Promise<void> {
  const r = await call(path);
  if (!r.ok) throw await errorOf(r);
  const name = /filename="([^"]+)"/.exec(r.headers.get('content-disposition') ?? '')?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
