// Conversation reads: GET /relations, the thread list, an event's thread (MSC4306 thread
// subscriptions), the duplicate-annotation check, and POST /search in this room. The SQL of
// aggregations and threads is in relations.ts, the full-text index in search.ts.
import type { JsonObject } from "../../src/core/types";
import { stateKey } from "../../src/core/types";
import { memberKey } from "../../src/core/auth-rules";
import { anyMatch, searchRoom, type RoomSearchQuery, type RoomSearchResult } from "./search";
import { hasAnnotation, relationsCap, threadRoots, type ThreadsQuery } from "./relations";
import type { RelationsQuery, RelationsResponse, Requester, RoomResult } from "../../src/rpc/room";
import { MIN_STREAM, RELATIONS_DEPTH, StoredEvent, fail, parseToken, streamToken, RoomHead, wrap } from "./core";
import type { EventStore } from "./events";
import type { StateStore } from "./state";
import type { RoomViews } from "./views";

/** What ConversationReads needs from the rest of the room (wired in durable-objects/room.ts). */
export interface ConversationReadsAccess {
  head: RoomHead;
  sql: SqlStorage;
  events: Pick<EventStore, "loadEvent" | "page" | "redactionOf">;
  state: Pick<StateStore, "groupState">;
  views: Pick<RoomViews, "clientEvents" | "mayRead" | "readAccess" | "visibilityFor">;
}

export class ConversationReads {
  constructor(private readonly r: ConversationReadsAccess) {}

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
}
