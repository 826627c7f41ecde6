// The client read RPCs: state, members, /messages, /context, /relations, threads, search,
// timestamp_to_event, the /sync adapter (sync-view.ts), peeking, and server-side state lookups.
import type { JsonObject } from "../../src/core/types";
import { splitStateKey, stateKey } from "../../src/core/types";
import { CREATE_KEY, namedPowerLevel, powerLevelOf, requiredPowerLevel, memberKey } from "../../src/core/auth-rules";
import { matchesRoomEventFilter, type RoomEventFilter } from "../../src/core/room-event-filter";
import { syncRoomView, type RoomSyncQuery, type RoomSyncView } from "./sync-view";
import { currentMembershipOf, joinedMembers } from "./joined-members";
import { anyMatch, searchRoom, type RoomSearchQuery, type RoomSearchResult } from "./search";
import { bundleAggregations, capAfter, hasAnnotation, relationsCap, threadRoots, type ThreadsQuery } from "./relations";
import type { ContextResponse, MessagesQuery, MessagesResponse, RelationsQuery, RelationsResponse, Requester, RoomResult } from "../../src/rpc/room";
import { MIN_STREAM, RELATIONS_DEPTH, StoredEvent, EventRow, fail, parseToken, streamToken, POWER_KEY, PEEK_LIMIT, RoomHead, wrap } from "./core";
import type { EventStore } from "./events";
import type { GroupSpans, StateStore } from "./state";
import type { FanOut } from "./fanout";
import type { RoomWriter } from "./writer";
import type { PartialState } from "./partial-state";
import type { MembershipRow, RoomViews } from "./views";

/** What ClientReads needs from the rest of the room (wired in durable-objects/room.ts). */
export interface ClientReadsAccess {
  head: RoomHead;
  sql: SqlStorage;
  events: Pick<EventStore, "cachedRow" | "isPartial" | "loadEvent" | "newestDesc" | "page" | "partialMember" | "prefetch" | "readBatch" | "redactionOf" | "timestampCandidates">;
  state: Pick<StateStore, "currentAuthMap" | "groupAtStream" | "groupState" | "stateForSync">;
  fanout: Pick<FanOut, "fanOutFacts" | "nextEvent">;
  writer: Pick<RoomWriter, "eraseSender" | "forget">;
  views: Pick<RoomViews, "clientEvents" | "currentMembership" | "lazyMembers" | "mayRead" | "memberEventId" | "membershipHistory" | "noteErased" | "readAccess" | "readableStateGroup" | "relationsAccess" | "toClient" | "toFederationFormat" | "visibilityFor">;
  partial: Pick<PartialState, "completedAt" | "isPartial" | "extraDestinations">;
}

export class ClientReads {
  constructor(private readonly r: ClientReadsAccess) {}

  /** POST /rooms/{roomId}/forget ("Forget a room": "a user will no longer be able to retrieve
   *  history for this room"; "If the user is currently joined to the room, they must leave the
   *  room before calling this API": 400 M_UNKNOWN, as is an open invite or knock). Afterwards
   *  the user reads the room as a stranger would (visibilityFor, readableStateGroup). */
  async forget(userId: string): Promise<RoomResult<null>> {
    return wrap(() => {
      if (!this.r.head.rv) return null;
      const m = this.r.events.isPartial() ? (this.r.events.partialMember(userId)?.ev.content.membership as string | undefined) : this.r.views.currentMembership(userId);
      if (m === "join" || m === "invite" || m === "knock") fail(400, "M_UNKNOWN", "You must leave the room before forgetting it");
      const id = this.r.views.memberEventId(userId);
      if (id) this.r.writer.forget(userId, id);
      return null;
    });
  }

  /** POST /account/deactivate with `erase: true` (spec: "Erasure means that any users (or
   *  servers) which join the room after the erasure request are served redacted copies of the
   *  events sent by the erased user. Users which had visibility on the event before the erasure
   *  are still able to see unredacted copies."). Recorded here; applied when serving (erasedFor). */
  async eraseSender(userId: string): Promise<void> {
    this.r.writer.eraseSender(userId);
    this.r.views.noteErased(userId);
  }

