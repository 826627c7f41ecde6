// Steps 3–5 of the room's admit pipeline (room/writer.ts, the write door), for one event: the
// state before it (from its prev events, resolved when there are several), auth against its
// auth_events, against the state before it and (soft fail) against the current state. Reads
// only: the writer calls it inside its transaction and persists what it decides.
import type { RoomEvent, StateIdMap } from "../../src/core/types";
import { authEventKeys, buildAuthState, checkAuthEventsShape, checkEventAuth, CREATE_KEY } from "../../src/core/auth-rules";
import type { AdmitMode, AdmitOutcome } from "../../src/rpc/room";
import { partialAuthState, type PartialState } from "./partial-state";
import { isOutlier, RoomHead, StateAt, StoredEvent } from "./core";
import type { EventStore } from "./events";
import type { StateStore } from "./state";

/** What AdmitAuth needs from the rest of the room (the writer passes its own access). */
export interface AdmitAuthAccess {
  head: RoomHead;
  events: Pick<EventStore, "loadCreate" | "loadEvent">;
  state: Pick<StateStore, "authMapFrom" | "groupState" | "resolveMaps" | "stateBefore">;
  partial: Pick<PartialState, "isPartial">;
}

/** Events of an outlier batch decided but not written yet (RoomWriter.admitOutlierBatch): the
 *  auth checks of the batch's later events find them here. */
export interface UnwrittenEvents {
  stored: Map<string, StoredEvent>;
  create?: StoredEvent;
}

/** What steps 3–5 decided for an event that may be stored: its status (and why, when not
 *  accepted), and the state before it with the prev events it came from (persisting uses both). */
export interface AuthDecision {
  status: StoredEvent["status"];
  reason?: string;
  prevs: StoredEvent[];
  before: StateAt;
}

export class AdmitAuth {
  constructor(private readonly r: AdmitAuthAccess) {}

  /** Steps 3–5 for `ev`, or the outcome that stores nothing (invalid, missing prev or auth
   *  events). */
  decide(ev: RoomEvent, opts: AdmitMode, batch?: UnwrittenEvents): AuthDecision | AdmitOutcome {
    const rv = this.r.head.rv!;
    const isCreate = ev.type === "m.room.create" && ev.state_key === "";
    const backfill = opts.backfillStream !== undefined;
    let reason: string | undefined;
    let status: StoredEvent["status"] = "accepted";

    // State before the event: the state after its prev_events, resolved when there are several.
    // Prev events we do not hold (or hold only as outliers, without state) need their state
    // supplied by the caller (extraStates); otherwise the federation layer must fetch them.
    const prevs: StoredEvent[] = [];
    const missing: string[] = [];
    if (!opts.outlier) {
      for (const id of ev.prev_events) {
        const p = this.r.events.loadEvent(id);
        if (p && !isOutlier(p)) prevs.push(p);
        else missing.push(id);
      }
    }
    const knownCreate = isCreate ? (batch?.create ?? this.r.events.loadCreate()) : undefined;
    if (isCreate && (ev.prev_events.length > 0 || (!opts.outlier && !backfill && this.r.head.stream > 0) || (knownCreate && knownCreate.ev.event_id !== ev.event_id))) {
      return { status: "invalid", eventId: ev.event_id, reason: "a room has exactly one create event, first" };
    }
    if (!isCreate && !opts.outlier && ev.prev_events.length === 0) return { status: "invalid", eventId: ev.event_id, reason: "no prev_events" };
    if (missing.length && !opts.extraStates && !backfill) return { status: "missing", eventId: ev.event_id, reason: `unknown prev_events`, missing };
    const before: StateAt = isCreate || opts.outlier ? { map: new Map() as StateIdMap, group: null, resolved: false } : this.r.state.stateBefore(prevs, opts.extraStates ?? []);

    // 3. Auth against the auth_events.
    const authEvents: RoomEvent[] = [];
    const missingAuth: string[] = [];
    for (const id of ev.auth_events) {
      const a = batch?.stored.get(id) ?? this.r.events.loadEvent(id);
      if (!a) {
        missingAuth.push(id);
        continue;
      }
      if (a.status === "rejected") {
        status = "rejected";
        reason = `rule 2.3: auth event ${id} was rejected`;
      }
      authEvents.push(a.ev);
    }
    if (missingAuth.length) return { status: "missing", eventId: ev.event_id, reason: "unknown auth_events", missing: missingAuth };
    if (status === "accepted" && !isCreate) {
      const shape = checkAuthEventsShape(ev, authEvents, rv);
      if (!shape.allowed) [status, reason] = ["rejected", shape.reason];
    }
    if (status === "accepted") {
      const authState = buildAuthState(authEvents);
      if (rv.roomIdFromCreate && !isCreate) {
        const create = batch?.create ?? this.r.events.loadCreate();
        if (create) authState.set(CREATE_KEY, create.ev);
      }
      const r = checkEventAuth(ev, authState, rv);
      if (!r.allowed) [status, reason] = ["rejected", r.reason];
    }
    // 4. Auth against the state before the event. (Not for outliers, which have no place in
    // the DAG, nor for backfilled history, whose state before is only approximated.)
    const partialState = !opts.outlier && !backfill && this.r.partial.isPartial();
    if (status === "accepted" && !isCreate && !opts.outlier && !backfill) {
      // While the room's member events are still being fetched (partial-state join), the
      // event's own auth events are resolved into the state we know (partialAuthState, as
      // Synapse does); re-checked against the full state when it arrives.
      const st = partialState ? partialAuthState(before.map, authEvents, authEventKeys(rv, ev), (maps) => this.r.state.resolveMaps(maps)) : before.map;
      const r = checkEventAuth(ev, this.r.state.authMapFrom(st, ev), rv);
      if (!r.allowed) [status, reason] = ["rejected", `against the state before the event: ${r.reason}`];
    }
    // 5. Soft fail against the current state (only differs from 4. when the event is not on top).
    // (Skipped while partial: the current state may lack the sender's membership. Synapse too.)
    if (status === "accepted" && !isCreate && !opts.outlier && !backfill && !partialState && before.group !== this.r.head.currentGroup) {
      const r = checkEventAuth(ev, this.r.state.authMapFrom(this.r.state.groupState(this.r.head.currentGroup), ev), rv);
      if (!r.allowed) [status, reason] = ["soft_failed", `against the current state: ${r.reason}`];
    }
    return { status, reason, prevs, before };
  }
}
