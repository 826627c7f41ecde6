// How the room is shown to one user: client format (redaction, unsigned), history visibility,
// which state a user may read, forgetting and erasure as they apply to reads.
import type { JsonObject, PDU } from "../../src/core/types";
import { memberKey } from "../../src/core/auth-rules";
import { redactEvent } from "../../src/core/redaction";
import { isEventVisible, parseHistoryVisibility, type HistoryVisibility } from "../../src/core/history-visibility";
import { bundleAggregations, type RelationsAccess } from "./relations";
import type { Requester } from "../../src/rpc/room";
import { DELAYED_TXN_DEVICE, DELAY_ID_UNSIGNED } from "../../src/rpc/delayed-events";
import { StoredEvent, fail, HV_KEY, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { RoomFacts } from "./facts";
import type { StateStore } from "./state";

export interface MembershipRow {
  membership: string;
  stream: number;
  [k: string]: SqlStorageValue;
}

/** What RoomViews needs from the rest of the room (wired in durable-objects/room.ts). */
export interface RoomViewsAccess {
  head: RoomHead;
  sql: SqlStorage;
  facts: Pick<RoomFacts, "has">;
  events: Pick<EventStore, "isPartial" | "loadEvent" | "loadMany" | "partialMember" | "prefetch" | "redactionOf">;
  state: Pick<StateStore, "groupState">;
}

export class RoomViews {
  constructor(private readonly r: RoomViewsAccess) {}

  /** The ID of the user's current member event ("" when they have none here). */
  memberEventId(userId: string): string {
    if (this.r.events.isPartial()) return this.r.events.partialMember(userId)?.ev.event_id ?? "";
    return this.r.state.groupState(this.r.head.currentGroup).get(memberKey(userId)) ?? "";
  }

  /** Whether the user forgot the room since their current membership began (POST /forget).
   *  Keyed by that member event, so rejoining (or a new invite) ends it without a write. */
  private forgot(userId: string): boolean {
    if (!this.r.facts.has("forgotten")) return false;
    const row = this.r.sql.exec<{ member_event_id: string }>("SELECT member_event_id FROM forgotten WHERE user_id = ?", userId).toArray()[0];
    return row !== undefined && row.member_event_id === this.memberEventId(userId);
  }

  private erased?: Set<string>;

  /** A sender was erased (ClientReads.eraseSender): applies to what is served from now on. */
  noteErased(userId: string): void {
    this.erased?.add(userId);
  }

  /** An erased user's event is served redacted to a requester who was not joined when it was
   *  sent (so cannot have seen it then); members who were there keep the original (as Synapse
   *  decides it: membership at the event). */
  private erasedFor(se: StoredEvent, userId: string): boolean {
    if (!this.isErased(se.ev.sender) || se.ev.sender === userId) return false;
    const id = this.r.state.groupState(se.stateBefore).get(memberKey(userId));
    return (id ? this.r.events.loadEvent(id)?.ev.content.membership : undefined) !== "join";
  }

  /** The same for a server ("any users (or servers) which join the room after"), for the
   *  events of one request: redacted unless one of its users was joined when the event was sent.
   *  Decided once per state before an event (events in a row share it) and only for erased
   *  senders: a scan of that state's member keys per erased event was most of serving an erased
   *  user's history. */
  erasureForServer(server: string): (se: StoredEvent) => boolean {
    const byGroup = new Map<number | null, boolean>();
    return (se) => {
      if (!this.isErased(se.ev.sender)) return false;
      let v = byGroup.get(se.stateBefore);
      if (v === undefined) byGroup.set(se.stateBefore, (v = !this.serverJoinedAt(server, se.stateBefore)));
      return v;
    };
  }

  /** Whether a user of `server` is joined in state group `g`: its member events read 90 to a
   *  statement, stopping at the first join. */
  private serverJoinedAt(server: string, g: number | null): boolean {
    const suffix = `:${server}`;
    const members: string[] = [];
    for (const [k, id] of this.r.state.groupState(g)) if (k.startsWith("m.room.member\u0000") && k.endsWith(suffix)) members.push(id);
    for (let i = 0; i < members.length; i += 90) {
      const chunk = members.slice(i, i + 90);
      this.r.events.loadMany(chunk);
      if (chunk.some((id) => this.r.events.loadEvent(id)?.ev.content.membership === "join")) return true;
    }
    return false;
  }

  private isErased(userId: string): boolean {
    if (!this.r.facts.has("erased")) return false;
    this.erased ??= new Set(this.r.sql.exec<{ user_id: string }>("SELECT user_id FROM erased_senders").toArray().map((r) => r.user_id));
    return this.erased.size > 0 && this.erased.has(userId);
  }

  /** ClientEvent format (spec: "Room Event Format"): redacted per the room version when a
   *  redaction applies, with unsigned.age, transaction_id (sender's device), prev_content,
   *  redacted_because. */
  toClient(se: StoredEvent, requester: Requester | undefined, now = Date.now(), nested = false): JsonObject {
    const red = nested ? undefined : this.r.events.redactionOf(se);
    const erased = !red && requester !== undefined && this.erasedFor(se, requester.userId);
    const src = red || erased ? redactEvent(se.ev.pdu, this.r.head.rv!) : se.ev.pdu;
    const out: JsonObject = {
      type: se.ev.type,
      content: (src.content ?? {}) as JsonObject,
      event_id: se.ev.event_id,
      room_id: this.r.head.roomId!,
      sender: se.ev.sender,
      origin_server_ts: se.ev.origin_server_ts,
    };
    if (se.ev.state_key !== undefined) out.state_key = se.ev.state_key;
    if (se.ev.redacts !== undefined) out.redacts = se.ev.redacts;
    const unsigned: JsonObject = { age: Math.max(0, now - se.ev.origin_server_ts) };
    if (requester && se.txnId && se.ev.sender === requester.userId) {
      // MSC4140: an event a delayed event sent names its delay_id, for its sender only.
      if (se.txnDevice === DELAYED_TXN_DEVICE) unsigned[DELAY_ID_UNSIGNED] = se.txnId;
      else if (se.txnDevice === requester.deviceId) unsigned.transaction_id = se.txnId;
    }
    if (se.prevState) {
      const prev = this.r.events.loadEvent(se.prevState);
      if (prev) {
        const prevRed = this.r.events.redactionOf(prev);
        unsigned.replaces_state = prev.ev.event_id;
        unsigned.prev_content = ((prevRed ? redactEvent(prev.ev.pdu, this.r.head.rv!) : prev.ev.pdu).content ?? {}) as JsonObject;
        unsigned.prev_sender = prev.ev.sender;
      }
    }
    if (red) unsigned.redacted_because = this.toClient(red, requester, now, true);
    out.unsigned = unsigned;
    return out;
  }

  /** Filter `event_format: "federation"` ("the raw event as received over federation"): the PDU,
   *  redacted per the room version when a redaction applies, plus `event_id` (room versions 3+
   *  leave it out of the PDU; clients need it) and the client `unsigned` (age, transaction_id,
   *  prev_content, redacted_because), as Synapse serves it. */
  toFederationFormat(se: StoredEvent, requester: Requester | undefined, now = Date.now()): JsonObject {
    const red = this.r.events.redactionOf(se);
    const pdu = (red ? redactEvent(se.ev.pdu, this.r.head.rv!) : se.ev.pdu) as JsonObject;
    return { ...pdu, event_id: se.ev.event_id, unsigned: this.toClient(se, requester, now).unsigned };
  }

  /** Events in client format with their aggregations bundled (`unsigned.m.relations`, one
   *  relations query for the whole list: durable-objects/room/relations.ts). */
  clientEvents(ses: StoredEvent[], req: Requester, now = Date.now()): JsonObject[] {
    const out = ses.map((se) => this.toClient(se, req, now));
    bundleAggregations(this.relationsAccess(req, now), ses, out);
    return out;
  }

  /** `visible`: the requester's visibility checker when the caller has one already (/sync:
   *  building it reads two tables). */
  relationsAccess(req: Requester, now = Date.now(), visible?: (se: StoredEvent) => boolean): RelationsAccess<StoredEvent> {
    return {
      ...this.readAccess(req.userId, visible),
      userId: req.userId,
      ignored: req.ignored,
      toClient: (se) => this.toClient(se, req, now),
      prefetch: (ids) => this.r.events.prefetch(ids),
      anyRelations: () => this.r.facts.has("relations"),
    };
  }

  /** Timeline events as `userId` reads them (relations and search): load only accepted events
   *  with a stream position; visibility and redaction for that user. */
  readAccess(userId: string, visible = this.visibilityFor(userId)) {
    return {
      sql: this.r.sql,
      load: (id: string) => {
        const se = this.r.events.loadEvent(id);
        return se && se.status === "accepted" && se.stream !== null ? se : undefined;
      },
      visible,
      redacted: (se: StoredEvent) => !!this.r.events.redactionOf(se),
    };
  }

  /** The user's `memberships` rows in stream order. */
  membershipHistory(userId: string): MembershipRow[] {
    return this.r.sql.exec<MembershipRow>("SELECT membership, stream FROM memberships WHERE user_id = ? ORDER BY stream", userId).toArray();
  }

  /** A visibility checker for one user, memoising per state group. `history`: the user's
   *  membershipHistory when the caller has read it. */
  visibilityFor(userId: string, history = this.membershipHistory(userId)): (se: StoredEvent) => boolean {
    // A user who forgot the room reads it as someone who was never in it (world_readable only).
    const forgotten = this.forgot(userId);
    const lastJoin = history.filter((h) => h.membership === "join").at(-1)?.stream ?? -1;
    // Whether the user was joined when this server accepted the event (their membership in
    // stream order). Concurrent branches: an event admitted after the user's join, on a branch
    // that does not contain it, has a state before it without that join; the user was in the
    // room when it arrived all the same, and /sync (joinedSince in sync-view.ts) shows it to
    // them. Without this, /messages left out events /sync had delivered.
    const joinedAt = (stream: number): boolean => {
      let m: string | undefined;
      for (const h of history) {
        if (h.stream >= stream) break;
        m = h.membership;
      }
      return m === "join";
    };
    const memo = new Map<number | null, { hv: HistoryVisibility; m: string | undefined }>();
    const at = (g: number | null) => {
      let v = memo.get(g);
      if (!v) {
        const st = this.r.state.groupState(g);
        const hvId = st.get(HV_KEY);
        const mId = st.get(memberKey(userId));
        v = {
          hv: parseHistoryVisibility(hvId ? this.r.events.loadEvent(hvId)?.ev.content : undefined),
          m: mId ? (this.r.events.loadEvent(mId)?.ev.content.membership as string | undefined) : undefined,
        };
        memo.set(g, v);
      }
      return v;
    };
    return (se) => {
      if (!forgotten && se.stream !== null && history.length && joinedAt(se.stream)) return true;
      const b = at(se.stateBefore);
      const visibility = [b.hv];
      const membership = [b.m];
      if (se.ev.type === "m.room.history_visibility" && se.ev.state_key === "") visibility.push(parseHistoryVisibility(se.ev.content));
      if (se.ev.type === "m.room.member" && se.ev.state_key === userId) membership.push(se.ev.content.membership as string);
      if (forgotten) return isEventVisible({ visibility, membership: [undefined], joinedLater: false });
      return isEventVisible({ visibility, membership, joinedLater: se.stream !== null && lastJoin > se.stream });
    };
  }

  currentMembership(userId: string): string | undefined {
    const id = this.r.state.groupState(this.r.head.currentGroup).get(memberKey(userId));
    return id ? (this.r.events.loadEvent(id)?.ev.content.membership as string | undefined) : undefined;
  }

  /** Which state a user may read: current state when joined (or world_readable); the state at
   *  their leave/kick/ban when they were a member before; nothing otherwise (M_FORBIDDEN). */
  readableStateGroup(userId: string): number | null {
    const rv = this.r.head.requireRoom();
    void rv;
    const m = this.currentMembership(userId);
    if (m === "join") return this.r.head.currentGroup;
    const hvId = this.r.state.groupState(this.r.head.currentGroup).get(HV_KEY);
    if (parseHistoryVisibility(hvId ? this.r.events.loadEvent(hvId)?.ev.content : undefined) === "world_readable") return this.r.head.currentGroup;
    if ((m === "leave" || m === "ban") && !this.forgot(userId) && this.r.sql.exec("SELECT 1 FROM memberships WHERE user_id = ? AND membership = 'join' LIMIT 1", userId).toArray().length) {
      const id = this.r.state.groupState(this.r.head.currentGroup).get(memberKey(userId))!;
      return this.r.events.loadEvent(id)!.stateAfter;
    }
    fail(403, "M_FORBIDDEN", "You are not in this room");
  }

  mayRead(userId: string): void {
    // Members past and present may paginate (visibility filters each event); others only in
    // world_readable rooms.
    this.r.head.requireRoom();
    if (!this.forgot(userId) && this.r.sql.exec("SELECT 1 FROM memberships WHERE user_id = ? LIMIT 1", userId).toArray().length) return;
    this.readableStateGroup(userId);
  }

  /** Member events of the senders of `events` at those events (lazy-loading members). */
  lazyMembers(events: StoredEvent[], req: Requester, now: number): JsonObject[] {
    const seen = new Set<string>();
    const out: JsonObject[] = [];
    for (const se of events) {
      if (seen.has(se.ev.sender)) continue;
      seen.add(se.ev.sender);
      const id = this.r.state.groupState(se.stateAfter).get(memberKey(se.ev.sender)) ?? this.r.state.groupState(this.r.head.currentGroup).get(memberKey(se.ev.sender));
      const m = id ? this.r.events.loadEvent(id) : undefined;
      if (m) out.push(this.toClient(m, req, now));
    }
    return out;
  }

}
