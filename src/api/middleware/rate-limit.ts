// Rate limiting (spec: M_LIMIT_EXCEEDED with retry_after_ms). Limits live in RateLimiterDOs
// sharded by key; RATE_LIMITS=off disables them for test rigs and benchmarks.
import type { Context } from "hono";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";

export interface Limit {
  perSecond: number;
  burst: number;
}

export const LIMITS = {
  loginPerAddress: { perSecond: 0.2, burst: 10 },
  loginPerAccount: { perSecond: 0.1, burst: 5 },
  registerPerAddress: { perSecond: 0.05, burst: 5 },
  sendPerUser: { perSecond: 10, burst: 50 },
} satisfies Record<string, Limit>;

/** The client's address as the platform reports it. On Cloudflare the edge sets
 *  CF-Connecting-IP and overwrites any value a client sent; under `wrangler dev` miniflare sets
 *  it from the socket. Nothing else (X-Forwarded-For, ...) is trusted. */
export function clientAddress(c: Context<AppEnv>): string {
  return c.req.header("cf-connecting-ip") ?? "unknown";
}

export async function rateLimit(c: Context<AppEnv>, action: string, who: string, limit: Limit): Promise<void> {
  if (!c.var.config.rateLimits) return;
  const key = `${action}:${who}`;
  const stub = c.env.RATE_LIMITER.get(c.env.RATE_LIMITER.idFromName(key));
  const wait = await stub.take(key, limit.perSecond, limit.burst);
  if (wait > 0) {
    throw new MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", { retry_after_ms: wait });
  }
}
