// Timeline reads: GET /event, /messages, /context, timestamp_to_event and peeking
// (GET /events?room_id=), each filtered by the requester's history visibility (views.ts).
import type { JsonObject } from "../../src/core/types";
import { matchesRoomEventFilter, type RoomEventFilter } from "../../src/core/room-event-filter";
import type { ContextResponse, MessagesQuery, MessagesResponse, Requester, RoomResult } from "../../src/rpc/room";
import { MIN_STREAM, StoredEvent, EventRow, fail, parseToken, streamToken, PEEK_LIMIT, RoomHead, wrap } from "./core";
import type { EventStore } from "./events";
import type { StateStore } from "./state";
import type { FanOut } from "./fanout";
import type { RoomViews } from "./views";

/** What TimelineReads needs from the rest of the room (wired in durable-objects/room.ts). */
export interface TimelineReadsAccess {
  head: RoomHead;
  sql: SqlStorage;
  events: Pick<EventStore, "cachedRow" | "loadEvent" | "page" | "timestampCandidates">;
  state: Pick<StateStore, "groupState">;
  fanout: Pick<FanOut, "nextEvent">;
  views: Pick<RoomViews, "clientEvents" | "lazyMembers" | "mayRead" | "toClient" | "visibilityFor">;
}

export class TimelineReads {
  constructor(private readonly r: TimelineReadsAccess) {}

  /** GET /event/{eventId}: accepted, visible to the requester, else M_NOT_FOUND. */
  async getEventForClient(req: Requester, eventId: string): Promise<RoomResult<JsonObject>> {
    return wrap(() => {
      this.r.head.requireRoom();
      const se = this.r.events.loadEvent(eventId);
      if (!se || se.status !== "accepted" || !this.r.views.visibilityFor(req.userId)(se)) fail(404, "M_NOT_FOUND", "Event not found");
      return this.r.views.clientEvents([se], req)[0];
    });
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
