// The job state machine, pair by pair.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canTransition, isJobStatus, isTerminal, JOB_STATUSES, type JobStatus } from './job-states.js';

const ALLOWED = new Set([
  'queued>scheduled',
  'scheduled>running',
  'running>succeeded',
  'running>failed',
  'running>retrying',
  'retrying>scheduled',
  'scheduled>retrying',
  'retrying>failed',
  'queued>cancelled',
  'scheduled>cancelled',
  'running>cancelled',
  'retrying>cancelled',
]);

test('exactly the documented transitions are allowed', () => {
  assert.equal(JOB_STATUSES.length, 7);
  for (const from of JOB_STATUSES) {
    for (const to of JOB_STATUSES) {
      assert.equal(canTransition(from, to), ALLOWED.has(`${from}>${to}`), `${from} -> ${to}`);
    }
  }
});

test('succeeded, failed and cancelled are final', () => {
  const terminal = JOB_STATUSES.filter((s: JobStatus) => isTerminal(s));
  assert.deepEqual([...terminal].sort(), ['cancelled', 'failed', 'succeeded']);
});

test('isJobStatus', () => {
  assert.equal(isJobStatus('running'), true);
  assert.equal(isJobStatus('RUNNING'), false);
  assert.equal(isJobStatus(3), false);
});
