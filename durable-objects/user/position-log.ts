// The position log: `room_log` (which room moved to which room stream position at each hub
// position), the device marks that hold its compaction back, and compaction itself.
//
// For a token P the hub knows exactly which rooms changed after P and, per room, the range
// (stream at P, stream at the new position] the client has not seen. /sync fetches only those
// ranges from the RoomDOs.
//
// Compaction (compactLog): room_log and device_list_log would grow with every event the user
// hears about. Below a horizon H (meta `log_floor`) they keep only the newest entry per (room,
// kind) — kind: timeline (stream set, carrying the highest stream at or below H) or not — and the
// newest device-list entry per user. H stays at least LOG_KEEP positions back and below the
// sync_marks of devices that synced within MARK_RETAIN_MS, so their tokens stay exact. What a
// token P below H still gets:
//   - which rooms changed after P: exact (a room that changed in (P, H] has its kept entry there);
//   - per room, the stream the client had seen: exact unless the room's timeline moved in
//     (P, H]; then the room comes as a gap (SyncRoomDelta.gap): the events after H with
//     `limited: true` and full state, so nothing is repeated and /messages from prev_batch
//     reaches what was skipped;
//   - typing/receipts/account data/presence/device_lists in /sync: exact (latest-per-key tables);
//   - GET /keys/changes: exact when `to` >= H; otherwise 400 M_INVALID_PARAM.
import type { RoomPosition } from "../../src/rpc/user";
import { pruneLazyMembers } from "./lazy-members";
import { expireSlidingConns } from "../sliding-conn";

/** Log compaction: the newest positions always kept exact; how often (in positions) to try. */
const LOG_KEEP = 10_000;
const LOG_COMPACT_EVERY = 10_000;
/** Positions compacted per transaction (a backlog is compacted in slices: see compactTo). */
const COMPACT_SLICE = 10_000;
/** A device's sync mark holds compaction back while it synced this recently. */
export const MARK_RETAIN_MS = 24 * 3600_000;
/** A device's mark is rewritten at most this often (each write delays a /sync response). */
const MARK_REFRESH_MS = 10 * 60_000;

/** What the position log needs from the hub. */
export interface PositionLogAccess {
  sql: SqlStorage;
  /** The newest position taken. */
  pos(): number;
  setMeta(key: string, value: string | number): void;
  transaction<T>(fn: () => T): T;
}

export class PositionLog {
  /** Below this position room_log and device_list_log are compacted (meta log_floor). */
  private floorPos: number;
  /** Position of the last compaction attempt (in memory; a restart just tries again). */
  private lastCompactTry: number;
  /** The compaction under way (slices still to run), if any. */
  private running?: Promise<number>;
  /** Slices run by this instance (compactLog reports how many a call took). */
  private slices = 0;

  constructor(
    private a: PositionLogAccess,
    floor: number,
  ) {
    this.floorPos = floor;
    this.lastCompactTry = a.pos();
  }

  /** Oldest position the logs still answer from (raised by compaction; 0 = everything). */
  get floor(): number {
    return this.floorPos;
  }

  /** Log a change of `roomId` at `upos`: `stream` its new room stream position, or null for a
   *  non-timeline change (ephemeral, room account data, counts). */
  append(upos: number, roomId: string, stream: number | null): void {
    this.a.sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (?, ?, ?)", upos, roomId, stream);
  }

  /** Timeline entries of `roomId` ([upos, stream], a run of notices) in one statement. */
  appendRun(roomId: string, entries: [upos: number, stream: number][]): void {
    this.a.sql.exec("INSERT INTO room_log (upos, room_id, stream) SELECT value->>0, ?1, value->>1 FROM json_each(?2)", roomId, JSON.stringify(entries));
  }

  /** The highest room stream position logged for `roomId` at or below `p` (null: none). */
  streamAt(roomId: string, p: number): number | null {
    return this.a.sql.exec<{ s: number | null }>("SELECT MAX(stream) AS s FROM room_log WHERE room_id = ? AND upos <= ?", roomId, p).one().s;
  }

  /** Rooms with a log entry in (from, to]. */
  roomsChanged(from: number, to: number): string[] {
    return this.a.sql.exec<{ room_id: string }>("SELECT DISTINCT room_id FROM room_log WHERE upos > ? AND upos <= ?", from, to).toArray().map((r) => r.room_id);
  }

  /** Whether `roomId` had a non-timeline change in (from, to]. */
  roomTouched(roomId: string, from: number, to: number): boolean {
    return this.a.sql.exec("SELECT 1 FROM room_log WHERE room_id = ? AND stream IS NULL AND upos > ? AND upos <= ? LIMIT 1", roomId, from, to).toArray().length > 0;
  }

