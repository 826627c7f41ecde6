// The RoomDO's RPC types (durable-objects/room.ts): what the Worker sends a room and what it gets
// back. Types only, so that routes and services never import the Durable Object module itself.
import type { JsonObject, StateIdMap } from "../core/types";
import type { RoomEventFilter } from "../core/room-event-filter";
export type { RoomSyncQuery, RoomSyncView } from "../../durable-objects/room/sync-view";

/** Who asks: reads are filtered by history visibility for this user; `deviceId` adds
 *  unsigned.transaction_id to the events that device sent. */
export interface Requester {
  userId: string;
  deviceId?: string;
  /** Users the requester ignores (module "Ignoring Users"): their replies are left out of
   *  bundled thread summaries and references and of the thread list. */
  ignored?: readonly string[];
}

export type RoomError = { ok: false; status: 400 | 403 | 404 | 409 | 413 | 500 | 502; errcode: string; error: string };
export type RoomResult<T> = { ok: true; value: T } | RoomError;

/** An event for the room's DO to build, sign and admit on behalf of a local user. */
export interface LocalEventSpec {
  type: string;
  state_key?: string;
  content: JsonObject;
  sender: string;
  /** Idempotency: a retry with the same (sender, deviceId, txnId) returns the first event ID. */
  txn?: { deviceId: string; txnId: string; /** e.g. "redact": txn IDs are per endpoint */ scope?: string };
  /** m.room.redaction: the event being redacted. */
  redacts?: string;
  /** origin_server_ts other than now: an application service's `ts` query parameter. */
  ts?: number;
}

export interface AdmitOutcome {
  eventId?: string;
  /** "missing": prev_events or auth_events we do not hold (listed in `missing`); nothing was
   *  stored — the federation layer fetches them (get_missing_events, /event_auth, /state_ids)
   *  and tries again. */
  status: "accepted" | "soft_failed" | "rejected" | "invalid" | "duplicate" | "missing";
  reason?: string;
  stream?: number;
  missing?: string[];
}

/** How an event enters the DAG besides the normal forward path (see admitInner). */
export interface AdmitMode {
  local: boolean;
  txn?: LocalEventSpec["txn"];
  /** Store without a place in the timeline or state (auth chain / state received from another
   *  server): checked against its auth_events only (spec "Checks performed on receipt of a
   *  PDU", step 4 only; steps 5–6 do not apply to outliers). */
  outlier?: boolean;
  /** State after prev events we do not hold (from /state_ids at those events, or the state a
   *  send_join answer returned): resolved together with the state of the prev events we hold. */
  extraStates?: StateIdMap[];
  /** History fetched with /backfill: stored at this (negative) stream position, never changes
   *  current state or forward extremities, no fan-out. */
  backfillStream?: number;
  /** We are the resident server of a send_join/send_leave/send_knock: forward the event to the
   *  other servers in the room. */
  rebroadcast?: boolean;
}

export interface MessagesQuery {
  dir: "b" | "f";
  from?: string;
  to?: string;
  limit: number;
  filter?: RoomEventFilter;
}

export interface MessagesResponse {
  chunk: JsonObject[];
  start: string;
  end?: string;
  state?: JsonObject[];
}

/** GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]; tokens as /messages. */
export interface RelationsQuery {
  eventId: string;
  relType?: string;
  eventType?: string;
  dir: "b" | "f";
  from?: string;
  to?: string;
  limit: number;
  recurse?: boolean;
}

export interface RelationsResponse {
  chunk: JsonObject[];
  next_batch?: string;
  prev_batch?: string;
  recursion_depth?: number;
}

export interface ContextResponse {
  event: JsonObject;
  events_before: JsonObject[];
  events_after: JsonObject[];
  start: string;
  end: string;
  state: JsonObject[];
}

/** Room version, room ID and the stream position of the newest event. */
export interface RoomSummary {
  roomId: string;
  roomVersion: string;
  stream: number;
}
