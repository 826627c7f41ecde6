// State and members as clients and server-side callers read them: current state (with and
// without an access check), GET /state, /members, /joined_members, memberships and power levels,
// which servers are in the room, forward extremities, stripped state; and the forget and erasure
// records. The other client reads sit beside it: timeline-reads.ts (/event, /messages, /context,
// timestamp_to_event, peeking), conversation-reads.ts (relations, threads, search) and
// sync-reads.ts (the /sync adapter).
import type { JsonObject } from "../../src/core/types";
import { splitStateKey, stateKey } from "../../src/core/types";
import { CREATE_KEY, namedPowerLevel, powerLevelOf, requiredPowerLevel } from "../../src/core/auth-rules";
import type { Requester, RoomResult } from "../../src/rpc/room";
import { fail, parseToken, POWER_KEY, RoomHead, wrap } from "./core";
import { currentMembershipOf, joinedMembers } from "./joined-members";
import type { EventStore } from "./events";
import type { StateStore } from "./state";
import type { FanOut } from "./fanout";
import type { RoomWriter } from "./writer";
import type { PartialState } from "./partial-state";
import type { RoomViews } from "./views";

/** What ClientReads needs from the rest of the room (wired in durable-objects/room.ts). */
export interface ClientReadsAccess {
  head: RoomHead;
  sql: SqlStorage;
  events: Pick<EventStore, "isPartial" | "loadEvent" | "partialMember">;
  state: Pick<StateStore, "currentAuthMap" | "groupAtStream" | "groupState">;
  fanout: Pick<FanOut, "fanOutFacts">;
  writer: Pick<RoomWriter, "eraseSender" | "forget">;
  views: Pick<RoomViews, "currentMembership" | "memberEventId" | "noteErased" | "readableStateGroup" | "toClient">;
  partial: Pick<PartialState, "extraDestinations">;
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

  /** User IDs currently joined (server-side callers: sync fan-out, federation destinations). */
  async getJoinedUserIds(): Promise<string[]> {
    if (!this.r.head.rv) return [];
    return [...this.r.fanout.fanOutFacts().joined];
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
}
