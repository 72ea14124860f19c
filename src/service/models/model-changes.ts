/**
 * Model-repository change notices between processes, on a Redis pub/sub channel: a
 * scheduler that published a model version, or an API that loaded or unloaded a model,
 * publishes; every inference server re-reads its index at once instead of at its next
 * backstop refresh. The channel is one of the service's queue names (`QueueNames`), so
 * services sharing one Redis but not a database do not hear each other.
 */
import type { Redis } from 'ioredis';
import type { RepositoryChanges } from '../../inference/repository.js';

/** `publisher` is a plain command connection; `subscriber` is given over to subscriber mode. */
export function redisModelChanges(publisher: Redis, subscriber: Redis, channel: string): RepositoryChanges {
  return {
    notify: async () => void (await publisher.publish(channel, String(Date.now()))),
    subscribe: async (onChange) => {
      subscriber.on('message', (ch: string) => {
        if (ch === channel) onChange();
      });
      await subscriber.subscribe(channel);
    },
  };
}