  /** Admin API: every mxc:// URI in the room's accepted events (content, including URLs in
   *  m.room.avatar and member avatars), deduplicated, bounded. */
  async mediaInRoom(limit = 10_000): Promise<string[]> {
    if (!this.r.head.rv) return [];
    const out = new Set<string>();
    const rows = this.r.sql.exec<{ pdu: string }>("SELECT pdu FROM events WHERE status = 'accepted' AND instr(pdu, 'mxc://') > 0");
    for (const r of rows) {
      for (const m of r.pdu.matchAll(/mxc:\/\/[A-Za-z0-9.:\[\]-]+\/[A-Za-z0-9_-]+/g)) {
        out.add(m[0]);
        if (out.size >= limit) return [...out];
      }
    }
    return [...out];
  }

  /** The current state event (client format) for (type, stateKey), or null. No access check:
   *  for server-side callers (directory, profile propagation, sync's stripped state). */
  async getCurrentStateEvent(type: string, stateKey_: string): Promise<JsonObject | null> {
    if (!this.r.head.rv) return null;
    if (type === "m.room.member" && this.r.events.isPartial()) {
      const se = this.r.events.partialMember(stateKey_);
      return se ? this.r.views.toClient(se, undefined) : null;
    }
    const id = this.r.state.groupState(this.r.head.currentGroup).get(stateKey(type, stateKey_));
    const se = id ? this.r.events.loadEvent(id) : undefined;
    return se ? this.r.views.toClient(se, undefined) : null;
  }

  /** All current state (client format), no access check (server-side callers). */
  async getCurrentState(): Promise<JsonObject[]> {
    if (!this.r.head.rv) return [];
    const now = Date.now();
    return [...this.r.state.groupState(this.r.head.currentGroup).values()].map((id) => this.r.views.toClient(this.r.events.loadEvent(id)!, undefined, now));
  }

  /** Current state events of one type (client format), no access check: the space hierarchy
   *  reads a room's m.space.child events without loading its members. */
  async getCurrentStateOfType(type: string): Promise<JsonObject[]> {
    if (!this.r.head.rv) return [];
    const out: JsonObject[] = [];
    const now = Date.now();
    for (const [k, id] of this.r.state.groupState(this.r.head.currentGroup)) {
      if (splitStateKey(k)[0] !== type) continue;
      const se = this.r.events.loadEvent(id);
      if (se) out.push(this.r.views.toClient(se, undefined, now));
    }
    return out;
  }

  /** A user's current membership (`join`, `invite`, `leave`, `ban`, `knock`) or null. */
  async getMembership(userId: string): Promise<string | null> {
    if (!this.r.head.rv) return null;
    if (this.r.events.isPartial()) return (this.r.events.partialMember(userId)?.ev.content.membership as string | undefined) ?? null;
    return this.r.views.currentMembership(userId) ?? null;
  }

  /** Whether `userId` may send an event of this type now (power levels only). */
  async canSend(userId: string, type: string, isState: boolean): Promise<boolean> {
    const rv = this.r.head.requireRoom();
    const st = this.r.state.currentAuthMap([POWER_KEY, CREATE_KEY]);
    return powerLevelOf(userId, st, rv) >= requiredPowerLevel(type, isState, st, rv);
  }

  /** Current power level of a user, and the named levels (invite, kick, ban, redact). */
  async getPowerInfo(userId: string): Promise<{ level: number; invite: number; kick: number; ban: number; redact: number; stateDefault: number }> {
    const rv = this.r.head.requireRoom();
    const st = this.r.state.currentAuthMap([POWER_KEY, CREATE_KEY]);
    return {
      level: powerLevelOf(userId, st, rv),
      invite: namedPowerLevel("invite", st, rv),
      kick: namedPowerLevel("kick", st, rv),
      ban: namedPowerLevel("ban", st, rv),
      redact: namedPowerLevel("redact", st, rv),
      stateDefault: requiredPowerLevel("x.any", true, st, rv),
    };
  }

