// DATABASE_URL parsing: Prisma's ?schema= becomes pg's search_path.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isValidSchemaName, quoteIdent, resolveDatabaseUrl, withSchema } from './url.js';

test('schema= is removed and becomes the session search_path', () => {
  const t = resolveDatabaseUrl('postgresql://postgres@127.0.0.1:5432/test?schema=tas_a&application_name=x');
  assert.equal(t.schema, 'tas_a');
  const u = new URL(t.connectionString);
  assert.equal(u.searchParams.get('schema'), null);
  assert.equal(u.searchParams.get('options'), '-c search_path=tas_a');
  assert.equal(u.searchParams.get('application_name'), 'x');
  assert.equal(u.pathname, '/test');
});

test('the default schema is public, and existing options are kept', () => {
  const t = resolveDatabaseUrl('postgres://u:p@db/prod?options=-c%20statement_timeout%3D5000');
  assert.equal(t.schema, 'public');
  assert.equal(new URL(t.connectionString).searchParams.get('options'), '-c statement_timeout=5000 -c search_path=public');
});

test('bad URLs and schema names are refused', () => {
  assert.throws(() => resolveDatabaseUrl('not a url'), /not a URL/);
  assert.throws(() => resolveDatabaseUrl('mysql://h/db'), /postgresql:\/\//);
  assert.throws(() => resolveDatabaseUrl('postgresql://h/db?schema=a;drop'), /not a plain identifier/);
  assert.equal(isValidSchemaName('tas_test_0a1b'), true);
  assert.equal(isValidSchemaName('1abc'), false);
  assert.equal(isValidSchemaName('a"b'), false);
  assert.equal(quoteIdent('abc'), '"abc"');
  assert.throws(() => quoteIdent('a b'));
});

test('withSchema replaces the schema', () => {
  assert.equal(new URL(withSchema('postgresql://h/db?schema=a', 'b')).searchParams.get('schema'), 'b');
});
