// Submit: a job spec pasted, loaded from a file or started from the quickstart; the API's
// errors shown at the field they name. And datasets uploaded with progress, ready to use
// in the spec.
import { useRef, useState } from 'preact/hooks';
import quickstart from '../../../examples/quickstart.json';
import { ApiFailure, sendJson, upload } from '../api';
import { ErrorNote, Section } from '../components';
import { bytes } from '../format';
import type { Job } from '../types';

/** Service fields with inputs of their own; any other field is inside the spec. */
const FORM_FIELDS = ['name', 'priority', 'max_restarts'] as const;
type FormField = (typeof FORM_FIELDS)[number];

/** Where in `text` (JSON) the key at `path` (`optimizer.lr`, `model.layers.1.out`) is, best effort. */
export function locate(text: string, path: string): { start: number; end: number } | null {
  let from = 0;
  let found: { start: number; end: number } | null = null;
  for (const part of path.split('.')) {
    if (/^\d+$/.test(part)) continue; // array index: the next key is searched after the array's start
    const i = text.indexOf(`"${part}"`, from);
    if (i < 0) return found;
    found = { start: i, end: i + part.length + 2 };
    from = found.end;
  }
  return found;
}

export function SubmitPage() {
  const [spec, setSpec] = useState('');
  const [fields, setFields] = useState<Record<FormField, string>>({ name: '', priority: '', max_restarts: '' });
  const [error, setError] = useState<ApiFailure | Error | null>(null);
  const [busy, setBusy] = useState(false);
  const idempotency = useRef<string>(crypto.randomUUID());
  const area = useRef<HTMLTextAreaElement>(null);

  const fieldError = error instanceof ApiFailure && error.field ? error.field : null;
  const formField = FORM_FIELDS.find((f) => f === fieldError) ?? null;
  const specError = error && !formField ? error : null;

  const change = (text: string) => {
    setSpec(text);
    idempotency.current = crypto.randomUUID();
  };

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    let body: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(spec);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('the spec must be a JSON object');
      body = parsed as Record<string, unknown>;
    } catch (err) {
      setError(new ApiFailure(0, { code: 'INVALID_JSON', message: `spec: ${(err as Error).message}`, field: 'spec' }, `spec: ${(err as Error).message}`));
      return;
    }
    if (fields.name.trim()) body.name = fields.name.trim();
    for (const f of ['priority', 'max_restarts'] as const) if (fields[f].trim() !== '') body[f] = Number(fields[f]);
    setBusy(true);
    try {
      const job = await sendJson<Job>('POST', '/v1/jobs', body, { 'idempotency-key': idempotency.current });
      idempotency.current = crypto.randomUUID();
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      setError(err as Error);
      const f = err instanceof ApiFailure ? err.field : undefined;
      if (f && !FORM_FIELDS.includes(f as FormField) && area.current) {
        const at = locate(spec, f);
        if (at) {
          area.current.focus();
          area.current.setSelectionRange(at.start, at.end);
        }
      }
    } finally {
      setBusy(false);
    }
  };

  const loadFile = async (file: File | undefined) => {
    if (file) change(await file.text());
  };

  const input = (f: FormField, label: string, numeric: boolean, hint: string) => (
    <label>
      {label}
      <input
        type="text"
        inputMode={numeric ? 'numeric' : 'text'}
        name={f}
        value={fields[f]}
        placeholder={hint}
        aria-invalid={formField === f ? 'true' : undefined}
        aria-describedby={formField === f ? `err-${f}` : undefined}
        onInput={(e) => setFields({ ...fields, [f]: (e.target as HTMLInputElement).value })}
      />
      {formField === f && error && (
        <span id={`err-${f}`} class="field-error" role="alert">
          {error.message}
        </span>
      )}
    </label>
  );

  return (
    <>
      <h1>Submit a job</h1>
      <form class="submit" onSubmit={(e) => void submit(e)} noValidate>
        <div class="toolbar">
          <button type="button" onClick={() => change(JSON.stringify(quickstart, null, 2))}>
            Use the quickstart
          </button>
          <label class="file">
            Load a spec file <input type="file" accept=".json,application/json" onChange={(e) => void loadFile((e.target as HTMLInputElement).files?.[0])} />
          </label>
        </div>
        <label class="block">
          Job spec (JSON)
          <textarea
            ref={area}
            name="spec"
            rows={22}
            spellcheck={false}
            value={spec}
            placeholder='{"name": "...", "model": {...}, "data": {...}, "optimizer": {...}, "epochs": 10, "workers": 2}'
            aria-invalid={specError ? 'true' : undefined}
            aria-describedby={specError ? 'err-spec' : undefined}
            onInput={(e) => change((e.target as HTMLTextAreaElement).value)}
          />
        </label>
        {specError && (
          <p id="err-spec" class="field-error" role="alert">
            {specError instanceof ApiFailure && specError.field ? <strong>{specError.field}: </strong> : null}
            {specError.message.replace(new RegExp(`^${(specError instanceof ApiFailure && specError.field ? specError.field : '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `), '')}
          </p>
        )}
        <div class="row">
          {input('name', 'Name', false, 'from the spec')}
          {input('priority', 'Priority', true, '0 (higher runs first)')}
          {input('max_restarts', 'Max restarts', true, '5')}
        </div>
        <div class="actions">
          <button type="submit" class="primary" disabled={busy || spec.trim() === ''}>
            {busy ? 'Submitting…' : 'Submit'}
          </button>
        </div>
      </form>
      <DatasetUpload
        onUse={(data) => {
          try {
            const parsed = spec.trim() ? (JSON.parse(spec) as Record<string, unknown>) : {};
            change(JSON.stringify({ ...parsed, data }, null, 2));
          } catch {
            setError(new Error('the spec is not valid JSON: fix it, then use the dataset again'));
          }
        }}
      />
    </>
  );
}