  /** GET /state: the state the requester may see. */
  async getState(req: Requester): Promise<RoomResult<JsonObject[]>> {
    return wrap(() => {
      const g = this.r.views.readableStateGroup(req.userId);
      const now = Date.now();
      return [...this.r.state.groupState(g).values()].map((id) => this.r.views.toClient(this.r.events.loadEvent(id)!, req, now));
    });
  }

  /** GET /state/{type}/{stateKey}: the event (client format) or M_NOT_FOUND. */
  async getStateEvent(req: Requester, type: string, key: string): Promise<RoomResult<JsonObject>> {
    return wrap(() => {
      const g = this.r.views.readableStateGroup(req.userId);
      const id = this.r.state.groupState(g).get(stateKey(type, key));
      if (!id) fail(404, "M_NOT_FOUND", "Event not found");
      return this.r.views.toClient(this.r.events.loadEvent(id)!, req);
    });
  }

  /** GET /event/{eventId}: accepted, visible to the requester, else M_NOT_FOUND. */
  async getEventForClient(req: Requester, eventId: string): Promise<RoomResult<JsonObject>> {
    return wrap(() => {
      this.r.head.requireRoom();
      const se = this.r.events.loadEvent(eventId);
      if (!se || se.status !== "accepted" || !this.r.views.visibilityFor(req.userId)(se)) fail(404, "M_NOT_FOUND", "Event not found");
      return this.r.views.clientEvents([se], req)[0];
    });
  }

  /** MSC4306 thread subscriptions: an event the requester may see, with its stream position
   *  (null for an outlier), the thread it belongs to (its m.thread relation's root, or null)
   *  and the room's stream position now. Not found or not visible: M_NOT_FOUND. */
  async threadEventInfo(req: Requester, eventId: string): Promise<RoomResult<{ stream: number | null; threadRoot: string | null; roomStream: number }>> {
    return wrap(() => {
      this.r.head.requireRoom();
      const se = this.r.events.loadEvent(eventId);
      if (!se || se.status !== "accepted" || !this.r.views.visibilityFor(req.userId)(se)) fail(404, "M_NOT_FOUND", "Event not found");
      const rel = se.ev.content["m.relates_to"] as JsonObject | undefined;
      const threadRoot = rel && typeof rel === "object" && rel.rel_type === "m.thread" && typeof rel.event_id === "string" ? rel.event_id : null;
      return { stream: se.stream, threadRoot, roomStream: this.r.head.stream };
    });
  }

  /** GET /members: member events at `at` (a token) or now, filtered by membership. */
  async getMembers(req: Requester, q: { at?: string; membership?: string; notMembership?: string }): Promise<RoomResult<JsonObject[]>> {
    return wrap(() => {
      let g = this.r.views.readableStateGroup(req.userId);
      const at = parseToken(q.at);
      if (at !== undefined && g === this.r.head.currentGroup) g = this.r.state.groupAtStream(at);
      const now = Date.now();
      const out: JsonObject[] = [];
      for (const [k, id] of this.r.state.groupState(g)) {
        if (!k.startsWith("m.room.member\u0000")) continue;
        const se = this.r.events.loadEvent(id)!;
        const m = se.ev.content.membership;
        if (q.membership && m !== q.membership) continue;
        if (q.notMembership && m === q.notMembership) continue;
        out.push(this.r.views.toClient(se, req, now));
      }
      return out;
    });
  }

  /** GET /joined_members: requester must be joined. */
  async getJoinedMembers(req: Requester): Promise<RoomResult<Record<string, JsonObject>>> {
    return wrap(() => {
      this.r.head.requireRoom();
      if (currentMembershipOf(this.r.sql, req.userId) !== "join") fail(403, "M_FORBIDDEN", "You are not joined to this room");
      return joinedMembers(this.r.sql, (id) => {
        const se = this.r.events.loadEvent(id);
        return se && (this.r.views.toClient(se, undefined).content as JsonObject);
      });
    });
  }

  /** User IDs currently joined (server-side callers: sync fan-out, federation destinations). */
  /** Whether this server is still in the room (local joined members) and which other servers
   *  our copy last saw joined — where to rejoin through once we have left. */
  async getResidency(): Promise<{ localJoined: number; servers: string[] }> {
    if (!this.r.head.rv || this.r.events.isPartial()) return { localJoined: 0, servers: [] };
    const f = this.r.fanout.fanOutFacts();
    return { localJoined: f.joinedLocal.length, servers: [...f.joinedServers].filter((s) => s !== this.r.head.serverName) };
  }

