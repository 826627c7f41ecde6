// The /sync adapter: one room's /sync view for one user (RoomDO.syncRoom), feeding the pure
// algorithm in sync-view.ts from this room's rows, caches and visibility rules; and the view of a
// room we hold only the requester's own member event of.
import { syncRoomView, type RoomSyncQuery, type RoomSyncView } from "./sync-view";
import { bundleAggregations, capAfter } from "./relations";
import type { Requester, RoomResult } from "../../src/rpc/room";
import { StoredEvent, streamToken, RoomHead, wrap } from "./core";
import type { EventStore } from "./events";
import type { GroupSpans, StateStore } from "./state";
import type { PartialState } from "./partial-state";
import type { MembershipRow, RoomViews } from "./views";

/** What SyncReads needs from the rest of the room (wired in durable-objects/room.ts). */
export interface SyncReadsAccess {
  head: RoomHead;
  sql: SqlStorage;
  events: Pick<EventStore, "isPartial" | "loadEvent" | "newestDesc" | "partialMember" | "prefetch" | "readBatch">;
  state: Pick<StateStore, "stateForSync">;
  views: Pick<RoomViews, "relationsAccess" | "toClient" | "toFederationFormat" | "visibilityFor">;
  partial: Pick<PartialState, "completedAt" | "isPartial">;
}

export class SyncReads {
  constructor(private readonly r: SyncReadsAccess) {}

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
}
