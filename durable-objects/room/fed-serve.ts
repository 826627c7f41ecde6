// Serving other servers (Server-Server API): what a server may see (history visibility per
// server, erasure), the PDU on the wire, and the `fed*` reads: state_ids/state, event_auth,
// event, backfill, get_missing_events, timestamp_to_event.
import type { PDU } from "../../src/core/types";
import { redactEvent } from "../../src/core/redaction";
import { parseHistoryVisibility } from "../../src/core/history-visibility";
import type { RoomResult } from "../../src/rpc/room";
import { StoredEvent, fail, isOutlier, HV_KEY, RoomHead, wrap } from "./core";
import type { EventStore } from "./events";
import type { StateStore } from "./state";
import type { FanOut } from "./fanout";
import type { PartialState } from "./partial-state";
import type { RoomViews } from "./views";

/** What FedServe needs from the rest of the room (wired in durable-objects/room.ts). */
export interface FedServeAccess {
  head: RoomHead;
  events: Pick<EventStore, "authChain" | "authChainIds" | "cachedRow" | "isPartial" | "loadEvent" | "loadMany" | "newestDesc" | "prefetch" | "pduTexts" | "readBatch" | "redactionOf" | "storedAmong" | "timestampCandidates">;
  state: Pick<StateStore, "groupState">;
  fanout: Pick<FanOut, "fanOutFacts">;
  views: Pick<RoomViews, "erasureForServer">;
  partial: Pick<PartialState, "isPartial">;
}

export class FedServe {
  constructor(private readonly r: FedServeAccess) {}

  /** GET /_matrix/federation/v1/timestamp_to_event: as timestampToEvent, with the requesting
   *  server's history visibility (serverMaySee) instead of a user's. */
  async fedTimestampToEvent(origin: string, ts: number, dir: "f" | "b"): Promise<RoomResult<{ event_id: string; origin_server_ts: number }>> {
    return wrap(() => {
      // Only a server in the room reads it, like every federation read (see requireServer).
      this.requireServer(origin, { inRoom: true });
      const rows = this.r.events.timestampCandidates(ts, dir);
      const maySee = this.visibility(origin);
      for (const row of rows) {
        const se = this.r.events.cachedRow(row);
        if (se.status === "rejected") continue;
        if (maySee(se)) return { event_id: se.ev.event_id, origin_server_ts: se.ev.origin_server_ts };
      }
      fail(404, "M_NOT_FOUND", "No event found");
    });
  }

  /** The stored PDU (federation format) of an event, with its status; null if unknown. For
   *  federation (/event, backfill) and tests. */
  async getPdu(eventId: string): Promise<{ pdu: PDU; status: string; stream: number | null } | null> {
    if (!this.r.head.rv) return null;
    const se = this.r.events.loadEvent(eventId);
    return se ? { pdu: se.ev.pdu, status: se.status, stream: se.stream } : null;
  }

  /** Whether any user of `server` is joined now (Synapse's "host in room" check for /state,
   *  /backfill, /get_missing_events, /event_auth). */
  private serverInRoom(server: string): boolean {
    return this.r.fanout.fanOutFacts().joinedServers.has(server);
  }

  /** History visibility for a server (Server-Server API: servers "should not send events the
   *  requesting server is not allowed to see"): a server may see an event if any of its users
   *  could. world_readable and shared: any server (callers require it to be in the room now, so
   *  one of its users joined after the event); invited: one of its users invited or joined at
   *  the event; joined: joined.
   *  Outliers (auth and state events, no place in the timeline) are served as they are. */
  private serverMaySee(server: string, se: StoredEvent): boolean {
    return this.visibility(server)(se);
  }

  /** serverMaySee for the events of one request: decided once per state before an event
   *  (events in a row share it), not once per event. */
  private visibility(server: string): (se: StoredEvent) => boolean {
    const byGroup = new Map<number | null, boolean>();
    return (se) => {
      if (se.stateAfter === null && se.stream === null) return true;
      let v = byGroup.get(se.stateBefore);
      if (v === undefined) byGroup.set(se.stateBefore, (v = this.serverMaySeeAt(server, se.stateBefore)));
      return v;
    };
  }