  /** Other servers in the room, where room-scoped EDUs go (typing, receipts, device-list
   *  updates): those with a joined member and, while the room's state is partial, the join's
   *  servers_in_room, whose members we do not know yet (Synapse: "current hosts in room or
   *  partial state approximation"). */
  async getRemoteServers(): Promise<string[]> {
    if (!this.r.head.rv || this.r.events.isPartial()) return [];
    const out = new Set(this.r.fanout.fanOutFacts().joinedServers);
    for (const s of this.r.partial.extraDestinations()) out.add(s);
    out.delete(this.r.head.serverName!);
    return [...out].sort();
  }

  async getJoinedUserIds(): Promise<string[]> {
    if (!this.r.head.rv) return [];
    return [...this.r.fanout.fanOutFacts().joined];
  }

  /** GET /messages (spec: "Syncing" → /rooms/{roomId}/messages). Stream order; tokens "t<n>". */
  async getMessages(req: Requester, q: MessagesQuery): Promise<RoomResult<MessagesResponse>> {
    return wrap(() => {
      this.r.views.mayRead(req.userId);
      const visible = this.r.views.visibilityFor(req.userId);
      const limit = Math.max(0, Math.min(q.limit, 1000));
      const from = parseToken(q.from) ?? (q.dir === "b" ? this.r.head.stream : MIN_STREAM);
      const to = parseToken(q.to);
      const now = Date.now();
      const page = this.r.events.page({ dir: q.dir, from, to, limit }, (se) => visible(se) && matchesRoomEventFilter(q.filter, se.ev));
      const picked = page.events;
      const res: MessagesResponse = { chunk: this.r.views.clientEvents(picked, req, now), start: streamToken(from) };
      // "If no further events are available ... this property is omitted from the response."
      if (!page.exhausted) res.end = streamToken(page.end);
      if (q.filter?.lazy_load_members) res.state = this.r.views.lazyMembers(picked, req, now);
      return res;
    });
  }

  /** GET /context/{eventId}. */
  async getContext(req: Requester, eventId: string, limit: number, filter?: RoomEventFilter): Promise<RoomResult<ContextResponse>> {
    return wrap(() => {
      this.r.views.mayRead(req.userId);
      const visible = this.r.views.visibilityFor(req.userId);
      const se = this.r.events.loadEvent(eventId);
      if (!se || se.status !== "accepted" || !visible(se)) fail(404, "M_NOT_FOUND", "Event not found");
      const now = Date.now();
      const nBefore = Math.floor(limit / 2);
      const nAfter = limit - nBefore;
      const collect = (sqlText: string, n: number) => {
        const out: StoredEvent[] = [];
        if (n <= 0) return out;
        for (const row of this.r.sql.exec<EventRow>(sqlText, se.stream!, Math.min(2000, n * 4 + 50)).toArray()) {
          const x = this.r.events.cachedRow(row);
          if (visible(x) && matchesRoomEventFilter(filter, x.ev)) out.push(x);
          if (out.length >= n) break;
        }
        return out;
      };
      const before = collect("SELECT * FROM events WHERE stream IS NOT NULL AND stream < ? ORDER BY stream DESC LIMIT ?", nBefore);
      const after = collect("SELECT * FROM events WHERE stream IS NOT NULL AND stream > ? ORDER BY stream ASC LIMIT ?", nAfter);
      const last = after.length ? after[after.length - 1] : se;
      const state = filter?.lazy_load_members
        ? this.r.views.lazyMembers([...before, se, ...after], req, now)
        : [...this.r.state.groupState(last.stateAfter).values()].map((id) => this.r.views.toClient(this.r.events.loadEvent(id)!, req, now));
      const [event, ...around] = this.r.views.clientEvents([se, ...before, ...after], req, now);
      return {
        event,
        events_before: around.slice(0, before.length),
        events_after: around.slice(before.length),
        start: streamToken((before.length ? before[before.length - 1].stream! : se.stream!) - 1),
        end: streamToken(last.stream!),
        state,
      };
    });
  }

