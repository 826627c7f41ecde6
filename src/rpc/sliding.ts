// Sliding sync's RPC types (MSC4186): what the Worker (src/api/client/sliding-sync.ts) and the
// user's hub (durable-objects/sliding-conn.ts, UserDO.slidingBegin/slidingCommit) exchange, and
// the connection state the hub stores for each pos. Routes import these from here, never the
// Durable Object module.
import type { JsonObject } from "../core/types";
import type { ListFilters, Range, SlidingMembership } from "../core/sliding-lists";

/** What one room has been sent on a connection. */
export interface SentRoom {
  /** Room stream position sent up to. */
  s: number;
  /** Membership it was sent with. */
  m: string;
  /** required_state config key (core/sliding-lists configKey). */
  k: string;
  /** Unread counts sent. */
  n: number;
  h: number;
  /** timeline_limit it was last sent with (expanded_timeline when a bigger one comes). */
  l?: number;
}

export interface ExtConfig {
  to_device?: { enabled?: boolean; since?: string; limit?: number };
  e2ee?: { enabled?: boolean };
  account_data?: { enabled?: boolean; lists?: string[]; rooms?: string[] };
  receipts?: { enabled?: boolean; lists?: string[]; rooms?: string[] };
  typing?: { enabled?: boolean; lists?: string[]; rooms?: string[] };
  /** MSC4308 (thread subscriptions), under its unstable name. */
  "io.element.msc4308.thread_subscriptions"?: { enabled?: boolean; limit?: number };
}

export interface RoomConfig {
  required_state: [string, string][];
  timeline_limit: number;
}

export interface ConnState {
  /** The hub position this state covers (everything up to it is reflected). */
  hubPos: number;
  /** What each room was sent: not in this row but in sliding_conn_rooms, one row per room and
   *  pos that changed it (see sentRooms); a row from before that table may still hold them. */
  rooms?: Record<string, SentRoom>;
  /** The positions this one descends from, oldest first (the last 16): a retried or abandoned
   *  sibling's room rows are told apart by them. */
  chain?: number[];
  /** Room subscriptions (sticky until unsubscribed). */
  subs: Record<string, RoomConfig>;
  /** Per list: the request's key (ranges + filters + config) and the count sent. */
  lists: Record<string, { key: string; count: number }>;
  /** Sticky extension config. */
  ext: ExtConfig;
  /** e2ee: the key counts and fallback types last sent (keysOf), so a change wakes the poll. */
  keys?: string;
}

export interface BeginRequest {
  deviceId: string;
  connId: string;
  pos?: string;
  /** Wait for changes after this hub position (a repeated call of one long-poll); default: the
   *  state's own position. */
  waitAfter?: number;
  timeoutMs: number;
  /** Respond without waiting (the request itself changes what the client is shown). */
  noWait: boolean;
  /** The request's extensions (merged over the sticky ones of the connection). */
  extensions?: ExtConfig;
  /** Room subscriptions of this request (config as the Worker normalised it), and list keys:
   *  a change of either means answer now. */
  newSubs: string[];
  subConfigs?: Record<string, RoomConfig>;
  listKeys: Record<string, string>;
  unsubscribe: string[];
  /** The lists, computed here so only their windows leave the hub (the room list stays). */
  lists: Record<string, { ranges: Range[]; filters?: ListFilters }>;
  /** `spaces` filters: the children of each named space (read from the space by the Worker). */
  spaceChildren?: Record<string, string[]>;
  /** Room types the Worker read for rooms the hub asked about (needTypes). */
  roomTypes?: Record<string, string | null>;
}

/** A room the response may show (the recency index's row for it, durable-objects/sliding-recency.ts). */
export interface HubRoom {
  roomId: string;
  membership: SlidingMembership;
  stream: number;
  bump: number;
  encrypted: boolean;
  inviter: string | null;
  /** m.room.create content.type (null: none); undefined: not known to the hub yet. */
  roomType?: string | null;
  /** In m.direct. */
  isDm: boolean;
}

/** One thread subscription change as MSC4308 lists it (durable-objects/user/thread-subscriptions.ts). */
export interface ThreadSubscriptionChange {
  roomId: string;
  rootId: string;
  subscribed: boolean;
  automatic: boolean;
  /** The hub position of the change (MSC4308 `bump_stamp`). */
  upos: number;
}

export interface BeginResult {
  /** The state the request starts from (null: a new connection). */
  state: ConnState | null;
  stateId: number | null;
  /** Hub position this response covers. */
  q: number;
  /** Set when a list filters by room type and these rooms' types are unknown to the hub: the
   *  Worker reads them and calls again with `roomTypes` (nothing else is filled in then). */
  needTypes?: string[];
  /** Per list: the count and the window's room IDs, in order. */
  lists: Record<string, { count: number; window: string[] }>;
  /** The rooms in any window, and subscribed rooms the user may be shown. */
  rooms: HubRoom[];
  /** Per room shown that is new to the connection or changed since its position: counts and
   *  the extensions' data (slidingDetails). A room left out is unchanged. */
  details: Record<string, RoomDetails>;
  /** What the connection was sent of each room shown (none: new to it). */
  sent: Record<string, SentRoom>;
  /** Rooms in m.direct (is_dm). */
  direct: string[];
  /** Users in m.ignored_user_list (module "Ignoring Users"). */
  ignored: string[];
  ext: ExtConfig;
  globalAccountData: JsonObject[];
  toDevice?: { events: JsonObject[]; next_batch: string };
  /** e2ee: keysOf now (stored in the connection state). */
  keys?: string;
  e2ee?: { device_lists: { changed: string[]; left: string[] }; device_one_time_keys_count: Record<string, number>; device_unused_fallback_key_types: string[] };
  /** MSC4308: the newest thread subscription changes after the connection's position; `more`
   *  when older ones were left out (the Worker then gives a prev_batch). */
  threadSubscriptions?: { changes: ThreadSubscriptionChange[]; more: boolean };
}

export type SlidingResult<T> = { ok: true; value: T } | { ok: false; status: 400; errcode: string; error: string };

export interface RoomDetails {
  unread: { notification_count: number; highlight_count: number };
  typing?: JsonObject;
  receipts?: JsonObject;
  accountData?: JsonObject[];
}

export interface CommitRequest {
  deviceId: string;
  connId: string;
  fromId: number | null;
  state: ConnState;
  /** The rooms this response sent (or whose counts it updated), as the connection now has them. */
  rooms: Record<string, SentRoom>;
}
