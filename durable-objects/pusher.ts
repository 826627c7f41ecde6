// PusherDO: one per pusher (user, app_id, pushkey). The ordered delivery queue of that pusher's
// notifications to its push gateway (spec: "Push Gateway API", POST /_matrix/push/v1/notify).
//
// - The user's hub (durable-objects/user.ts → user/push-outbox.ts) hands over what its push rules said
//   to notify, after its own commit, and keeps its outbox rows until this object accepted them.
//   While this queue is idle and healthy (enqueue answers true) the hub sends the next requests
//   itself and comes here only with a failed one and what follows it (enqueue's `failed`), or
//   with what is left after a slow gateway took a second: no RPC and no second object per push.
// - Healthy and idle (nothing queued, no backoff, nothing in flight): the items are sent at once,
//   in order, before `enqueue` returns, and nothing is stored here — the hub's rows are the
//   durable copy until then. A SQLite commit is an fsync on the one thread under `wrangler dev`,
//   and storing, marking in flight and deleting each item cost three per push per recipient: in a
//   room of 100 with pushers that tripled every send's latency (docs/benchmarks.md).
// - Otherwise (a request failed, or items arrive while one is in flight) the items go to the
//   durable `queue`: one request in flight, in queue order; an item is removed only after the
//   gateway answered 2xx, so delivery is at-least-once (the spec's notify has no idempotency key;
//   gateways dedupe nothing, and a duplicate is better than a lost call).
// - Failures (network, timeout, non-2xx) are retried on alarms with exponential backoff and
//   jitter, from PUSH_BASE_BACKOFF_MS up to a day, and never skip ahead of the failed item.
// - Badge updates (counts only) coalesce: a newer one replaces those still waiting.
// - `rejected` containing our pushkey deletes the pusher (D1 row, hub copy, this queue).
import type { Env } from "../src/env";
import { parseConfig, type Config } from "../src/config";
import type { PendingPush, PusherTarget } from "../src/core/push-gateway";
import { postNotify, PUSH_TIMEOUT_MS, sendDirect } from "../src/services/push-send";
import { jitteredBackoffMs, QueueDO } from "./queue-base";

const PUSH_BASE_BACKOFF_MS = 1_000;
const PUSH_MAX_BACKOFF_MS = 24 * 3600_000;
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
  /** Requests this queue made (those the hub sent itself are not counted here). */
  sent: number;
  nextAttemptTs: number | null;
}

