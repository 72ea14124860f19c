/**
 * Model-repository change notices between processes, on a Redis pub/sub channel: a
 * scheduler that published a model version, or an API that loaded or unloaded a model,
 * publishes; every inference server re-reads its index at once instead of at its next
 * backstop refresh. The channel is one of the service's queue names (`QueueNames`), so
 * services sharing one Redis but not a database do not hear each other.
 */
import type { Redis } from 'ioredis';
import type { RepositoryChanges } from '../../inference/repository.js';
import { within } from '../scheduling/redis-health.js';

/** How long a notice may take; it is an optimisation (every server re-reads its index every few seconds anyway). */
const NOTIFY_TIMEOUT_MS = 1000;

/**
 * `publisher` is a plain command connection; `subscriber` is given over to subscriber mode.
 * `notify` never fails and never waits for long: while Redis is away the notice is
 * dropped, and the other servers' backstop refresh picks the change up.
 */
export function redisModelChanges(publisher: Redis, subscriber: Redis, channel: string): RepositoryChanges {
  return {
    notify: async () => void (await within(publisher.publish(channel, String(Date.now())), NOTIFY_TIMEOUT_MS, () => new Error('timeout')).catch(() => 0)),
    subscribe: async (onChange) => {
      subscriber.on('message', (ch: string) => {
        if (ch === channel) onChange();
      });
      await subscriber.subscribe(channel);
    },
  };
}
