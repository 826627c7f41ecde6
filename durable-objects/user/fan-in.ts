// Fan-in of room notices: every committed room event that concerns this user reaches the hub
// here (the RoomDO calls roomEvent(s) on every affected local user's hub, src/services/
// notifier.ts, with the room's new stream position): a room they are joined to, or a member
// event about them (invite, join, leave, kick, ban, knock). Also the user's own membership
// records (`rooms`, `membership_log`, `forgotten_rooms`) and their bootstrap from D1.
import type { Env } from "../../src/env";
import type { JsonObject, JsonValue } from "../../src/core/types";
import { evaluatePushRules, type Ruleset } from "../../src/core/push-rules";
import type { Membership, RoomEventNotice } from "../../src/rpc/user";
import { unforgottenMemberships } from "../../src/db/memberships";
import type { DeviceListFollowUp } from "./e2ee-inbox";
import * as sliding from "../sliding-conn";

/** What fan-in needs from the hub and its other modules. */
export interface FanInAccess {
  sql: SqlStorage;
  /** For the D1 membership mirror (bootstrap). */
  env: Pick<Env, "DB">;
  transaction<T>(fn: () => T): T;
  /** One transaction that may take many positions (stream.ts). */
  batch(fn: () => void): void;
  next(): number;
  wake(): void;
  setMeta(key: string, value: string | number): void;
  logRoom(upos: number, roomId: string, stream: number | null): void;
  /** Timeline entries of one room in one statement (position-log.ts). */
  logRoomRun(roomId: string, entries: [upos: number, stream: number][]): void;
  maybeCompact(): void;
  /** settings.ts */
  ruleset(): Ruleset;
  ignores(userId: string): boolean;
  /** thread-subscriptions.ts (MSC4306): undefined when thread subscriptions are off. */
  threadSubscribed?(roomId: string, rootId: string): boolean;
  /** ephemeral.ts: my own event implies I have read up to it. */
  markRead(roomId: string, thread: string | null, stream: number): void;
  /** e2ee-inbox.ts */
  recordDeviceList(user: string, upos: number, left: boolean): void;
  deviceListsAfterMembership(me: string, f: DeviceListFollowUp): Promise<void>;
  /** push-outbox.ts. `flush` writes the run's room_events rows so far (this event's included):
   *  called before the outbox counts unread events from them. */
  recordPush(me: string, roomId: string, stream: number, ev: RoomEventNotice["event"], outcome: { notify: boolean; actions: JsonValue[] }, flush: () => void): void;
  afterCommit(me: string): Promise<void>;
}

/** A room's row in `rooms`, as a run of notices (FanIn.applyRun) goes. */
type RoomRow = {
  stream: number;
  member_stream: number;
  membership: string;
  display_name: string | null;
};

/** What a run of notices keeps in memory: the room's row as the notices so far left it, the
 *  stream stored in its row, and the notices for the recency index. */
interface RunState {
  room: RoomRow | undefined;
  storedStream: number;
  notes: sliding.SlidingNote[];
  /** room_log entries and room_events rows not written yet (flushRun). */
  log: [number, number][];
  events: (string | number | null)[][];
}

/** Thread of an event (module "Threading": m.relates_to.rel_type m.thread → the root). */
function threadOf(content: JsonObject): string | null {
  const rel = content["m.relates_to"];
  if (rel && typeof rel === "object" && !Array.isArray(rel) && rel.rel_type === "m.thread" && typeof rel.event_id === "string") return rel.event_id;
  return null;
}

export class FanIn {
  constructor(private a: FanInAccess) {}

  /** Per room, after a committed run: its `rooms` row as stored and the highest notice stream
   *  recorded in `room_events` (every stream a later notice could repeat is at or below it).
   *  A run whose notices are all above it needs neither the row nor the duplicate check from
   *  storage (a sequential sender's own hub: one statement fewer per send). Only this module
   *  writes those rows; a rolled-back batch leaves the memo as it was, and the writes outside
   *  runs (roomStateCompleted, bootstrap) drop it. In memory only: a new instance reads. */
  private runMemo = new Map<string, { room: RoomRow; recorded: number }>();

