/**
 * JSON-schema validation shared by every spec the trainer accepts. Errors become
 * TrainerError('TAS_ERR_INVALID_SPEC') naming the field (a dotted path such as
 * `model.layers[3].kernel`) and the reason, never a stack trace.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { TrainerError } from './errors.js';

const ajv = new Ajv({ allErrors: true, strict: false, useDefaults: false });
const cache = new Map<string, ValidateFunction>();

export const SCHEMA_DIR = fileURLToPath(new URL('../../schemas/', import.meta.url));

export function loadSchema(name: string): object {
  return JSON.parse(readFileSync(`${SCHEMA_DIR}${name}`, 'utf8')) as object;
}

let registered = false;

/** Register every schema of schemas/ once, so cross-file `$ref`s by `$id` resolve. */
function registerAll(): void {
  if (registered) return;
  registered = true;
  for (const f of readdirSync(SCHEMA_DIR).filter((n) => n.endsWith('.schema.json'))) {
    const s = loadSchema(f) as { $id?: string };
    if (s.$id && !ajv.getSchema(s.$id)) ajv.addSchema(s);
  }
}

function validator(name: string): ValidateFunction {
  registerAll();
  let v = cache.get(name);
  if (!v) {
    const schema = loadSchema(name) as { $id?: string };
    v = (schema.$id ? ajv.getSchema(schema.$id) : undefined) ?? ajv.compile(schema);
    cache.set(name, v);
  }
  return v;
}

/** Validate `value` against `schemas/<name>`; throws naming the first, most specific problem. */
export function validateAgainst<T>(name: string, value: unknown, rootField: string): T {
  const v = validator(name);
  if (v(value)) return value as T;
  const err = mostSpecific(v.errors ?? []);
  const field = fieldPath(rootField, err);
  throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: ${describe(err)}`, field);
}

function mostSpecific(errors: ErrorObject[]): ErrorObject {
  const real = errors.filter((e) => e.keyword !== 'if' && e.keyword !== 'allOf');
  const pool = real.length ? real : errors;
  // Deepest instance path first; for the same depth prefer type/enum/required over combinators.
  return pool.slice().sort((a, b) => b.instancePath.split('/').length - a.instancePath.split('/').length)[0];
}

function fieldPath(root: string, e: ErrorObject): string {
  let p = root;
  const join = (a: string, b: string) => (a ? `${a}.${b}` : b);
  for (const part of e.instancePath.split('/').slice(1)) p += /^\d+$/.test(part) ? `[${part}]` : join(p, part.replace(/~1/g, '/').replace(/~0/g, '~')).slice(p.length);
  if (e.keyword === 'required') p = join(p, (e.params as { missingProperty: string }).missingProperty);
  if (e.keyword === 'additionalProperties') p = join(p, (e.params as { additionalProperty: string }).additionalProperty);
  return p || '(root)';
}

function describe(e: ErrorObject): string {
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known field';
    case 'enum':
      return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return e.message ?? 'is invalid';
  }
}
