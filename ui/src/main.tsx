// The tas dashboard: jobs, a job's progress and curves, submission, the pool, models.
// Pages are picked by the URL's hash (#/jobs/ID), so the server serves one index.html.
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { apiKey, getJson, onKeyRequest, setApiKey } from './api';
import { JobPage } from './pages/job';
import { JobsPage } from './pages/jobs';
import { ModelsPage } from './pages/models';
import { PoolPage } from './pages/pool';
import { SubmitPage } from './pages/submit';

export interface Route {
  page: 'jobs' | 'job' | 'submit' | 'pool' | 'models';
  id: string | null;
  query: URLSearchParams;
}

export function parseRoute(hash: string): Route {
  const [path = '', q = ''] = hash.replace(/^#\/?/, '').split('?');
  const [page = '', ...rest] = path.split('/');
  const id = rest.length > 0 ? decodeURIComponent(rest.join('/')) : null;
  const query = new URLSearchParams(q);
  if (page === 'jobs' && id) return { page: 'job', id, query };
  if (page === 'submit' || page === 'pool' || page === 'models') return { page, id, query };
  return { page: 'jobs', id: null, query };
}

function useRoute(): Route {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return parseRoute(hash);
}

/** Asks for an API key when the service answered 401; the key stays in this tab only. */
function KeyDialog() {
  const [asking, setAsking] = useState<{ reason: string } | null>(null);
  const dialog = useRef<HTMLDialogElement>(null);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => onKeyRequest((on, reason) => setAsking(on ? { reason: reason ?? '' } : null)), []);
  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (asking && !d.open) {
      d.showModal();
      input.current?.focus();
    } else if (!asking && d.open) d.close();
  }, [asking]);
  return (
    <dialog ref={dialog} aria-labelledby="key-title" onCancel={(e) => e.preventDefault()}>
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          const key = input.current?.value.trim();
          if (key) setApiKey(key);
        }}
      >
        <h2 id="key-title">API key</h2>
        <p>{asking?.reason}</p>
        <p class="muted">The key is kept in this browser tab only (session storage) and sent as a Bearer token with every request.</p>
        <label>
          API key
          <input ref={input} type="password" name="key" autocomplete="off" required />
        </label>
        <div class="actions">
          <button type="submit">Use key</button>
        </div>
      </form>
    </dialog>
  );
}

function Who() {
  const [key, setKey] = useState(apiKey());
  const [who, setWho] = useState<string | null>(null);
  useEffect(() => onKeyRequest(() => setKey(apiKey())), []);
  useEffect(() => {
    if (!key) return setWho(null);
    // Who the key belongs to, where the service says (older services have no such route).
    getJson<{ name?: string; tenant?: string; role?: string }>('/v1/auth/whoami').then(
      (w) => setWho([w.name, w.tenant, w.role].filter(Boolean).join(' · ') || 'signed in'),
      () => setWho('key set'),
    );
  }, [key]);
  if (!key) return null;
  return (
    <span class="who">
      {who}{' '}
      <button
        type="button"
        class="link"
        onClick={() => {
          setApiKey(null);
          setKey(null);
          location.reload();
        }}
      >
        Forget key
      </button>
    </span>
  );
}

function App() {
  const route = useRoute();
  const nav = [
    ['jobs', 'Jobs', '#/jobs'],
    ['submit', 'Submit', '#/submit'],
    ['pool', 'Pool', '#/pool'],
    ['models', 'Models', '#/models'],
  ] as const;
  const current = route.page === 'job' ? 'jobs' : route.page;
  useEffect(() => {
    document.title = `tas · ${route.page === 'job' ? 'job' : route.page}`;
  }, [route.page]);
  return (
    <>
      <header class="top">
        <a class="brand" href="#/jobs">
          tas
        </a>
        <nav aria-label="Main">
          {nav.map(([page, label, href]) => (
            <a href={href} aria-current={current === page ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="spacer" />
        <Who />
        <a href="/docs" class="muted">
          API
        </a>
      </header>
      <main>
        {route.page === 'jobs' && <JobsPage query={route.query} />}
        {route.page === 'job' && route.id && <JobPage id={route.id} />}
        {route.page === 'submit' && <SubmitPage />}
        {route.page === 'pool' && <PoolPage />}
        {route.page === 'models' && <ModelsPage name={route.id} />}
      </main>
      <KeyDialog />
    </>
  );
}

render(<App />, document.getElementById('app')!);
