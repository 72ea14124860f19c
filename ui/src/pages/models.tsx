// Models: every model with its versions' metadata and evaluation, served or not
// (load/unload), and a form that sends an inference request and shows the answer.
import { useEffect, useState } from 'preact/hooks';
import { download, getJson, sendJson } from '../api';
import { ErrorNote, Section } from '../components';
import { bytes, num, shortId, time } from '../format';
import { useFetch } from '../live';
import type { InferenceMetadata, InferResponse, ModelSummary, ModelVersion } from '../types';

/** Versions shown per model, newest first. */
const VERSIONS_SHOWN = 20;

export function ModelsPage({ name }: { name: string | null }) {
  const list = useFetch<{ models: ModelSummary[] }>('/v1/models');
  const [error, setError] = useState<Error | null>(null);
  const toggle = async (m: ModelSummary) => {
    setError(null);
    try {
      await sendJson('POST', `/v2/repository/models/${encodeURIComponent(m.name)}/${m.serving.loaded ? 'unload' : 'load'}`);
      list.reload();
    } catch (e) {
      setError(e as Error);
    }
  };
  const selected = list.data?.models.find((m) => m.name === name) ?? null;
  return (
    <>
      <h1>Models</h1>
      <ErrorNote error={list.error} what="Could not load the models" />
      <ErrorNote error={error} />
      {list.data && list.data.models.length === 0 && <p class="empty">No models yet: a job publishes one when it succeeds.</p>}
      {list.data && list.data.models.length > 0 && (
        <table>
          <thead>
            <tr>
              <th scope="col">Model</th>
              <th scope="col">Latest version</th>
              <th scope="col">Versions</th>
              <th scope="col">Served</th>
              <th scope="col">Batching</th>
              <th scope="col" />
            </tr>
          </thead>
          <tbody>
            {list.data.models.map((m) => (
              <tr key={m.name} aria-current={m.name === name ? 'true' : undefined}>
                <td>
                  <a href={`#/models/${encodeURIComponent(m.name)}`}>{m.name}</a>
                </td>
                <td class="num">{m.latest_version ?? '–'}</td>
                <td class="num">{m.versions}</td>
                <td>{m.serving.loaded ? 'served' : 'not served'}</td>
                <td class="muted">
                  up to {m.serving.max_batch_size} rows, {m.serving.max_queue_delay_microseconds} µs delay
                </td>
                <td>
                  <button type="button" onClick={() => void toggle(m)} aria-label={`${m.serving.loaded ? 'Unload' : 'Load'} ${m.name}`}>
                    {m.serving.loaded ? 'Unload' : 'Load'}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {selected && <ModelDetail model={selected} />}
      {name && list.data && !selected && <p class="error">No model named {name}.</p>}
    </>
  );
}

function ModelDetail({ model }: { model: ModelSummary }) {
  const [versions, setVersions] = useState<ModelVersion[] | null>(null);
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    let cancelled = false;
    const latest = model.latest_version ?? 0;
    const numbers = Array.from({ length: Math.min(VERSIONS_SHOWN, latest) }, (_, i) => latest - i);
    Promise.all(numbers.map((v) => getJson<ModelVersion>(`/v1/models/${encodeURIComponent(model.name)}/versions/${v}`).catch(() => null))).then(
      (vs) => !cancelled && setVersions(vs.filter((v): v is ModelVersion => v !== null)),
      (e: Error) => !cancelled && setError(e),
    );
    return () => {
      cancelled = true;
    };
  }, [model.name, model.latest_version]);
  return (
    <>
      <Section title={`${model.name}: versions`}>
        <ErrorNote error={error} />
        {versions && (
          <table>
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Created</th>
                <th scope="col">Job</th>
                <th scope="col">Evaluation</th>
                <th scope="col">Recalibration</th>
                <th scope="col">Steps</th>
                <th scope="col">Backend</th>
                <th scope="col">Files</th>
              </tr>
            </thead>
            <tbody>
              {versions.map((v) => (
                <tr key={v.version}>
                  <td class="num">{v.version}</td>
                  <td>{time(v.created_at)}</td>
                  <td>{v.job_id ? <a href={`#/jobs/${v.job_id}`}>{shortId(v.job_id)}</a> : '–'}</td>
                  <td>{evaluation(v.metadata.evaluation)}</td>
                  <td>{v.metadata.recalibration?.mode ?? 'none'}</td>
                  <td class="num">{v.metadata.global_steps ?? '–'}</td>
                  <td>{v.metadata.backend ?? '–'}</td>
                  <td>
                    <Downloads version={v} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Section>
      {model.serving.loaded ? <InferForm model={model.name} versions={versions?.map((v) => v.version) ?? []} /> : <p class="muted">Load the model to send it inference requests.</p>}
    </>
  );
}

function evaluation(e: Record<string, unknown> | null | undefined): string {
  if (!e) return '–';
  return Object.entries(e)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => `${k} ${num(v as number)}`)
    .join(', ');
}

function Downloads({ version }: { version: ModelVersion }) {
  const [error, setError] = useState<Error | null>(null);
  const base = `/v1/models/${encodeURIComponent(version.model)}/versions/${version.version}`;
  const get = (path: string, file: string) => (e: Event) => {
    e.preventDefault();
    setError(null);
    download(path, file).catch((err: Error) => setError(err));
  };
  return (
    <span>
      <a href={`${base}/artifact`} onClick={get(`${base}/artifact`, `${version.model}-v${version.version}.safetensors`)}>
        safetensors
      </a>{' '}
      {bytes(version.artifact_bytes)} ·{' '}
      <a href={`${base}/onnx`} onClick={get(`${base}/onnx`, `${version.model}-v${version.version}.onnx`)}>
        ONNX
      </a>
      <ErrorNote error={error} />
    </span>
  );
}

/** An example request for the model's first input: one row of zeros in its shape. */
function exampleRequest(meta: InferenceMetadata): string {
  const inputs = meta.inputs.map((i) => {
    const shape = i.shape.map((d) => (d < 0 ? 1 : d));
    const n = shape.reduce((a, b) => a * b, 1);
    return { name: i.name, shape, datatype: i.datatype, data: Array.from({ length: n }, () => 0) };
  });
  return JSON.stringify({ inputs }, null, 2);
}

function InferForm({ model, versions }: { model: string; versions: number[] }) {
  const meta = useFetch<InferenceMetadata>(`/v2/models/${encodeURIComponent(model)}`);
  const [body, setBody] = useState('');
  const [version, setVersion] = useState('');
  const [answer, setAnswer] = useState<InferResponse | null>(null);
  const [error, setError] = useState<Error | null>(null);
  useEffect(() => {
    if (meta.data && body === '') setBody(exampleRequest(meta.data));
  }, [meta.data, body]);
  const send = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setAnswer(null);
    try {
      const path = `/v2/models/${encodeURIComponent(model)}${version ? `/versions/${version}` : ''}/infer`;
      setAnswer(await sendJson<InferResponse>('POST', path, JSON.parse(body)));
    } catch (err) {
      setError(err as Error);
    }
  };
  return (
    <Section title={`${model}: inference`}>
      <ErrorNote error={meta.error} what="Model metadata" />
      {meta.data && (
        <p class="muted">
          Inputs: {meta.data.inputs.map((i) => `${i.name} ${i.datatype} [${i.shape.join(', ')}]`).join('; ')}. Outputs:{' '}
          {meta.data.outputs.map((o) => `${o.name} ${o.datatype} [${o.shape.join(', ')}]`).join('; ')}.
        </p>
      )}
      <form onSubmit={(e) => void send(e)}>
        <label class="block">
          Request (Open Inference Protocol JSON)
          <textarea rows={8} spellcheck={false} value={body} onInput={(e) => setBody((e.target as HTMLTextAreaElement).value)} />
        </label>
        <div class="actions">
          <label>
            Version{' '}
            <select value={version} onChange={(e) => setVersion((e.target as HTMLSelectElement).value)}>
              <option value="">newest</option>
              {versions.map((v) => (
                <option value={String(v)}>{v}</option>
              ))}
            </select>
          </label>
          <button type="submit" class="primary">
            Send
          </button>
        </div>
      </form>
      <ErrorNote error={error} what="Inference failed" />
      {answer && (
        <div role="status" aria-label="Inference answer">
          <p>
            {answer.model_name} version {answer.model_version}:
          </p>
          {answer.outputs.map((o) => (
            <OutputTable output={o} />
          ))}
        </div>
      )}
    </Section>
  );
}

function OutputTable({ output }: { output: InferResponse['outputs'][number] }) {
  const flat = output.data.flat(Infinity as 1) as number[];
  const cols = output.shape[output.shape.length - 1] ?? flat.length;
  const rows = Array.from({ length: Math.ceil(flat.length / Math.max(1, cols)) }, (_, r) => flat.slice(r * cols, (r + 1) * cols));
  return (
    <table>
      <caption>
        {output.name} [{output.shape.join(', ')}] {output.datatype}
      </caption>
      <thead>
        <tr>
          <th scope="col">Row</th>
          {Array.from({ length: cols }, (_, c) => (
            <th scope="col">{c}</th>
          ))}
          <th scope="col">Argmax</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r, i) => (
          <tr>
            <th scope="row">{i}</th>
            {r.map((v) => (
              <td class="num">{num(v)}</td>
            ))}
            <td class="num">{r.indexOf(Math.max(...r))}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