  /** Several notices in one storage transaction (the RoomDO batches what queued up for this
   *  hub while a previous call was in flight). Idempotent: a notice already recorded (same room
   *  and stream) is skipped, so the RoomDO may deliver again after a failure or restart. */
  async roomEvents(me: string, notices: RoomEventNotice[]): Promise<void> {
    const followUps: DeviceListFollowUp[] = [];
    const memo = new Map<string, { room: RoomRow; recorded: number }>();
    this.a.batch(() => {
      // A RoomDO's notices come in runs of one room (its group commits): each run reads the
      // room's row once and updates it and the recency index once, not per notice.
      for (let i = 0; i < notices.length; ) {
        let j = i + 1;
        while (j < notices.length && notices[j].roomId === notices[i].roomId) j++;
        this.applyRun(me, notices.slice(i, j), followUps, memo);
        i = j;
      }
    });
    // Committed: what the runs left is what storage holds.
    for (const [roomId, m] of memo) this.runMemo.set(roomId, m);
    if (this.runMemo.size > 1024) this.runMemo.clear();
    this.a.wake();
    await this.a.afterCommit(me);
    for (const f of followUps) await this.a.deviceListsAfterMembership(me, f);
    this.a.maybeCompact();
  }

  /** A partial-state room got its full state: it moves to the room's `stream` (a position the
   *  completion took, no event at it), so the next /sync includes the room and the RoomDO
   *  answers it with the state whole: members, heroes and device lists refresh without waiting
   *  for the room's next event (Synapse's "un-partial-stated rooms" stream, which marks the
   *  room full_state in the user's next sync). Only for a room I am joined to. */
  roomStateCompleted(me: string, roomId: string, stream: number): void {
    void me;
    const room = this.a.sql.exec<{ stream: number; membership: string }>("SELECT stream, membership FROM rooms WHERE room_id = ?", roomId).toArray()[0];
    if (!room || room.membership !== "join" || room.stream >= stream) return;
    this.runMemo.delete(roomId);
    this.a.batch(() => {
      this.a.logRoom(this.a.next(), roomId, stream);
      this.a.sql.exec("UPDATE rooms SET stream = ? WHERE room_id = ?", stream, roomId);
    });
    this.a.wake();
  }

  /** Record notices of one room (inside the caller's transaction), as if one after another:
   *  the room's row is read once and kept in memory for the run, its stream and the recency
   *  index are written once at the end. Device-list follow-ups a membership change in an
   *  encrypted room needs (D1 lookups, done after the transaction) go to `followUps`. */
  private applyRun(me: string, run: RoomEventNotice[], followUps: DeviceListFollowUp[], memo: Map<string, { room: RoomRow; recorded: number }>): void {
    const sql = this.a.sql;
    const roomId = run[0].roomId;
    let lo = Infinity;
    let hi = -Infinity;
    for (const n of run) [lo, hi] = [Math.min(lo, n.stream), Math.max(hi, n.stream)];
    const known = memo.get(roomId) ?? this.runMemo.get(roomId);
    let held: Set<number>;
    let room: RoomRow | undefined;
    // The highest stream recorded for the room before this run.
    let top: number;
    if (known && lo > known.recorded) {
      top = known.recorded;
      // Every notice is newer than what is recorded: nothing to skip, and the row is known.
      held = new Set();
      room = { ...known.room };
    } else {
      // The room's row and the notices already recorded (a redelivery: skipped), in one read
      // (one row even when the hub has no row for the room: membership is then null).
      const read = sql
        .exec<{ [K in keyof RoomRow]: RoomRow[K] | null } & { held: string; top: number | null }>(
          `SELECT r.stream, r.member_stream, r.membership, r.display_name,
             (SELECT json_group_array(e.stream) FROM room_events e WHERE e.room_id = ?1 AND e.stream >= ?2 AND e.stream <= ?3) AS held,
             (SELECT MAX(e.stream) FROM room_events e WHERE e.room_id = ?1) AS top
           FROM (SELECT 1) LEFT JOIN rooms r ON r.room_id = ?1`,
          roomId,
          lo,
          hi,
        )
        .one();
      held = new Set(JSON.parse(read.held) as number[]);
      top = read.top ?? -Infinity;
      room = read.membership === null ? undefined : { stream: read.stream!, member_stream: read.member_stream!, membership: read.membership, display_name: read.display_name };
    }
    const ctx: RunState = { room, storedStream: room?.stream ?? -1, notes: [], log: [], events: [] };
    for (const n of run) {
      if (held.has(n.stream)) continue;
      held.add(n.stream);
      const f = this.applyNotice(me, n, ctx);
      if (f) followUps.push(f);
    }
    this.flushRun(roomId, ctx);
    if (ctx.room && ctx.room.stream > ctx.storedStream) sql.exec("UPDATE rooms SET stream = ? WHERE room_id = ? AND stream < ?", ctx.room.stream, roomId, ctx.room.stream);
    sliding.noteSlidingRoom(sql, me, roomId, ctx.notes);
    // (Without a row nothing is known; the stored stream is at least the row's, never below.)
    if (ctx.room) memo.set(roomId, { room: { ...ctx.room, stream: Math.max(ctx.room.stream, ctx.storedStream) }, recorded: Math.max(hi, top) });
    else memo.delete(roomId);
  }

