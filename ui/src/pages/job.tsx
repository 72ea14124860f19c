// One job: status and its timeline, progress with an ETA, live curves (loss, accuracy,
// learning rate, samples/s), the per-step time split, each BN layer's running statistics,
// the ranks and their devices, the log, cancel, and the model it published.
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { download, getJson, sendJson } from '../api';
import { Chart, COLORS, markerPlugin } from '../chart';
import { ErrorNote, Progress, Section, StatusBadge } from '../components';
import { ago, duration, num, pct, time } from '../format';
import { useFetch, useLive, useThrottled, useTick } from '../live';
import { TERMINAL, type Job, type LogLine, type Metrics } from '../types';

/** Points per curve asked of the API (it keeps each window's extremes). */
const MAX_POINTS = 600;

export function JobPage({ id }: { id: string }) {
  const live = useLive<Job>(`/v1/jobs/${encodeURIComponent(id)}`);
  const job = live.data;
  // Curves and log follow the job's updates, at most once a second.
  const version = useThrottled(job?.updated_at ?? null, 1000);
  const metrics = useFetch<Metrics>(job ? `/v1/jobs/${encodeURIComponent(id)}/metrics?max_points=${MAX_POINTS}` : null, version);
  if (!job) {
    return (
      <>
        <h1>Job {id}</h1>
        <ErrorNote error={live.error} what="Could not load the job" />
        {!live.error && <p class="muted">Loading…</p>}
      </>
    );
  }
  return (
    <>
      <div class="section-head">
        <h1>
          {job.name} <StatusBadge status={job.status} />
        </h1>
        <CancelButton job={job} onCancelled={live.refresh} />
      </div>
      <p class="muted mono">{job.id}</p>
      <ErrorNote error={live.error} what="Lost contact (retrying)" />
      {job.error && (
        <p class="error" role="status">
          {job.error}
        </p>
      )}
      <Overview job={job} />
      <Curves metrics={metrics.data} />
      <TimeSplit metrics={metrics.data} />
      <BnLayers metrics={metrics.data} />
      <ErrorNote error={metrics.error} what="Could not load the metrics" />
      <div class="columns">
        <Timeline job={job} />
        <Devices job={job} />
      </div>
      <LogTail id={job.id} version={version} />
    </>
  );
}

