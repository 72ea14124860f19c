/**
 * Liveness and readiness, which answer different questions (Triton's lesson: a
 * readiness failure must not get a live process restarted): /healthz says the process
 * serves HTTP; /readyz says its dependencies (PostgreSQL, Redis) answer now, and names
 * the one that does not.
 */
import type { FastifyPluginAsync } from 'fastify';

export interface ReadinessCheck {
  readonly name: string;
  readonly check: () => Promise<void>;
}

export interface HealthRouteOptions {
  readonly checks: readonly ReadinessCheck[];
  /** A check slower than this fails. @defaultValue 2000 */
  readonly timeoutMs?: number;
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<void>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

export const healthRoutes: FastifyPluginAsync<HealthRouteOptions> = async (app, { checks, timeoutMs = 2000 }) => {
  app.get('/healthz', { schema: { tags: ['health'], summary: 'Liveness: the process serves requests' } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: { tags: ['health'], summary: 'Readiness: PostgreSQL and Redis answer' } }, async (_request, reply) => {
    const results = await Promise.all(
      checks.map(async (c) => {
        try {
          await withTimeout(c.check(), timeoutMs);
          return [c.name, { ok: true }] as const;
        } catch (e) {
          return [c.name, { ok: false, error: e instanceof Error ? e.message : String(e) }] as const;
        }
      }),
    );
    const ready = results.every(([, r]) => r.ok);
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks: Object.fromEntries(results) });
  });
};
