// What every module of the room shares: the room's identity and position (RoomHead), the
// stored-event shapes, limits, errors as RoomResult values, pagination tokens, and small pure
// helpers. No storage access here.
import type { StateIdMap, StateKey, RoomEvent } from "../../src/core/types";
import { stateKey } from "../../src/core/types";
import { getRoomVersion, type RoomVersion } from "../../src/core/room-versions";
import { CanonicalJsonError } from "../../src/core/canonical-json";
import type { LocalEventSpec, RoomError, RoomResult } from "../../src/rpc/room";
import { diffShared } from "./state-layers";
import { parseMemberCounts, type MemberCounts } from "./member-counts";

/** The room this Durable Object holds and where it stands: set when the room is created,
 *  joined or first heard of (invite), cleared by purge. `stream` and `currentGroup` are
 *  advanced by the writer only. */
export class RoomHead {
  roomId?: string;
  rv?: RoomVersion;
  serverName?: string;
  /** The room's stream position: the highest given to an accepted event. */
  stream = 0;
  /** The state group of the current (resolved) state. */
  currentGroup: number | null = null;
  /** Joined and invited members of the current state, as kept in `meta` (room/member-counts.ts;
   *  undefined in a room that does not keep them yet). Advanced by the writer only. */
  memberCounts?: MemberCounts;
  /** `meta` as read at start, until the first write transaction (RoomWriter.transact drops it):
   *  the partial marks every read asks about come from it instead of a statement each (a cold
   *  /sync of 300 rooms asked three of them per room). */
  private metaAtStart?: Map<string, string>;

  /** The room's identity and position from `meta` (at start). */
  load(meta: Map<string, string>): void {
    this.metaAtStart = meta;
    this.roomId = meta.get("room_id");
    this.serverName = meta.get("server_name");
    if (meta.has("room_version")) this.rv = getRoomVersion(meta.get("room_version")!);
    this.stream = Number(meta.get("stream") ?? "0");
    this.currentGroup = meta.has("current_group") ? Number(meta.get("current_group")) : null;
    this.memberCounts = parseMemberCounts(meta.get("member_counts"));
  }

  /** A `meta` value as read at start (null: absent), or undefined once a write may have
   *  changed it (read it from storage then). */
  metaFromStart(key: string): string | null | undefined {
    return this.metaAtStart ? (this.metaAtStart.get(key) ?? null) : undefined;
  }

  /** Write transactions (and purges) since the start: what was read before one may be stale. */
  writes = 0;

  /** Before every write transaction (and a purge): `meta` and any table may change. */
  beforeWrite(): void {
    this.metaAtStart = undefined;
    this.writes++;
  }

  requireRoom(): RoomVersion {
    if (!this.rv || !this.roomId) fail(404, "M_NOT_FOUND", "Unknown room");
    return this.rv;
  }
}

/** A read RPC's body as a RoomResult: RoomFail (and bad canonical JSON) become errors. */
export function wrap<T>(fn: () => T): RoomResult<T> {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    return asRoomError(e);
  }
}


export const MAX_PDU_BYTES = 65536;
export const MIN_STREAM = -1e12;
/** /relations with recurse: levels of relations followed ("Homeservers SHOULD traverse at least
 *  3 levels"). */
export const RELATIONS_DEPTH = 3;
export const MAX_ID_BYTES = 255;
/** State groups are deltas on a parent; a group whose chain of deltas back to the last full
 *  snapshot would hold more than SNAPSHOT_FRACTION of its state's size in entries (and at least
 *  SNAPSHOT_MIN) is written as a full snapshot instead. Proportional, not every N groups: in a
 *  room with 30,000 state entries a snapshot every 64 groups wrote 30,000 rows per 64 events,
 *  quadratic in time and storage as the room grows; this way snapshots cost ~2 rows per delta
 *  entry and reading a group ~1.5 × its size, in two queries (groupState). */
