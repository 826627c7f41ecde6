// Ephemeral room data in the hub: typing (module "Typing Notifications"), receipts (module
// "Receipts"), the read marks my own receipts set, and the unread counts they give
// (unread_notifications / unread_thread_notifications). Typing and receipts are pushed by the
// Worker to every local member of the room.
import type { JsonObject } from "../../src/core/types";

/** What the ephemeral module needs from the hub. */
export interface EphemeralAccess {
  sql: SqlStorage;
  transaction<T>(fn: () => T): T;
  /** Take the next position of the hub's stream. */
  next(): number;
  wake(): void;
  /** Log a change of a room at a position (position-log.ts). */
  logRoom(upos: number, roomId: string, stream: number | null): void;
  roomTouched(roomId: string, from: number, to: number): boolean;
  maybeCompact(): void;
  /** A read receipt of mine may lower the badge (push-outbox.ts). */
  recordBadge(): void;
  afterCommit(me: string): Promise<void>;
}

export interface Receipt {
  roomId: string;
  userId: string;
  type: string;
  eventId: string;
  threadId: string;
  ts: number;
}

export interface UnreadCounts {
  notification_count: number;
  highlight_count: number;
}

export class Ephemeral {
  /** Typing, in memory only (ephemeral by nature): room → user → expiry (ms epoch). */
  private typingState = new Map<string, Map<string, number>>();
  private typingTimers = new Map<string, ReturnType<typeof setTimeout>>();

  constructor(private a: EphemeralAccess) {}

  /** `typer` typing in `roomId` until now + timeoutMs (0: stopped). */
  typing(roomId: string, typer: string, timeoutMs: number): void {
    let room = this.typingState.get(roomId);
    if (!room) this.typingState.set(roomId, (room = new Map()));
    const was = room.has(typer) && room.get(typer)! > Date.now();
    const timerKey = `${roomId}\u0000${typer}`;
    const old = this.typingTimers.get(timerKey);
    if (old) clearTimeout(old);
    this.typingTimers.delete(timerKey);
    if (timeoutMs > 0) {
      room.set(typer, Date.now() + timeoutMs);
      // Expiry: the typer stops typing when the timeout passes (module "Typing Notifications").
      this.typingTimers.set(
        timerKey,
        setTimeout(() => {
          this.typingTimers.delete(timerKey);
          if ((room!.get(typer) ?? 0) <= Date.now() + 5) {
            room!.delete(typer);
            this.touchRoom(roomId);
          }
        }, timeoutMs),
      );
      if (was) return; // still typing: nothing new to tell clients
    } else {
      if (!room.delete(typer)) return;
    }
    this.touchRoom(roomId);
  }

  /** A non-timeline change of a room (ephemeral, account data, counts): log it and wake. */
  private touchRoom(roomId: string): void {
    this.a.logRoom(this.a.next(), roomId, null);
    this.a.wake();
    this.a.maybeCompact();
  }

  /** A receipt in one of my rooms (mine or another member's). `threadId` "" = unthreaded. */
  async receipt(me: string, r: Receipt): Promise<void> {
    if (r.type === "m.read.private" && r.userId !== me) return;
    const sql = this.a.sql;
    this.a.transaction(() => {
      const upos = this.a.next();
      sql.exec(
        `INSERT INTO receipts (room_id, user_id, rtype, thread_id, event_id, ts, upos) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(room_id, user_id, rtype, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, upos = excluded.upos`,
        r.roomId,
        r.userId,
        r.type,
        r.threadId,
        r.eventId,
        r.ts,
        upos,
      );
      this.a.logRoom(upos, r.roomId, null);
      if (r.userId === me && (r.type === "m.read" || r.type === "m.read.private")) {
        const row = sql.exec<{ stream: number }>("SELECT stream FROM room_events WHERE room_id = ? AND event_id = ?", r.roomId, r.eventId).toArray()[0];
        if (row) {
          this.markRead(r.roomId, r.threadId === "" ? null : r.threadId, row.stream);
          this.a.recordBadge();
        }
      }
    });
    this.a.wake();
    await this.a.afterCommit(me);
    this.a.maybeCompact();
  }

  /** Move a read mark forward (never back). thread null = unthreaded (covers every thread). */
  markRead(roomId: string, thread: string | null, stream: number): void {
    this.a.sql.exec(
      "INSERT INTO read_marks (room_id, thread_id, stream) VALUES (?, ?, ?) ON CONFLICT(room_id, thread_id) DO UPDATE SET stream = MAX(stream, excluded.stream)",
      roomId,
      thread ?? "",
      stream,
    );
  }

  /** m.typing (current typers, when typing changed in the window) and m.receipt (receipts that
   *  changed in the window; module "Receipts": content keyed by event ID, then type, user). */
  /** The receipts of every room in (from, q], by room, in the order ephemeralSince reads one
   *  room's: an initial sync reads them in one statement rather than one per room. */
  receiptsByRoom(from: number, q: number): Map<string, ReceiptRow[]> {
    const out = new Map<string, ReceiptRow[]>();
    for (const r of this.a.sql.exec<ReceiptRow & { room_id: string }>(
      "SELECT room_id, user_id, rtype, thread_id, event_id, ts FROM receipts WHERE upos > ? AND upos <= ? ORDER BY room_id, user_id, rtype, thread_id",
      from,
      q,
    )) {
      let list = out.get(r.room_id);
      if (!list) out.set(r.room_id, (list = []));
      list.push(r);
    }
    return out;
  }