function CancelButton({ job, onCancelled }: { job: Job; onCancelled: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  if (TERMINAL.has(job.status)) return null;
  const cancel = async () => {
    setBusy(true);
    setError(null);
    try {
      await sendJson('POST', `/v1/jobs/${encodeURIComponent(job.id)}/cancel`);
      dialog.current?.close();
      onCancelled();
    } catch (e) {
      setError(e as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" class="danger" onClick={() => dialog.current?.showModal()}>
        Cancel job
      </button>
      <dialog ref={dialog} aria-labelledby="cancel-title">
        <h2 id="cancel-title">Cancel {job.name}?</h2>
        <p>Every rank stops within seconds and its workers are freed. A cancelled job cannot be resumed.</p>
        <ErrorNote error={error} />
        <div class="actions">
          <button type="button" onClick={() => dialog.current?.close()}>
            Keep it running
          </button>
          <button type="button" class="danger" disabled={busy} onClick={() => void cancel()}>
            Yes, cancel it
          </button>
        </div>
      </dialog>
    </>
  );
}

/** Steps per second over the last minute of updates seen here, else since the job started. */
function useRate(job: Job): number | null {
  const seen = useRef<Array<{ at: number; step: number }>>([]);
  const at = Date.parse(job.updated_at);
  const s = seen.current;
  if (s.length === 0 || s[s.length - 1]!.at !== at) {
    if (s.length > 0 && job.progress.step < s[s.length - 1]!.step) s.length = 0; // restarted from a checkpoint
    s.push({ at, step: job.progress.step });
    while (s.length > 2 && at - s[0]!.at > 60_000) s.shift();
  }
  if (s.length >= 2) {
    const a = s[0]!;
    const b = s[s.length - 1]!;
    if (b.at > a.at && b.step > a.step) return ((b.step - a.step) * 1000) / (b.at - a.at);
  }
  if (job.started_at && job.progress.step > 0) {
    const ms = at - Date.parse(job.started_at);
    if (ms > 0) return (job.progress.step * 1000) / ms;
  }
  return null;
}

function Overview({ job }: { job: Job }) {
  const now = useTick(1000);
  const rate = useRate(job);
  const total = job.progress.total_steps;
  const left = total !== null ? total - job.progress.step : null;
  const eta = job.status === 'running' && rate && left !== null ? duration((left / rate) * 1000 - (now - Date.parse(job.updated_at))) : null;
  const elapsed = job.started_at ? (job.finished_at ? Date.parse(job.finished_at) : now) - Date.parse(job.started_at) : null;
  return (
    <Section title="Progress">
      <div class="progress-big">
        <Progress job={job} />
      </div>
      <dl class="facts">
        <div>
          <dt>Step</dt>
          <dd>{total !== null ? `${job.progress.step} / ${total}` : job.progress.step}</dd>
        </div>
        <div>
          <dt>Epoch</dt>
          <dd>{job.progress.epoch + (job.status === 'running' || job.progress.step > 0 ? 1 : 0)}</dd>
        </div>
        <div>
          <dt>Loss</dt>
          <dd>{num(job.latest.loss)}</dd>
        </div>
        <div>
          <dt>Accuracy</dt>
          <dd>{pct(job.latest.accuracy)}</dd>
        </div>
        <div>
          <dt>ETA</dt>
          <dd>{eta ?? (TERMINAL.has(job.status) ? 'done' : '–')}</dd>
        </div>
        <div>
          <dt>Elapsed</dt>
          <dd>{elapsed !== null ? duration(elapsed) : '–'}</dd>
        </div>
        <div>
          <dt>Workers</dt>
          <dd>{job.workers}</dd>
        </div>
        <div>
          <dt>Attempts</dt>
          <dd>
            {job.attempts} (max restarts {job.max_restarts})
          </dd>
        </div>
        <div>
          <dt>Backend</dt>
          <dd>{job.backend ?? '–'}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd title={job.created_at}>{time(job.created_at)}</dd>
        </div>
        <div>
          <dt>Updated</dt>
          <dd title={job.updated_at}>{ago(job.updated_at, now)}</dd>
        </div>
        <div>
          <dt>Model</dt>
          <dd>{job.model ? <ModelLinks model={job.model} /> : TERMINAL.has(job.status) ? 'none' : 'when it succeeds'}</dd>
        </div>
      </dl>
      {job.waiting_for && (
        <p class="muted" role="status">
          Waiting for workers: {job.waiting_for.reason} ({job.waiting_for.free_workers} free of {job.waiting_for.online_workers} online, {job.waiting_for.requested_workers} needed)
        </p>
      )}
    </Section>
  );
}

function ModelLinks({ model }: { model: { name: string; version: number } }) {
  const [error, setError] = useState<Error | null>(null);
  const base = `/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}`;
  const get = (path: string, name: string) => (e: Event) => {
    e.preventDefault();
    setError(null);
    download(path, name).catch((err: Error) => setError(err));
  };
  return (
    <span>
      <a href={`#/models/${encodeURIComponent(model.name)}`}>
        {model.name} v{model.version}
      </a>{' '}
      · <a href={`${base}/artifact`} onClick={get(`${base}/artifact`, `${model.name}-v${model.version}.safetensors`)}>artifact</a> ·{' '}
      <a href={`${base}/onnx`} onClick={get(`${base}/onnx`, `${model.name}-v${model.version}.onnx`)}>
        ONNX
      </a>
      <ErrorNote error={error} />
    </span>
  );
}

const axis = (label: string, side?: number): uPlot.Axis => ({ label, size: 56, ...(side !== undefined ? { side } : {}), stroke: '#475569', grid: { stroke: '#e2e8f0' }, ticks: { stroke: '#e2e8f0' } });
const xAxis: uPlot.Axis = { label: 'step', stroke: '#475569', grid: { stroke: '#e2e8f0' }, ticks: { stroke: '#e2e8f0' } };
const fmt = (_: uPlot, v: number | null) => (v === null ? '–' : num(v));

function Curves({ metrics }: { metrics: Metrics | null }) {
  const data = useMemo(() => {
    const p = metrics?.points ?? [];
    return {
      loss: [p.map((x) => x.step), p.map((x) => x.loss), p.map((x) => x.accuracy)] as uPlot.AlignedData,
      lr: [p.map((x) => x.step), p.map((x) => x.lr)] as uPlot.AlignedData,
      speed: [p.map((x) => x.step), p.map((x) => x.samples_per_sec)] as uPlot.AlignedData,
    };
  }, [metrics]);
  const last = metrics?.points[metrics.points.length - 1];
  return (
    <Section title="Curves">
      <div class="grid">
        <Chart
          title="Loss and accuracy"
          caption={last ? <span class="muted">loss {num(last.loss)} · accuracy {pct(last.accuracy)}</span> : null}
          data={data.loss}
          options={{
            scales: { x: { time: false }, loss: { auto: true }, acc: { range: [0, 1] } },
            axes: [xAxis, { ...axis('loss'), scale: 'loss' }, { ...axis('accuracy', 1), scale: 'acc', grid: { show: false } }],
            series: [{ label: 'step' }, { label: 'loss', stroke: COLORS.loss, width: 1.5, scale: 'loss', value: fmt }, { label: 'accuracy', stroke: COLORS.accuracy, width: 1.5, scale: 'acc', value: fmt }],
          }}
        />
        <Chart
          title="Learning rate"
          caption={last ? <span class="muted">{num(last.lr)}</span> : null}
          data={data.lr}
          options={{ scales: { x: { time: false } }, axes: [xAxis, axis('lr')], series: [{ label: 'step' }, { label: 'learning rate', stroke: COLORS.lr, width: 1.5, value: fmt }] }}
        />
        <Chart
          title="Throughput"
          caption={last ? <span class="muted">{num(last.samples_per_sec, 3)} samples/s</span> : null}
          data={data.speed}
          options={{ scales: { x: { time: false } }, axes: [xAxis, axis('samples/s')], series: [{ label: 'step' }, { label: 'samples/s', stroke: COLORS.speed, width: 1.5, value: fmt }] }}
        />
      </div>
    </Section>
  );
}

/** The time split stacked: each band is one part of a step, drawn on top of the parts below it. */
function TimeSplit({ metrics }: { metrics: Metrics | null }) {
  const parts = [
    ['compute', COLORS.compute, (t: Metrics['points'][number]['time_ms']) => t.compute],
    ['BN sync forward', COLORS.bnFwd, (t: Metrics['points'][number]['time_ms']) => t.bn_forward_sync],
    ['BN sync backward', COLORS.bnBwd, (t: Metrics['points'][number]['time_ms']) => t.bn_backward_sync],
    ['gradient sync', COLORS.grad, (t: Metrics['points'][number]['time_ms']) => t.grad_sync],
  ] as const;
  const { data, raw } = useMemo(() => {
    const p = (metrics?.points ?? []).filter((x) => x.time_ms.compute !== null);
    const raw = parts.map(([, , f]) => p.map((x) => f(x.time_ms) ?? 0));
    // Cumulative sums, top band first so each lower one is drawn over it.
    const cumulative = raw.map((_, i) => p.map((__, j) => raw.slice(0, i + 1).reduce((a, r) => a + r[j]!, 0)));
    return { data: [p.map((x) => x.step), ...cumulative.reverse()] as uPlot.AlignedData, raw: [...raw].reverse() };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [metrics]);
  const split = metrics?.time_split;
  const total = split ? split.compute_ms + split.bn_forward_sync_ms + split.bn_backward_sync_ms + split.grad_sync_ms : 0;
  return (
    <Section title="Time per step">
      {split ? (
        <p>
          Mean step {num(total, 3)} ms: compute {num(split.compute_ms, 3)} ms, BN sync forward {num(split.bn_forward_sync_ms, 3)} ms, BN sync backward {num(split.bn_backward_sync_ms, 3)} ms, gradient sync {num(split.grad_sync_ms, 3)} ms.{' '}
          <strong>The per-layer BN barriers take {pct(split.bn_sync_fraction)} of a step.</strong>
        </p>
      ) : (
        <p class="muted">No steps timed yet.</p>
      )}
      <Chart
        title="Time split per step (ms, stacked)"
        data={data}
        height={220}
        options={{
          scales: { x: { time: false } },
          axes: [xAxis, axis('ms')],
          series: [
            { label: 'step' },
            ...[...parts].reverse().map(([label, color], i) => ({
              label,
              stroke: color,
              fill: color,
              width: 1,
              // The legend shows the part itself, not the running sum.
              value: (_: uPlot, _v: number | null, _s: number, idx: number | null) => (idx === null ? '–' : `${num(raw[i]?.[idx] ?? null, 3)} ms`),
            })),
          ],
        }}
      />
    </Section>
  );
}

type BnLayer = Metrics['bn_layers'][number];

function bnData(l: BnLayer, stat: 'mean' | 'var', recalibratedAt: number | null): uPlot.AlignedData {
  const p = l.points;
  const steps = p.map((x) => x.step);
  const final = l.final?.[stat].mean ?? null;
  // The recalibrated value is shown as one point at the last step.
  const finalSeries = p.map((x, i) => (i === p.length - 1 && recalibratedAt !== null ? final : null));
  return [steps, p.map((x) => x[stat].min), p.map((x) => x[stat].max), p.map((x) => x[stat].mean), finalSeries];
}

function bnOptions(stat: 'mean' | 'var', recalibration: Metrics['recalibration'], small: boolean): Omit<uPlot.Options, 'width' | 'height'> {
  const color = stat === 'mean' ? COLORS.accuracy : COLORS.lr;
  const name = stat === 'mean' ? 'running mean' : 'running var';
  return {
    scales: { x: { time: false } },
    legend: { show: !small },
    axes: small ? [{ ...xAxis, label: undefined, size: 24 }, { ...axis(''), size: 44, label: undefined }] : [xAxis, axis(name)],
    series: [
      { label: 'step' },
      { label: 'channel min', stroke: color, width: 0, value: fmt },
      { label: 'channel max', stroke: color, width: 0, value: fmt },
      { label: 'channel mean', stroke: color, width: 1.5, value: fmt },
      { label: recalibration ? `after recalibration (${recalibration.mode})` : 'after recalibration', stroke: COLORS.final, width: 0, points: { show: true, size: 9, fill: COLORS.final }, value: fmt },
    ],
    bands: [{ series: [2, 1], fill: `${color}33` }],
    plugins: recalibration ? [markerPlugin(recalibration.after_step, small ? 'recal.' : `recalibrated (${recalibration.mode})`)] : [],
  };
}

/** Each BN layer's running statistics over the steps, channels summarised (mean, min–max band); small multiples. */
function BnLayers({ metrics }: { metrics: Metrics | null }) {
  const [open, setOpen] = useState<string | null>(null);
  const layers = metrics?.bn_layers ?? [];
  const recal = metrics?.recalibration ?? null;
  const recalAt = recal?.after_step ?? null;
  const detail = layers.find((l) => l.layer === open) ?? null;
  return (
    <Section title="BatchNorm running statistics">
      {layers.length === 0 ? (
        <p class="muted">No BatchNorm statistics recorded yet.</p>
      ) : (
        <>
          <p class="muted">
            Per layer over the steps: the channels' mean as a line, their min–max as a band.
            {recal ? ` Recalibrated after training (${recal.mode}): the final statistics are the marked points.` : ''}
          </p>
          <div class="multiples">
            {layers.map((l) => (
              <div class="multiple" key={l.layer}>
                <button type="button" class="link" aria-expanded={open === l.layer} aria-controls="bn-detail" onClick={() => setOpen(open === l.layer ? null : l.layer)}>
                  {`BN ${l.layer}`} · {l.channels} channels
                </button>
                <Chart title={`BN ${l.layer} running mean`} data={bnData(l, 'mean', recalAt)} options={bnOptions('mean', recal, true)} height={90} />
                <Chart title={`BN ${l.layer} running var`} data={bnData(l, 'var', recalAt)} options={bnOptions('var', recal, true)} height={90} />
              </div>
            ))}
          </div>
          {detail && <BnDetail layer={detail} recalibration={recal} />}
        </>
      )}
    </Section>
  );
}

function BnDetail({ layer, recalibration }: { layer: BnLayer; recalibration: Metrics['recalibration'] }) {
  const rows: Array<[string, BnLayer['last']]> = [
    ['at the last recorded step', layer.last],
    [recalibration ? `after recalibration (${recalibration.mode})` : 'in the published model', layer.final],
  ];
  return (
    <div id="bn-detail" role="region" aria-label={`BN ${layer.layer} statistics`} class="bn-detail">
      <h3>
        BN {layer.layer} statistics ({layer.channels} channels)
      </h3>
      <div class="grid two">
        <Chart title={`BN ${layer.layer} running mean over steps`} data={bnData(layer, 'mean', recalibration?.after_step ?? null)} options={bnOptions('mean', recalibration, false)} />
        <Chart title={`BN ${layer.layer} running variance over steps`} data={bnData(layer, 'var', recalibration?.after_step ?? null)} options={bnOptions('var', recalibration, false)} />
      </div>
      <table>
        <caption>Running statistics over the channels</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            <th scope="col">mean: mean</th>
            <th scope="col">mean: min</th>
            <th scope="col">mean: max</th>
            <th scope="col">mean: L2</th>
            <th scope="col">var: mean</th>
            <th scope="col">var: min</th>
            <th scope="col">var: max</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(([when, s]) => (
            <tr>
              <th scope="row">{when}</th>
              {s ? (
                <>
                  <td class="num">{num(s.mean.mean)}</td>
                  <td class="num">{num(s.mean.min)}</td>
                  <td class="num">{num(s.mean.max)}</td>
                  <td class="num">{num(s.mean.l2)}</td>
                  <td class="num">{num(s.var.mean)}</td>
                  <td class="num">{num(s.var.min)}</td>
                  <td class="num">{num(s.var.max)}</td>
                </>
              ) : (
                <td colSpan={7} class="muted">
                  not yet
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Timeline({ job }: { job: Job }) {
  return (
    <Section title="Timeline">
      <ol class="timeline">
        {job.transitions.map((t) => (
          <li>
            <time dateTime={t.at}>{time(t.at)}</time> <StatusBadge status={t.to} />
            {t.reason ? <span class="muted"> {t.reason}</span> : null}
          </li>
        ))}
      </ol>
      {job.attempt_history.length > 0 && (
        <table>
          <caption>Attempts</caption>
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Status</th>
              <th scope="col">Workers</th>
              <th scope="col">Started</th>
              <th scope="col">Ended</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {job.attempt_history.map((a) => (
              <tr>
                <td class="num">{a.number}</td>
                <td>
                  <StatusBadge status={a.status} />
                </td>
                <td class="mono">{a.workers.join(', ')}</td>
                <td>{time(a.started_at)}</td>
                <td>{time(a.ended_at)}</td>
                <td>{a.error ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

function Devices({ job }: { job: Job }) {
  return (
    <Section title="Ranks and devices">
      {job.devices.length === 0 ? (
        <p class="muted">No workers yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Rank</th>
              <th scope="col">Worker</th>
              <th scope="col">Device</th>
              <th scope="col">Backend</th>
            </tr>
          </thead>
          <tbody>
            {job.devices.map((d, rank) => (
              <tr>
                <td class="num">{rank}</td>
                <td class="mono">{d.worker}</td>
                <td>
                  {d.device_kind}
                  {d.device_name ? ` · ${d.device_name}` : ''}
                </td>
                <td>{d.backend ?? '–'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Section>
  );
}

/** The job's log, oldest first, followed as the job changes. */
function LogTail({ id, version }: { id: string; version: string | null }) {
  const [lines, setLines] = useState<LogLine[]>([]);
  const [error, setError] = useState<Error | null>(null);
  const after = useRef<string | null>(null);
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    // A newer version's read replaces this one (which then applies nothing).
    let cancelled = false;
    void (async () => {
      try {
        // Read everything new (pages of 500).
        for (;;) {
          const q = new URLSearchParams({ limit: '500', ...(after.current ? { after: after.current } : {}) });
          const r = await getJson<{ lines: LogLine[]; next_after: string | null }>(`/v1/jobs/${encodeURIComponent(id)}/logs?${q}`);
          if (cancelled) return;
          after.current = r.next_after;
          if (r.lines.length > 0) setLines((old) => [...old, ...r.lines].slice(-2000));
          setError(null);
          if (r.lines.length < 500) break;
        }
      } catch (e) {
        if (!cancelled) setError(e as Error);
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [id, version]);
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines]);
  return (
    <Section title="Log">
      <ErrorNote error={error} what="Could not load the log" />
      <pre ref={box} class="log" role="log" aria-label="Job log" tabIndex={0}>
        {lines.length === 0
          ? 'No log lines yet.'
          : lines.map((l) => (
              <div class={`log-${l.level}`}>
                <span class="muted">{time(l.at)}</span> {l.level === 'info' ? '' : `${l.level.toUpperCase()} `}
                {l.message}
              </div>
            ))}
      </pre>
    </Section>
  );
}