export const SNAPSHOT_FRACTION = 0.5;
export const SNAPSHOT_MIN = 64;
export const MAX_PREV_EVENTS = 10;
/** How long federated events wait for a local join under way (expectJoin): the join's own
 *  send_join timeout. */
export const JOIN_WAIT_MS = 120_000;
/** `items` as JSON array texts for a `json_each(?)` parameter (many rows or IDs in one
 *  statement), each at most JSON_PARAM_CHARS characters: a Durable Object's SQLite takes a
 *  string of at most 2 MB, which a whole large state as one parameter passes (the 10,000
 *  member events of a partial-state join's completion, 2,000 to a transaction, failed every
 *  step on it). Characters are at most 3 UTF-8 bytes here (JSON.stringify escapes lone
 *  surrogates), so 512 Ki characters stay under 2 MB. */
export function jsonBatches(items: unknown[]): string[] {
  const out: string[] = [];
  let parts: string[] = [];
  let size = 2;
  for (const item of items) {
    const text = JSON.stringify(item);
    if (parts.length && size + text.length + 1 > JSON_PARAM_CHARS) {
      out.push(`[${parts.join(",")}]`);
      parts = [];
      size = 2;
    }
    parts.push(text);
    size += text.length + 1;
  }
  if (parts.length) out.push(`[${parts.join(",")}]`);
  return out;
}
export const JSON_PARAM_CHARS = 512 * 1024;

/** Outliers stored per transaction when a join seeds a room (admitOutlierBatch). */
export const OUTLIER_BATCH = 2_000;
export const EVENT_CACHE = 4096;
export const GROUP_CACHE = 256;
/** Bound on the state-group cache by total entries too: in a 10,000-member room every cached
 *  group is a 10,000-entry map, and 256 of them do not fit a 128 MB isolate. */
export const GROUP_CACHE_ENTRIES = 200_000;
/** Resolved prev-event states remembered (stateAcross). */
export const ACROSS_MEMO = 4;
/** Events whose auth event IDs are kept in memory for state resolution (authIdsOf). */
export const AUTH_INDEX = 200_000;
export const utf8 = new TextEncoder();

export interface StoredEvent {
  ev: RoomEvent;
  stream: number | null;
  status: "accepted" | "rejected" | "soft_failed";
  stateBefore: number | null;
  stateAfter: number | null;
  prevState: string | null;
  txnDevice: string | null;
  txnId: string | null;
}

export interface EventRow {
  event_id: string;
  stream: number | null;
  type: string;
  state_key: string | null;
  sender: string;
  pdu: string;
  status: string;
  state_before: number | null;
  state_after: number | null;
  prev_state: string | null;
  txn_device: string | null;
  txn_id: string | null;
  [k: string]: SqlStorageValue;
}

export class RoomFail extends Error {
  constructor(
    readonly status: RoomError["status"],
    readonly errcode: string,
    message: string,
  ) {
    super(message);
  }
}

export function fail(status: RoomError["status"], errcode: string, message: string): never {
  throw new RoomFail(status, errcode, message);
}

export function asRoomError(e: unknown): RoomError {
  if (e instanceof RoomFail) return { ok: false, status: e.status, errcode: e.errcode, error: e.message };
  // Event content that cannot be signed (integers beyond 2^53, floats, lone surrogates) is bad input.
  if (e instanceof CanonicalJsonError) return { ok: false, status: 400, errcode: "M_BAD_JSON", error: `Not canonical JSON: ${e.message}` };
  console.error("RoomDO error", e);
  return { ok: false, status: 500, errcode: "M_UNKNOWN", error: "Internal error in room" };
}

export function parseToken(t: string | undefined): number | undefined {
  if (t === undefined || t === "") return undefined;
  // Backfilled history sits at negative stream positions (below the event we joined at).
  const m = /^t?(-?\d+)$/.exec(t) ?? /^t(-?\d+)/.exec(t);
  if (!m) fail(400, "M_INVALID_PARAM", "Invalid pagination token");
  return Number(m[1]);
}
export function streamToken(n: number): string {
  return `t${Math.max(MIN_STREAM, n)}`;
}