  /** Write a run's pending room_log entries and room_events rows, one statement each. */
  private flushRun(roomId: string, ctx: RunState): void {
    if (ctx.log.length) this.a.logRoomRun(roomId, ctx.log.splice(0));
    if (ctx.events.length) {
      this.a.sql.exec(
        `INSERT OR REPLACE INTO room_events (room_id, stream, event_id, thread_id, notify, highlight, actions, ts, upos)
           SELECT ?1, value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7 FROM json_each(?2)`,
        roomId,
        JSON.stringify(ctx.events.splice(0)),
      );
    }
  }

  /** Record one notice of a run (applyRun): `ctx.room` is the room's row as the notices before
   *  left it (its `stream` written by applyRun at the end). Returns the device-list follow-up a
   *  membership change in an encrypted room needs. */
  private applyNotice(me: string, n: RoomEventNotice, ctx: RunState): DeviceListFollowUp | null {
    const sql = this.a.sql;
    const ev = n.event;
    let followUp: DeviceListFollowUp | null = null;
    const upos = this.a.next();
    ctx.log.push([upos, n.stream]);
    const room = ctx.room;
    if (room && n.stream > room.stream) room.stream = n.stream;
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
      const stream = Math.max(room?.stream ?? n.stream, n.stream);
      sql.exec(
        `INSERT INTO rooms (room_id, membership, member_stream, stream, inviter, display_name) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(room_id) DO UPDATE SET membership = excluded.membership, member_stream = excluded.member_stream,
           stream = MAX(rooms.stream, excluded.stream), inviter = excluded.inviter, display_name = excluded.display_name`,
        n.roomId,
        membership,
        n.stream,
        stream,
        inviter,
        dn,
      );
      ctx.room = { stream, member_stream: n.stream, membership, display_name: dn };
      ctx.storedStream = stream;
      displayName = dn;
      sql.exec("INSERT INTO membership_log (upos, room_id, membership, stream) VALUES (?, ?, ?, ?)", upos, n.roomId, membership, n.stream);
    } else if (!room && !(ev.type === "m.room.member" && ev.state_key === me)) {
      // An event of a room we have no membership record for (e.g. the hub was created after
      // the user joined): remember the room as joined, since RoomDOs only notify members.
      sql.exec("INSERT INTO rooms (room_id, membership, member_stream, stream) VALUES (?, 'join', ?, ?)", n.roomId, n.stream, n.stream);
      ctx.room = { stream: n.stream, member_stream: n.stream, membership: "join", display_name: null };
      ctx.storedStream = n.stream;
      sql.exec("INSERT INTO membership_log (upos, room_id, membership, stream) VALUES (?, ?, 'join', ?)", upos, n.roomId, n.stream);
    }
    // Device lists: someone new now shares an encrypted room with me (module "End-to-End
    // Encryption": device_lists.changed).
    if (n.encrypted && ev.type === "m.room.member" && ev.state_key && ev.state_key !== me && ev.content.membership === "join") {
      this.a.recordDeviceList(ev.state_key, upos, false);
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
    const fromIgnored = ev.state_key === undefined && ev.sender !== me && this.a.ignores(ev.sender);
    const thread = threadOf(ev.content);
    const out = fromIgnored
      ? { actions: [], notify: false, highlight: false }
      : evaluatePushRules(this.a.ruleset(), ev as unknown as JsonObject, {
          userId: me,
          displayName: displayName ?? undefined,
          memberCount: n.memberCount,
          senderPowerLevel: n.senderPowerLevel,
          powerLevels: n.powerLevels,
          threadSubscribed: thread !== null && this.a.threadSubscribed ? this.a.threadSubscribed(n.roomId, thread) : undefined,
        });
    ctx.events.push([n.stream, ev.event_id, thread, out.notify ? 1 : 0, out.highlight ? 1 : 0, out.notify ? JSON.stringify(out.actions) : null, ev.origin_server_ts, upos]);
    ctx.notes.push({ upos, ev, encrypted: n.encrypted });
    // The push outbox keeps its unread count; when it must count again (rarely: after my own
    // event or membership), it has the rows written first, this one included.
    this.a.recordPush(me, n.roomId, n.stream, ev, out, () => this.flushRun(n.roomId, ctx));
    // My own event implies I have read up to it (Synapse does the same), so counts start
    // again after what I sent.
    if (ev.sender === me) this.a.markRead(n.roomId, null, n.stream);
    return followUp;
  }

