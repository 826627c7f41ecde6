// PusherDO: one per pusher (user, app_id, pushkey). The ordered delivery queue of that pusher's
// notifications to its push gateway (spec: "Push Gateway API", POST /_matrix/push/v1/notify).
//
// - The user's hub (durable-objects/user.ts → user/push-outbox.ts) enqueues what its push rules said
//   to notify, after its own commit; this queue is durable, so a restart loses nothing.
// - One request in flight, in queue order; an item is removed only after the gateway answered
//   2xx, so delivery is at-least-once (the spec's notify has no idempotency key; gateways dedupe
//   nothing, and a duplicate is better than a lost call).
// - Failures (network, timeout, non-2xx) are retried on alarms with exponential backoff and
//   jitter, from PUSH_BASE_BACKOFF_MS up to a day, and never skip ahead of the failed item.
// - Badge updates (counts only) coalesce: a newer one replaces those still waiting.
// - `rejected` containing our pushkey deletes the pusher (D1 row, hub copy, this queue).
import type { Env } from "../src/env";
import { parseConfig } from "../src/config";
import { checkPusherUrl, notifyBody, type PendingPush, type PusherTarget } from "../src/core/push-gateway";
import { deletePusher } from "../src/services/pushers";
import { jitteredBackoffMs, QueueDO } from "./queue-base";

const PUSH_BASE_BACKOFF_MS = 1_000;
const PUSH_MAX_BACKOFF_MS = 24 * 3600_000;
const PUSH_TIMEOUT_MS = 15_000;
/** Queue bound; beyond it the oldest notifications go (a phone days behind wants the latest). */
const PUSH_MAX_QUEUE = 1000;
/** Items sent per alarm run before yielding to a fresh alarm. */
const PUSH_BATCH = 100;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, badge INTEGER NOT NULL, enqueued_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

export interface PusherStatus {
  queued: number;
  failures: number;
  sent: number;
  nextAttemptTs: number | null;
}

export class PusherDO extends QueueDO {
  /** A watchdog alarm is pending (in memory; after a restart the alarm that woke us runs). */
  private watchdog = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env, SCHEMA);
  }

  /** Queue notifications for this pusher; `target` is its current URL and data. */
  async enqueue(userId: string, target: PusherTarget, items: PendingPush[]): Promise<void> {
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      this.setMeta("user_id", userId);
      this.setMeta("target", JSON.stringify(target));
      for (const p of items) {
        const badge = p.event ? 0 : 1;
        // A newer badge supersedes waiting ones (never the one in flight).
        if (badge) this.sql.exec("DELETE FROM queue WHERE badge = 1 AND seq > ?", this.num("inflight_seq"));
        this.sql.exec("INSERT INTO queue (body, badge, enqueued_ts) VALUES (?, ?, ?)", JSON.stringify(p), badge, now);
      }
      const n = this.queued();
      if (n > PUSH_MAX_QUEUE) {
        this.sql.exec("DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE seq > ? ORDER BY seq LIMIT ?)", this.num("inflight_seq"), n - PUSH_MAX_QUEUE);
      }
    });
    // Healthy: send now, without waiting for an alarm (run() arms a watchdog alarm first).
    // Backing off: the scheduled retry sends everything in order.
    if (!this.num("failures")) void this.run();
  }

  /** The pusher was deleted: forget everything. */
  async drop(): Promise<void> {
    this.watchdog = false;
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.sql.exec(SCHEMA);
  }

  async status(): Promise<PusherStatus> {
    const next = await this.ctx.storage.getAlarm();
    return {
      queued: this.queued(),
      failures: this.num("failures"),
      sent: this.num("sent"),
      nextAttemptTs: next,
    };
  }

  async alarm(): Promise<void> {
    if (this.sending) {
      // A run is in progress: keep a watchdog behind it.
      await this.ctx.storage.setAlarm(Date.now() + PUSH_TIMEOUT_MS + 5_000);
      return;
    }
    this.watchdog = false;
    await this.run();
  }

  /** Send what is queued, in order, one request at a time. */
  private async run(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      // Watchdog: if this process dies with items queued, the alarm brings the queue back. Armed
      // once and left to fire (an alarm on an empty queue does nothing): two storage writes
      // fewer per push than arming and deleting it around every run.
      if (!this.watchdog) {
        await this.ctx.storage.setAlarm(Date.now() + PUSH_TIMEOUT_MS + 5_000);
        this.watchdog = true;
      }
      for (let i = 0; i < PUSH_BATCH; i++) {
        const r = await this.sendHead();
        if (r === "dropped") return;
        if (r === "empty") return;
        if (r === "failed") {
          const failures = this.num("failures") + 1;
          this.setMeta("failures", failures);
          await this.ctx.storage.setAlarm(Date.now() + pushBackoffMs(failures));
          this.watchdog = true;
          return;
        }
      }
      await this.ctx.storage.setAlarm(Date.now()); // more to send: continue in a fresh run
      this.watchdog = true;
    } finally {
      this.sending = false;
    }
  }

  /** Send the oldest queued notification. */
  private async sendHead(): Promise<"sent" | "empty" | "failed" | "dropped"> {
    const head = this.sql.exec<{ seq: number; body: string }>("SELECT seq, body FROM queue ORDER BY seq LIMIT 1").toArray()[0];
    const targetJson = this.meta("target");
    const userId = this.meta("user_id");
    if (!head || !targetJson || !userId) return "empty";
    const target = JSON.parse(targetJson) as PusherTarget;
    const config = parseConfig(this.env);
    const refused = checkPusherUrl(target.data.url, config.pushHttpLoopback);
    if (refused) {
      // Only possible if the configuration changed since the pusher was set.
      console.warn(`push: pusher ${target.appId} of ${userId} has an unusable URL (${refused}); deleting it`);
      await deletePusher(this.env, userId, target.appId, target.pushkey);
      return "dropped";
    }
    this.setMeta("inflight_seq", head.seq);
    let res: Response;
    try {
      res = await fetch(String(target.data.url), {
        method: "POST",
        headers: { "Content-Type": "application/json", "User-Agent": "Lattice push (Matrix homeserver)" },
        body: JSON.stringify(notifyBody(JSON.parse(head.body) as PendingPush, target)),
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
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM queue WHERE seq = ?", head.seq);
      this.setMeta("inflight_seq", null);
      this.setMeta("failures", null);
      this.setMeta("sent", this.num("sent") + 1);
    });
    if (Array.isArray(rejected) && rejected.includes(target.pushkey)) {
      // Push Gateway API: "Homeservers must cease sending notification requests for these
      // pushkeys and remove the associated pushers."
      await deletePusher(this.env, userId, target.appId, target.pushkey);
      return "dropped";
    }
    return "sent";
  }
}

/** Backoff: uniform in [cap/2, cap], cap = 1 s * 2^(n-1) ≤ a day. */
export function pushBackoffMs(failures: number, random: () => number = Math.random): number {
  return jitteredBackoffMs(failures, PUSH_BASE_BACKOFF_MS, PUSH_MAX_BACKOFF_MS, random);
}
