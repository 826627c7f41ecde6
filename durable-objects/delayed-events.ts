// DelayedEventsDO: one per local user. That user's delayed events (MSC4140, "Cancellable delayed
// events"), used by Element Call to end a call membership when a client vanishes: the client
// schedules a "leave" with `?org.matrix.msc4140.delay=ms` and keeps restarting it; if it stops,
// this object's alarm sends the event at its time, with nobody connected.
//
// - `scheduled` holds what waits; the alarm is always at the earliest send_ts. Sending goes
//   through the room's one door (RoomDO.createLocalEvent), with the power levels of send time.
// - `finalised` remembers outcomes (sent with its event ID, or cancelled, by the user or by an
//   error) for a week, so management calls can be retried: the same outcome again is 200, a
//   conflicting one 409 (MSC4140 "Managing scheduled delayed events").
// - A send that fails for a transient reason (the RoomDO unreachable) stays scheduled and is
//   retried; a refusal (403 and the like) finalises it as cancelled with that error.
// - delay_id = "d" + 128 random bits + "." + base64url(user ID): unguessable (it works as a
//   capability on the unauthenticated endpoints) and it names this object, so no index is needed.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { parseConfig } from "../src/config";
import { roomStub } from "../src/services/rooms";
import { encodeBase64Url, decodeBase64 } from "../src/core/base64";
import type { JsonObject } from "../src/core/types";
import { MAX_DELAY_MS, MAX_SCHEDULED, newDelayId, ownerOfDelayId, type DelayedEventSpec, type DelayedResult } from "../src/rpc/delayed-events";

