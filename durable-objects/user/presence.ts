// Presence in the hub (module "Presence"): my own (PUT /presence, /sync's set_presence) and that
// of the users I share a room with (fanned in by the Worker, from a local user or an m.presence
// EDU). /sync carries what changed after the token.
import type { JsonObject } from "../../src/core/types";
import { presenceEvent } from "../../src/rpc/user";

/** How often a user who stays online through /sync has their presence shared again (below
 *  PRESENCE_IDLE_MS, so that others do not see them idle meanwhile). */
const PRESENCE_PING_MS = 4 * 60_000;

/** What the presence module needs from the hub. */
export interface PresenceAccess {
  sql: SqlStorage;
  next(): number;
  wake(): void;
}

export interface PresenceState {
  presence: string;
  statusMsg: string | null;
  lastActiveTs: number;
}

export class Presence {
  /** When my presence was last shared with others (in memory: after an eviction the next sync
   *  shares it again, which is harmless). */
  private sharedTs = 0;

  constructor(private a: PresenceAccess) {}

  /** My presence. Returns whether it changed (the Worker then fans it out to users I share a
   *  room with). */
  setMine(me: string, presence: string, statusMsg?: string | null): boolean {
    const now = Date.now();
    const cur = this.a.sql.exec<{ presence: string; status_msg: string | null; last_active_ts: number }>("SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = ?", me).toArray()[0];
    const msg = statusMsg === undefined ? (cur?.status_msg ?? null) : statusMsg;
    // Only going online is "pro-active" (module "Presence", "Last active ago"): becoming
    // unavailable or offline keeps the last active time.
    const lastActive = presence === "online" || !cur ? now : cur.last_active_ts;
    if (cur && cur.presence === presence && cur.status_msg === msg) {
      // Only activity: refresh last_active without waking anyone (spec: last_active_ago).
      if (presence === "online" && now - cur.last_active_ts > 10_000) this.a.sql.exec("UPDATE presence SET last_active_ts = ? WHERE user_id = ?", now, me);
      return false;
    }
    this.store(me, presence, msg, lastActive);
    return true;
  }

  /** Whether my presence is due to be shared again although it did not change: while I stay
   *  online through /sync, every PRESENCE_PING_MS, so that other servers and local room-mates
   *  (who compute idleness from the last active time they were given) keep seeing me online.
   *  At most one ping per interval: the rate limit of sync-driven presence. */
  pingDue(changed: boolean, now: number): boolean {
    if (!changed && now - this.sharedTs < PRESENCE_PING_MS) return false;
    this.sharedTs = now;
    return true;
  }

  /** Another user's presence. The same state again only moves the last active time, without
   *  waking the long-poll or coming down /sync: while a user stays online their server pings it
   *  (currently_active: "the server will not send further updates to the last active time" to
   *  clients). */
  setOther(other: { userId: string; presence: string; statusMsg: string | null; lastActiveTs: number }): void {
    const cur = this.a.sql.exec<{ presence: string; status_msg: string | null }>("SELECT presence, status_msg FROM presence WHERE user_id = ?", other.userId).toArray()[0];
    if (cur && cur.presence === other.presence && cur.status_msg === other.statusMsg) {
      this.a.sql.exec("UPDATE presence SET last_active_ts = MAX(last_active_ts, ?) WHERE user_id = ?", other.lastActiveTs, other.userId);
      return;
    }
    this.store(other.userId, other.presence, other.statusMsg, other.lastActiveTs);
  }

  private store(user: string, presence: string, msg: string | null, ts: number): void {
    const upos = this.a.next();
    this.a.sql.exec(
      `INSERT INTO presence (user_id, presence, status_msg, last_active_ts, upos) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, upos = excluded.upos`,
      user,
      presence,
      msg,
      ts,
      upos,
    );
    this.a.wake();
  }

  get(userId: string): PresenceState | null {
    const row = this.a.sql.exec<{ presence: string; status_msg: string | null; last_active_ts: number }>("SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = ?", userId).toArray()[0];
    return row ? { presence: row.presence, statusMsg: row.status_msg, lastActiveTs: row.last_active_ts } : null;
  }

  /** m.presence events of what changed in (from, q]. */
  since(from: number, q: number): JsonObject[] {
    return this.a.sql
      .exec<{ user_id: string; presence: string; status_msg: string | null; last_active_ts: number }>(
        "SELECT user_id, presence, status_msg, last_active_ts FROM presence WHERE upos > ? AND upos <= ?",
        from,
        q,
      )
      .toArray()
      .map((r) => presenceEvent(r.user_id, r.presence, r.status_msg, r.last_active_ts));
  }
}
