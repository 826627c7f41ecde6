// Shared protocol types. Pure data, no I/O.

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * A PDU as it travels over federation (room versions 3+: no `event_id` field; the ID is
 * the reference hash). Room version 1/2 PDUs carry `event_id` themselves. Room version 12
 * create events carry no `room_id`.
 */
export interface PDU {
  event_id?: string; // only room versions 1 and 2
  room_id?: string; // absent on v12 m.room.create
  sender: string;
  origin?: string; // dropped by redaction from v11 on, still sent by many servers
  origin_server_ts: number;
  type: string;
  state_key?: string;
  content: JsonObject;
  prev_events: string[] | [string, { sha256: string }][]; // v1/v2 use [id, hashes] pairs
  auth_events: string[] | [string, { sha256: string }][];
  depth: number;
  hashes: { sha256: string; [alg: string]: string };
  signatures: Record<string, Record<string, string>>;
  unsigned?: JsonObject;
  redacts?: string; // top level until v11; in content from v11
  [key: string]: unknown;
}

/**
 * An event as the algorithms see it: the PDU plus its (derived) event ID, and `prev_events`
 * / `auth_events` normalised to plain ID lists. Auth rules and state resolution work on this.
 */
export interface RoomEvent {
  event_id: string;
  room_id: string;
  sender: string;
  type: string;
  state_key?: string;
  content: JsonObject;
  origin_server_ts: number;
  depth: number;
  prev_events: string[];
  auth_events: string[];
  redacts?: string;
  /** The full PDU as received/created (signed, hashed). */
  pdu: PDU;
}

/** Key of a state entry: the (type, state_key) pair joined by a NUL (cannot occur in either). */
export type StateKey = string;
export function stateKey(type: string, key: string): StateKey {
  return `${type}\u0000${key}`;
}
export function splitStateKey(k: StateKey): [string, string] {
  const i = k.indexOf("\u0000");
  return [k.slice(0, i), k.slice(i + 1)];
}

/** Room state: (type, state_key) → event. */
export type StateMap = Map<StateKey, RoomEvent>;
/** Room state by event ID: (type, state_key) → event ID. */
export type StateIdMap = Map<StateKey, string>;

/** A room as the published room directory lists it (spec: PublishedRoomsChunk); the space
 *  hierarchy's summaries (src/core/spaces.ts) are the same fields and a few more. */
export interface PublicRoomChunk {
  room_id: string;
  num_joined_members: number;
  world_readable: boolean;
  guest_can_join: boolean;
  name?: string;
  topic?: string;
  canonical_alias?: string;
  avatar_url?: string;
  join_rule?: string;
  room_type?: string;
}
