// How the dashboard follows a resource (shared with bench/api.ts, which plays a thousand
// dashboards with the same policy): long polls with the last ETag, held by the server up
// to WAIT_S seconds until the resource changes; after a change, the next poll waits until
// MIN_INTERVAL_MS (with jitter) passed since the previous one, so a job that changes twice
// a second costs each dashboard about one request per second per resource, and dashboards
// opened together drift apart instead of polling in step.

/** Seconds the server may hold a poll (the API allows up to 60). */
export const WAIT_S = 25;
/** Least time between two polls of one resource that both brought news. */
export const MIN_INTERVAL_MS = 1000;
/** The interval varies by up to this fraction either way. */
export const JITTER = 0.2;
/** After a failed poll (network, 5xx), try again after this long. */
export const RETRY_MS = 2000;

/** Milliseconds to wait before the next poll, `sinceLastMs` after the previous one was sent, when it brought news. */
export function delayAfterChange(sinceLastMs: number, random: () => number = Math.random): number {
  const interval = MIN_INTERVAL_MS * (1 + JITTER * (2 * random() - 1));
  return Math.max(0, interval - sinceLastMs);
}