  /** The stream the client had seen of `roomId` at token position `from`. Below the compacted
   *  floor it is exact unless the room's timeline moved between the token and the floor (its
   *  kept entry is then above the token): then `gap`, and the stream at the floor (see the
   *  header). */
  seenAt(roomId: string, from: number): { stream: number | null; gap: boolean } {
    if (from < this.floorPos) {
      const kept = this.a.sql
        .exec<{ u: number | null }>("SELECT MAX(upos) AS u FROM room_log WHERE room_id = ? AND stream IS NOT NULL AND upos <= ?", roomId, this.floorPos)
        .one().u;
      if (kept !== null && kept > from) return { stream: this.streamAt(roomId, this.floorPos), gap: true };
    }
    return { stream: this.streamAt(roomId, from), gap: false };
  }

  /** What a token at `pos` says about one room: see UserDO.roomPosition. */
  roomPositionAt(roomId: string, pos: number): RoomPosition {
    const logged = (where: string, ...args: number[]) =>
      this.a.sql
        .exec<{ u: number | null; s: number | null; first: number | null }>(
          `SELECT MAX(upos) AS u, MAX(stream) AS s, MIN(stream) AS first FROM room_log WHERE room_id = ? AND stream IS NOT NULL AND ${where}`,
          roomId,
          ...args,
        )
        .one();
    // Below the compacted floor the room's entries up to the floor were folded into its newest
    // one. If that one lies after the token, the stream at the token is gone: be conservative —
    // at least the stream of my last membership event before the token (membership_log is never
    // compacted), at most the stream at the floor.
    if (pos < this.floorPos) {
      const folded = logged("upos > ? AND upos <= ?", pos, this.floorPos);
      if (folded.u !== null) {
        const m = this.a.sql.exec<{ stream: number }>("SELECT stream FROM membership_log WHERE room_id = ? AND upos <= ? ORDER BY upos DESC LIMIT 1", roomId, pos).toArray()[0];
        return { low: m?.stream ?? null, high: folded.s };
      }
    }
    const seen = logged("upos <= ?", pos).s;
    if (seen !== null) return { low: seen, high: seen };
    // The room had not reached this hub yet: the client had seen none of it. Events before the
    // room's first notice after the token may be older or newer than the token.
    const first = logged("upos > ?", pos).first;
    return { low: null, high: first === null ? null : first - 1 };
  }

  /** Remember the oldest token this device may still present (see sync_marks). Written only
   *  when it moves back or the stored one is stale: a stored mark older than the true one only
   *  holds compaction back a little longer. */
  markDevice(deviceId: string, upos: number): void {
    const now = Date.now();
    const cur = this.a.sql.exec<{ upos: number; ts: number }>("SELECT upos, ts FROM sync_marks WHERE device_id = ?", deviceId).toArray()[0];
    if (cur && upos >= cur.upos && now - cur.ts < MARK_REFRESH_MS) return;
    this.a.sql.exec(
      "INSERT INTO sync_marks (device_id, upos, ts) VALUES (?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET upos = excluded.upos, ts = excluded.ts",
      deviceId,
      upos,
      now,
    );
  }

  forgetDevice(deviceId: string): void {
    this.a.sql.exec("DELETE FROM sync_marks WHERE device_id = ?", deviceId);
  }

  // -------------------------------------------------------------------------------------------
  // Compaction.

  /** Compact when LOG_COMPACT_EVERY positions passed since the last try. The first slice runs
   *  now (usually the only one: ~LOG_COMPACT_EVERY positions); a backlog, such as a day of
   *  positions held back by a device mark, continues in the background, slice by slice. */
  maybeCompact(): void {
    const pos = this.a.pos();
    if (pos - this.lastCompactTry < LOG_COMPACT_EVERY) return;
    this.lastCompactTry = pos;
    if (this.running) return;
    try {
      const h = this.horizon(LOG_KEEP, Date.now());
      // An async function runs up to its first await at once: the first slice (and, when it
      // reaches h, the pruning) happens here, inside the call that took the position.
      const run = this.compactTo(h, COMPACT_SLICE);
      if (this.floorPos < h) this.track(run);
      else run.catch(() => 0);
    } catch (e) {
      console.error("hub log compaction failed", e);
    }
  }

  private track(run: Promise<number>): void {
    this.running = run.catch(() => 0).finally(() => (this.running = undefined));
  }

