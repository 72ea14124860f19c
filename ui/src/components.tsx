// Small pieces shared by the pages.
import type { ComponentChildren } from 'preact';
import { ApiFailure } from './api';
import type { Job } from './types';

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge s-${status}`}>{status}</span>;
}

export function Progress({ job }: { job: Pick<Job, 'progress' | 'status'> }) {
  const { step, total_steps: total } = job.progress;
  const fraction = job.status === 'succeeded' ? 1 : total ? step / total : null;
  const label = total ? `step ${step} of ${total}` : `step ${step}`;
  return (
    <span class="progress">
      <progress max={1} value={fraction ?? undefined} aria-label={label} />
      <span class="muted">{total ? `${step}/${total}` : step > 0 ? String(step) : '–'}</span>
    </span>
  );
}

export function ErrorNote({ error, what }: { error: Error | null; what?: string }) {
  if (!error) return null;
  const field = error instanceof ApiFailure && error.field ? ` (${error.field})` : '';
  return (
    <p class="error" role="alert">
      {what ? `${what}: ` : ''}
      {error.message}
      {field}
    </p>
  );
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  const id = `h-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return (
    <section aria-labelledby={id}>
      <div class="section-head">
        <h2 id={id}>{title}</h2>
        {actions}
      </div>
      {children}
    </section>
  );
}