  /** GET /relations (module "Event relationships"): accepted events whose m.relates_to points
   *  at `eventId` (with `recurse`, also at those, up to RELATIONS_DEPTH levels), visible to the
   *  requester and not redacted, in stream order from `from`; `next_batch` continues, absent
   *  when nothing is left. The parent must be visible to the requester, else M_NOT_FOUND. */
  async getRelations(req: Requester, q: RelationsQuery): Promise<RoomResult<RelationsResponse>> {
    return wrap(() => {
      this.r.views.mayRead(req.userId);
      const visible = this.r.views.visibilityFor(req.userId);
      const parent = this.r.events.loadEvent(q.eventId);
      if (!parent || parent.status !== "accepted" || !visible(parent)) fail(404, "M_NOT_FOUND", "Event not found");
      const RELATES_TO = `json_extract(pdu, '$.content."m.relates_to".event_id')`;
      // Parents: the event, and with `recurse` the relations found at each level above the last
      // (a bounded set), so the chunk reaches RELATIONS_DEPTH levels down.
      const parents = [q.eventId];
      let depth = 1;
      if (q.recurse) {
        let level = [q.eventId];
        for (let d = 1; d <= RELATIONS_DEPTH && parents.length < 1000; d++) {
          const seen = new Set(parents);
          const marks = level.map(() => "?").join(",");
          level = this.r.sql
            .exec<{ event_id: string }>(`SELECT event_id FROM events WHERE stream IS NOT NULL AND ${RELATES_TO} IN (${marks}) LIMIT 1000`, ...level)
            .toArray()
            .map((r) => r.event_id)
            .filter((id) => !seen.has(id));
          if (level.length === 0) break;
          depth = d;
          if (d < RELATIONS_DEPTH) parents.push(...level);
        }
      }
      const limit = Math.max(0, Math.min(q.limit, 100));
      const from = parseToken(q.from) ?? (q.dir === "b" ? this.r.head.stream : MIN_STREAM);
      const to = parseToken(q.to);
      const conds = [`${RELATES_TO} IN (${parents.map(() => "?").join(",")})`];
      const args: (string | number)[] = [...parents];
      if (q.relType !== undefined) {
        conds.push(`json_extract(pdu, '$.content."m.relates_to".rel_type') = ?`);
        args.push(q.relType);
      }
      if (q.eventType !== undefined) {
        conds.push("type = ?");
        args.push(q.eventType);
      }
      const now = Date.now();
      // A redacted event no longer relates to anything (its m.relates_to is gone).
      const page = this.r.events.page({ dir: q.dir, from, to, limit }, (se) => visible(se) && !this.r.events.redactionOf(se), { conds, args });
      const res: RelationsResponse = { chunk: this.r.views.clientEvents(page.events, req, now) };
      if (!page.exhausted) res.next_batch = streamToken(page.end);
      if (q.from !== undefined) res.prev_batch = q.from;
      if (q.recurse !== undefined) res.recursion_depth = q.recurse ? depth : 1;
      return res;
    });
  }

  /** GET /v1/rooms/{roomId}/threads (module "Threading"): roots the requester may see, by
   *  latest activity; `next_batch` is the activity position of the last root returned. */
  async getThreads(req: Requester, q: { include: "all" | "participated"; from?: string; limit: number }): Promise<RoomResult<{ chunk: JsonObject[]; next_batch?: string }>> {
    return wrap(() => {
      this.r.views.mayRead(req.userId);
      const visible = this.r.views.visibilityFor(req.userId);
      const limit = Math.max(1, Math.min(q.limit, 100));
      const cap = relationsCap(this.r.sql, req.userId);
      const tq: ThreadsQuery = { include: q.include, from: parseToken(q.from), limit, ignored: req.ignored };
      const roots: StoredEvent[] = [];
      let more = false;
      // Bounded: roots the requester may not see are skipped, at most 10 batches.
      batches: for (let round = 0; round < 10; round++) {
        const batch = threadRoots(this.r.sql, req.userId, tq, cap, limit + 1);
        for (const r of batch) {
          if (roots.length >= limit) {
            more = true;
            break batches;
          }
          tq.from = r.latest;
          const se = this.r.events.loadEvent(r.root);
          if (se && se.status === "accepted" && se.stream !== null && visible(se) && !this.r.events.redactionOf(se)) roots.push(se);
        }
        more = batch.length === limit + 1;
        if (!more) break;
      }
      const res: { chunk: JsonObject[]; next_batch?: string } = { chunk: this.r.views.clientEvents(roots, req) };
      if (more && tq.from !== undefined) res.next_batch = streamToken(tq.from);
      return res;
    });
  }