const PARTS: Record<string, Array<[string, string]>> = {
  csv: [['file', 'CSV file']],
  npy: [
    ['x', 'Inputs (x.npy)'],
    ['y', 'Targets (y.npy)'],
  ],
  idx: [
    ['images', 'Images (IDX)'],
    ['labels', 'Labels (IDX)'],
  ],
};

interface Dataset {
  id: string;
  name: string;
  samples: number;
  sample_shape: number[];
  bytes: number;
  data: Record<string, unknown> | null;
}

function DatasetUpload({ onUse }: { onUse: (data: Record<string, unknown>) => void }) {
  const [format, setFormat] = useState('csv');
  const [name, setName] = useState('');
  const [label, setLabel] = useState('');
  const [files, setFiles] = useState<Record<string, File>>({});
  const [progress, setProgress] = useState<{ sent: number; total: number; part: string } | null>(null);
  const [error, setError] = useState<Error | null>(null);
  const [done, setDone] = useState<Dataset | null>(null);
  const parts = PARTS[format]!;

  const go = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setDone(null);
    try {
      const q = new URLSearchParams({ name: name.trim(), format });
      if (format === 'csv') {
        if (label.trim()) q.set('label_column', label.trim());
        const ds = await upload<Dataset>(`/v1/datasets?${q}`, files.file!, (sent, total) => setProgress({ sent, total, part: 'file' }));
        setDone(ds);
      } else {
        const [[first], [second]] = parts as [[string, string], [string, string]];
        q.set('part', first);
        const pending = await upload<{ upload_id: string }>(`/v1/datasets?${q}`, files[first]!, (sent, total) => setProgress({ sent, total, part: first }));
        const ds = await upload<Dataset>(`/v1/datasets?${new URLSearchParams({ upload_id: pending.upload_id, part: second })}`, files[second]!, (sent, total) => setProgress({ sent, total, part: second }));
        setDone(ds);
      }
    } catch (err) {
      setError(err as Error);
    }
  };

  const ready = name.trim() !== '' && parts.every(([p]) => files[p]);
  return (
    <Section title="Upload a dataset">
      <form class="upload" onSubmit={(e) => void go(e)}>
        <div class="row">
          <label>
            Dataset name
            <input type="text" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </label>
          <label>
            Format
            <select
              value={format}
              onChange={(e) => {
                setFormat((e.target as HTMLSelectElement).value);
                setFiles({});
              }}
            >
              <option value="csv">CSV</option>
              <option value="npy">NPY (x and y)</option>
              <option value="idx">IDX (images and labels)</option>
            </select>
          </label>
          {format === 'csv' && (
            <label>
              Label column
              <input type="text" value={label} placeholder="the last" onInput={(e) => setLabel((e.target as HTMLInputElement).value)} />
            </label>
          )}
        </div>
        <div class="row">
          {parts.map(([p, text]) => (
            <label>
              {text}
              <input type="file" onChange={(e) => setFiles({ ...files, [p]: (e.target as HTMLInputElement).files![0]! })} />
            </label>
          ))}
        </div>
        <div class="actions">
          <button type="submit" disabled={!ready}>
            Upload
          </button>
          {progress && (
            <span class="progress">
              <progress max={progress.total} value={progress.sent} aria-label="Upload progress" />
              <span>
                {progress.part}: {bytes(progress.sent)} of {bytes(progress.total)} ({Math.round((100 * progress.sent) / Math.max(1, progress.total))}%)
              </span>
            </span>
          )}
        </div>
        <ErrorNote error={error} what="Upload failed" />
        {done && (
          <div role="status" class="done">
            <p>
              Dataset <strong>{done.name}</strong>: {done.samples} samples of shape [{done.sample_shape.join(', ')}], {bytes(done.bytes)}.
            </p>
            <pre>{JSON.stringify(done.data, null, 2)}</pre>
            {done.data && (
              <button type="button" onClick={() => onUse(done.data!)}>
                Use it in the spec
              </button>
            )}
          </div>
        )}
      </form>
    </Section>
  );
}
