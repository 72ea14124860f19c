// Jobs: newest first, filtered by status, a page at a time (the API's cursors), live.
import { useState } from 'preact/hooks';
import { ErrorNote, Progress, StatusBadge } from '../components';
import { ago, num, shortId, time } from '../format';
import { useLive, useTick } from '../live';
import { JOB_STATUSES, type JobPage } from '../types';

const FILTERS: Array<[string, string]> = [
  ['', 'All'],
  ['queued,scheduled,running,retrying', 'Active'],
  ...JOB_STATUSES.map((s): [string, string] => [s, s[0]!.toUpperCase() + s.slice(1)]),
];
const PAGE_SIZES = [25, 50, 100];

export function JobsPage({ query }: { query: URLSearchParams }) {
  const status = query.get('status') ?? '';
  const [size, setSize] = useState(50);
  // Cursors of the pages before this one: the API pages forward; going back pops.
  const [trail, setTrail] = useState<{ key: string; cursors: Array<string | null> }>({ key: '', cursors: [null] });
  const key = `${status}|${size}`;
  const cursors = trail.key === key ? trail.cursors : [null];
  const cursor = cursors[cursors.length - 1] ?? null;
  const params = new URLSearchParams({ limit: String(size) });
  if (status) params.set('status', status);
  if (cursor) params.set('cursor', cursor);
  const live = useLive<JobPage>(`/v1/jobs?${params}`);
  const now = useTick(5000);
  const page = live.data;
  const setFilter = (s: string) => {
    location.hash = s ? `#/jobs?status=${encodeURIComponent(s)}` : '#/jobs';
  };
  const pageNo = cursors.length;
  const first = (pageNo - 1) * size + 1;

  return (
    <>
      <div class="section-head">
        <h1>Jobs</h1>
        <a class="button" href="#/submit">
          Submit a job
        </a>
      </div>
      <div class="toolbar">
        <label>
          Status{' '}
          <select value={status} onChange={(e) => setFilter((e.target as HTMLSelectElement).value)}>
            {FILTERS.map(([v, label]) => (
              <option value={v}>{label}</option>
            ))}
          </select>
        </label>
        <label>
          Per page{' '}
          <select value={String(size)} onChange={(e) => setSize(Number((e.target as HTMLSelectElement).value))}>
            {PAGE_SIZES.map((n) => (
              <option value={String(n)}>{n}</option>
            ))}
          </select>
        </label>
        <span class="spacer" />
        <nav class="pager" aria-label="Pages">
          <button type="button" disabled={pageNo === 1} onClick={() => setTrail({ key, cursors: [null] })}>
            Newest
          </button>
          <button type="button" disabled={pageNo === 1} onClick={() => setTrail({ key, cursors: cursors.slice(0, -1) })}>
            Newer
          </button>
          <span aria-live="polite">
            Page {pageNo}
            {page && page.jobs.length > 0 ? ` · jobs ${first}–${first + page.jobs.length - 1}` : ''}
          </span>
          <button type="button" disabled={!page?.next_cursor} onClick={() => page?.next_cursor && setTrail({ key, cursors: [...cursors, page.next_cursor] })}>
            Older
          </button>
        </nav>
      </div>
      <ErrorNote error={live.error} what="Could not load the jobs" />
      {page && page.jobs.length === 0 && <p class="empty">{status ? `No ${status.includes(',') ? 'active' : status} jobs.` : 'No jobs yet. Submit one.'}</p>}
      {page && page.jobs.length > 0 && (
        <table class="jobs">
          <thead>
            <tr>
              <th scope="col">Job</th>
              <th scope="col">Status</th>
              <th scope="col">Progress</th>
              <th scope="col">Loss</th>
              <th scope="col">Workers</th>
              <th scope="col">Model</th>
              <th scope="col">Attempts</th>
              <th scope="col">Created</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {page.jobs.map((j) => (
              <tr key={j.id}>
                <td>
                  <a href={`#/jobs/${j.id}`}>{j.name}</a> <span class="muted mono">{shortId(j.id)}</span>
                </td>
                <td>
                  <StatusBadge status={j.status} />
                </td>
                <td>
                  <Progress job={j} />
                </td>
                <td class="num">{num(j.latest.loss)}</td>
                <td class="num" title={j.devices.map((d) => `${d.worker} (${d.device_kind})`).join(', ')}>
                  {j.workers}
                  {j.devices.length > 0 && j.status === 'running' ? ` · ${j.devices[0]!.device_kind}` : ''}
                </td>
                <td>{j.model ? <a href={`#/models/${encodeURIComponent(j.model.name)}`}>{`${j.model.name} v${j.model.version}`}</a> : '–'}</td>
                <td class="num">{j.attempts}</td>
                <td title={j.created_at}>{time(j.created_at)}</td>
                <td title={j.updated_at}>{ago(j.updated_at, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {!page && !live.error && <p class="muted">Loading…</p>}
    </>
  );
}