  /** POST /search, category room_events, in this room (durable-objects/room/search.ts). "The
   *  search will not include rooms that are end to end encrypted": nothing when the room is. */
  async searchEvents(req: Requester, q: RoomSearchQuery): Promise<RoomResult<RoomSearchResult>> {
    return wrap(() => {
      this.r.views.mayRead(req.userId);
      if (this.r.state.groupState(this.r.head.currentGroup).get(stateKey("m.room.encryption", ""))) return { hits: [], count: 0 };
      // Phase 1 in a room without a match ends here, before the searcher's visibility is read.
      if (!q.fetch && !anyMatch(this.r.sql, q.term)) return { hits: [], count: 0 };
      const now = Date.now();
      return searchRoom(
        {
          ...this.r.views.readAccess(req.userId),
          clientEvents: (ses) => this.r.views.clientEvents(ses, req, now),
          around: (stream, dir, n) =>
            this.r.sql
              .exec<{ event_id: string }>(
                dir === "b"
                  ? "SELECT event_id FROM events WHERE stream IS NOT NULL AND stream < ? ORDER BY stream DESC LIMIT ?"
                  : "SELECT event_id FROM events WHERE stream IS NOT NULL AND stream > ? ORDER BY stream ASC LIMIT ?",
                stream,
                n,
              )
              .toArray()
              .map((r) => this.r.events.loadEvent(r.event_id)!),
          memberAt: (se, userId) => {
            const id = this.r.state.groupState(se.stateAfter).get(memberKey(userId));
            return id ? this.r.events.loadEvent(id) : undefined;
          },
          cap: relationsCap(this.r.sql, req.userId),
          ignored: req.ignored,
        },
        q,
      );
    });
  }

  /** Whether `sender` already annotated `parent` with this type and key (M_DUPLICATE_ANNOTATION). */
  async hasAnnotation(sender: string, parent: string, type: string, key: string): Promise<boolean> {
    return hasAnnotation(this.r.sql, sender, parent, type, key);
  }

  /** GET /v1/rooms/{roomId}/timestamp_to_event. */
  async timestampToEvent(req: Requester, ts: number, dir: "f" | "b"): Promise<RoomResult<{ event_id: string; origin_server_ts: number }>> {
    return wrap(() => {
      this.r.views.mayRead(req.userId);
      const visible = this.r.views.visibilityFor(req.userId);
      const rows = this.r.events.timestampCandidates(ts, dir);
      for (const row of rows) {
        const se = this.r.events.cachedRow(row);
        if (visible(se)) return { event_id: se.ev.event_id, origin_server_ts: se.ev.origin_server_ts };
      }
      fail(404, "M_NOT_FOUND", "No event found");
    });
  }

  /** Current forward extremities (event IDs). */
  async getForwardExtremities(): Promise<string[]> {
    return this.r.sql.exec<{ event_id: string }>("SELECT event_id FROM extremities").toArray().map((r) => r.event_id);
  }

  /** Stripped state for invites and knocks (spec: "Stripped state"): the sync and federation
   *  invite paths use it. */
  async getStrippedState(): Promise<JsonObject[]> {
    if (!this.r.head.rv) return [];
    if (this.r.events.isPartial()) {
      const row = this.r.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'stripped_state'").toArray()[0];
      return row ? (JSON.parse(row.value) as JsonObject[]) : [];
    }
    const types = ["m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption"];
    const out: JsonObject[] = [];
    const st = this.r.state.groupState(this.r.head.currentGroup);
    for (const t of types) {
      const id = st.get(stateKey(t, ""));
      const se = id ? this.r.events.loadEvent(id) : undefined;
      if (se) {
        const c = this.r.views.toClient(se, undefined);
        out.push({ type: c.type, state_key: c.state_key!, content: c.content, sender: c.sender });
      }
    }
    return out;
  }