  /** Whether `server` may see an event whose state before is group `g`: its member events in
   *  that state read 90 to a statement (not one each), stopping at the first that lets it. */
  private serverMaySeeAt(server: string, g: number | null): boolean {
    const st = this.r.state.groupState(g);
    const hvId = st.get(HV_KEY);
    const hv = parseHistoryVisibility(hvId ? this.r.events.loadEvent(hvId)?.ev.content : undefined);
    if (hv === "world_readable" || hv === "shared") return true;
    const suffix = `:${server}`;
    const members: string[] = [];
    for (const [k, id] of st) if (k.startsWith("m.room.member\u0000") && k.endsWith(suffix)) members.push(id);
    for (let i = 0; i < members.length; i += 90) {
      const chunk = members.slice(i, i + 90);
      this.r.events.loadMany(chunk);
      for (const id of chunk) {
        const m = this.r.events.loadEvent(id)?.ev.content.membership;
        if (m === "join" || (hv === "invited" && m === "invite")) return true;
      }
    }
    return false;
  }

  /** The PDU as we send it over federation: no `unsigned`; redacted when redacted here, when
   *  the server may not see it, or when its sender was erased and the server was not in the
   *  room then (the DAG stays intact either way). */
  wirePdu(
    se: StoredEvent,
    server?: string,
    maySee = server === undefined ? undefined : this.visibility(server),
    erased = server === undefined ? undefined : this.r.views.erasureForServer(server),
  ): PDU {
    const { unsigned: _u, ...pdu } = se.ev.pdu;
    void _u;
    if ((server !== undefined && (!maySee!(se) || erased!(se))) || this.r.events.redactionOf(se)) return redactEvent(pdu as PDU, this.r.head.rv!);
    return pdu as PDU;
  }

  /** The events `ids` as wirePdu serves them to a server that may see them all (a send_join or
   *  /state answer), as the text of a JSON array: each stored PDU's text as it is, not parsed
   *  and written again (for a 30,000-event state, a statement, a JSON parse, a copy to the
   *  Worker and a JSON write per event). The few a redaction names or that carry `unsigned`
   *  go through wirePdu. Unknown IDs are left out. */
  wireJson(ids: string[]): string {
    const texts = this.r.events.pduTexts(ids);
    const parts: string[] = [];
    for (const id of ids) {
      const t = texts.get(id);
      if (!t) continue;
      // (A false match of "unsigned" inside content only takes the slower path.)
      if (!t.redactionNamed && !t.pdu.includes('"unsigned"')) parts.push(t.pdu);
      else parts.push(JSON.stringify(this.wirePdu(this.r.events.loadEvent(id)!)));
    }
    return `[${parts.join(",")}]`;
  }

  /** Common preamble of the serving endpoints: a full room, an allowed and present server.
   *  Every federation read passes inRoom: true: a server with no user joined now (never joined,
   *  or all its users left, were kicked or banned) reads nothing, whatever the history
   *  visibility (as Synapse's "host in room" check); serverMaySee then applies the visibility
   *  at each event. */
  private requireServer(origin: string, opts: { inRoom: boolean }): void {
    this.r.head.requireRoom();
    if (this.r.events.isPartial()) fail(404, "M_NOT_FOUND", "Unknown room");
    if (opts.inRoom && !this.serverInRoom(origin)) fail(403, "M_FORBIDDEN", "Your server has no joined member in this room");
  }

  /** GET /v1/state_ids and /v1/state: the state before `eventId` (Synapse: "the state at the
   *  event, not including said event") and its auth chain. */
  async fedStateAt(origin: string, eventId: string, ids: boolean): Promise<RoomResult<{ pdu_ids?: string[]; auth_chain_ids?: string[]; pdusJson?: string; authChainJson?: string }>> {
    return wrap(() => {
      this.requireServer(origin, { inRoom: true });
      // A partial-state copy would answer without the members (Synapse refuses too).
      if (this.r.partial.isPartial()) fail(404, "M_NOT_FOUND", "This server does not have the room's full state yet");
      const se = this.r.events.loadEvent(eventId);
      if (!se || se.stream === null || se.status !== "accepted" || !this.serverMaySee(origin, se)) fail(404, "M_NOT_FOUND", "Event not found");
      const state = [...this.r.state.groupState(se.stateBefore).values()];
      const chain = this.r.events.authChainIds(state).map((x) => x.id);
      if (ids) return { pdu_ids: state, auth_chain_ids: chain };
      // As JSON text (wireJson), put into the answer as it is: the whole state of a large room.
      return { pdusJson: this.wireJson(state), authChainJson: this.wireJson(chain) };
    });
  }

