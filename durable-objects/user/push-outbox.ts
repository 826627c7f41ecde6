// The hub's side of push delivery (spec: module "Push Notifications", "Server behaviour": a new
// event's push rules may result in "a request to the configured push gateway").
//
// Inside the hub's transaction that records an event (durable-objects/user/fan-in.ts), `recordEvent` writes
// an outbox row when the rules said notify, the user did not send it, and the user has pushers;
// `recordBadge` does the same for a read receipt that lowers the count (badge update, counts
// only, as Synapse sends). After the commit, `drain` hands the outbox to each pusher's queue
// (PusherDO) and deletes what every queue accepted. A failed hand-over is retried by the hub's
// alarm, set in the same transaction as the row, so nothing committed is lost to a restart.
// Nothing here runs in the send path: the RoomDO's fan-out to hubs is already asynchronous for
// everyone but the sender, and the sender is never pushed.
import type { Env } from "../../src/env";
import type { JsonObject, JsonValue } from "../../src/core/types";
import { prioOf, tweaksOf, type PendingPush, type PusherTarget } from "../../src/core/push-gateway";
import { parseConfig } from "../../src/config";
import { pusherStub, type Placement } from "../../src/rpc/stubs";

export const PUSH_OUTBOX_SCHEMA = `
CREATE TABLE IF NOT EXISTS push_targets (app_id TEXT NOT NULL, pushkey TEXT NOT NULL, target TEXT NOT NULL, PRIMARY KEY (app_id, pushkey));
CREATE TABLE IF NOT EXISTS push_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
`;

/** A retry of a failed hand-over, and the safety net if the immediate drain never ran. */
const OUTBOX_RETRY_MS = 5_000;

export class PushOutbox {
  private draining = false;
  private again = false;
  /** The retry alarm is set (in memory: after a restart it is simply set again). */
  private armed = false;
  /** Where the pusher queues are placed: the configuration, parsed once per hub instance. */
  private placement?: Placement;

  constructor(
    private ctx: DurableObjectState,
    private env: Env,
  ) {
    ctx.storage.sql.exec(PUSH_OUTBOX_SCHEMA);
    // Rows left by a hub that stopped before arming its alarm: retry soon.
    if (ctx.storage.sql.exec("SELECT 1 FROM push_outbox LIMIT 1").toArray().length) void ctx.storage.setAlarm(Date.now() + 100);
  }

  private get sql(): SqlStorage {
    return this.ctx.storage.sql;
  }

  private hasTargets(): boolean {
    return this.sql.exec("SELECT 1 FROM push_targets LIMIT 1").toArray().length > 0;
  }

  /** Replace the copy of the user's pushers (src/services/pushers.ts, after every D1 change). */
  setTargets(targets: PusherTarget[]): void {
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM push_targets");
      for (const t of targets) this.sql.exec("INSERT INTO push_targets (app_id, pushkey, target) VALUES (?, ?, ?)", t.appId, t.pushkey, JSON.stringify(t));
      if (!targets.length) this.sql.exec("DELETE FROM push_outbox");
    });
  }

  /** The badge: notifying events after my read mark in every room I am joined to (Push Gateway
   *  API counts.unread: "unread messages ... across all of the rooms they are a member of").
   *  Thread receipts are not applied here; an unthreaded or main receipt is. */
  private unread(): number {
    return this.sql
      .exec<{ n: number }>(
        `SELECT COUNT(*) AS n FROM room_events e JOIN rooms r ON r.room_id = e.room_id AND r.membership = 'join'
         LEFT JOIN read_marks m ON m.room_id = e.room_id AND m.thread_id = ''
         WHERE e.notify = 1 AND e.stream > COALESCE(m.stream, -1)`,
      )
      .one().n;
  }

  /** Inside the hub's transaction, after the event's room_events row is written. */
  recordEvent(
    me: string,
    roomId: string,
    ev: { event_id: string; type: string; sender: string; state_key?: string; content: JsonObject },
    outcome: { notify: boolean; actions: JsonValue[] },
  ): void {
    if (!outcome.notify || ev.sender === me || !this.hasTargets()) return;
    const tweaks = tweaksOf(outcome.actions);
    const p: PendingPush = {
      event: { event_id: ev.event_id, room_id: roomId, type: ev.type, sender: ev.sender, content: ev.content, ...(ev.state_key !== undefined ? { state_key: ev.state_key } : {}) },
      userIsTarget: ev.type === "m.room.member" && ev.state_key === me,
      counts: { unread: this.unread() },
      tweaks,
      prio: prioOf(ev, me, tweaks),
    };
    this.add(p);
  }

  /** Inside the hub's transaction: my read mark moved, so the badge may have gone down. */
  recordBadge(): void {
    if (!this.hasTargets()) return;
    this.add({ counts: { unread: this.unread() }, tweaks: {}, prio: "low" });
  }

  private add(p: PendingPush): void {
    this.sql.exec("INSERT INTO push_outbox (body) VALUES (?)", JSON.stringify(p));
    this.pending = true;
  }

  /** Set by add(); the caller drains after its commit. */
  pending = false;

  /** After the commit: arm the safety alarm (before the hub answers, so a crash after the
   *  answer still retries) and start the hand-over without waiting for it: the hub's caller (the
   *  RoomDO's fan-out) never waits for pusher queues. */
  async afterCommit(userId: string): Promise<void> {
    if (!this.pending) return;
    this.pending = false;
    if (!this.armed) {
      await this.ctx.storage.setAlarm(Date.now() + OUTBOX_RETRY_MS);
      this.armed = true;
    }
    void this.drain(userId);
  }

  /** Hand every outbox row to every pusher's queue, in order; one drain at a time. */
  async drain(userId: string): Promise<void> {
    if (this.draining) {
      this.again = true;
      return;
    }
    this.draining = true;
    try {
      do {
        this.again = false;
        const rows = this.sql.exec<{ seq: number; body: string }>("SELECT seq, body FROM push_outbox ORDER BY seq LIMIT 200").toArray();
        if (!rows.length) break;
        const targets = this.sql.exec<{ target: string }>("SELECT target FROM push_targets").toArray().map((r) => JSON.parse(r.target) as PusherTarget);
        const items = rows.map((r) => JSON.parse(r.body) as PendingPush);
        const placement = (this.placement ??= parseConfig(this.env));
        await Promise.all(targets.map((t) => pusherStub(this.env, placement, userId, t.appId, t.pushkey).enqueue(userId, t, items)));
        this.sql.exec("DELETE FROM push_outbox WHERE seq <= ?", rows[rows.length - 1].seq);
        if (rows.length === 200) this.again = true;
      } while (this.again);
    } catch (e) {
      // Rows stay; the alarm tries again (a queue that took them twice sends twice: at-least-once).
      console.warn(`push: hand-over to pusher queues failed for ${userId}: ${(e as Error).message}`);
      await this.ctx.storage.setAlarm(Date.now() + OUTBOX_RETRY_MS);
      this.armed = true;
    } finally {
      this.draining = false;
    }
  }

  /** The hub's alarm: retry what is left. */
  async alarm(userId: string | undefined): Promise<void> {
    this.armed = false;
    if (!userId) return;
    await this.drain(userId);
    if (this.sql.exec("SELECT 1 FROM push_outbox LIMIT 1").toArray().length) {
      await this.ctx.storage.setAlarm(Date.now() + OUTBOX_RETRY_MS);
      this.armed = true;
    }
  }
}
