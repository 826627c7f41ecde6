// One Push Gateway API request (POST /_matrix/push/v1/notify) for one pusher, shared by the
// user's hub (user/push-outbox.ts: a healthy, idle pusher is sent to from the hub itself) and
// the pusher's queue (durable-objects/pusher.ts: retries, backoff, order after a failure).
import type { Env } from "../env";
import type { Config } from "../config";
import { checkPusherUrl, notifyBody, type PendingPush, type PusherTarget } from "../core/push-gateway";
import { deletePusher } from "./pushers";

export const PUSH_TIMEOUT_MS = 15_000;

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

/** One notify request. "dropped": the pusher is gone (rejected, or its URL no longer allowed). */
export async function postNotify(env: Env, config: Config, userId: string, target: PusherTarget, p: PendingPush): Promise<"sent" | "failed" | "dropped"> {
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
      signal: AbortSignal.timeout(PUSH_TIMEOUT_MS),
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
  let rejected: unknown = [];
  try {
    rejected = ((await res.json()) as { rejected?: unknown }).rejected ?? [];
  } catch {
    // A 2xx without a JSON body still delivered the notification.
  }
  if (Array.isArray(rejected) && rejected.includes(target.pushkey)) {
    // Push Gateway API: "Homeservers must cease sending notification requests for these
    // pushkeys and remove the associated pushers."
    await deletePusher(env, config, userId, target.appId, target.pushkey);
    return "dropped";
  }
  return "sent";
}

/** Items in order, with every badge update that a later one in the same list supersedes left out. */
export function coalesceBadges(items: PendingPush[]): PendingPush[] {
  let lastBadge = -1;
  items.forEach((p, i) => {
    if (!p.event) lastBadge = i;
  });
  return items.filter((p, i) => p.event || i === lastBadge);
}