export const POWER_KEY = stateKey("m.room.power_levels", "");
/** A state group and its ancestors, newest first, up to its snapshot (parent NULL). */
export const GROUP_CHAIN_SQL = `WITH RECURSIVE up(id, parent) AS (
  SELECT id, parent FROM state_groups WHERE id = ?1
  UNION ALL SELECT g.id, g.parent FROM state_groups g JOIN up ON g.id = up.parent
) SELECT id FROM up`;
/** The delta entries of a group and of its ancestors down to (and including) group ?2, oldest
 *  group first. */
export const GROUP_ENTRIES_SQL = `WITH RECURSIVE up(id, parent) AS (
  SELECT id, parent FROM state_groups WHERE id = ?1
  UNION ALL SELECT g.id, g.parent FROM state_groups g JOIN up ON g.id = up.parent WHERE up.id > ?2
) SELECT e.type, e.state_key, e.event_id FROM up JOIN state_group_entries e ON e.group_id = up.id ORDER BY e.group_id`;
export const ACL_KEY = stateKey("m.room.server_acl", "");

/** Stored without a place in the DAG: auth chain or state received from another server. */
export function isOutlier(se: StoredEvent): boolean {
  return se.stream === null && se.stateAfter === null && se.status === "accepted";
}
export const HV_KEY = stateKey("m.room.history_visibility", "");
export const GUEST_ACCESS_KEY = stateKey("m.room.guest_access", "");
/** Events per GET /events?room_id= answer. */
export const PEEK_LIMIT = 100;
/** How long the hub fan-out may stay incomplete before alarm() checks on it. */
export const HUB_REDELIVER_MS = 30_000;
/** How long the stored hub watermark may lag the one in memory (FanOut.saveHubDoneSoon). */
export const HUB_SAVE_MS = 1_000;
export const ENCRYPTION_KEY = stateKey("m.room.encryption", "");
/** The state at a point: its map, and the group holding it unless it was just resolved. */
export interface StateAt {
  map: StateIdMap;
  group: number | null;
  resolved: boolean;
  /** For a resolution of several groups: its key in StateStore.acrossMemo. */
  memoKey?: string;
}
export interface FanOutFacts {
  group: number | null;
  joinedLocal: string[];
  joinedServers: Set<string>;
  memberCount: number;
  encrypted: boolean;
  /** Internal to the cache: every joined user, and joined users per server. */
  joined: Set<string>;
  serverCounts: Map<string, number>;
}

export function txnKey(t: NonNullable<LocalEventSpec["txn"]>): string {
  return t.scope ? `${t.scope}\u0000${t.txnId}` : t.txnId;
}

/** Events in auth order (Kahn's algorithm over auth_events within the set, depth breaking ties),
 *  and those left in auth cycles. */
export function authOrder(events: RoomEvent[]): { order: string[]; cycles: string[] } {
  const pending = new Map(events.map((ev) => [ev.event_id, ev]));
  const order: string[] = [];
  let progress = true;
  while (pending.size && progress) {
    progress = false;
    const ready = [...pending.values()].filter((ev) => ev.auth_events.every((a) => !pending.has(a))).sort((a, b) => a.depth - b.depth);
    for (const ev of ready) {
      pending.delete(ev.event_id);
      order.push(ev.event_id);
      progress = true;
    }
  }
  return { order, cycles: [...pending.keys()] };
}

/** Entries of `next` that differ from `prev` (null = removed). */
export function diffState(prev: StateIdMap, next: StateIdMap): Map<StateKey, string | null> {
  // Two states sharing a base (state-layers.ts) differ at most where they differ from it.
  const shared = diffShared(prev, next);
  if (shared) return shared;
  const out = new Map<StateKey, string | null>();
  for (const [k, v] of next) if (prev.get(k) !== v) out.set(k, v);
  for (const k of prev.keys()) if (!next.has(k)) out.set(k, null);
  return out;
}
