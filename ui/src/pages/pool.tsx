// Pool: every worker, its device, state, current job and memory, live.
import { ErrorNote, StatusBadge } from '../components';
import { ago, bytes, shortId } from '../format';
import { useLive, useTick } from '../live';
import type { Pool } from '../types';

export function PoolPage() {
  const live = useLive<Pool>('/v1/pool');
  const now = useTick(2000);
  const pool = live.data;
  return (
    <>
      <h1>Pool</h1>
      <ErrorNote error={live.error} what="Could not load the pool" />
      {pool && (
        <>
          <p role="status">
            {pool.summary.total} workers: {pool.summary.idle} idle, {pool.summary.busy} busy, {pool.summary.offline} offline
          </p>
          <table>
            <thead>
              <tr>
                <th scope="col">Worker</th>
                <th scope="col">Device</th>
                <th scope="col">State</th>
                <th scope="col">Current job</th>
                <th scope="col">Process memory</th>
                <th scope="col">Device memory</th>
                <th scope="col">Backend</th>
                <th scope="col">Last seen</th>
              </tr>
            </thead>
            <tbody>
              {pool.workers.map((w) => (
                <tr key={w.id}>
                  <td class="mono">{w.address}</td>
                  <td>
                    {w.device_kind}
                    {w.device_index !== null ? `:${w.device_index}` : ''}
                    {w.device_name ? ` · ${w.device_name}` : ''}
                  </td>
                  <td>
                    <StatusBadge status={w.state} />
                  </td>
                  <td>{w.current_job_id ? <a href={`#/jobs/${w.current_job_id}`}>{shortId(w.current_job_id)}</a> : '–'}</td>
                  <td class="num">{bytes(w.rss_bytes)}</td>
                  <td class="num">{w.device_memory_mib !== null ? bytes(w.device_memory_mib * 1024 * 1024) : '–'}</td>
                  <td>{w.backend ?? '–'}</td>
                  <td>{ago(w.last_seen_at, now)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {!pool && !live.error && <p class="muted">Loading…</p>}
    </>
  );
}