const FINALISED_KEEP_MS = 7 * 24 * 3600_000;
const RETRY_MS = 5_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS scheduled (
  delay_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, type TEXT NOT NULL, state_key TEXT, content TEXT NOT NULL,
  delay INTEGER NOT NULL, running_since INTEGER NOT NULL, send_ts INTEGER NOT NULL, txn TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS scheduled_send_ts ON scheduled(send_ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS finalised (
  delay_id TEXT PRIMARY KEY, outcome TEXT NOT NULL, event_id TEXT, error TEXT, ts INTEGER NOT NULL
);
`;


type ScheduledRow = {
  delay_id: string;
  room_id: string;
  type: string;
  state_key: string | null;
  content: string;
  delay: number;
  running_since: number;
  send_ts: number;
};


export class DelayedEventsDO extends DurableObject<Env> {
  private sql: SqlStorage;
  private running = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
  }

  private userId(): string | undefined {
    return this.sql.exec<{ v: string }>("SELECT value AS v FROM meta WHERE key = 'user_id'").toArray()[0]?.v;
  }

  private async rearm(): Promise<void> {
    const next = this.sql.exec<{ t: number | null }>("SELECT MIN(send_ts) AS t FROM scheduled").one().t;
    if (next === null) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(next);
  }

  async schedule(userId: string, spec: DelayedEventSpec): Promise<DelayedResult<{ delayId: string }>> {
    this.sql.exec("INSERT OR IGNORE INTO meta (key, value) VALUES ('user_id', ?)", userId);
    if (spec.txn) {
      const same = this.sql.exec<{ delay_id: string }>("SELECT delay_id FROM scheduled WHERE txn = ?", spec.txn).toArray()[0];
      if (same) return { ok: true, value: { delayId: same.delay_id } };
    }
    const count = this.sql.exec<{ n: number; t: number | null }>("SELECT COUNT(*) AS n, MIN(send_ts) AS t FROM scheduled").one();
    if (count.n >= MAX_SCHEDULED) {
      // MSC4140: 429 M_LIMIT_EXCEEDED, Retry-After = until the next of the user's events is sent.
      return { ok: false, status: 429, errcode: "M_LIMIT_EXCEEDED", error: "The maximum number of delayed events has been reached.", retryAfterMs: Math.max(0, (count.t ?? Date.now()) - Date.now()) };
    }
    const now = Date.now();
    const delayId = newDelayId(userId);
    this.sql.exec(
      "INSERT INTO scheduled (delay_id, room_id, type, state_key, content, delay, running_since, send_ts, txn) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      delayId,
      spec.roomId,
      spec.type,
      spec.stateKey ?? null,
      JSON.stringify(spec.content),
      spec.delay,
      now,
      now + spec.delay,
      spec.txn ?? null,
    );
    await this.rearm();
    return { ok: true, value: { delayId } };
  }

  /** restart | cancel | send one delayed event. */
  async update(delayId: string, action: "restart" | "cancel" | "send"): Promise<DelayedResult<Record<string, never>>> {
    const row = this.sql.exec<ScheduledRow>("SELECT * FROM scheduled WHERE delay_id = ?", delayId).toArray()[0];
    if (!row) {
      const fin = this.sql.exec<{ outcome: string }>("SELECT outcome FROM finalised WHERE delay_id = ?", delayId).toArray()[0];
      if (!fin) return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: "No such delayed event" };
      // Retries are safe: the outcome already reached is success, a conflicting one 409.
      if ((action === "send" && fin.outcome === "send") || (action === "cancel" && fin.outcome === "cancel")) return { ok: true, value: {} };
      return { ok: false, status: 409, errcode: "M_UNKNOWN", error: `The delayed event was already ${fin.outcome === "send" ? "sent" : "cancelled"}` };
    }
    if (action === "restart") {
      const now = Date.now();
      this.sql.exec("UPDATE scheduled SET running_since = ?, send_ts = ? WHERE delay_id = ?", now, now + row.delay, delayId);
      await this.rearm();
      return { ok: true, value: {} };
    }
    if (action === "cancel") {
      this.finalise(row, "cancel", null, null);
      await this.rearm();
      return { ok: true, value: {} };
    }
    const r = await this.sendNow(row);
    await this.rearm();
    if (r.ok) return { ok: true, value: {} };
    // MSC4140: answer the send's error; the event stays scheduled until its time.
    return r;
  }

  async list(): Promise<JsonObject[]> {
    return this.sql
      .exec<ScheduledRow>("SELECT * FROM scheduled ORDER BY send_ts")
      .toArray()
      .map((r) => ({
        delay_id: r.delay_id,
        room_id: r.room_id,
        type: r.type,
        ...(r.state_key !== null ? { state_key: r.state_key } : {}),
        delay: r.delay,
        running_since: r.running_since,
        content: JSON.parse(r.content) as JsonObject,
      }));
  }

  private finalise(row: ScheduledRow, outcome: "send" | "cancel", eventId: string | null, error: JsonObject | null): void {
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM scheduled WHERE delay_id = ?", row.delay_id);
      this.sql.exec("INSERT OR REPLACE INTO finalised (delay_id, outcome, event_id, error, ts) VALUES (?, ?, ?, ?, ?)", row.delay_id, outcome, eventId, error ? JSON.stringify(error) : null, Date.now());
    });
  }

  /** Send through the room's door as the user. A refusal is returned (not finalised here). */
  private async sendNow(row: ScheduledRow): Promise<DelayedResult<{ eventId: string }>> {
    const userId = this.userId();
    if (!userId) return { ok: false, status: 500, errcode: "M_UNKNOWN", error: "Delayed event without owner" };
    const r = await roomStub(this.env, parseConfig(this.env), row.room_id).createLocalEvent({
      type: row.type,
      content: JSON.parse(row.content) as JsonObject,
      sender: userId,
      ...(row.state_key !== null ? { state_key: row.state_key } : {}),
    });
    if (!r.ok) return { ok: false, status: r.status, errcode: r.errcode, error: r.error };
    this.finalise(row, "send", r.value.eventId, null);
    return { ok: true, value: { eventId: r.value.eventId } };
  }

  async alarm(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const due = this.sql.exec<ScheduledRow>("SELECT * FROM scheduled WHERE send_ts <= ? ORDER BY send_ts LIMIT 50", Date.now()).toArray();
      for (const row of due) {
        try {
          const r = await this.sendNow(row);
          // Refused at send time (e.g. no longer allowed): cancelled with that error.
          if (!r.ok) this.finalise(row, "cancel", null, { errcode: r.errcode, error: r.error });
        } catch (e) {
          // The room could not be reached: try again shortly.
          console.warn(`delayed event ${row.delay_id}: ${(e as Error).message}`);
          this.sql.exec("UPDATE scheduled SET send_ts = ? WHERE delay_id = ?", Date.now() + RETRY_MS, row.delay_id);
        }
      }
      this.sql.exec("DELETE FROM finalised WHERE ts < ?", Date.now() - FINALISED_KEEP_MS);
      await this.rearm();
    } finally {
      this.running = false;
    }
  }
}
