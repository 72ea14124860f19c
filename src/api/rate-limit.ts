/**
 * Requests per minute per API key, for both bindings. REST counts with @fastify/rate-limit
 * (rest/access.ts); gRPC inference takes from the same Redis counters here, with the
 * plugin's fixed-window rule (the first request of a window starts a one-minute expiry),
 * so a key's REST and gRPC requests share one budget across every API process.
 */
import type { Redis } from 'ioredis';
import type { Principal } from '../service/tenants/principal.js';

export const RATE_WINDOW_MS = 60_000;

/** The requests per minute `p` may make; null: unlimited (the admin, a tenant without a limit). */
export function rateLimitOf(p: Principal | null | undefined): number | null {
  return p && p.role === 'tenant' ? p.limits.requestsPerMinute : null;
}

const TAKE = `
local current = redis.call('INCR', KEYS[1])
local ttl
if current == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
else
  ttl = redis.call('PTTL', KEYS[1])
end
return {current, ttl}
`;

export interface RateDecision {
  readonly allowed: boolean;
  /** When the window ends (for Retry-After). */
  readonly retryAfterMs: number;
}

/** Takes one request from a key's budget; `namespace` is the REST plugin's key prefix. */
export class RateCounter {
  constructor(
    private readonly redis: Redis | null,
    private readonly namespace: string,
  ) {}

  async take(p: Principal): Promise<RateDecision> {
    const max = rateLimitOf(p);
    if (max === null || !this.redis || p.keyId === null) return { allowed: true, retryAfterMs: 0 };
    try {
      const [count, ttl] = (await this.redis.eval(TAKE, 1, `${this.namespace}${p.keyId}`, String(RATE_WINDOW_MS))) as [number, number];
      return { allowed: count <= max, retryAfterMs: Math.max(0, ttl) };
    } catch {
      // Redis away: serve rather than refuse (as the REST limiter does).
      return { allowed: true, retryAfterMs: 0 };
    }
  }
}
