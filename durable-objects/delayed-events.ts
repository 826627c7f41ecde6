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
// - A scheduled delayed *state* event is cancelled when someone else sends state with the same
//   type and state key into the room (the MSC's rule from October 2024 until it moved to
//   "Potential issues" in 2026, and Synapse's): the room tells us (delayed-state-watch.ts), and it
//   is finalised as cancelled with M_CANCELLED_BY_STATE_UPDATE (unstable: M_UNKNOWN plus
//   `org.matrix.msc4140.errcode`). The owner's own state sends do not cancel it: MatrixRTC
//   schedules its "leave" first and then sends the "join" to the same key.
// - delay_id = "d" + 128 random bits + "." + base64url(user ID): unguessable (it works as a
//   capability on the unauthenticated endpoints) and it names this object, so no index is needed.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { parseConfig, type Config } from "../src/config";
import { roomStub } from "../src/services/rooms";
import { encodeBase64Url, decodeBase64 } from "../src/core/base64";
import type { JsonObject } from "../src/core/types";
import {
  DELAYED_TXN_DEVICE,
  MAX_DELAY_MS,
  MAX_SCHEDULED,
  newDelayId,
  ownerOfDelayId,
  type DelayedEventItem,
  type DelayedEventSpec,
  type DelayedResult,
  type FinalisedDelayedEvent,
} from "../src/rpc/delayed-events";

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
/** Columns added to `finalised` after it first shipped: the event as scheduled (JSON of
 *  DelayedEventItem) and why it was finalised ("action" | "delay" | "error"). */