  /** Once per hub: adopt memberships that predate it from the D1 mirror (rooms joined before
   *  this hub existed, e.g. data from before the sync hub was deployed). */
  async bootstrap(me: string): Promise<void> {
    const sql = this.a.sql;
    if (sql.exec("SELECT 1 FROM meta WHERE key = 'bootstrapped'").toArray().length) return;
    const results = await unforgottenMemberships(this.a.env.DB, me);
    let added = false;
    this.runMemo.clear();
    this.a.transaction(() => {
      for (const r of results) {
        if (sql.exec("SELECT 1 FROM rooms WHERE room_id = ?", r.room_id).toArray().length) continue;
        const upos = this.a.next();
        sql.exec("INSERT INTO rooms (room_id, membership, member_stream, stream) VALUES (?, ?, ?, ?)", r.room_id, r.membership, r.stream, r.stream);
        sql.exec("INSERT INTO membership_log (upos, room_id, membership, stream) VALUES (?, ?, ?, ?)", upos, r.room_id, r.membership, r.stream);
        this.a.logRoom(upos, r.room_id, r.stream);
        added = true;
      }
      if (added) sliding.refreshRecency(sql);
      this.a.setMeta("bootstrapped", 1);
    });
    if (added) this.a.wake();
  }

  /** POST /rooms/{roomId}/forget: the room leaves every later /sync of this user (initial,
   *  incremental, include_leave) until their membership changes again (a new member event has
   *  a new member_stream, so rejoining or a new invite brings the room back without a write). */
  forgetRoom(roomId: string): void {
    const row = this.a.sql.exec<{ member_stream: number }>("SELECT member_stream FROM rooms WHERE room_id = ?", roomId).toArray()[0];
    if (row) this.a.sql.exec("INSERT OR REPLACE INTO forgotten_rooms (room_id, member_stream) VALUES (?, ?)", roomId, row.member_stream);
  }

  /** Membership of the rooms this hub knows (for /joined_rooms-like callers and tests). */
  getRooms(): { roomId: string; membership: Membership; stream: number }[] {
    return this.a.sql
      .exec<{ room_id: string; membership: string; stream: number }>("SELECT room_id, membership, stream FROM rooms ORDER BY room_id")
      .toArray()
      .map((r) => ({ roomId: r.room_id, membership: r.membership as Membership, stream: r.stream }));
  }
}