  /** /sync's view of this room for one user between two stream positions (the user's sync hub
   *  supplies them): timeline, state / state_after, summary. See durable-objects/room/sync-view.ts. */
  async syncRoom(req: Requester, q: RoomSyncQuery): Promise<RoomResult<RoomSyncView>> {
    return wrap(() => {
      this.r.head.requireRoom();
      if (this.r.events.isPartial()) return this.partialSyncView(req, q);
      // A client that synced while the room's members were being fetched gets the state whole
      // once after they arrived (they were added to the states it had already seen).
      const completed = this.r.partial.completedAt();
      if (completed !== null && q.since !== null && q.since <= completed) q = { ...q, fullState: true };
      const partialState = this.r.partial.isPartial();
      // The requester's membership rows, read once for their visibility, joinedSince and the
      // relations cap; their visibility checker, built once for the timeline and its relations.
      const spans: GroupSpans = [];
      const history = this.historyAndGroupAt(req.userId, q.upTo, spans);
      let visible: ((se: StoredEvent) => boolean) | undefined;
      const visibleFor = (u: string) => (u === req.userId ? (visible ??= this.r.views.visibilityFor(u, history)) : this.r.views.visibilityFor(u));
      // (readBatch: redaction rows prefetched a page at a time are kept for this answer.)
      return this.r.events.readBatch(() => syncRoomView<StoredEvent>(
        {
          eventsDesc: (upTo, since, limit) => this.r.events.newestDesc(upTo, since, limit),
          prefetch: (ids) => this.r.events.prefetch(ids),
          visibleFor,
          joinedSince: (u) => {
            // Start of the user's current unbroken run of joins (null when not joined now),
            // among their newest 50 rows.
            const newest = u === req.userId ? history.slice(-50).reverse() : this.r.sql.exec<MembershipRow>("SELECT membership, stream FROM memberships WHERE user_id = ? ORDER BY stream DESC LIMIT 50", u);
            let since: number | null = null;
            for (const r of newest) {
              if (r.membership !== "join") break;
              since = r.stream;
            }
            return since;
          },
          stateAt: (n) => this.r.state.stateForSync(n, spans),
          load: (id) => this.r.events.loadEvent(id),
          toClient: (e, now) => this.r.views.toClient(e, req, now),
          bundle: (es, out) => bundleAggregations({ ...this.r.views.relationsAccess({ ...req, ignored: q.ignoredSenders }, undefined, visibleFor(req.userId)), cap: capAfter(history.at(-1)) }, es, out),
          toFederation: (e, now) => this.r.views.toFederationFormat(e, req, now),
          memberships: () => new Map(this.r.sql.exec<{ event_id: string; membership: string }>("SELECT event_id, membership FROM memberships").toArray().map((r) => [r.event_id, r.membership])),
          // While partial, a sender's member event may be missing from the state: lazy-loading
          // takes it from the event's auth events (Synapse does the same for partial rooms).
          senderMemberFromAuth: partialState
            ? (e) =>
                e.ev.auth_events.find((a) => {
                  const m = this.r.events.loadEvent(a)?.ev;
                  return m?.type === "m.room.member" && m.state_key === e.ev.sender;
                })
            : undefined,
        },
        req.userId,
        q,
      ));
    });
  }

