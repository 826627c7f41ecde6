// UserDO: one per local user, the sync hub (DESIGN.md §1, issue 4).
//
// Everything that can change what a user's /sync returns is pushed here (fan-out on write), and
// each push takes the next position `pos` of this user's own stream:
//   - RoomDOs, after committing an event, call roomEvent() on every affected local user's hub
//     (src/services/notifier.ts) with the room's new stream position;
//   - the Worker pushes typing, receipts, account data, presence;
//   - the E2EE work pushes to-device messages, device-list changes and key counts (see
//     "E2EE API" below).
// A sync token `s<pos>_<epoch>` names a position in this stream: `room_log` remembers, for every
// position, which room moved to which room stream position, so for a token P the hub knows
// exactly which rooms changed after P and, per room, the range (stream at P, stream at the new
// position] the client has not seen. /sync fetches only those ranges from the RoomDOs.
// `epoch` is random per hub: a token from another user (or from a wiped hub) is refused, never
// silently reset.
//
// Long-polling: sync() waits on an in-memory promise that every push resolves, so a request held
// here is released the moment something relevant arrives, or at its timeout.
//
// Storage (this DO's SQLite):
//   meta           epoch, pos, user_id, push rules (JSON)
//   room_log       (upos, room_id, stream): one row per change of a room for this user;
//                  stream NULL for non-timeline changes (ephemeral, room account data, counts)
//   rooms          current membership per room (+ stream of that member event, inviter,
//                  display name in the room)
//   membership_log (upos, room_id, membership, stream): own membership history, for "what was my
//                  membership at token P"
//   room_events    (room_id, stream, event_id, thread_id, notify, highlight): push-rule outcome
//                  of every event fanned out here; unread counts and receipts use it
//   read_marks     (room_id, thread_id, stream): where my read receipts are
//   receipts       latest receipt per (room, user, type, thread) seen in my rooms
//   account_data   global ('' room) and per-room account data
//   filters        POST /user/{userId}/filter
//   presence       presence of me and of users I share a room with
//   to_device      inbox, per device; deleted once the client syncs past it
//   device_lists   users whose devices changed / who I no longer share an encrypted room with
//                  (latest entry per user, for /sync)
//   device_list_log every such entry by position (GET /keys/changes between two tokens)
//   device_keys    per-device one-time key counts and unused fallback key types
//   sync_marks     per device: the oldest token it may still present (its last `since`, or the
//                  token of its initial sync) and when that was recorded
//   lazy_members   per device, room and member: the member event last sent under lazy-loading
//                  and the token that carried it (durable-objects/lazy-members.ts)
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
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import type { JsonObject, JsonValue } from "../src/core/types";
import {
  effectiveRules,
  emptyUserRules,
  evaluatePushRules,
  type PushAction,
  type PushKind,
  type PushRule,
  type Ruleset,
  type UserPushRules,
  PUSH_KINDS,
  defaultRules,
} from "../src/core/push-rules";
import { noLongerSharingRoom } from "../src/services/e2ee/device-list-stream";
import { membersNoLongerShared, otherMembers, unforgottenMemberships } from "../src/db/memberships";
import { PushOutbox } from "./push-outbox";
import type { PusherTarget } from "../src/core/push-gateway";
import { LAZY_MEMBERS_SCHEMA, forgetLazyMembers, pruneLazyMembers, settleLazyMembers, type LazyMembersRoom } from "./lazy-members";
import * as sliding from "./sliding-conn";

// RPC types live in src/rpc/user.ts (the Worker imports them from there, not from this file).
import type { HubResult, Membership, NotificationRow, RoomEventNotice, RoomPosition, SyncDelta, SyncRequest, SyncRoomDelta } from "../src/rpc/user";
import { presenceEvent, PRESENCE_IDLE_MS, PRESENCE_OFFLINE_MS } from "../src/rpc/user";

// ---------------------------------------------------------------------------------------------

const MAX_TIMEOUT_MS = 5 * 60_000;
const TO_DEVICE_BATCH = 100;
/** How often a user who stays online through /sync has their presence shared again (below
 *  PRESENCE_IDLE_MS, so that others do not see them idle meanwhile). */
const PRESENCE_PING_MS = 4 * 60_000;
/** Log compaction: the newest positions always kept exact; how often (in positions) to try. */
const LOG_KEEP = 10_000;
const LOG_COMPACT_EVERY = 10_000;
/** A device's sync mark holds compaction back while it synced this recently. */
const MARK_RETAIN_MS = 24 * 3600_000;
/** A device's mark is rewritten at most this often (each write delays a /sync response). */
const MARK_REFRESH_MS = 10 * 60_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS room_log (upos INTEGER PRIMARY KEY, room_id TEXT NOT NULL, stream INTEGER);
CREATE INDEX IF NOT EXISTS room_log_room_stream ON room_log(room_id, upos, stream);
DROP INDEX IF EXISTS room_log_room;
CREATE TABLE IF NOT EXISTS rooms (room_id TEXT PRIMARY KEY, membership TEXT NOT NULL, member_stream INTEGER NOT NULL,
  stream INTEGER NOT NULL, inviter TEXT, display_name TEXT);
