/**
 * Test fixture (redis-server.test.ts): a process that starts a private redis-server
 * (nothing answers at the URL in argv[2]), prints `{"url": ..., "pid": <redis pid>}`
 * and waits to be killed, so the test can check the server does not outlive it.
 */
import { Redis } from 'ioredis';
import { ensureRedis } from '../redis-server.js';

const url = process.argv[2];
if (!url) throw new Error('usage: private-redis-child.ts <redis url nobody answers at>');
const redis = await ensureRedis(url, { startIfMissing: true });
const client = new Redis(redis.url);
const info = await client.info('server');
client.disconnect();
const pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
process.stdout.write(`${JSON.stringify({ url: redis.url, started: redis.started, pid })}\n`);
setInterval(() => undefined, 60_000);
