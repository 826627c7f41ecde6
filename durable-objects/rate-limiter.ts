// RateLimiterDO: token buckets, sharded by key (one object per "<action>:<who>"), so no single
// object sees every request. State is in memory only (as Synapse's limiter: a bucket resets when
// the object restarts; no storage write, so no commit, per limited request): an evicted limiter
// starts with a full bucket, which errs on the side of letting users in.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";

interface Bucket {
  tokens: number;
  updated: number;
}

export class RateLimiterDO extends DurableObject<Env> {
  private buckets = new Map<string, Bucket>();
  /** Calls so far (tests read it). */
  asked = 0;

  /** Take one token for this request and, while the bucket is more than half full, up to
   *  `most` - 1 more that the caller may spend on the same key's next requests without asking
   *  (a lease; see rateLimit in src/api/middleware/rate-limit.ts). Tokens are only ever taken
   *  from the bucket, so everything admitted on leases stays within the limit; a lease comes only
   *  out of the upper half, so a user near the limit is answered token by token as before.
   *  `returned`: tokens of an earlier lease that were not spent (given back, up to `burst`).
   *  Answers { wait: 0, tokens: taken (≥ 1) } or { wait: ms until a token, tokens: 0 }. */
  takeLease(bucketKey: string, perSecond: number, burst: number, returned: number, most: number): { wait: number; tokens: number } {
    this.asked++;
    const now = Date.now();
    const b = this.buckets.get(bucketKey) ?? { tokens: burst, updated: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.updated) / 1000) * perSecond + Math.max(0, returned));
    b.updated = now;
    this.buckets.set(bucketKey, b);
    if (b.tokens < 1) return { wait: Math.ceil(((1 - b.tokens) / perSecond) * 1000), tokens: 0 };
    const tokens = Math.max(1, Math.min(Math.floor(most), Math.floor(b.tokens - burst / 2)));
    b.tokens -= tokens;
    return { wait: 0, tokens };
  }
}
