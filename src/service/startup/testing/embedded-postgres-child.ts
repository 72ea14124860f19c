/**
 * Test fixture (embedded-postgres.test.ts): a process that opens the embedded database
 * of the data directory in argv[2], migrates it, creates one job, prints
 * `{"id": "<job id>"}` and then waits to be killed (the test kills it with SIGKILL to
 * check that committed data survives a crash and that the directory lock is stale).
 */
import { createPrismaClient } from '../../db/client.js';
import { JobRepository } from '../../db/jobs.js';
import { migrate } from '../../db/migrate.js';
import { startEmbeddedPostgres } from '../embedded-postgres.js';

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: embedded-postgres-child.ts <dataDir>');
const pg = await startEmbeddedPostgres({ dataDir });
await migrate(pg.url);
const prisma = createPrismaClient(pg.url, { maxConnections: pg.maxConnections });
const { job } = await new JobRepository(prisma).createJob({ name: 'before-crash', spec: { a: 1 }, workers: 1 });
process.stdout.write(`${JSON.stringify({ id: job.id })}\n`);
setInterval(() => undefined, 60_000);