CREATE TABLE IF NOT EXISTS membership_log (upos INTEGER PRIMARY KEY, room_id TEXT NOT NULL, membership TEXT NOT NULL, stream INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS membership_log_room ON membership_log(room_id, upos);
CREATE TABLE IF NOT EXISTS room_events (room_id TEXT NOT NULL, stream INTEGER NOT NULL, event_id TEXT NOT NULL, thread_id TEXT,
  notify INTEGER NOT NULL, highlight INTEGER NOT NULL, actions TEXT, ts INTEGER NOT NULL, upos INTEGER NOT NULL,
  PRIMARY KEY (room_id, stream));
CREATE INDEX IF NOT EXISTS room_events_id ON room_events(event_id);
CREATE INDEX IF NOT EXISTS room_events_notify ON room_events(upos) WHERE notify = 1;
CREATE INDEX IF NOT EXISTS room_events_unread ON room_events(room_id, stream) WHERE notify = 1;
CREATE TABLE IF NOT EXISTS read_marks (room_id TEXT NOT NULL, thread_id TEXT NOT NULL, stream INTEGER NOT NULL, PRIMARY KEY (room_id, thread_id));
CREATE TABLE IF NOT EXISTS receipts (room_id TEXT NOT NULL, user_id TEXT NOT NULL, rtype TEXT NOT NULL, thread_id TEXT NOT NULL,
  event_id TEXT NOT NULL, ts INTEGER NOT NULL, upos INTEGER NOT NULL, PRIMARY KEY (room_id, user_id, rtype, thread_id));
CREATE INDEX IF NOT EXISTS receipts_upos ON receipts(upos);
CREATE TABLE IF NOT EXISTS account_data (room_id TEXT NOT NULL, type TEXT NOT NULL, content TEXT NOT NULL, upos INTEGER NOT NULL,
  PRIMARY KEY (room_id, type));
CREATE INDEX IF NOT EXISTS account_data_upos ON account_data(upos);
CREATE TABLE IF NOT EXISTS filters (id INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presence (user_id TEXT PRIMARY KEY, presence TEXT NOT NULL, status_msg TEXT, last_active_ts INTEGER NOT NULL,
  upos INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS to_device (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, upos INTEGER NOT NULL,
  sender TEXT NOT NULL, type TEXT NOT NULL, content TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS to_device_dev ON to_device(device_id, upos);
CREATE TABLE IF NOT EXISTS device_lists (user_id TEXT PRIMARY KEY, upos INTEGER NOT NULL, left INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_list_log (upos INTEGER NOT NULL, user_id TEXT NOT NULL, left INTEGER NOT NULL, PRIMARY KEY (upos, user_id));
CREATE TABLE IF NOT EXISTS device_keys (device_id TEXT PRIMARY KEY, otk_counts TEXT NOT NULL, fallback_types TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS device_list_log_user ON device_list_log(user_id, upos);
CREATE TABLE IF NOT EXISTS sync_marks (device_id TEXT PRIMARY KEY, upos INTEGER NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS forgotten_rooms (room_id TEXT PRIMARY KEY, member_stream INTEGER NOT NULL);
`;

interface Position {
  pos: number;
}

/** Device-list work a membership notice implies (see deviceListsAfterMembership). */
type DeviceListFollowUp = { kind: "i-joined" | "i-left"; roomId: string } | { kind: "they-left"; roomId: string; userId: string };

function randomEpoch(): string {
  const b = new Uint8Array(6);
  crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(36).padStart(2, "0")).join("").slice(0, 8);
}

/** Thread of an event (module "Threading": m.relates_to.rel_type m.thread → the root). */
function threadOf(content: JsonObject): string | null {
  const rel = content["m.relates_to"];
  if (rel && typeof rel === "object" && !Array.isArray(rel) && rel.rel_type === "m.thread" && typeof rel.event_id === "string") return rel.event_id;
  return null;
}

export class UserDO extends DurableObject<Env> {
  private sql: SqlStorage;
  private epoch: string;
  private pos: number;
  private userId?: string;
  private waiters = new Set<() => void>();
  private rules?: Ruleset;
  /** Typing, in memory only (ephemeral by nature): room → user → expiry (ms epoch). */
  private typingState = new Map<string, Map<string, number>>();
  private typingTimers = new Map<string, ReturnType<typeof setTimeout>>();

  /** Push delivery: outbox of notifications for this user's pushers (push-outbox.ts). */
  private push: PushOutbox;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
    this.push = new PushOutbox(ctx, env);
    this.sql.exec(LAZY_MEMBERS_SCHEMA);
    this.sql.exec(sliding.SLIDING_SCHEMA);
    const meta = new Map(this.sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray().map((r) => [r.key, r.value]));
    this.epoch = meta.get("epoch") ?? randomEpoch();
    if (!meta.has("epoch")) this.setMeta("epoch", this.epoch);
    this.pos = Number(meta.get("pos") ?? "0");
    this.floor = Number(meta.get("log_floor") ?? "0");
    this.lastCompactTry = this.pos;
    this.userId = meta.get("user_id");
    if (!meta.has("dl_log")) {
      // Hubs from before device_list_log: start it from the latest entry per user.
      this.sql.exec("INSERT OR IGNORE INTO device_list_log (upos, user_id, left) SELECT upos, user_id, left FROM device_lists");
      this.setMeta("dl_log", 1);
    }
  }

  private setMeta(key: string, value: string | number): void {
    this.sql.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }

  private me(userId: string): string {
    if (!this.userId) {
      this.userId = userId;
      this.setMeta("user_id", userId);
    }
    return this.userId;
  }

  /** Take the next position of this user's stream. */
  private next(): number {
    this.pos++;
    if (!this.posDeferred) this.setMeta("pos", this.pos);
    return this.pos;
  }

  /** While set, next() leaves persisting `pos` to the caller (once per batch, not per notice). */
  private posDeferred = false;
  /** Below this position room_log and device_list_log are compacted (meta log_floor). */
  private floor: number;
  /** Position of the last compaction attempt (in memory; a restart just tries again). */
  private lastCompactTry: number;

  /** Release every waiting /sync (they re-check what changed for them). */
  private wake(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  private token(pos: number): string {
    return `s${pos}_${this.epoch}`;
  }

  /** Position of a token this hub issued. */
  private parseTokenPos(t: string): number {
    return Number(/^s(\d+)_/.exec(t)![1]);
  }

  /** Parse a since token: position, or an error for malformed/foreign/future tokens. */
  private parseToken(t: string): Position | { error: string } {
    const m = /^s(\d{1,15})_([0-9a-z]+)$/.exec(t);
    if (!m) return { error: "Malformed since token" };
    if (m[2] !== this.epoch) return { error: "The since token was not issued to this user (or this server's sync state was reset): start again with an initial sync" };
    const pos = Number(m[1]);
    if (pos > this.pos) return { error: "The since token is from the future" };
    return { pos };
  }

  // ===========================================================================================
  // Fan-in from RoomDOs (src/services/notifier.ts).

  /** One committed room event that concerns this user: a room they are joined to, or a member
   *  event about them (invite, join, leave, kick, ban, knock). */
  async roomEvent(userId: string, n: RoomEventNotice): Promise<void> {
    await this.roomEvents(userId, [n]);
  }

  /** Several notices in one storage transaction (the RoomDO batches what queued up for this
   *  hub while a previous call was in flight). Idempotent: a notice already recorded (same room
   *  and stream) is skipped, so the RoomDO may deliver again after a failure or restart. */
  async roomEvents(userId: string, notices: RoomEventNotice[]): Promise<void> {
    const me = this.me(userId);
    const followUps: DeviceListFollowUp[] = [];
    const pos0 = this.pos;
    try {
      this.ctx.storage.transactionSync(() => {
        this.posDeferred = true;
        for (const n of notices) {
          const f = this.applyNotice(me, n);
          if (f) followUps.push(f);
        }
        this.posDeferred = false;
        if (this.pos !== pos0) this.setMeta("pos", this.pos);
      });
    } catch (e) {
      // Rolled back: so are the positions taken.
      this.pos = pos0;
      throw e;
    } finally {
      this.posDeferred = false;
    }
    this.wake();
    await this.push.afterCommit(me);
    for (const f of followUps) await this.deviceListsAfterMembership(me, f);
    this.maybeCompact();
  }

  /** Record one notice (inside the caller's transaction). Returns the device-list follow-up a
   *  membership change in an encrypted room needs (D1 lookups, done after the transaction). */
  private applyNotice(me: string, n: RoomEventNotice): DeviceListFollowUp | null {
    const ev = n.event;
    if (this.sql.exec("SELECT 1 FROM room_events WHERE room_id = ? AND stream = ?", n.roomId, n.stream).toArray().length) return null;
    let followUp: DeviceListFollowUp | null = null;
    const upos = this.next();
    this.sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (?, ?, ?)", upos, n.roomId, n.stream);
    const room = this.sql
      .exec<{ stream: number; member_stream: number; membership: string; display_name: string | null }>(
        "SELECT stream, member_stream, membership, display_name FROM rooms WHERE room_id = ?",
        n.roomId,
      )
      .toArray()[0];
    if (room && n.stream > room.stream) this.sql.exec("UPDATE rooms SET stream = ? WHERE room_id = ?", n.stream, n.roomId);
    // Fan-outs may arrive out of order: only a newer member event changes my membership.
    const memberStream = room?.member_stream ?? -1;
    let displayName = room?.display_name ?? null;
    if (ev.type === "m.room.member" && ev.state_key === me && n.stream > memberStream) {
      const membership = String(ev.content.membership ?? "leave") as Membership;
      const before = room?.membership;
      if (n.encrypted && membership === "join" && before !== "join") followUp = { kind: "i-joined", roomId: n.roomId };
      if (n.encrypted && (membership === "leave" || membership === "ban") && before === "join") followUp = { kind: "i-left", roomId: n.roomId };
      const dn = typeof ev.content.displayname === "string" ? ev.content.displayname : null;
      const inviter = membership === "invite" ? ev.sender : null;
      this.sql.exec(
        `INSERT INTO rooms (room_id, membership, member_stream, stream, inviter, display_name) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(room_id) DO UPDATE SET membership = excluded.membership, member_stream = excluded.member_stream,
           stream = MAX(rooms.stream, excluded.stream), inviter = excluded.inviter, display_name = excluded.display_name`,
        n.roomId,
        membership,
        n.stream,
        n.stream,
        inviter,
        dn,
      );
      displayName = dn;
      this.sql.exec("INSERT INTO membership_log (upos, room_id, membership, stream) VALUES (?, ?, ?, ?)", upos, n.roomId, membership, n.stream);
    } else if (!room && !(ev.type === "m.room.member" && ev.state_key === me)) {
      // An event of a room we have no membership record for (e.g. the hub was created after
      // the user joined): remember the room as joined, since RoomDOs only notify members.
      this.sql.exec("INSERT INTO rooms (room_id, membership, member_stream, stream) VALUES (?, 'join', ?, ?)", n.roomId, n.stream, n.stream);
      this.sql.exec("INSERT INTO membership_log (upos, room_id, membership, stream) VALUES (?, ?, 'join', ?)", upos, n.roomId, n.stream);
    }
    // Device lists: someone new now shares an encrypted room with me (module "End-to-End
    // Encryption": device_lists.changed).
    if (n.encrypted && ev.type === "m.room.member" && ev.state_key && ev.state_key !== me && ev.content.membership === "join") {
      this.recordDeviceList(ev.state_key, upos, false);
    }
    // ... and someone left (or was kicked or banned from) an encrypted room of mine: if that
    // was the last room we shared, they go to device_lists.left (checked after the transaction).
    if (n.encrypted && ev.type === "m.room.member" && ev.state_key && ev.state_key !== me && (ev.content.membership === "leave" || ev.content.membership === "ban")) {
      followUp = { kind: "they-left", roomId: n.roomId, userId: ev.state_key };
    }
    // The room just became encrypted: everyone in it now shares an encrypted room with me.
    if (ev.type === "m.room.encryption" && ev.state_key === "") followUp = { kind: "i-joined", roomId: n.roomId };
    // Push rules, evaluated now for this recipient (counts are kept from the outcome). An
    // ignored user's messages never reach the client (module "Ignoring Users"), so they do not
    // notify or count as unread either.
    const fromIgnored = ev.state_key === undefined && ev.sender !== me && this.ignores(ev.sender);
    const out = fromIgnored ? { actions: [], notify: false, highlight: false } : evaluatePushRules(this.ruleset(), ev as unknown as JsonObject, {
      userId: me,
      displayName: displayName ?? undefined,
      memberCount: n.memberCount,
      senderPowerLevel: n.senderPowerLevel,
      powerLevels: n.powerLevels,
    });
    this.sql.exec(
      "INSERT OR REPLACE INTO room_events (room_id, stream, event_id, thread_id, notify, highlight, actions, ts, upos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      n.roomId,
      n.stream,
      ev.event_id,
      threadOf(ev.content),
      out.notify ? 1 : 0,
      out.highlight ? 1 : 0,
      out.notify ? JSON.stringify(out.actions) : null,
      ev.origin_server_ts,
      upos,
    );
    sliding.noteSlidingRoom(this.sql, me, n.roomId, upos, ev, n.encrypted);
    this.push.recordEvent(me, n.roomId, n.stream, ev, out);
    // My own event implies I have read up to it (Synapse does the same), so counts start
    // again after what I sent.
    if (ev.sender === me) this.markRead(n.roomId, null, n.stream);
    return followUp;
  }

  /** Device lists after a membership change in an encrypted room (module "End-to-End
   *  Encryption", "Tracking the device list for a user" and the /sync `device_lists` field:
   *  `changed` = "users who ... now share an encrypted room with the client", `left` = "users
   *  with whom we do not share any encrypted rooms anymore"). "Sharing a room" is the same
   *  relation the device-list fan-out uses (src/db/memberships.ts: I am joined, they are joined or
   *  invited), read from the D1 membership mirror, which the RoomDO updates before notifying. A
   *  failed lookup is logged: device lists are then conservative (no `left`), never wrong. */
  private async deviceListsAfterMembership(me: string, f: DeviceListFollowUp): Promise<void> {
    let users: string[] = [];
    try {
      if (f.kind === "they-left") users = await noLongerSharingRoom(this.env, me, [f.userId]);
      else if (f.kind === "i-left") {
        // Members of the room I left with whom I no longer share any room.
        users = await membersNoLongerShared(this.env.DB, f.roomId, me);
      } else {
        users = await otherMembers(this.env.DB, f.roomId, me);
      }
    } catch (e) {
      console.error(`device-list lookup for ${me} failed`, e);
      return;
    }
    if (users.length === 0) return;
    const left = f.kind !== "i-joined";
    this.ctx.storage.transactionSync(() => {
      const upos = this.next();
      for (const u of users) {
        this.recordDeviceList(u, upos, left);
      }
    });
    this.wake();
  }

  // ===========================================================================================
  // Ephemeral: typing and receipts (pushed by the Worker to every local member of the room).

  /** `userId` typing in `roomId` until now + timeoutMs (0: stopped). */
  async typing(userId: string, roomId: string, typer: string, timeoutMs: number): Promise<void> {
    this.me(userId);
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
    const upos = this.next();
    this.sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (?, ?, NULL)", upos, roomId);
    this.wake();
    this.maybeCompact();
  }

  /** A receipt in one of my rooms (mine or another member's). `threadId` "" = unthreaded. */
  async receipt(userId: string, r: { roomId: string; userId: string; type: string; eventId: string; threadId: string; ts: number }): Promise<void> {
    const me = this.me(userId);
    if (r.type === "m.read.private" && r.userId !== me) return;
    this.ctx.storage.transactionSync(() => {
      const upos = this.next();
      this.sql.exec(
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
      this.sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (?, ?, NULL)", upos, r.roomId);
      if (r.userId === me && (r.type === "m.read" || r.type === "m.read.private")) {
        const row = this.sql.exec<{ stream: number }>("SELECT stream FROM room_events WHERE room_id = ? AND event_id = ?", r.roomId, r.eventId).toArray()[0];
        if (row) {
          this.markRead(r.roomId, r.threadId === "" ? null : r.threadId, row.stream);
          this.push.recordBadge();
        }
      }
    });
    this.wake();
    await this.push.afterCommit(me);
    this.maybeCompact();
  }

  /** Move a read mark forward (never back). thread null = unthreaded (covers every thread). */
  private markRead(roomId: string, thread: string | null, stream: number): void {
    this.sql.exec(
      "INSERT INTO read_marks (room_id, thread_id, stream) VALUES (?, ?, ?) ON CONFLICT(room_id, thread_id) DO UPDATE SET stream = MAX(stream, excluded.stream)",
      roomId,
      thread ?? "",
      stream,
    );
  }

  // ===========================================================================================
  // Account data and filters.

  async setAccountData(userId: string, roomId: string | null, type: string, content: JsonObject): Promise<void> {
    this.me(userId);
    this.ctx.storage.transactionSync(() => {
      const upos = this.next();
      this.sql.exec(
        "INSERT INTO account_data (room_id, type, content, upos) VALUES (?, ?, ?, ?) ON CONFLICT(room_id, type) DO UPDATE SET content = excluded.content, upos = excluded.upos",
        roomId ?? "",
        type,
        JSON.stringify(content),
        upos,
      );
      if (roomId) this.sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (?, ?, NULL)", upos, roomId);
    });
    this.wake();
  }

  async getAccountData(roomId: string | null, type: string): Promise<JsonObject | null> {
    const row = this.sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = ? AND type = ?", roomId ?? "", type).toArray()[0];
    return row ? (JSON.parse(row.content) as JsonObject) : null;
  }

  async createFilter(userId: string, filter: JsonObject): Promise<string> {
    this.me(userId);
    const json = JSON.stringify(filter);
    const existing = this.sql.exec<{ id: number }>("SELECT id FROM filters WHERE json = ? LIMIT 1", json).toArray()[0];
    if (existing) return String(existing.id);
    return String(this.sql.exec<{ id: number }>("INSERT INTO filters (json) VALUES (?) RETURNING id", json).one().id);
  }

  /** The stored filter as JSON text (or null). */
  async getFilter(filterId: string): Promise<string | null> {
    if (!/^\d{1,15}$/.test(filterId)) return null;
    const row = this.sql.exec<{ json: string }>("SELECT json FROM filters WHERE id = ?", Number(filterId)).toArray()[0];
    return row ? row.json : null;
  }

  // ===========================================================================================
  // Push rules (module "Push Notifications" → "Push Rules: API").

  private userRules(): UserPushRules {
    const row = this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'push_rules'").toArray()[0];
    return row ? (JSON.parse(row.value) as UserPushRules) : emptyUserRules();
  }

  private ruleset(): Ruleset {
    if (!this.rules) this.rules = effectiveRules(this.userId!, this.userRules());
    return this.rules;
  }

  private saveRules(u: UserPushRules): void {
    this.setMeta("push_rules", JSON.stringify(u));
    this.rules = undefined;
    this.setAccountDataInternal("m.push_rules", { global: this.ruleset() as unknown as JsonValue } as JsonObject);
  }

  /** "m.push_rules" account data mirrors the ruleset so clients see changes through sync. */
  private setAccountDataInternal(type: string, content: JsonObject): void {
    const upos = this.next();
    this.sql.exec(
      "INSERT INTO account_data (room_id, type, content, upos) VALUES ('', ?, ?, ?) ON CONFLICT(room_id, type) DO UPDATE SET content = excluded.content, upos = excluded.upos",
      type,
      JSON.stringify(content),
      upos,
    );
    this.wake();
  }

  async getPushRules(userId: string): Promise<Ruleset> {
    this.me(userId);
    return this.ruleset();
  }

  async putPushRule(
    userId: string,
    kind: PushKind,
    ruleId: string,
    body: { actions: PushAction[]; conditions?: JsonObject[]; pattern?: string },
    placement: { before?: string; after?: string },
  ): Promise<HubResult<null>> {
    this.me(userId);
    if (ruleId.startsWith(".")) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "Server-default rules cannot be replaced" };
    const u = this.userRules();
    const list = u.rules[kind].filter((r) => r.rule_id !== ruleId);
    const old = u.rules[kind].find((r) => r.rule_id === ruleId);
    const rule: PushRule = { rule_id: ruleId, default: false, enabled: old?.enabled ?? true, actions: body.actions };
    if (kind === "override" || kind === "underride") rule.conditions = (body.conditions ?? []) as unknown as PushRule["conditions"];
    if (kind === "content") {
      if (typeof body.pattern !== "string") return { ok: false, status: 400, errcode: "M_MISSING_PARAM", error: "Content rules need a pattern" };
      rule.pattern = body.pattern;
    }
    const anchor = placement.before ?? placement.after;
    let at = placement.before || placement.after ? -1 : (u.rules[kind].findIndex((r) => r.rule_id === ruleId) === -1 ? 0 : u.rules[kind].findIndex((r) => r.rule_id === ruleId));
    if (anchor !== undefined) {
      const i = list.findIndex((r) => r.rule_id === anchor);
      // "before/after ... This must be the ID of an existing rule" of the user's own rules.
      if (i < 0) return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: `No rule ${anchor} to place this rule relative to` };
      at = placement.before !== undefined ? i : i + 1;
    }
    list.splice(Math.min(at, list.length), 0, rule);
    u.rules[kind] = list;
    this.saveRules(u);
    return { ok: true, value: null };
  }

  async deletePushRule(userId: string, kind: PushKind, ruleId: string): Promise<HubResult<null>> {
    this.me(userId);
    const u = this.userRules();
    if (!u.rules[kind].some((r) => r.rule_id === ruleId)) {
      if (defaultRules(userId)[kind].some((r) => r.rule_id === ruleId)) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "Server-default rules cannot be deleted" };
      return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: "No such push rule" };
    }
    u.rules[kind] = u.rules[kind].filter((r) => r.rule_id !== ruleId);
    this.saveRules(u);
    return { ok: true, value: null };
  }

  /** enabled / actions of a rule (user-defined or server-default). */
  async setPushRuleAttr(userId: string, kind: PushKind, ruleId: string, attr: { enabled?: boolean; actions?: PushAction[] }): Promise<HubResult<null>> {
    this.me(userId);
    const u = this.userRules();
    const own = u.rules[kind].find((r) => r.rule_id === ruleId);
    if (own) {
      if (attr.enabled !== undefined) own.enabled = attr.enabled;
      if (attr.actions) own.actions = attr.actions;
    } else if (defaultRules(userId)[kind].some((r) => r.rule_id === ruleId)) {
      u.defaults[ruleId] = { ...u.defaults[ruleId], ...attr };
    } else return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: "No such push rule" };
    this.saveRules(u);
    return { ok: true, value: null };
  }

  /** GET /notifications: notifying events, newest first, `from` = an upos to continue below. */
  async notifications(userId: string, q: { from?: number; limit: number; onlyHighlight: boolean }): Promise<NotificationRow[]> {
    this.me(userId);
    const rows = this.sql
      .exec<{ room_id: string; event_id: string; stream: number; ts: number; actions: string; highlight: number; upos: number }>(
        `SELECT room_id, event_id, stream, ts, actions, highlight, upos FROM room_events WHERE notify = 1 AND upos < ? ${q.onlyHighlight ? "AND highlight = 1" : ""}
         ORDER BY upos DESC LIMIT ?`,
        q.from ?? Number.MAX_SAFE_INTEGER,
        q.limit,
      )
      .toArray();
    return rows.map((r) => {
      const mark = this.sql.exec<{ s: number | null }>("SELECT MAX(stream) AS s FROM read_marks WHERE room_id = ?", r.room_id).one().s ?? -1;
      return { roomId: r.room_id, eventId: r.event_id, stream: r.stream, ts: r.ts, actions: JSON.parse(r.actions), highlight: !!r.highlight, read: r.stream <= mark, upos: r.upos };
    });
  }

  // ===========================================================================================
  // Presence (module "Presence").

  /** My presence, set by PUT /presence or /sync's set_presence. Returns whether it changed
   *  (the Worker then fans it out to users I share a room with). */
  async setPresence(userId: string, presence: string, statusMsg?: string | null): Promise<boolean> {
    const me = this.me(userId);
    const now = Date.now();
    const cur = this.sql.exec<{ presence: string; status_msg: string | null; last_active_ts: number }>("SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = ?", me).toArray()[0];
    const msg = statusMsg === undefined ? (cur?.status_msg ?? null) : statusMsg;
    // Only going online is "pro-active" (module "Presence", "Last active ago"): becoming
    // unavailable or offline keeps the last active time.
    const lastActive = presence === "online" || !cur ? now : cur.last_active_ts;
    if (cur && cur.presence === presence && cur.status_msg === msg) {
      // Only activity: refresh last_active without waking anyone (spec: last_active_ago).
      if (presence === "online" && now - cur.last_active_ts > 10_000) this.sql.exec("UPDATE presence SET last_active_ts = ? WHERE user_id = ?", now, me);
      return false;
    }
    this.storePresence(me, presence, msg, lastActive);
    return true;
  }

  /** When my presence was last shared with others (in memory: after an eviction the next sync
   *  shares it again, which is harmless). */
  private presenceSharedTs = 0;

  /** Whether my presence is due to be shared again although it did not change: while I stay
   *  online through /sync, every PRESENCE_PING_MS, so that other servers and local room-mates
   *  (who compute idleness from the last active time they were given) keep seeing me online.
   *  At most one ping per interval: the rate limit of sync-driven presence. */
  private presencePingDue(changed: boolean, now: number): boolean {
    if (!changed && now - this.presenceSharedTs < PRESENCE_PING_MS) return false;
    this.presenceSharedTs = now;
    return true;
  }

  /** Another user's presence (fanned in by the Worker, from a local user or an m.presence EDU).
   *  The same state again only moves the last active time, without waking the long-poll or
   *  coming down /sync: while a user stays online their server pings it (currently_active:
   *  "the server will not send further updates to the last active time" to clients). */
  async presenceOf(userId: string, other: { userId: string; presence: string; statusMsg: string | null; lastActiveTs: number }): Promise<void> {
    this.me(userId);
    const cur = this.sql.exec<{ presence: string; status_msg: string | null }>("SELECT presence, status_msg FROM presence WHERE user_id = ?", other.userId).toArray()[0];
    if (cur && cur.presence === other.presence && cur.status_msg === other.statusMsg) {
      this.sql.exec("UPDATE presence SET last_active_ts = MAX(last_active_ts, ?) WHERE user_id = ?", other.lastActiveTs, other.userId);
      return;
    }
    this.storePresence(other.userId, other.presence, other.statusMsg, other.lastActiveTs);
  }

  private storePresence(user: string, presence: string, msg: string | null, ts: number): void {
    const upos = this.next();
    this.sql.exec(
      `INSERT INTO presence (user_id, presence, status_msg, last_active_ts, upos) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, upos = excluded.upos`,
      user,
      presence,
      msg,
      ts,
      upos,
    );
    this.wake();
  }

  async getPresence(userId: string): Promise<{ presence: string; statusMsg: string | null; lastActiveTs: number } | null> {
    const row = this.sql.exec<{ presence: string; status_msg: string | null; last_active_ts: number }>("SELECT presence, status_msg, last_active_ts FROM presence WHERE user_id = ?", userId).toArray()[0];
    return row ? { presence: row.presence, statusMsg: row.status_msg, lastActiveTs: row.last_active_ts } : null;
  }

  // ===========================================================================================
  // E2EE API (for the E2EE work; module "Send-to-Device messaging", "End-to-End Encryption").
  //
  //   pushToDevice(userId, deviceId | "*", messages)  queue to-device messages; "*" = all of
  //                                                   `devices` (pass the user's device IDs)
  //   deviceListChanged(userId, changedUserId)        a user's devices/cross-signing keys changed
  //                                                   (or they now share an encrypted room)
  //   deviceListLeft(userId, leftUserId)              no longer share any encrypted room
  //   setDeviceKeyCounts(userId, deviceId, counts, fallbackTypes)
  //                                                   current one-time key counts per algorithm
  //                                                   and unused fallback key algorithms
  //   deleteDevice(userId, deviceId)                  drop a deleted device's inbox and counts
  // Each call wakes the user's long-polling syncs.

  async pushToDevice(userId: string, deviceIds: string[], messages: { sender: string; type: string; content: JsonObject }[]): Promise<void> {
    this.me(userId);
    if (deviceIds.length === 0 || messages.length === 0) return;
    this.ctx.storage.transactionSync(() => {
      for (const d of deviceIds) {
        for (const m of messages) {
          const upos = this.next();
          this.sql.exec("INSERT INTO to_device (device_id, upos, sender, type, content) VALUES (?, ?, ?, ?, ?)", d, upos, m.sender, m.type, JSON.stringify(m.content));
        }
      }
    });
    this.wake();
  }

  async deviceListChanged(userId: string, changedUserId: string): Promise<void> {
    this.me(userId);
    this.ctx.storage.transactionSync(() => this.recordDeviceList(changedUserId, this.next(), false));
    this.wake();
  }

  async deviceListLeft(userId: string, leftUserId: string): Promise<void> {
    this.me(userId);
    this.ctx.storage.transactionSync(() => this.recordDeviceList(leftUserId, this.next(), true));
    this.wake();
  }

  /** A device-list entry at `upos`: `device_lists` keeps the latest per user (what /sync
   *  reports), `device_list_log` every one (what GET /keys/changes reports between two tokens). */
  private recordDeviceList(user: string, upos: number, left: boolean): void {
    const l = left ? 1 : 0;
    this.sql.exec("INSERT INTO device_lists (user_id, upos, left) VALUES (?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET upos = excluded.upos, left = excluded.left", user, upos, l);
    this.sql.exec("INSERT OR REPLACE INTO device_list_log (upos, user_id, left) VALUES (?, ?, ?)", upos, user, l);
  }

  /** GET /keys/changes between two of this user's sync tokens (module "End-to-End
   *  Encryption", "Tracking the device list for a user": the users whose device lists changed,
   *  or who came to share an encrypted room, after `from` and up to `to` — exactly what the
   *  `device_lists` of the /sync responses in between carried; `left` likewise). A user's last
   *  entry in the range decides between changed and left. */
  async deviceListChanges(userId: string, from: string, to: string): Promise<HubResult<{ changed: string[]; left: string[] }>> {
    this.me(userId);
    const f = this.parseToken(from);
    if ("error" in f) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: `from: ${f.error}` };
    const t = this.parseToken(to);
    if ("error" in t) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: `to: ${t.error}` };
    // Below the floor only the newest entry per user is kept: still exact for any `from` as long
    // as `to` is at or above the floor (a user's newest entry up to the floor stands for all of
    // theirs there), not when both tokens are below it.
    if (f.pos < this.logFloor() && t.pos < this.logFloor()) {
      return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "to: this sync token is too old; do an initial sync (without since) and query the keys of all tracked users" };
    }
    const last = new Map<string, boolean>();
    for (const r of this.sql.exec<{ user_id: string; left: number }>("SELECT user_id, left FROM device_list_log WHERE upos > ? AND upos <= ? ORDER BY upos", f.pos, t.pos)) {
      last.set(r.user_id, r.left === 1);
    }
    const changed = [...last].filter(([, l]) => !l).map(([u]) => u).sort();
    const left = [...last].filter(([, l]) => l).map(([u]) => u).sort();
    return { ok: true, value: { changed, left } };
  }

  /** What one of this user's sync tokens says about one room: the room stream position the
   *  client had seen when it was issued (/messages `from`/`to` and /members `at` given a
   *  `next_batch`; src/services/room-tokens.ts). `low` = `high` when exact; otherwise the client
   *  had seen somewhere in [low, high] and each caller takes the end that returns more events,
   *  never fewer. null: low = before the room's first event, high = the room's newest. */
  async roomPosition(userId: string, roomId: string, token: string): Promise<HubResult<RoomPosition>> {
    this.me(userId);
    const p = this.parseToken(token);
    if ("error" in p) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: p.error };
    return { ok: true, value: this.roomPositionAt(roomId, p.pos) };
  }

  private roomPositionAt(roomId: string, pos: number): RoomPosition {
    const logged = (where: string, ...args: number[]) =>
      this.sql
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
    if (pos < this.floor) {
      const folded = logged("upos > ? AND upos <= ?", pos, this.floor);
      if (folded.u !== null) {
        const m = this.sql.exec<{ stream: number }>("SELECT stream FROM membership_log WHERE room_id = ? AND upos <= ? ORDER BY upos DESC LIMIT 1", roomId, pos).toArray()[0];
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

  /** Oldest position the logs still answer from (raised by compaction; 0 = everything). */
  private logFloor(): number {
    return this.floor;
  }

  // ===========================================================================================
  // Log compaction (see the header).

  /** Compact when LOG_COMPACT_EVERY positions passed since the last try. */
  private maybeCompact(): void {
    if (this.pos - this.lastCompactTry < LOG_COMPACT_EVERY) return;
    this.lastCompactTry = this.pos;
    try {
      this.compactBelow(this.horizon(LOG_KEEP, Date.now()));
      pruneLazyMembers(this.sql, Date.now() - MARK_RETAIN_MS);
    } catch (e) {
      console.error("hub log compaction failed", e);
    }
  }

  /** The highest position compaction may reach: `keep` positions back, and below every mark
   *  of a device that synced within MARK_RETAIN_MS of `now`. */
  private horizon(keep: number, now: number): number {
    const mark = this.sql.exec<{ m: number | null }>("SELECT MIN(upos) AS m FROM sync_marks WHERE ts >= ?", now - MARK_RETAIN_MS).one().m;
    return Math.min(this.pos - keep, mark ?? Number.MAX_SAFE_INTEGER);
  }

  /** Compact now (tests and operators; the hub does it by itself every LOG_COMPACT_EVERY
   *  positions). `keep`: positions kept exact (default LOG_KEEP); `now`: the time device marks
   *  are judged at (a later time lets marks expire); `at`: compact no higher than this
   *  position. Returns the floor and the number of log rows removed. */
  async compactLog(opts: { keep?: number; now?: number; at?: number } = {}): Promise<{ floor: number; removed: number }> {
    const h = Math.min(this.horizon(opts.keep ?? LOG_KEEP, opts.now ?? Date.now()), opts.at ?? Number.MAX_SAFE_INTEGER);
    const removed = this.compactBelow(h);
    pruneLazyMembers(this.sql, (opts.now ?? Date.now()) - MARK_RETAIN_MS);
    return { floor: this.floor, removed };
  }

  private compactBelow(h: number): number {
    if (h <= this.floor) return 0;
    const count = () =>
      this.sql.exec<{ n: number }>("SELECT (SELECT COUNT(*) FROM room_log WHERE upos <= ?1) + (SELECT COUNT(*) FROM device_list_log WHERE upos <= ?1) AS n", h).one().n;
    const before = count();
    this.ctx.storage.transactionSync(() => {
      // Timeline entries: the newest per room carries the highest stream at or below h.
      const tops = this.sql
        .exec<{ room_id: string; u: number; s: number }>(
          "SELECT room_id, MAX(upos) AS u, MAX(stream) AS s FROM room_log WHERE upos <= ? AND stream IS NOT NULL GROUP BY room_id",
          h,
        )
        .toArray();
      for (const t of tops) this.sql.exec("UPDATE room_log SET stream = ? WHERE upos = ? AND stream != ?", t.s, t.u, t.s);
      // Then keep only the newest entry per (room, kind) at or below h.
      this.sql.exec(
        `DELETE FROM room_log WHERE upos <= ?1 AND upos NOT IN (
           SELECT MAX(upos) FROM room_log WHERE upos <= ?1 GROUP BY room_id, stream IS NULL)`,
        h,
      );
      // Device lists: the newest entry per user at or below h.
      this.sql.exec(
        `DELETE FROM device_list_log WHERE upos <= ?1 AND upos < (
           SELECT MAX(d.upos) FROM device_list_log d WHERE d.user_id = device_list_log.user_id AND d.upos <= ?1)`,
        h,
      );
      this.setMeta("log_floor", h);
    });
    this.floor = h;
    return before - count();
  }

  /** Remember the oldest token this device may still present (see sync_marks). Written only
   *  when it moves back or the stored one is stale: a stored mark older than the true one only
   *  holds compaction back a little longer. */
  private markDevice(deviceId: string, upos: number): void {
    const now = Date.now();
    const cur = this.sql.exec<{ upos: number; ts: number }>("SELECT upos, ts FROM sync_marks WHERE device_id = ?", deviceId).toArray()[0];
    if (cur && upos >= cur.upos && now - cur.ts < MARK_REFRESH_MS) return;
    this.sql.exec(
      "INSERT INTO sync_marks (device_id, upos, ts) VALUES (?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET upos = excluded.upos, ts = excluded.ts",
      deviceId,
      upos,
      now,
    );
  }

  async setDeviceKeyCounts(userId: string, deviceId: string, counts: Record<string, number>, fallbackTypes: string[]): Promise<void> {
    this.me(userId);
    this.sql.exec(
      "INSERT INTO device_keys (device_id, otk_counts, fallback_types) VALUES (?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET otk_counts = excluded.otk_counts, fallback_types = excluded.fallback_types",
      deviceId,
      JSON.stringify(counts),
      JSON.stringify(fallbackTypes),
    );
    this.next();
    this.wake();
  }

  /** The user's pushers changed (src/services/pushers.ts): the targets push-outbox.ts uses. */
  async setPushers(userId: string, targets: PusherTarget[]): Promise<void> {
    this.me(userId);
    this.push.setTargets(targets);
  }

  /** Retries of the push hand-over (push-outbox.ts). */
  async alarm(): Promise<void> {
    await this.push.alarm(this.userId);
  }

  async deleteDevice(userId: string, deviceId: string): Promise<void> {
    this.me(userId);
    this.sql.exec("DELETE FROM to_device WHERE device_id = ?", deviceId);
    this.sql.exec("DELETE FROM device_keys WHERE device_id = ?", deviceId);
    this.sql.exec("DELETE FROM sync_marks WHERE device_id = ?", deviceId);
    forgetLazyMembers(this.sql, deviceId);
    sliding.forgetSlidingDevice(this.sql, deviceId);
  }

  // ===========================================================================================
  // Simplified Sliding Sync (MSC4186): durable-objects/sliding-conn.ts.

  /** Resolves at the next push to this hub (any device's) or after `ms`, whichever is first. */
  private waitForPush(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.max(0, ms));
      const self = this;
      function done() {
        clearTimeout(t);
        self.waiters.delete(done);
        resolve();
      }
      this.waiters.add(done);
    });
  }

  private slidingAccess(): sliding.SlidingHubAccess {
    return {
      sql: this.sql,
      pos: () => this.pos,
      waitForPush: (ms) => this.waitForPush(ms),
      unreadCounts: (roomId) => this.unreadCounts(roomId, false).main,
      ephemeralSince: (roomId, from, q) => this.ephemeralSince(roomId, from, q),
      accountDataSince: (roomId, from, q) => this.accountDataSince(roomId, from, q),
      transaction: (fn) => this.ctx.storage.transactionSync(fn),
    };
  }

  async slidingBegin(userId: string, req: sliding.BeginRequest): Promise<sliding.SlidingResult<sliding.BeginResult>> {
    this.me(userId);
    await this.bootstrap();
    return sliding.slidingBegin(this.slidingAccess(), req);
  }

  async slidingDetails(userId: string, req: sliding.DetailsRequest): Promise<Record<string, sliding.RoomDetails>> {
    this.me(userId);
    return sliding.slidingDetails(this.slidingAccess(), req);
  }

  async slidingCommit(userId: string, req: sliding.CommitRequest): Promise<string> {
    this.me(userId);
    return sliding.slidingCommit(this.slidingAccess(), req);
  }

  /** Lazy-loaded members of one /sync response (durable-objects/lazy-members.ts): which of the
   *  response's candidate members this device provably has (sent in a response at or before
   *  the client's `since`), and record what the response at `nextBatch` carries. */
  async settleLazyMembers(userId: string, req: { deviceId: string; since?: string; nextBatch: string; rooms: LazyMembersRoom[] }): Promise<Record<string, string[]>> {
    this.me(userId);
    const since = req.since === undefined ? undefined : this.parseToken(req.since);
    const next = this.parseToken(req.nextBatch);
    if ("error" in next || (since && "error" in since)) return {};
    return this.ctx.storage.transactionSync(() => settleLazyMembers(this.sql, req.deviceId, since?.pos, next.pos, req.rooms));
  }

  // ===========================================================================================
  // Sync.

  /** Once per hub: adopt memberships that predate it from the D1 mirror (rooms joined before
   *  this hub existed, e.g. data from before the sync hub was deployed). */
  private async bootstrap(): Promise<void> {
    if (this.sql.exec("SELECT 1 FROM meta WHERE key = 'bootstrapped'").toArray().length) return;
    const results = await unforgottenMemberships(this.env.DB, this.userId!);
    let added = false;
    this.ctx.storage.transactionSync(() => {
      for (const r of results) {
        if (this.sql.exec("SELECT 1 FROM rooms WHERE room_id = ?", r.room_id).toArray().length) continue;
        const upos = this.next();
        this.sql.exec("INSERT INTO rooms (room_id, membership, member_stream, stream) VALUES (?, ?, ?, ?)", r.room_id, r.membership, r.stream, r.stream);
        this.sql.exec("INSERT INTO membership_log (upos, room_id, membership, stream) VALUES (?, ?, ?, ?)", upos, r.room_id, r.membership, r.stream);
        this.sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (?, ?, ?)", upos, r.room_id, r.stream);
        added = true;
      }
      this.setMeta("bootstrapped", 1);
    });
    if (added) this.wake();
  }

  /** POST /rooms/{roomId}/forget: the room leaves every later /sync of this user (initial,
   *  incremental, include_leave) until their membership changes again (a new member event has
   *  a new member_stream, so rejoining or a new invite brings the room back without a write). */
  async forgetRoom(userId: string, roomId: string): Promise<void> {
    this.me(userId);
    const row = this.sql.exec<{ member_stream: number }>("SELECT member_stream FROM rooms WHERE room_id = ?", roomId).toArray()[0];
    if (row) this.sql.exec("INSERT OR REPLACE INTO forgotten_rooms (room_id, member_stream) VALUES (?, ?)", roomId, row.member_stream);
  }

  /** Membership of the rooms this hub knows (for /joined_rooms-like callers and tests). */
  async getRooms(): Promise<{ roomId: string; membership: Membership; stream: number }[]> {
    return this.sql
      .exec<{ room_id: string; membership: string; stream: number }>("SELECT room_id, membership, stream FROM rooms ORDER BY room_id")
      .toArray()
      .map((r) => ({ roomId: r.room_id, membership: r.membership as Membership, stream: r.stream }));
  }

  /** Current position token (what an initial sync right now would return). */
  async currentToken(): Promise<string> {
    return this.token(this.pos);
  }

  /** What changed for this user/device after `since` — waiting up to `timeoutMs` for something
   *  to change when nothing has. An invalid token → ok:false (M_INVALID_PARAM). */
  async sync(req: SyncRequest): Promise<HubResult<SyncDelta>> {
    this.me(req.userId);
    await this.bootstrap();
    let since: number | undefined;
    if (req.since !== undefined) {
      const p = this.parseToken(req.since);
      if ("error" in p) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: p.error };
      since = p.pos;
      this.markDevice(req.deviceId, since);
    } else {
      // An initial sync: the client starts over, so it holds none of the members sent before.
      forgetLazyMembers(this.sql, req.deviceId);
    }
    let presenceChanged: SyncDelta["presenceChanged"];
    if (req.setPresence) {
      const changed = await this.setPresence(req.userId, req.setPresence);
      if (this.presencePingDue(changed, Date.now())) {
        const p = (await this.getPresence(req.userId))!;
        presenceChanged = { presence: p.presence, statusMsg: p.statusMsg, lastActiveTs: p.lastActiveTs, ping: !changed };
      }
    }
    const deadline = Date.now() + Math.max(0, Math.min(req.timeoutMs, MAX_TIMEOUT_MS));
    // To-device messages before the token were delivered: acknowledge (delete) them.
    // (Checked first: a write holds the response until storage confirms it, so do not write
    // when there is nothing to delete.)
    if (since !== undefined && this.sql.exec("SELECT 1 FROM to_device WHERE device_id = ? AND upos <= ? LIMIT 1", req.deviceId, since).toArray().length) {
      this.sql.exec("DELETE FROM to_device WHERE device_id = ? AND upos <= ?", req.deviceId, since);
    }
    for (;;) {
      const delta = this.delta(req, since);
      if (since === undefined) this.markDevice(req.deviceId, this.parseTokenPos(delta.nextBatch));
      if (since === undefined || req.fullState || delta.changed || Date.now() >= deadline) return { ok: true, value: { ...delta, presenceChanged } };
      // Nothing for this device yet: wait for the next push (or the deadline), then look again
      // from the same token (pushes for other devices wake us too).
      await this.waitForPush(deadline - Date.now());
    }
  }

  /** The delta (since, Q] where Q is the current position, or lower when the to-device batch is
   *  capped (then everything else is computed up to the same Q, so nothing is skipped). */
  private delta(req: SyncRequest, since: number | undefined): SyncDelta {
    const me = this.userId!;
    const from = since ?? 0;
    let q = this.pos;
    // To-device (module "Send-to-Device messaging": "...server should ... deliver ... once").
    const td = this.sql
      .exec<{ upos: number; sender: string; type: string; content: string }>(
        "SELECT upos, sender, type, content FROM to_device WHERE device_id = ? AND upos > ? ORDER BY upos LIMIT ?",
        req.deviceId,
        from,
        TO_DEVICE_BATCH + 1,
      )
      .toArray();
    if (td.length > TO_DEVICE_BATCH) {
      td.length = TO_DEVICE_BATCH;
      q = td[td.length - 1].upos;
    }
    const toDevice = td.map((m) => ({ sender: m.sender, type: m.type, content: JSON.parse(m.content) as JsonObject }));
    const initial = since === undefined;

    // Rooms.
    const rooms: SyncRoomDelta[] = [];
    const roomIds = initial
      ? this.sql.exec<{ room_id: string }>("SELECT room_id FROM rooms").toArray().map((r) => r.room_id)
      : this.sql.exec<{ room_id: string }>("SELECT DISTINCT room_id FROM room_log WHERE upos > ? AND upos <= ?", from, q).toArray().map((r) => r.room_id);
    const fullStateRooms = req.fullState && !initial ? this.sql.exec<{ room_id: string }>("SELECT room_id FROM rooms WHERE membership = 'join'").toArray().map((r) => r.room_id) : [];
    const all = new Set([...roomIds, ...fullStateRooms]);
    const threadsWanted = req.threadCounts;
    // Up to the current position, `rooms` already holds each room's membership and highest
    // stream (the newest membership_log entry and MAX(stream) of room_log): one read for all
    // rooms instead of two log scans per room — the log scans were a fifth of an initial sync
    // of 300 rooms × 300 members (docs/benchmarks.md).
    const current =
      q === this.pos
        ? new Map(
            this.sql
              .exec<{ room_id: string; membership: string; member_stream: number; stream: number; inviter: string | null }>(
                "SELECT room_id, membership, member_stream, stream, inviter FROM rooms",
              )
              .toArray()
              .map((r) => [r.room_id, r]),
          )
        : undefined;
    const forgotten = new Map(
      this.sql.exec<{ room_id: string; member_stream: number }>("SELECT room_id, member_stream FROM forgotten_rooms").toArray().map((r) => [r.room_id, r.member_stream]),
    );
    for (const roomId of all) {
      const memAt = (p: number) =>
        this.sql.exec<{ membership: string; stream: number }>("SELECT membership, stream FROM membership_log WHERE room_id = ? AND upos <= ? ORDER BY upos DESC LIMIT 1", roomId, p).toArray()[0];
      const cur = current?.get(roomId);
      const nowM = cur ? { membership: cur.membership, stream: cur.member_stream } : memAt(q);
      if (!nowM) continue;
      if (forgotten.get(roomId) === nowM.stream) continue;
      const membership = nowM.membership as Membership;
      const streamAt = (p: number) => this.sql.exec<{ s: number | null }>("SELECT MAX(stream) AS s FROM room_log WHERE room_id = ? AND upos <= ?", roomId, p).one().s;
      const upTo = cur ? cur.stream : (streamAt(q) ?? nowM.stream);
      let roomSince: number | null = null;
      let gap = false;
      if (!initial) {
        const thenM = memAt(from);
        // The stream the client had seen at the token. Below the compacted floor it is exact
        // unless the room's timeline moved between the token and the floor (its kept entry is
        // then above the token): the client gets a gap from the floor on (see the header).
        const seenAt = (): number | null => {
          if (from < this.floor) {
            const kept = this.sql
              .exec<{ u: number | null }>("SELECT MAX(upos) AS u FROM room_log WHERE room_id = ? AND stream IS NOT NULL AND upos <= ?", roomId, this.floor)
              .one().u;
            if (kept !== null && kept > from) {
              gap = true;
              return streamAt(this.floor);
            }
          }
          return streamAt(from);
        };
        if (membership === "leave" || membership === "ban") {
          // Already left before the token and my membership did not change since: skip.
          if (thenM && (thenM.membership === "leave" || thenM.membership === "ban") && thenM.stream === nowM.stream) continue;
          // Left (kicked, banned, rejected an invite) after the token: the events since then,
          // up to and including the leave. But a room joined and left within the batch is new
          // to the client as a joined room (it held at most the invite's stripped state): it
          // comes whole, with its full state (sytest "When user joins and leaves a room in the
          // same batch, the full state is still included in the next sync").
          if (thenM && !(thenM.membership !== "join" && this.joinedBetween(roomId, from, q))) roomSince = seenAt();
        } else if (membership === "join" && thenM?.membership === "join") {
          // Still joined (own profile changes are new member events of the same join).
          roomSince = seenAt();
        }
        // Otherwise newly joined, invited or knocking: the room is new to the client.
      } else if ((membership === "leave" || membership === "ban") && !req.includeLeave) continue;
      const inviter =
        membership === "invite"
          ? ((cur ? cur.inviter : this.sql.exec<{ inviter: string | null }>("SELECT inviter FROM rooms WHERE room_id = ?", roomId).toArray()[0]?.inviter) ?? undefined)
          : undefined;
      const counts = this.unreadCounts(roomId, threadsWanted);
      rooms.push({
        roomId,
        membership,
        since: roomSince,
        upTo,
        gap: gap || undefined,
        newlyJoined: (!initial && roomSince === null && (membership === "join" || membership === "leave" || membership === "ban")) || undefined,
        inviter,
        unread: counts.main,
        threads: threadsWanted ? counts.threads : undefined,
        // A room new to the client gets all of its account data and receipts, not just changes.
        accountData: this.accountDataSince(roomId, roomSince === null ? -1 : from, q),
        ephemeral: membership === "join" ? this.ephemeralSince(roomId, roomSince === null ? -1 : from, q) : [],
      });
    }

    const accountData = this.accountDataSince("", initial ? -1 : from, q);
    // Clients read the ruleset from m.push_rules account data (Synapse always sends it).
    if (initial && !accountData.some((e) => e.type === "m.push_rules")) accountData.push({ type: "m.push_rules", content: { global: this.ruleset() as unknown as JsonValue } });
    const presence = this.sql
      .exec<{ user_id: string; presence: string; status_msg: string | null; last_active_ts: number }>(
        "SELECT user_id, presence, status_msg, last_active_ts FROM presence WHERE upos > ? AND upos <= ?",
        initial ? -1 : from,
        q,
      )
      .toArray()
      .map((r) => presenceEvent(r.user_id, r.presence, r.status_msg, r.last_active_ts));
    const dl = this.sql.exec<{ user_id: string; left: number }>("SELECT user_id, left FROM device_lists WHERE upos > ? AND upos <= ?", from, q).toArray();
    const keys = this.sql.exec<{ otk_counts: string; fallback_types: string }>("SELECT otk_counts, fallback_types FROM device_keys WHERE device_id = ?", req.deviceId).toArray()[0];
    const ignoredRow = this.sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = '' AND type = 'm.ignored_user_list'").toArray()[0];
    const ignored = ignoredRow ? Object.keys(((JSON.parse(ignoredRow.content) as JsonObject).ignored_users as JsonObject | undefined) ?? {}) : [];
    const changed =
      rooms.length > 0 || accountData.length > 0 || presence.length > 0 || toDevice.length > 0 || (!initial && dl.length > 0);
    return {
      nextBatch: this.token(q),
      changed,
      rooms,
      accountData,
      presence,
      toDevice,
      // The user's own ID is included: their other devices must learn of a new or deleted
      // device of theirs (Rust crypto re-queries own keys only on this signal).
      deviceLists: { changed: dl.filter((r) => !r.left).map((r) => r.user_id), left: dl.filter((r) => r.left).map((r) => r.user_id) },
      oneTimeKeyCounts: keys ? JSON.parse(keys.otk_counts) : {},
      fallbackKeyTypes: keys ? JSON.parse(keys.fallback_types) : [],
      ignoredUsers: ignored,
    };
  }

  /** Whether `userId` is in my m.ignored_user_list. */
  private ignores(userId: string): boolean {
    const row = this.sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = '' AND type = 'm.ignored_user_list'").toArray()[0];
    if (!row) return false;
    const list = (JSON.parse(row.content) as JsonObject).ignored_users;
    return !!list && typeof list === "object" && !Array.isArray(list) && Object.hasOwn(list, userId);
  }

  /** Whether I joined `roomId` at a position in (from, to] (membership_log is never compacted). */
  private joinedBetween(roomId: string, from: number, to: number): boolean {
    return this.sql.exec("SELECT 1 FROM membership_log WHERE room_id = ? AND upos > ? AND upos <= ? AND membership = 'join' LIMIT 1", roomId, from, to).toArray().length > 0;
  }

  private accountDataSince(roomId: string, from: number, q: number): JsonObject[] {
    return this.sql
      .exec<{ type: string; content: string }>("SELECT type, content FROM account_data WHERE room_id = ? AND upos > ? AND upos <= ? ORDER BY upos", roomId, from, q)
      .toArray()
      .map((r) => ({ type: r.type, content: JSON.parse(r.content) as JsonObject }));
  }

  /** m.typing (current typers, when typing changed in the window) and m.receipt (receipts that
   *  changed in the window; module "Receipts": content keyed by event ID, then type, user). */
  private ephemeralSince(roomId: string, from: number, q: number): JsonObject[] {
    const out: JsonObject[] = [];
    const typers = this.typingState.get(roomId);
    const now = Date.now();
    const current = typers ? [...typers].filter(([, exp]) => exp > now).map(([u]) => u) : [];
    const typingChanged =
      from < 0 ? current.length > 0 : this.sql.exec("SELECT 1 FROM room_log WHERE room_id = ? AND stream IS NULL AND upos > ? AND upos <= ? LIMIT 1", roomId, from, q).toArray().length > 0;
    if (typingChanged && (typers || from >= 0)) out.push({ type: "m.typing", content: { user_ids: current } });
    const rs = this.sql
      .exec<{ user_id: string; rtype: string; thread_id: string; event_id: string; ts: number }>(
        "SELECT user_id, rtype, thread_id, event_id, ts FROM receipts WHERE room_id = ? AND upos > ? AND upos <= ?",
        roomId,
        from,
        q,
      )
      .toArray();
    if (rs.length) {
      const content: JsonObject = {};
      for (const r of rs) {
        const byType = ((content[r.event_id] ??= {}) as JsonObject);
        const byUser = ((byType[r.rtype] ??= {}) as JsonObject);
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
  private unreadCounts(roomId: string, threads: boolean): { main: { notification_count: number; highlight_count: number }; threads: Record<string, { notification_count: number; highlight_count: number }> } {
    const marks = new Map(this.sql.exec<{ thread_id: string; stream: number }>("SELECT thread_id, stream FROM read_marks WHERE room_id = ?", roomId).toArray().map((r) => [r.thread_id, r.stream]));
    const base = marks.get("") ?? -1;
    const rows = this.sql
      .exec<{ thread_id: string | null; n: number; h: number }>(
        "SELECT thread_id, COUNT(*) AS n, SUM(highlight) AS h FROM room_events WHERE room_id = ? AND notify = 1 AND stream > ? GROUP BY thread_id",
        roomId,
        base,
      )
      .toArray();
    const main = { notification_count: 0, highlight_count: 0 };
    const perThread: Record<string, { notification_count: number; highlight_count: number }> = {};
    for (const r of rows) {
      const key = r.thread_id ?? "main";
      const mark = marks.get(key) ?? -1;
      let n = r.n;
      let h = r.h;
      if (mark > base) {
        const c = this.sql
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
}
