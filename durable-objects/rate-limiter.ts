// RateLimiterDO: token buckets, sharded by key (one object per "<action>:<who>"), so no single
// object sees every request. State is in memory: an evicted limiter starts with a full bucket,
// which errs on the side of letting users in.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";

interface Bucket {
  tokens: number;
  updated: number;
}

export class RateLimiterDO extends DurableObject<Env> {
  private buckets = new Map<string, Bucket>();

  /** Take one token. `perSecond` refill rate, `burst` capacity. Returns 0 if allowed,
   *  otherwise the milliseconds until a token is available. */
  take(bucketKey: string, perSecond: number, burst: number): number {
    const now = Date.now();
    const b = this.buckets.get(bucketKey) ?? { tokens: burst, updated: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.updated) / 1000) * perSecond);
    b.updated = now;
    this.buckets.set(bucketKey, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - b.tokens) / perSecond) * 1000);
  }
}