const FINALISED_ADDED = ["spec TEXT", "reason TEXT"];


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
  /** Configuration, parsed once per instance. */
  private config: Config;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
    const have = new Set(this.sql.exec<{ name: string }>("PRAGMA table_info(finalised)").toArray().map((r) => r.name));
    for (const col of FINALISED_ADDED) if (!have.has(col.split(" ")[0])) this.sql.exec(`ALTER TABLE finalised ADD COLUMN ${col}`);
    this.config = parseConfig(env);
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
    // Someone else's state to the same key cancels it: the room keeps a watch for us.
    if (spec.stateKey !== undefined) {
      await roomStub(this.env, this.config, spec.roomId)
        .watchDelayedState(userId, spec.type, spec.stateKey)
        .catch((e) => console.warn(`delayed event ${delayId}: could not watch the room's state: ${(e as Error).message}`));
    }
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
      this.finalise(row, "cancel", "action", null, null);
      await this.rearm();
      return { ok: true, value: {} };
    }
    const r = await this.sendNow(row, "action");
    await this.rearm();
    if (r.ok) return { ok: true, value: {} };
    // MSC4140: answer the send's error; the event stays scheduled until its time.
    return r;
  }

  /** Scheduled events, soonest first. */
  async list(): Promise<DelayedEventItem[]> {
    return this.sql.exec<ScheduledRow>("SELECT * FROM scheduled ORDER BY send_ts").toArray().map(itemOf);
  }

  /** Finalised events still remembered, newest first. */
  async listFinalised(): Promise<FinalisedDelayedEvent[]> {
    return this.sql
      .exec<FinalisedRow>("SELECT * FROM finalised WHERE spec IS NOT NULL ORDER BY ts DESC LIMIT 1000")
      .toArray()
      .map(finalisedOf);
  }

  /** One delayed event, scheduled or finalised (undefined: unknown or forgotten). */
  async get(delayId: string): Promise<{ item: DelayedEventItem; finalised?: FinalisedDelayedEvent } | undefined> {
    const row = this.sql.exec<ScheduledRow>("SELECT * FROM scheduled WHERE delay_id = ?", delayId).toArray()[0];
    if (row) return { item: itemOf(row) };
    const fin = this.sql.exec<FinalisedRow>("SELECT * FROM finalised WHERE delay_id = ? AND spec IS NOT NULL", delayId).toArray()[0];
    if (!fin) return undefined;
    const f = finalisedOf(fin);
    return { item: f.delayed_event, finalised: f };
  }

  /** The room saw state of (type, stateKey) from `sender` (delayed-state-watch.ts): my scheduled
   *  delayed state events for that key are cancelled, unless I sent it. */
  async cancelForState(roomId: string, type: string, stateKey: string, sender: string): Promise<number> {
    if (sender === this.userId()) return 0;
    const rows = this.sql.exec<ScheduledRow>("SELECT * FROM scheduled WHERE room_id = ? AND type = ? AND state_key = ?", roomId, type, stateKey).toArray();
    for (const row of rows) {
      this.finalise(row, "cancel", "error", null, {
        errcode: "M_UNKNOWN",
        "org.matrix.msc4140.errcode": "M_CANCELLED_BY_STATE_UPDATE",
        error: "The delayed event did not get sent because a different user updated the same state event.",
      });
    }
    if (rows.length) await this.rearm();
    return rows.length;
  }

  private finalise(row: ScheduledRow, outcome: "send" | "cancel", reason: "action" | "delay" | "error", eventId: string | null, error: JsonObject | null): void {
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM scheduled WHERE delay_id = ?", row.delay_id);
      this.sql.exec(
        "INSERT OR REPLACE INTO finalised (delay_id, outcome, event_id, error, ts, spec, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        row.delay_id,
        outcome,
        eventId,
        error ? JSON.stringify(error) : null,
        Date.now(),
        JSON.stringify(itemOf(row)),
        reason,
      );
    });
  }

  /** Send through the room's door as the user. A refusal is returned (not finalised here). */
  private async sendNow(row: ScheduledRow, reason: "action" | "delay"): Promise<DelayedResult<{ eventId: string }>> {
    const userId = this.userId();
    if (!userId) return { ok: false, status: 500, errcode: "M_UNKNOWN", error: "Delayed event without owner" };
    const r = await roomStub(this.env, this.config, row.room_id).createLocalEvent({
      type: row.type,
      content: JSON.parse(row.content) as JsonObject,
      sender: userId,
      ...(row.state_key !== null ? { state_key: row.state_key } : {}),
      // The room shows the delay_id to the sender in unsigned, and a retry returns this event.
      txn: { deviceId: DELAYED_TXN_DEVICE, txnId: row.delay_id, scope: "delay" },
    });
    if (!r.ok) return { ok: false, status: r.status, errcode: r.errcode, error: r.error };
    this.finalise(row, "send", reason, r.value.eventId, null);
    return { ok: true, value: { eventId: r.value.eventId } };
  }

  async alarm(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const due = this.sql.exec<ScheduledRow>("SELECT * FROM scheduled WHERE send_ts <= ? ORDER BY send_ts LIMIT 50", Date.now()).toArray();
      for (const row of due) {
        try {
          const r = await this.sendNow(row, "delay");
          // Refused at send time (e.g. no longer allowed): cancelled with that error.
          if (!r.ok) this.finalise(row, "cancel", "error", null, { errcode: r.errcode, error: r.error });
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

type FinalisedRow = { delay_id: string; outcome: string; event_id: string | null; error: string | null; ts: number; spec: string; reason: string | null };

/** A scheduled event as the GET endpoints show it: the fields of MSC4140's current text
 *  (delay_ms, scheduled_at) and of the revision Synapse and Element Call use (delay,
 *  running_since). */
function itemOf(r: ScheduledRow): DelayedEventItem {
  return {
    delay_id: r.delay_id,
    room_id: r.room_id,
    type: r.type,
    ...(r.state_key !== null ? { state_key: r.state_key } : {}),
    delay: r.delay,
    running_since: r.running_since,
    delay_ms: r.delay,
    scheduled_at: r.running_since,
    content: JSON.parse(r.content) as JsonObject,
  };
}

function finalisedOf(r: FinalisedRow): FinalisedDelayedEvent {
  return {
    delayed_event: JSON.parse(r.spec) as DelayedEventItem,
    outcome: r.outcome === "send" ? "send" : "cancel",
    reason: r.reason === "delay" || r.reason === "error" ? r.reason : "action",
    ...(r.error ? { error: JSON.parse(r.error) as JsonObject } : {}),
    ...(r.event_id ? { event_id: r.event_id } : {}),
    finalised_ts: r.ts,
  };
}