  /** The highest position compaction may reach: `keep` positions back, and below every mark
   *  of a device that synced within MARK_RETAIN_MS of `now`. */
  private horizon(keep: number, now: number): number {
    const mark = this.a.sql.exec<{ m: number | null }>("SELECT MIN(upos) AS m FROM sync_marks WHERE ts >= ?", now - MARK_RETAIN_MS).one().m;
    return Math.min(this.a.pos() - keep, mark ?? Number.MAX_SAFE_INTEGER);
  }

  /** See UserDO.compactLog. `slice`: positions per transaction (default COMPACT_SLICE). */
  async compactLog(opts: { keep?: number; now?: number; at?: number; slice?: number } = {}): Promise<{ floor: number; removed: number; slices: number }> {
    // One compaction at a time: let a background one finish first (it only lowers the work).
    while (this.running) await this.running;
    const h = Math.min(this.horizon(opts.keep ?? LOG_KEEP, opts.now ?? Date.now()), opts.at ?? Number.MAX_SAFE_INTEGER);
    const slices0 = this.slices;
    const run = this.compactTo(h, Math.max(1, opts.slice ?? COMPACT_SLICE), opts.now ?? Date.now());
    this.track(run);
    const removed = await run;
    return { floor: this.floorPos, removed, slices: this.slices - slices0 };
  }

  /** Compact up to `h` in slices of at most `slice` positions, each its own transaction, with a
   *  turn of the event loop between them so the hub serves requests meanwhile: over a backlog
   *  of 1,000,000 positions one transaction took 7.8 s (docs/benchmarks.md), during which the
   *  hub answered nothing. Every slice leaves a complete compaction at its own horizon (the
   *  newest entry per key at or below it), so stopping between slices is safe and the end
   *  result is the one a single transaction gives. Then lazy-members rows of devices idle past
   *  MARK_RETAIN_MS and sliding sync connections idle past their TTL go (judged at `now`).
   *  Returns the log rows removed. */
  private async compactTo(h: number, slice: number, now = Date.now()): Promise<number> {
    let removed = 0;
    try {
      const most = Math.ceil((h - this.floorPos) / slice) + 1;
      for (let i = 0; this.floorPos < h && i < most; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 0));
        removed += this.compactSlice(h, slice);
      }
      pruneLazyMembers(this.a.sql, now - MARK_RETAIN_MS);
      // Sliding sync connections idle past their TTL go too (durable-objects/sliding-conn.ts).
      expireSlidingConns(this.a.sql, now);
    } catch (e) {
      console.error("hub log compaction failed", e);
      throw e;
    }
    return removed;
  }

  /** One transaction: compact up to min(h, floor + slice). Returns the log rows removed. */
  private compactSlice(h: number, slice: number): number {
    if (h <= this.floorPos) return 0;
    const to = Math.min(h, this.floorPos + slice);
    const sql = this.a.sql;
    const count = () =>
      sql.exec<{ n: number }>("SELECT (SELECT COUNT(*) FROM room_log WHERE upos <= ?1) + (SELECT COUNT(*) FROM device_list_log WHERE upos <= ?1) AS n", to).one().n;
    const before = count();
    // NOT INDEXED: read rows by position (the primary key), so a slice costs what lies at or
    // below `to` — the kept rows below the floor plus the slice. Left to itself SQLite groups
    // through the (room_id, upos, stream) index and scans all of it: every slice then cost the
    // whole log (100 slices over 1,000,000 positions took 48 s instead of 16).
    this.a.transaction(() => {
      // Timeline entries: the newest per room carries the highest stream at or below `to`.
      const tops = sql
        .exec<{ room_id: string; u: number; s: number }>(
          "SELECT room_id, MAX(upos) AS u, MAX(stream) AS s FROM room_log NOT INDEXED WHERE upos <= ? AND stream IS NOT NULL GROUP BY room_id",
          to,
        )
        .toArray();
      for (const t of tops) sql.exec("UPDATE room_log SET stream = ? WHERE upos = ? AND stream != ?", t.s, t.u, t.s);
      // Then keep only the newest entry per (room, kind) at or below `to`.
      sql.exec(
        `DELETE FROM room_log WHERE upos <= ?1 AND upos NOT IN (
           SELECT MAX(upos) FROM room_log NOT INDEXED WHERE upos <= ?1 GROUP BY room_id, stream IS NULL)`,
        to,
      );
      // Device lists: the newest entry per user at or below `to`.
      sql.exec(
        `DELETE FROM device_list_log WHERE upos <= ?1 AND upos < (
           SELECT MAX(d.upos) FROM device_list_log d WHERE d.user_id = device_list_log.user_id AND d.upos <= ?1)`,
        to,
      );
      this.a.setMeta("log_floor", to);
    });
    this.floorPos = to;
    this.slices++;
    return before - count();
  }
}
