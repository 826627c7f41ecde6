// One Push Gateway API request (POST /_matrix/push/v1/notify) for one pusher, shared by the
// user's hub (user/push-outbox.ts: a healthy, idle pusher is sent to from the hub itself) and
// the pusher's queue (durable-objects/pusher.ts: retries, backoff, order after a failure).
import type { Env } from "../env";
import type { Config } from "../config";
import { checkPusherUrl, notifyBody, type PendingPush, type PusherTarget } from "../core/push-gateway";
import { deletePusher } from "./pushers";

export const PUSH_TIMEOUT_MS = 15_000;

/** How long a hub keeps starting requests under one timeout signal (PushDeadlines). */
export const PUSH_DEADLINE_SHARE_MS = 5_000;

/** The timeout signals of one hub's gateway requests: the requests started within
 *  PUSH_DEADLINE_SHARE_MS share one, so each is aborted between PUSH_TIMEOUT_MS and
 *  PUSH_TIMEOUT_MS + PUSH_DEADLINE_SHARE_MS after it started. An AbortSignal.timeout per push
 *  left a 15 s timer pending per request: with 99 pushers, thousands at once on the thread every
 *  object shares under `wrangler dev`, and creating them cost about as much CPU as the fetch
 *  (docs/benchmarks.md "Push", fifth pass). One per hub instance (signals stay in one object).
 *  `make` and `now`: tests. */
export class PushDeadlines {
  private current: { signal: AbortSignal; until: number } | null = null;
  constructor(
    private make: (ms: number) => AbortSignal = (ms) => AbortSignal.timeout(ms),
    private now: () => number = Date.now,
  ) {}

  signal(): AbortSignal {
    const t = this.now();
    if (!this.current || t >= this.current.until || this.current.signal.aborted) {
      this.current = { signal: this.make(PUSH_TIMEOUT_MS + PUSH_DEADLINE_SHARE_MS), until: t + PUSH_DEADLINE_SHARE_MS };
    }
    return this.current.signal;
  }
}

/** The URL guard's answer per pusher URL (it parses the URL; pusher URLs rarely change). */
const checked = new Map<string, string | undefined>();

function refusal(url: unknown, loopback: boolean): string | undefined {
  if (typeof url !== "string") return checkPusherUrl(url, loopback);
  const key = `${loopback ? 1 : 0}${url}`;
  if (!checked.has(key)) {
    if (checked.size > 1000) checked.clear();
    checked.set(key, checkPusherUrl(url, loopback));
  }
  return checked.get(key);
}

/** One notify request. "dropped": the pusher is gone (rejected, or its URL no longer allowed).
 *  `signal`: its timeout (a hub passes one of its PushDeadlines; else PUSH_TIMEOUT_MS). */
export async function postNotify(env: Env, config: Config, userId: string, target: PusherTarget, p: PendingPush, signal?: AbortSignal): Promise<"sent" | "failed" | "dropped"> {
  const refused = refusal(target.data.url, config.pushHttpLoopback);
  if (refused) {
    // Only possible if the configuration changed since the pusher was set.
    console.warn(`push: pusher ${target.appId} of ${userId} has an unusable URL (${refused}); deleting it`);
    await deletePusher(env, config, userId, target.appId, target.pushkey);
    return "dropped";
  }
  let res: Response;
  try {
    res = await fetch(String(target.data.url), {
      method: "POST",
      headers: { "Content-Type": "application/json", "User-Agent": "Lattice push (Matrix homeserver)" },
      body: JSON.stringify(notifyBody(p, target)),
      redirect: "manual",
      signal: signal ?? AbortSignal.timeout(PUSH_TIMEOUT_MS),
    });
  } catch (e) {
    console.warn(`push: ${target.appId} of ${userId}: ${(e as Error).message}`);
    return "failed";
  }
  if (res.status < 200 || res.status >= 300) {
    await res.body?.cancel();
    console.warn(`push: ${target.appId} of ${userId}: gateway answered ${res.status}`);
    return "failed";
  }
  // The answer names rejected pushkeys; one that does not contain ours (as JSON would spell it)
  // cannot reject it, and is not parsed (res.json() was a fifth of a push's CPU in workerd).
  const text = await res.text();
  let rejected: unknown = [];
  if (text.includes(target.pushkey) || text.includes("\\")) {
    try {
      rejected = (JSON.parse(text) as { rejected?: unknown }).rejected ?? [];
    } catch {
      // A 2xx without a JSON body still delivered the notification.
    }
  }
  if (Array.isArray(rejected) && rejected.includes(target.pushkey)) {
    // Push Gateway API: "Homeservers must cease sending notification requests for these
    // pushkeys and remove the associated pushers."
    await deletePusher(env, config, userId, target.appId, target.pushkey);
    return "dropped";
  }
  return "sent";
}

/** A gateway request that takes longer than this is a slow gateway: the rest of the hand-over
 *  goes to the pusher's durable queue (bounded, with backoff), and the hand-over does not wait
 *  for every request. */
export const PUSH_DIRECT_BUDGET_MS = 1_000;
/** However fast each request, a hand-over sent directly for this long leaves the rest to the
 *  queue too. Not the per-request budget: several requests of a backlog each waiting their turn
 *  on a busy thread (100 hubs pushing at once under `wrangler dev`) took over a second together
 *  with a fast gateway, and every pusher then went through its queue — two commits per push, and
 *  the queue, busy, kept the hub from sending directly until the burst was over
 *  (docs/benchmarks.md "Push"). */
export const PUSH_DIRECT_HANDOVER_MS = 10_000;

/** Send `items` to one pusher in order, with nothing stored per request (the hub sending to an
 *  idle, healthy pusher, or that pusher's queue when idle). Badge updates a later item supersedes
 *  are left out; `done` hears of each item sent (`true`) or left out (`false`). Ends at the
 *  first failed request, or ("slow") after a request that took over PUSH_DIRECT_BUDGET_MS or
 *  once PUSH_DIRECT_HANDOVER_MS has passed, with the items not done. `now`: the clock (tests). */
export async function sendDirect<T>(
  items: T[],
  pushOf: (x: T) => PendingPush,
  post: (p: PendingPush) => Promise<"sent" | "failed" | "dropped">,
  done: (x: T, sent: boolean) => void,
  now: () => number = Date.now,
): Promise<{ end: "sent" } | { end: "dropped" } | { end: "failed" | "slow"; rest: T[] }> {
  // One item (the usual hand-over: one notification per commit) supersedes nothing.
  const keep = items.length === 1 ? null : new Set(coalesceBadges(items.map(pushOf)));
  const start = now();
  let last = 0;
  let posted = 0;
  for (let i = 0; i < items.length; i++) {
    if (keep && !keep.has(pushOf(items[i]))) {
      done(items[i], false);
      continue;
    }
    if (posted > 0 && (last > PUSH_DIRECT_BUDGET_MS || now() - start > PUSH_DIRECT_HANDOVER_MS)) return { end: "slow", rest: items.slice(i) };
    posted++;
    const t = now();
    const r = await post(pushOf(items[i]));
    last = now() - t;
    if (r === "dropped") return { end: "dropped" };
    if (r === "failed") return { end: "failed", rest: items.slice(i) };
    done(items[i], true);
  }
  return { end: "sent" };
}

/** Items in order, with every badge update that a later one in the same list supersedes left out. */
export function coalesceBadges(items: PendingPush[]): PendingPush[] {
  let lastBadge = -1;
  items.forEach((p, i) => {
    if (!p.event) lastBadge = i;
  });
  return items.filter((p, i) => p.event || i === lastBadge);
}