  /** GET /v1/event_auth: the auth chain of one event. */
  async fedEventAuth(origin: string, eventId: string): Promise<RoomResult<PDU[]>> {
    return wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const se = this.r.events.loadEvent(eventId);
      if (!se || !this.serverMaySee(origin, se)) fail(404, "M_NOT_FOUND", "Event not found");
      return this.r.events.authChain([eventId]).map((x) => this.wirePdu(x));
    });
  }

  /** GET /v1/event: one event to a server in the room; redacted when the server may not see
   *  it (the redacted form keeps the DAG intact). */
  async fedEvent(origin: string, eventId: string): Promise<RoomResult<PDU>> {
    return wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const se = this.r.events.loadEvent(eventId);
      if (!se || se.status === "rejected") fail(404, "M_NOT_FOUND", "Event not found");
      return this.wirePdu(se, origin);
    });
  }

  /** GET /v1/backfill: up to `limit` events before and including `v`, walking prev_events
   *  breadth-first, newest (deepest) first. */
  async fedBackfill(origin: string, v: string[], limit: number): Promise<RoomResult<PDU[]>> {
    return wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const out: StoredEvent[] = [];
      const seen = new Set<string>();
      this.readAhead(v, limit);
      let frontier = v.filter((id) => this.r.events.loadEvent(id));
      while (frontier.length && out.length < limit) {
        const level: StoredEvent[] = [];
        // Each level read in one statement, not one per event.
        this.r.events.loadMany(frontier.filter((id) => !seen.has(id)));
        for (const id of frontier) {
          if (seen.has(id)) continue;
          seen.add(id);
          const se = this.r.events.loadEvent(id);
          if (se && se.status !== "rejected" && !isOutlier(se)) level.push(se);
        }
        level.sort((a, b) => b.ev.depth - a.ev.depth || (b.stream ?? 0) - (a.stream ?? 0));
        for (const se of level) if (out.length < limit) out.push(se);
        frontier = level.flatMap((se) => se.ev.prev_events).filter((id) => !seen.has(id));
      }
      return this.wireAll(out, origin);
    });
  }

  /** POST /v1/get_missing_events: events between `earliest` (exclusive) and `latest`
   *  (exclusive), walking back from `latest`, at or above `minDepth`, oldest first. */
  async fedMissingEvents(origin: string, earliest: string[], latest: string[], limit: number, minDepth: number): Promise<RoomResult<PDU[]>> {
    return wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const stop = new Set(earliest);
      const seen = new Set<string>(latest);
      const out: StoredEvent[] = [];
      this.readAhead(latest, limit + 1);
      let frontier = latest.flatMap((id) => this.r.events.loadEvent(id)?.ev.prev_events ?? []);
      while (frontier.length && out.length < limit) {
        const next: string[] = [];
        this.r.events.loadMany(frontier.filter((id) => !seen.has(id) && !stop.has(id)));
        for (const id of frontier) {
          if (seen.has(id) || stop.has(id)) continue;
          seen.add(id);
          const se = this.r.events.loadEvent(id);
          if (!se || isOutlier(se) || se.ev.depth < minDepth) continue;
          if (out.length < limit) out.push(se);
          next.push(...se.ev.prev_events);
        }
        frontier = next;
      }
      return this.wireAll(out.sort((a, b) => a.ev.depth - b.ev.depth), origin);
    });
  }

  /** A walk back from `ids` through prev_events mostly meets the events just below them in
   *  stream order: read up to `limit` of those in a statement or two before it, instead of a
   *  statement per DAG level (one per event in a linear history). What the walk does not find
   *  there (forks, outliers) it reads a level at a time. */
  private readAhead(ids: string[], limit: number): void {
    this.r.events.loadMany(ids);
    const top = Math.max(-1, ...ids.map((id) => this.r.events.loadEvent(id)?.stream ?? -1));
    if (top >= 0) this.r.events.newestDesc(top, 0, limit);
  }

  /** wirePdu of many events for `server`: visibility decided per state group, and the
   *  redactions of all of them read together (readBatch + prefetch) instead of one statement
   *  per event. */
  private wireAll(events: StoredEvent[], server: string): PDU[] {
    const maySee = this.visibility(server);
    const erased = this.r.views.erasureForServer(server);
    return this.r.events.readBatch(() => {
      this.r.events.prefetch(events.map((se) => se.ev.event_id));
      return events.map((se) => this.wirePdu(se, server, maySee, erased));
    });
  }

  /** For filling a gap with another server's state at an event (/state_ids): which of these
   *  events we hold, and the type and state key of those that are state and not rejected. One
   *  call for a whole state instead of one per event (20,000 calls per gap in a 10,000-member
   *  room). */
  async heldAmong(ids: string[]): Promise<{ held: string[]; state: { event_id: string; type: string; state_key: string }[] }> {
    const rows = this.r.head.rv ? this.r.events.storedAmong(ids) : [];
    return {
      held: rows.map((r) => r.event_id),
      state: rows.filter((r) => r.state_key !== null && r.status !== "rejected").map((r) => ({ event_id: r.event_id, type: r.type, state_key: r.state_key! })),
    };
  }

}