export class PusherDO extends QueueDO {
  /** A watchdog alarm is pending (in memory; after a restart the alarm that woke us runs). */
  private watchdog = false;
  /** The queue item whose request is in flight (never coalesced away or dropped meanwhile). */
  private inflightSeq = 0;
  /** Pushes sent without being stored (added to meta `sent` in status()). */
  private sentDirect = 0;
  /** enqueue calls run one after another, so items keep their order. */
  private tail: Promise<unknown> = Promise.resolve();
  /** Configuration, parsed once per instance. */
  private config: Config;
  /** In memory, so the direct path reads no storage: consecutive failures (mirrors meta
   *  `failures`), and whether the durable queue may hold items (false only when known empty). */
  private failures: number;
  private mayHaveQueue: boolean;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env, SCHEMA);
    this.config = parseConfig(env);
    this.failures = this.num("failures");
    this.mayHaveQueue = this.hasQueue();
  }

  private setFailures(n: number): void {
    if (n === this.failures) return;
    this.failures = n;
    this.setMeta("failures", n || null);
  }

  /** Notifications for this pusher; `target` is its current URL and data. Returns once they are
   *  delivered or stored here: true when this queue is then idle and healthy (nothing queued,
   *  nothing in flight, no failure), so the hub may send the next ones itself. `failed`: the
   *  hub's own request for the first item just failed (counted as this queue's first failure:
   *  stored, retried after the backoff). */
  enqueue(userId: string, target: PusherTarget, items: PendingPush[], failed = false): Promise<boolean> {
    const run = this.tail.then(() => this.accept(userId, target, items, failed)).then(() => !this.sending && !this.failures && !this.mayHaveQueue);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async accept(userId: string, target: PusherTarget, items: PendingPush[], failed: boolean): Promise<void> {
    if (failed && !this.failures) return this.storeFailed(userId, target, items);
    if (!this.sending && !this.failures && !this.mayHaveQueue) {
      // Direct: nothing stored unless a request fails (the hub holds its rows until we return).
      // A slow gateway: what is left after PUSH_DIRECT_BUDGET_MS goes to the queue.
      this.sending = true;
      let r: Awaited<ReturnType<typeof sendDirect<PendingPush>>>;
      try {
        r = await sendDirect(items, (p) => p, (p) => this.post(userId, target, p), (_, sent) => void (sent && this.sentDirect++));
      } finally {
        this.sending = false;
      }
      if (r.end === "failed") await this.storeFailed(userId, target, r.rest);
      else if (r.end === "slow") {
        this.store(userId, target, r.rest);
        void this.run();
      }
      return;
    }
    this.store(userId, target, items);
    // Healthy: send now, without waiting for an alarm (run() arms a watchdog alarm first).
    // Backing off: the scheduled retry sends everything in order.
    if (!this.failures) void this.run();
  }

  /** A direct request (the hub's or this queue's) failed: `items`, from the failed one on, wait
   *  in the queue for the first backoff's retry. */
  private async storeFailed(userId: string, target: PusherTarget, items: PendingPush[]): Promise<void> {
    this.store(userId, target, items);
    this.setFailures(1);
    await this.ctx.storage.setAlarm(Date.now() + pushBackoffMs(1));
    this.watchdog = true;
  }

  /** Put items in the durable queue (with the target, which the alarm path needs). */
  private store(userId: string, target: PusherTarget, items: PendingPush[]): void {
    const now = Date.now();
    this.mayHaveQueue = true;
    this.ctx.storage.transactionSync(() => {
      this.setMeta("user_id", userId);
      this.setMeta("target", JSON.stringify(target));
      for (const p of items) {
        const badge = p.event ? 0 : 1;
        // A newer badge supersedes waiting ones (never the one in flight).
        if (badge) this.sql.exec("DELETE FROM queue WHERE badge = 1 AND seq > ?", this.inflightSeq);
        this.sql.exec("INSERT INTO queue (body, badge, enqueued_ts) VALUES (?, ?, ?)", JSON.stringify(p), badge, now);
      }
      const n = this.queued();
      if (n > PUSH_MAX_QUEUE) {
        this.sql.exec("DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE seq > ? ORDER BY seq LIMIT ?)", this.inflightSeq, n - PUSH_MAX_QUEUE);
      }
    });
  }

  /** The pusher was deleted: forget everything. */
  async drop(): Promise<void> {
    this.watchdog = false;
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.sql.exec(SCHEMA);
    this.failures = 0;
    this.mayHaveQueue = false;
  }

  async status(): Promise<PusherStatus> {
    const next = await this.ctx.storage.getAlarm();
    return {
      queued: this.queued(),
      failures: this.failures,
      sent: this.num("sent") + this.sentDirect,
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
          const failures = this.failures + 1;
          this.setFailures(failures);
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
    if (!head || !targetJson || !userId) {
      if (!head) this.mayHaveQueue = false;
      return "empty";
    }
    // In memory only: one run at a time, and after a restart nothing is in flight. (A meta write
    // here cost a commit, and the output gate held the request until it was on disk.)
    this.inflightSeq = head.seq;
    let r: "sent" | "failed" | "dropped";
    try {
      r = await this.post(userId, JSON.parse(targetJson) as PusherTarget, JSON.parse(head.body) as PendingPush);
    } finally {
      this.inflightSeq = 0;
    }
    if (r !== "sent") return r;
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM queue WHERE seq = ?", head.seq);
      this.setFailures(0);
      this.setMeta("sent", this.num("sent") + 1);
    });
    return "sent";
  }

  private post(userId: string, target: PusherTarget, p: PendingPush): Promise<"sent" | "failed" | "dropped"> {
    return postNotify(this.env, this.config, userId, target, p);
  }
}

export { coalesceBadges } from "../src/services/push-send";

/** Backoff: uniform in [cap/2, cap], cap = 1 s * 2^(n-1) ≤ a day. */
export function pushBackoffMs(failures: number, random: () => number = Math.random): number {
  return jitteredBackoffMs(failures, PUSH_BASE_BACKOFF_MS, PUSH_MAX_BACKOFF_MS, random);
}