  /** `receipts`: the room's receipts in (from, q] when the caller read them (receiptsByRoom). */
  ephemeralSince(roomId: string, from: number, q: number, receipts?: ReceiptRow[]): JsonObject[] {
    const out: JsonObject[] = [];
    const typers = this.typingState.get(roomId);
    const now = Date.now();
    const current = typers ? [...typers].filter(([, exp]) => exp > now).map(([u]) => u) : [];
    const typingChanged = from < 0 ? current.length > 0 : this.a.roomTouched(roomId, from, q);
    if (typingChanged && (typers || from >= 0)) out.push({ type: "m.typing", content: { user_ids: current } });
    const rs =
      receipts ??
      this.a.sql
        .exec<ReceiptRow>("SELECT user_id, rtype, thread_id, event_id, ts FROM receipts WHERE room_id = ? AND upos > ? AND upos <= ?", roomId, from, q)
        .toArray();
    if (rs.length) {
      const content: JsonObject = {};
      for (const r of rs) {
        const byType = (content[r.event_id] ??= {}) as JsonObject;
        const byUser = (byType[r.rtype] ??= {}) as JsonObject;
        const info: JsonObject = { ts: r.ts };
        if (r.thread_id) info.thread_id = r.thread_id;
        byUser[r.user_id] = info;
      }
      out.push({ type: "m.receipt", content });
    }
    return out;
  }

  /** unread_notifications (and unread_thread_notifications when asked): notifying events after
   *  my read marks. An unthreaded receipt covers every thread; a "main" one the main timeline. */
  unreadCounts(roomId: string, threads: boolean, all?: UnreadRows): { main: UnreadCounts; threads: Record<string, UnreadCounts> } {
    const sql = this.a.sql;
    const marks = all
      ? (all.marks.get(roomId) ?? new Map<string, number>())
      : new Map(sql.exec<{ thread_id: string; stream: number }>("SELECT thread_id, stream FROM read_marks WHERE room_id = ?", roomId).toArray().map((r) => [r.thread_id, r.stream]));
    const base = marks.get("") ?? -1;
    const rows = all
      ? (all.rows.get(roomId) ?? [])
      : sql
          .exec<{ thread_id: string | null; n: number; h: number }>(
            "SELECT thread_id, COUNT(*) AS n, SUM(highlight) AS h FROM room_events WHERE room_id = ? AND notify = 1 AND stream > ? GROUP BY thread_id",
            roomId,
            base,
          )
          .toArray();
    const main = { notification_count: 0, highlight_count: 0 };
    const perThread: Record<string, UnreadCounts> = {};
    for (const r of rows) {
      const key = r.thread_id ?? "main";
      const mark = marks.get(key) ?? -1;
      let n = r.n;
      let h = r.h;
      if (mark > base) {
        const c = sql
          .exec<{ n: number; h: number | null }>(
            `SELECT COUNT(*) AS n, SUM(highlight) AS h FROM room_events WHERE room_id = ? AND notify = 1 AND stream > ? AND ${r.thread_id === null ? "thread_id IS NULL" : "thread_id = ?"}`,
            ...(r.thread_id === null ? [roomId, mark] : [roomId, mark, r.thread_id]),
          )
          .one();
        n = c.n;
        h = c.h ?? 0;
      }
      if (n === 0) continue;
      if (threads && r.thread_id !== null) perThread[r.thread_id] = { notification_count: n, highlight_count: h };
      else {
        main.notification_count += n;
        main.highlight_count += h;
      }
    }
    return { main, threads: perThread };
  }

  /** What unreadCounts reads for one room, for every room of the hub in two statements (an
   *  initial sync; rooms drive the join, so each reads only its events after its read mark). */
  unreadRows(): UnreadRows {
    const sql = this.a.sql;
    const marks = new Map<string, Map<string, number>>();
    for (const r of sql.exec<{ room_id: string; thread_id: string; stream: number }>("SELECT room_id, thread_id, stream FROM read_marks")) {
      let m = marks.get(r.room_id);
      if (!m) marks.set(r.room_id, (m = new Map()));
      m.set(r.thread_id, r.stream);
    }
    const rows = new Map<string, { thread_id: string | null; n: number; h: number }[]>();
    for (const r of sql.exec<{ room_id: string; thread_id: string | null; n: number; h: number }>(
      `SELECT r.room_id, e.thread_id, COUNT(*) AS n, SUM(e.highlight) AS h FROM rooms r CROSS JOIN room_events e
         ON e.room_id = r.room_id AND e.notify = 1 AND e.stream > COALESCE((SELECT stream FROM read_marks m WHERE m.room_id = r.room_id AND m.thread_id = ''), -1)
       GROUP BY r.room_id, e.thread_id`,
    )) {
      let list = rows.get(r.room_id);
      if (!list) rows.set(r.room_id, (list = []));
      list.push({ thread_id: r.thread_id, n: r.n, h: r.h });
    }
    return { marks, rows };
  }
}

/** One receipt row (ephemeralSince). */
export interface ReceiptRow {
  user_id: string;
  rtype: string;
  thread_id: string;
  event_id: string;
  ts: number;
  [k: string]: SqlStorageValue;
}

/** Read marks and unread rows of every room (Ephemeral.unreadRows). */
export interface UnreadRows {
  marks: Map<string, Map<string, number>>;
  rows: Map<string, { thread_id: string | null; n: number; h: number }[]>;
}
