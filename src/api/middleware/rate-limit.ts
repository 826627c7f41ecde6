// Rate limiting (spec: M_LIMIT_EXCEEDED with retry_after_ms). Limits live in RateLimiterDOs
// sharded by key; RATE_LIMITS=off disables them for test rigs and benchmarks.
import type { Context } from "hono";
import type { AppEnv, SenderOverrideRow } from "../types";
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
  /** Reports (rooms, events, users): a burst of 10, then one a minute. */
  reportPerUser: { perSecond: 1 / 60, burst: 10 },
} satisfies Record<string, Limit>;

/** The client's address as the platform reports it, or undefined where no trustworthy source
 *  exists. On Cloudflare the edge sets CF-Connecting-IP and overwrites any value a client sent.
 *  Under `wrangler dev` or self-hosted workerd a client can send that header itself, so
 *  CLIENT_ADDRESS=none (what `npm start` sets) ignores it. Nothing else (X-Forwarded-For, ...) is
 *  ever trusted. */
export function clientAddress(c: Context<AppEnv>): string | undefined {
  if (c.var.config.clientAddressHeader === "none") return undefined;
  return c.req.header("cf-connecting-ip") || undefined;
}

/** Tokens this isolate took from a limiter object ahead of time (a lease), per bucket key: the
 *  next requests on the key spend them here instead of a Durable Object call each (~0.5 ms of
 *  CPU per send under workerd, and a round trip to the object on Cloudflare). */
const leases = new Map<string, { tokens: number; until: number }>();
/** Most tokens one call takes (the request's own and a lease of up to LEASE_MOST - 1). */
const LEASE_MOST = 8;
/** How long a lease may be spent; its unspent tokens go back with the key's next call. */
const LEASE_MS = 1000;

/** Take a token from the (action, who) bucket. `who` undefined (no trustworthy client address)
 *  skips the limit rather than lumping every client into one bucket; per-account limits remain.
 *  Leases never admit more than the bucket holds (every token is taken from the object first);
 *  the object leases only out of a bucket's upper half, so near the limit each request asks. */
export async function rateLimit(c: Context<AppEnv>, action: string, who: string | undefined, limit: Limit): Promise<void> {
  if (!c.var.config.rateLimits || who === undefined) return;
  // Application services registered with `rate_limited: false` are exempt.
  if (c.get("auth")?.appservice?.rateLimited === false) return;
  const key = `${action}:${who}`;
  const now = Date.now();
  const lease = leases.get(key);
  if (lease && lease.until > now && lease.tokens >= 1) {
    lease.tokens--;
    return;
  }
  // An expired lease's unspent tokens go back to the bucket with this call.
  const returned = lease?.tokens ?? 0;
  leases.delete(key);
  const stub = c.env.RATE_LIMITER.get(c.env.RATE_LIMITER.idFromName(key));
  const { wait, tokens } = await stub.takeLease(key, limit.perSecond, limit.burst, returned, LEASE_MOST);
  if (wait > 0) {
    throw new MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", { retry_after_ms: wait });
  }
  if (tokens > 1) {
    if (leases.size >= 4096) leases.clear(); // bounded; dropped leases only cost their tokens
    // Concurrent requests on one key may each bring a lease: they add up.
    const held = leases.get(key);
    leases.set(key, { tokens: tokens - 1 + (held && held.until > now ? held.tokens : 0), until: now + LEASE_MS });
  }
}

/** What the admin API set for a sender (src/api/admin/users.ts): a shadow ban (their events are
 *  dropped while they are told they were sent) and a rate-limit override (0/0: not limited). */
export async function senderOverrides(c: Context<AppEnv>, userId: string): Promise<{ shadowBanned: boolean; sendLimit: Limit | null }> {
  // The access-token lookup already read them for the requester (auth.ts); others are looked up.
  const auth = c.get("auth");
  const row =
    auth?.overrides && auth.userId === userId
      ? auth.overrides
      : await c.env.DB.prepare(
          "SELECT u.shadow_banned, r.messages_per_second, r.burst_count FROM users u LEFT JOIN ratelimit_overrides r ON r.user_id = u.user_id WHERE u.user_id = ?",
        )
          .bind(userId)
          .first<SenderOverrideRow>();
  let sendLimit: Limit | null = LIMITS.sendPerUser;
  if (row?.messages_per_second != null) {
    sendLimit = row.messages_per_second === 0 && row.burst_count === 0 ? null : { perSecond: row.messages_per_second, burst: Math.max(1, row.burst_count ?? 1) };
  }
  return { shadowBanned: !!row?.shadow_banned, sendLimit };
}