  /** What every /sync view reads first, in one statement: the requester's membership rows
   *  (RoomViews.membershipHistory) and the current group at `upTo` (StateStore.groupAtStream,
   *  noted in `spans` as it notes it). Two statements were a third of a cold room's five. */
  private historyAndGroupAt(userId: string, upTo: number, spans: GroupSpans): MembershipRow[] {
    const rows = this.r.sql
      .exec<{ k: string; membership: string | null; stream: number }>(
        `SELECT 'm' AS k, membership, stream FROM memberships WHERE user_id = ?1
         UNION ALL SELECT 'g', grp, stream FROM (SELECT grp, stream FROM current_groups WHERE stream <= ?2 ORDER BY stream DESC LIMIT 1)`,
        userId,
        upTo,
      )
      .toArray();
    const g = rows.find((r) => r.k === "g");
    if (g) spans.push({ from: g.stream, to: upTo, grp: g.membership === null ? null : Number(g.membership) });
    return rows
      .filter((r) => r.k === "m")
      .map((r) => ({ membership: r.membership!, stream: r.stream }))
      .sort((a, b) => a.stream - b.stream);
  }

  /** /sync's view of a room we hold only the requester's own member event of (an invite
   *  rejected or a knock retracted through another server, or an invite rejected here when the
   *  inviting server could not be reached): that event, when it is in the range, as the timeline
   *  (and state_after), so the client sees the leave and drops the invite. */
  private partialSyncView(req: Requester, q: RoomSyncQuery): RoomSyncView {
    const se = this.r.events.partialMember(req.userId);
    const row = this.r.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", `partial_stream\u0000${req.userId}`).toArray()[0];
    const at = row ? Number(row.value) : q.upTo;
    const events = se && (q.since === null || q.fullState || q.since < at) && at <= q.upTo ? [this.r.views.toClient(se, req)] : [];
    const view: RoomSyncView = {
      timeline: { events, limited: false, prev_batch: streamToken(q.upTo) },
      summary: { "m.joined_member_count": 0, "m.invited_member_count": 0 },
    };
    if (q.useStateAfter) view.state_after = { events };
    else view.state = { events: [] };
    return view;
  }

  /** Accepted events after stream position `since` (exclusive), up to `limit`, oldest first,
   *  filtered by the user's visibility — the building block for /sync timelines. `limited` is
   *  true when more events than `limit` exist after `since` (the newest `limit` are returned). */
  async getTimelineSince(req: Requester, since: number, limit: number): Promise<RoomResult<{ events: JsonObject[]; limited: boolean; prevBatch: string; stream: number }>> {
    return wrap(() => {
      this.r.head.requireRoom();
      const visible = this.r.views.visibilityFor(req.userId);
      const rows = this.r.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND stream > ? ORDER BY stream DESC LIMIT ?", since, limit + 1).toArray();
      const limited = rows.length > limit;
      const take = rows.slice(0, limit).reverse().map((r) => this.r.events.cachedRow(r));
      const now = Date.now();
      const first = take[0]?.stream ?? this.r.head.stream + 1;
      return {
        events: this.r.views.clientEvents(take.filter(visible), req, now),
        limited,
        prevBatch: streamToken(first - 1),
        stream: this.r.head.stream,
      };
    });
  }

  // -------------------------------------------------------------------------------------------
  // Peeking (module "Room Previews"): GET /events?room_id= waits here for the room's next event.

  /** GET /events?room_id=: the events after `from` (default: now) that the requester may see —
   *  a non-member only those of world_readable history ("Room Previews", server behaviour) —
   *  waiting up to `timeoutMs` for one. `end` continues the stream. */
  async peekEvents(req: Requester, q: { from?: string; timeoutMs: number }): Promise<RoomResult<{ start: string; end: string; chunk: JsonObject[] }>> {
    const deadline = Date.now() + q.timeoutMs;
    const start = q.from ?? streamToken(this.r.head.stream);
    let from = start;
    for (;;) {
      const upTo = this.r.head.stream;
      const page = await this.getMessages(req, { dir: "f", from, to: streamToken(upTo), limit: PEEK_LIMIT });
      if (!page.ok) return page;
      const end = page.value.end ?? streamToken(upTo);
      const wait = deadline - Date.now();
      if (page.value.chunk.length > 0 || wait <= 0) return { ok: true, value: { start, end, chunk: page.value.chunk } };
      from = end;
      // Nothing visible up to the room's newest event: wait for the next one.
      if (end === streamToken(upTo) && this.r.head.stream === upTo) await this.r.fanout.nextEvent(wait);
    }
  }

}
