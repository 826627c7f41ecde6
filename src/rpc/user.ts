// The UserDO's (sync hub's) RPC types (durable-objects/user.ts), and the m.presence event it and
// the presence routes both build. Routes and services import these from here, never the Durable
// Object module.
import type { JsonObject } from "../core/types";
import type { PushAction } from "../core/push-rules";


/** What a RoomDO tells a hub about one committed event (src/services/notifier.ts builds it). */
export interface RoomEventNotice {
  roomId: string;
  /** The room's stream position of this event: every accepted event with stream <= this is
   *  committed in the RoomDO, so a sync may read up to here. */
  stream: number;
  event: {
    event_id: string;
    room_id: string;
    type: string;
    sender: string;
    state_key?: string;
    content: JsonObject;
    origin_server_ts: number;
  };
  /** Joined members after the event (push rule room_member_count). */
  memberCount: number;
  /** Sender's power level and the room's power levels content (sender_notification_permission). */
  senderPowerLevel: number;
  powerLevels?: JsonObject;
  /** Whether the room is encrypted (device_lists: sharing an encrypted room). */
  encrypted?: boolean;
}

export type Membership = "join" | "invite" | "leave" | "ban" | "knock";

export interface SyncRequest {
  userId: string;
  deviceId: string;
  since?: string;
  timeoutMs: number;
  fullState: boolean;
  /** Filter's room.include_leave (initial sync only; newly left rooms always come). */
  includeLeave: boolean;
  /** Separate per-thread unread counts (RoomEventFilter unread_thread_notifications). */
  threadCounts: boolean;
  /** set_presence (absent: leave presence alone). Saves the Worker a separate call. */
  setPresence?: string;
}

export interface SyncRoomDelta {
  roomId: string;
  membership: Membership;
  /** Room stream position the client has already seen (null: nothing, treat as initial). */
  since: number | null;
  /** Room stream position to sync up to (inclusive). */
  upTo: number;
  /** The token was below the compacted log and this room's timeline moved in between: what the
   *  client saw is unknown beyond `since` (the stream at the floor). Send the timeline after
   *  `since` as `limited` with full state (a gappy sync; /messages fills the gap). */
  gap?: boolean;
  /** Joined (or joined and left) since the token: new to the client in an incremental sync. */
  newlyJoined?: boolean;
  inviter?: string;
  unread: { notification_count: number; highlight_count: number };
  threads?: Record<string, { notification_count: number; highlight_count: number }>;
  accountData: JsonObject[];
  ephemeral: JsonObject[];
}

export interface SyncDelta {
  nextBatch: string;
  /** Whether anything at all changed (false after a timeout with nothing new). */
  changed: boolean;
  rooms: SyncRoomDelta[];
  accountData: JsonObject[];
  presence: JsonObject[];
  toDevice: JsonObject[];
  deviceLists: { changed: string[]; left: string[] };
  oneTimeKeyCounts: Record<string, number>;
  fallbackKeyTypes: string[];
  ignoredUsers: string[];
  /** Set when `setPresence` changed my presence: the Worker fans it out. */
  presenceChanged?: { presence: string; statusMsg: string | null; lastActiveTs: number; ping?: boolean };
}

/** A room stream position named by a sync token (UserDO.roomPosition). */
export interface RoomPosition {
  low: number | null;
  high: number | null;
}

export type HubResult<T> = { ok: true; value: T } | { ok: false; status: 400 | 403 | 404; errcode: string; error: string };

export interface NotificationRow {
  roomId: string;
  eventId: string;
  stream: number;
  ts: number;
  actions: PushAction[];
  highlight: boolean;
  read: boolean;
  upos: number;
}

/** Presence shown as idle (unavailable) after this long without activity, offline after this. */
export const PRESENCE_IDLE_MS = 5 * 60_000;
export const PRESENCE_OFFLINE_MS = 30 * 60_000;

export function presenceEvent(userId: string, presence: string, statusMsg: string | null, lastActiveTs: number): JsonObject {
  const ago = Math.max(0, Date.now() - lastActiveTs);
  // Idle by timeout: no activity for a while reads as unavailable, a long while as offline.
  const shown = presence !== "offline" && ago > PRESENCE_OFFLINE_MS ? "offline" : presence === "online" && ago > PRESENCE_IDLE_MS ? "unavailable" : presence;
  const content: JsonObject = { presence: shown, last_active_ago: ago, currently_active: shown === "online" };
  if (statusMsg !== null) content.status_msg = statusMsg;
  return { type: "m.presence", sender: userId, content };
}

/** One room of a /sync response, as the Worker reports it to the hub for lazy-loaded members
 *  (durable-objects/user/lazy-members.ts). */
export interface LazyMembersRoom {
  roomId: string;
  /** Member events (user → event ID) in `state` only because their user sent a timeline event:
   *  left out when this device provably has that very event. */
  candidates: Record<string, string>;
  /** Member events the response carries regardless (gap changes, timeline, fresh rooms): the
   *  last one per user in the order the client applies them. A user may be in both (a later
   *  member event in the timeline): this one is what the client ends up holding. */
  sent: Record<string, string>;
}
