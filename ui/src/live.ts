// Hooks that keep a page current: useLive long-polls a resource with its ETag (no
// reload, no fixed-rate polling); useFetch reads one when its inputs change.
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiFailure, getIfChanged, getJson } from './api';
import { delayAfterChange, RETRY_MS, WAIT_S } from './poll-policy';

export interface Live<T> {
  data: T | null;
  error: ApiFailure | Error | null;
  /** Ask now instead of waiting for the server (after an action that changed it). */
  refresh(): void;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });
}

/** Follows `path` (null: nothing) by long polls; keeps the last good answer through errors. */
export function useLive<T>(path: string | null): Live<T> {
  const [state, setState] = useState<{ path: string | null; data: T | null; error: ApiFailure | Error | null }>({ path, data: null, error: null });
  const [kick, setKick] = useState(0);
  const etag = useRef<{ path: string | null; tag: string | null }>({ path: null, tag: null });
  useEffect(() => {
    if (path === null) return;
    const ac = new AbortController();
    if (etag.current.path !== path) etag.current = { path, tag: null };
    void (async () => {
      let sent = 0;
      while (!ac.signal.aborted) {
        sent = performance.now();
        try {
          const url = etag.current.tag ? `${path}${path.includes('?') ? '&' : '?'}wait=${WAIT_S}` : path;
          const r = await getIfChanged<T>(url, etag.current.tag, ac.signal);
          if (ac.signal.aborted) return;
          if (r) {
            etag.current = { path, tag: r.etag };
            setState({ path, data: r.body, error: null });
            await sleep(delayAfterChange(performance.now() - sent), ac.signal);
          }
        } catch (e) {
          if (ac.signal.aborted) return;
          setState((s) => ({ path, data: s.path === path ? s.data : null, error: e as Error }));
          // A resource that does not exist will not appear by waiting.
          if (e instanceof ApiFailure && e.status === 404) return;
          await sleep(RETRY_MS, ac.signal);
        }
      }
    })();
    return () => ac.abort();
  }, [path, kick]);
  const current = state.path === path ? state : { data: null, error: null };
  return { data: current.data, error: current.error, refresh: () => setKick((k) => k + 1) };
}

/** Reads `path` whenever it or `version` changes (null: nothing); keeps the last answer while the next loads. */
export function useFetch<T>(path: string | null, version: unknown = 0): { data: T | null; error: Error | null; reload(): void } {
  const [state, setState] = useState<{ path: string | null; data: T | null; error: Error | null }>({ path: null, data: null, error: null });
  const [kick, setKick] = useState(0);
  useEffect(() => {
    if (path === null) return;
    const ac = new AbortController();
    getJson<T>(path, { signal: ac.signal }).then(
      (data) => !ac.signal.aborted && setState({ path, data, error: null }),
      (error: Error) => !ac.signal.aborted && setState((s) => ({ path, data: s.path === path ? s.data : null, error })),
    );
    return () => ac.abort();
  }, [path, version, kick]);
  const current = state.path === path ? state : { data: null, error: null };
  return { data: current.data, error: current.error, reload: () => setKick((k) => k + 1) };
}

/** Re-renders every `ms` (relative times, ETAs). */
export function useTick(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** `value`, changing at most once every `ms` (the latest value always arrives). */
export function useThrottled<T>(value: T, ms: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    if (Object.is(value, shown)) return;
    const wait = last.current + ms - Date.now();
    const show = () => {
      last.current = Date.now();
      setShown(value);
    };
    if (wait <= 0) return show();
    const t = setTimeout(show, wait);
    return () => clearTimeout(t);
  }, [value, shown, ms]);
  return shown;
}
