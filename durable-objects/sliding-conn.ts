// Simplified Sliding Sync (MSC4186) inside the user's hub (UserDO): per-connection state and the
// hub's reads for one request. The Worker (src/api/client/sliding-sync.ts) shapes the response;
// the hub knows rooms, memberships, recency, counts, ephemeral data and the E2EE inbox.
//
// A connection is (device, conn_id). Every response gets a new `pos`, a row holding what the
// client has been sent once it presents that pos: per room, the room stream sent up to, the
// membership and the required_state config it was sent with; the room subscriptions (sticky)
// and the sticky extension config. A request with pos P starts from P's row, so a retried P (lost
// response) is answered again from the same starting point — nothing is skipped. Presenting P
// proves the client holds P: older rows of the connection are then dropped. An unknown pos (never
// issued, dropped, other device or connection) answers 400 M_UNKNOWN_POS and the client starts
// over.
import type { JsonObject } from "../src/core/types";
import { needsRoomType, sameConfig, type ListFilters, type Range } from "../src/core/sliding-lists";
import type { BeginRequest, BeginResult, CommitRequest, ConnState, ExtConfig, HubRoom, RoomConfig, RoomDetails, SentRoom, SlidingResult, ThreadSubscriptionChange } from "../src/rpc/sliding";
import { initRecency, learnRoomType, leftSince, listWindow, roomsByIds, syncDirect, unknownTypes, type Candidates, type IndexedRoom } from "./sliding-recency";

export { noteSlidingRoom, refreshRecency, type SlidingNote } from "./sliding-recency";
// The RPC types (src/rpc/sliding.ts), for the hub's callers of this module.
export type { BeginRequest, BeginResult, CommitRequest, ConnState, ExtConfig, HubRoom, RoomConfig, RoomDetails, SentRoom, SlidingResult } from "../src/rpc/sliding";

export const SLIDING_SCHEMA = `
CREATE TABLE IF NOT EXISTS sliding_conns (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL, conn_id TEXT NOT NULL,
  state TEXT NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sliding_conns_conn ON sliding_conns(device_id, conn_id, id);
CREATE INDEX IF NOT EXISTS sliding_conns_ts ON sliding_conns(ts);
CREATE TABLE IF NOT EXISTS sliding_conn_rooms (device_id TEXT NOT NULL, conn_id TEXT NOT NULL, room_id TEXT NOT NULL,
  pos INTEGER NOT NULL, sent TEXT NOT NULL, PRIMARY KEY (device_id, conn_id, room_id, pos));
CREATE INDEX IF NOT EXISTS sliding_conn_rooms_pos ON sliding_conn_rooms(device_id, conn_id, pos);
CREATE TABLE IF NOT EXISTS sliding_seq (k INTEGER PRIMARY KEY, n INTEGER NOT NULL);
`;

/** Rows kept per connection (the presented pos and the ones issued after it). */
const ROWS_PER_CONN = 16;
/** A connection not used for this long is forgotten (its pos then answers M_UNKNOWN_POS), as
 *  Synapse does after 7 days. */
export const CONN_TTL_MS = 7 * 24 * 3600_000;
/** Connections kept per device (MSC4186 "Security considerations": servers SHOULD limit the
 *  connections a device can have). Element X uses two or three; a new one beyond this evicts
 *  the device's least recently used connection. */
export const CONNS_PER_DEVICE = 10;
const MAX_WAIT_MS = 5 * 60_000;
/** Thread subscription changes one response carries at most (MSC4308: "Servers may impose a
 *  smaller limit"; Synapse's is 512 on its pagination endpoint). */
export const MAX_THREAD_SUBSCRIPTIONS = 512;

/** What the hub module needs from the UserDO. */
export interface SlidingHubAccess {
  sql: SqlStorage;
  pos(): number;
  /** Resolve at the next push to the hub, or after `ms`. */
  waitForPush(ms: number): Promise<void>;
  unreadCounts(roomId: string): { notification_count: number; highlight_count: number };
  ephemeralSince(roomId: string, from: number, q: number): JsonObject[];
  accountDataSince(roomId: string, from: number, q: number): JsonObject[];
  transaction<T>(fn: () => T): T;
  /** user/thread-subscriptions.ts; absent when THREAD_SUBSCRIPTIONS is off. */
  threadSubscriptions?: {
    changes(from: number, to: number, limit: number): { changes: ThreadSubscriptionChange[]; more: boolean };
    changedAfter(after: number): boolean;
  };
}

/** The hub's sliding sync tables (called from its constructor, after the hub's own schema). */
export function initSliding(sql: SqlStorage): void {
  sql.exec(SLIDING_SCHEMA);
  initRecency(sql);
}

function loadState(sql: SqlStorage, deviceId: string, connId: string, pos: string): { id: number; state: ConnState } | null {
  if (!/^\d{1,15}$/.test(pos)) return null;
  const row = sql.exec<{ state: string }>("SELECT state FROM sliding_conns WHERE id = ? AND device_id = ? AND conn_id = ?", Number(pos), deviceId, connId).toArray()[0];
  return row ? { id: Number(pos), state: JSON.parse(row.state) as ConnState } : null;
}

function mergeExt(stored: ExtConfig, req: ExtConfig | undefined): ExtConfig {
  const out: ExtConfig = { ...stored };
  for (const k of Object.keys(req ?? {}) as (keyof ExtConfig)[]) {
    // `since` is not sticky (it moves with every response); the rest is.
    out[k] = { ...(stored[k] ?? {}), ...(req![k] ?? {}) } as never;
  }
  if (out.to_device) out.to_device = { ...out.to_device, since: req?.to_device?.since };
  return out;
}

/** The first read of a request: validate pos, wait (long-poll) until something changed after
 *  it, then read what the Worker needs to shape the response. */
export async function slidingBegin(a: SlidingHubAccess, req: BeginRequest): Promise<SlidingResult<BeginResult>> {
  let loaded: { id: number; state: ConnState } | null = null;
  if (req.pos !== undefined) {
    loaded = loadState(a.sql, req.deviceId, req.connId, req.pos);
    if (!loaded) return { ok: false, status: 400, errcode: "M_UNKNOWN_POS", error: "Unknown or expired pos: start a new connection without pos" };
  }
  const state = loaded?.state ?? null;
  if (loaded) {
    settleRooms(a.sql, req.deviceId, req.connId, loaded.id, loaded.state.chain ?? [], loaded.state.rooms);
    delete loaded.state.rooms;
  }
  const sentOf = (ids: string[]) => (loaded ? sentRooms(a.sql, req.deviceId, req.connId, loaded.id, ids) : {});
  const ext = mergeExt(state?.ext ?? {}, req.extensions);
  const tdSince = ext.to_device?.enabled ? parseToDeviceSince(ext.to_device.since) : undefined;
  if (tdSince === null) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "Malformed to_device since" };
  if (tdSince !== undefined && a.sql.exec("SELECT 1 FROM to_device WHERE device_id = ? AND upos <= ? LIMIT 1", req.deviceId, tdSince).toArray().length) {
    // Module "Send-to-Device messaging": delivered messages are deleted once the client
    // acknowledges them by presenting a later `since`.
    a.sql.exec("DELETE FROM to_device WHERE device_id = ? AND upos <= ?", req.deviceId, tdSince);
  }

  if (state && !req.noWait && req.timeoutMs > 0) {
    const changedConfig =
      req.newSubs.some((r) => !state.subs[r] || (req.subConfigs?.[r] !== undefined && !sameConfig(state.subs[r], req.subConfigs[r]))) ||
      Object.keys(req.listKeys).length !== Object.keys(state.lists).length ||
      Object.entries(req.listKeys).some(([n, k]) => state.lists[n]?.key !== k);
    const after = req.waitAfter ?? state.hubPos;
    const deadline = Date.now() + Math.min(req.timeoutMs, MAX_WAIT_MS);
    while (!changedConfig && !changedAfter(a, req.deviceId, after, ext, tdSince, state.keys) && Date.now() < deadline) {
      await a.waitForPush(deadline - Date.now());
    }
  }

  const q = a.pos();
  const from = state?.hubPos ?? -1;
  for (const [roomId, type] of Object.entries(req.roomTypes ?? {})) learnRoomType(a.sql, roomId, type);
  syncDirect(a.sql);
  const ignoredRow = a.sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = '' AND type = 'm.ignored_user_list'").toArray()[0];
  const ignoredUsers = ignoredRow ? (JSON.parse(ignoredRow.content) as { ignored_users?: Record<string, unknown> }).ignored_users : undefined;
  const ignored = ignoredUsers && typeof ignoredUsers === "object" ? Object.keys(ignoredUsers) : [];

  // Rooms a list may show (sliding-recency.ts): joined, invited (not by an ignored user, module
  // "Ignoring Users"), knocking; and a room left since the connection's position that it was
  // shown before, once, with its last events (Synapse's "newly left"). A forgotten room (POST
  // /forget, same membership since) is gone from every sync.
  const leftSent = state ? sentOf(leftSince(a.sql, from)) : {};
  const newlyLeft = state
    ? Object.keys(leftSent).filter((id) => {
        const sent = leftSent[id];
        if (!sent || sent.m === "leave" || sent.m === "ban") return false;
        return !a.sql.exec("SELECT 1 FROM forgotten_rooms f JOIN rooms r ON r.room_id = f.room_id WHERE f.room_id = ? AND f.member_stream = r.member_stream", id).toArray().length;
      })
    : [];
  const cands: Candidates = { newlyLeft, ignored };
  if (!req.roomTypes && Object.values(req.lists).some((l) => needsRoomType(l.filters))) {
    const unknown = unknownTypes(a.sql, cands);
    if (unknown.length) return { ok: true, value: { state, stateId: loaded?.id ?? null, q, needTypes: unknown, lists: {}, rooms: [], sent: {}, details: {}, direct: [], ignored, ext, globalAccountData: [] } };
  }
  const spaces = [...new Set(Object.values(req.lists).flatMap((l) => l.filters?.spaces ?? []))];
  const joinedSpaces = new Set(
    spaces.length
      ? a.sql.exec<{ room_id: string }>("SELECT room_id FROM rooms WHERE membership = 'join' AND room_id IN (SELECT value FROM json_each(?))", JSON.stringify(spaces)).toArray().map((r) => r.room_id)
      : [],
  );
  const lists: BeginResult["lists"] = {};
  const shown = new Map<string, IndexedRoom>();
  for (const [name, l] of Object.entries(req.lists)) {
    // spaces: children of the named spaces the user is joined to.
    const inSpaces = l.filters?.spaces ? [...new Set(l.filters.spaces.filter((sp) => joinedSpaces.has(sp)).flatMap((sp) => req.spaceChildren?.[sp] ?? []))] : undefined;
    const { count, window } = listWindow(a.sql, cands, l.filters, l.ranges, inSpaces);
    lists[name] = { count, window: window.map((r) => r.roomId) };
    for (const r of window) shown.set(r.roomId, r);
  }
  const subs = new Set([...Object.keys(state?.subs ?? {}), ...req.newSubs]);
  for (const id of req.unsubscribe) subs.delete(id);
  for (const r of roomsByIds(a.sql, cands, [...subs].filter((id) => !shown.has(id)))) shown.set(r.roomId, r);
  const rooms: HubRoom[] = [...shown.values()];
  // Counts and the extensions' data for the rooms shown, in this same call (no second round
  // trip): for rooms new to the connection, and for rooms with anything logged since its
  // position (new events, receipts, typing, room account data all log the room); the others
  // have not changed and the Worker keeps what it sent.
  const ids = [...shown.keys()];
  const sent = sentOf(ids);
  const changed = new Set(
    state && ids.length
      ? a.sql
          .exec<{ room_id: string }>("SELECT DISTINCT room_id FROM room_log WHERE upos > ? AND upos <= ? AND room_id IN (SELECT value FROM json_each(?))", from, q, JSON.stringify(ids))
          .toArray()
          .map((r) => r.room_id)
      : ids,
  );
  const details = slidingDetails(a, {
    q,
    rooms: ids.filter((id) => !sent[id] || changed.has(id)).map((id) => ({ roomId: id, from: sent[id] ? from : -1 })),
    typing: !!ext.typing?.enabled,
    receipts: !!ext.receipts?.enabled,
    accountData: !!ext.account_data?.enabled,
  });
  const out: BeginResult = { state, stateId: loaded?.id ?? null, q, lists, rooms, sent, details, direct: rooms.filter((r) => r.isDm).map((r) => r.roomId), ignored, ext, globalAccountData: [] };
  if (ext.account_data?.enabled) out.globalAccountData = a.accountDataSince("", from, q);
  if (tdSince !== undefined) {
    const limit = Math.max(1, Math.min(ext.to_device?.limit ?? 100, 1000));
    const rows = a.sql
      .exec<{ upos: number; sender: string; type: string; content: string }>(
        "SELECT upos, sender, type, content FROM to_device WHERE device_id = ? AND upos > ? AND upos <= ? ORDER BY upos LIMIT ?",
        req.deviceId,
        tdSince,
        q,
        limit,
      )
      .toArray();
    // Capped: the next batch starts after the last message sent, so nothing is skipped.
    const next = rows.length === limit ? rows[rows.length - 1].upos : q;
    out.toDevice = { events: rows.map((m) => ({ sender: m.sender, type: m.type, content: JSON.parse(m.content) as JsonObject })), next_batch: String(next) };
  }
  const ts = ext["io.element.msc4308.thread_subscriptions"];
  if (ts?.enabled && a.threadSubscriptions) {
    // A new connection gets the newest changes of all time (from -1), an incremental one those
    // after its position; MAX_THREAD_SUBSCRIPTIONS bounds what the client may ask.
    out.threadSubscriptions = a.threadSubscriptions.changes(from, q, Math.min(ts.limit ?? 100, MAX_THREAD_SUBSCRIPTIONS));
  }
  if (ext.e2ee?.enabled) {
    // device_lists only in incremental responses: on a new connection the client re-queries
    // every tracked user (matrix-js-sdk marks all dirty when it has no pos).
    const dl = state ? a.sql.exec<{ user_id: string; left: number }>("SELECT user_id, left FROM device_lists WHERE upos > ? AND upos <= ?", from, q).toArray() : [];
    const keys = a.sql.exec<{ otk_counts: string; fallback_types: string }>("SELECT otk_counts, fallback_types FROM device_keys WHERE device_id = ?", req.deviceId).toArray()[0];
    out.keys = keysOf(a, req.deviceId);
    out.e2ee = {
      device_lists: { changed: dl.filter((r) => !r.left).map((r) => r.user_id), left: dl.filter((r) => r.left).map((r) => r.user_id) },
      device_one_time_keys_count: keys ? JSON.parse(keys.otk_counts) : {},
      device_unused_fallback_key_types: keys ? JSON.parse(keys.fallback_types) : [],
    };
  }
  return { ok: true, value: out };
}

/** The hub position a sliding-sync `pos` of this device covered (MSC4308 takes it as `to` of
 *  /thread_subscriptions), or null. */
export function hubPosOfPos(sql: SqlStorage, deviceId: string, pos: string): number | null {
  if (!/^\d{1,15}$/.test(pos)) return null;
  const row = sql.exec<{ state: string }>("SELECT state FROM sliding_conns WHERE id = ? AND device_id = ?", Number(pos), deviceId).toArray()[0];
  return row ? (JSON.parse(row.state) as ConnState).hubPos : null;
}

/** to_device `since`: absent → from the start; a position string → that; else null (bad). */
function parseToDeviceSince(s: string | undefined): number | undefined | null {
  if (s === undefined) return 0;
  return /^\d{1,15}$/.test(s) ? Number(s) : null;
}

/** Anything after `after` that a connection may be shown. */
/** This device's one-time key counts and unused fallback key types, as one comparable string. */
function keysOf(a: SlidingHubAccess, deviceId: string): string {
  const k = a.sql.exec<{ otk_counts: string; fallback_types: string }>("SELECT otk_counts, fallback_types FROM device_keys WHERE device_id = ?", deviceId).toArray()[0];
  return k ? `${k.otk_counts}|${k.fallback_types}` : "";
}

function changedAfter(a: SlidingHubAccess, deviceId: string, after: number, ext: ExtConfig, tdSince: number | undefined, keysSent: string | undefined): boolean {
  if (a.pos() <= after && tdSince === undefined) return false;
  // Keys claimed by others (or uploaded): the client may need to upload more one-time keys.
  if (ext.e2ee?.enabled && keysSent !== undefined && keysOf(a, deviceId) !== keysSent) return true;
  const any = (sql: string, ...args: unknown[]) => a.sql.exec(sql, ...args).toArray().length > 0;
  if (any("SELECT 1 FROM room_log WHERE upos > ? LIMIT 1", after)) return true;
  if (ext.account_data?.enabled && any("SELECT 1 FROM account_data WHERE upos > ? LIMIT 1", after)) return true;
  if (ext.e2ee?.enabled && any("SELECT 1 FROM device_lists WHERE upos > ? LIMIT 1", after)) return true;
  if (ext["io.element.msc4308.thread_subscriptions"]?.enabled && a.threadSubscriptions?.changedAfter(after)) return true;
  if (tdSince !== undefined && any("SELECT 1 FROM to_device WHERE device_id = ? AND upos > ? LIMIT 1", deviceId, tdSince)) return true;
  return false;
}

export interface DetailsRequest {
  q: number;
  rooms: { roomId: string; from: number }[];
  typing: boolean;
  receipts: boolean;
  accountData: boolean;
}

/** Per-room reads for the rooms a response shows: counts, and the extensions' data after
 *  `from` (-1: all of it, for a room new to the connection). */
export function slidingDetails(a: SlidingHubAccess, req: DetailsRequest): Record<string, RoomDetails> {
  const out: Record<string, RoomDetails> = {};
  for (const { roomId, from } of req.rooms) {
    const d: RoomDetails = { unread: a.unreadCounts(roomId) };
    if (req.typing || req.receipts) {
      for (const e of a.ephemeralSince(roomId, from, req.q)) {
        if (e.type === "m.typing" && req.typing) d.typing = e;
        if (e.type === "m.receipt" && req.receipts) d.receipts = e;
      }
    }
    if (req.accountData) {
      const ad = a.accountDataSince(roomId, from, req.q);
      if (ad.length) d.accountData = ad;
    }
    out[roomId] = d;
  }
  return out;
}

/** Store the state a response leaves the connection in; returns its pos. */
export function slidingCommit(a: SlidingHubAccess, req: CommitRequest): string {
  return a.transaction(() => {
    const row = a.sql.exec<{ n: number }>("SELECT n FROM sliding_seq WHERE k = 0").toArray()[0];
    const id = (row?.n ?? 0) + 1;
    a.sql.exec("INSERT INTO sliding_seq (k, n) VALUES (0, ?) ON CONFLICT(k) DO UPDATE SET n = excluded.n", id);
    const now = Date.now();
    a.sql.exec("INSERT INTO sliding_conns (id, device_id, conn_id, state, ts) VALUES (?, ?, ?, ?, ?)", id, req.deviceId, req.connId, JSON.stringify(req.state), now);
    for (const [roomId, s] of Object.entries(req.rooms)) {
      a.sql.exec("INSERT INTO sliding_conn_rooms (device_id, conn_id, room_id, pos, sent) VALUES (?, ?, ?, ?, ?)", req.deviceId, req.connId, roomId, id, JSON.stringify(s));
    }
    // The client holds `fromId`: older rows of this connection are no longer needed. A new
    // connection (no pos) replaces the old one of the same conn_id.
    if (req.fromId !== null) a.sql.exec("DELETE FROM sliding_conns WHERE device_id = ? AND conn_id = ? AND id < ?", req.deviceId, req.connId, req.fromId);
    else {
      a.sql.exec("DELETE FROM sliding_conns WHERE device_id = ? AND conn_id = ? AND id < ?", req.deviceId, req.connId, id);
      a.sql.exec("DELETE FROM sliding_conn_rooms WHERE device_id = ? AND conn_id = ? AND pos < ?", req.deviceId, req.connId, id);
    }
    a.sql.exec(
      `DELETE FROM sliding_conns WHERE device_id = ? AND conn_id = ? AND id NOT IN
         (SELECT id FROM sliding_conns WHERE device_id = ? AND conn_id = ? ORDER BY id DESC LIMIT ?)`,
      req.deviceId,
      req.connId,
      req.deviceId,
      req.connId,
      ROWS_PER_CONN,
    );
    // Too many connections on this device: the least recently used go (all their rows).
    const evicted = a.sql.exec(
      `DELETE FROM sliding_conns WHERE device_id = ?1 AND conn_id IN (
         SELECT conn_id FROM sliding_conns WHERE device_id = ?1 GROUP BY conn_id ORDER BY MAX(id) DESC LIMIT -1 OFFSET ?2)`,
      req.deviceId,
      CONNS_PER_DEVICE,
    );
    evicted.toArray();
    if (evicted.rowsWritten > 0) dropOrphanRooms(a.sql);
    expireSlidingConns(a.sql, now);
    return String(id);
  });
}

/** Forget connections idle for CONN_TTL_MS (on each commit, and from the hub's log compaction,
 *  so a user who stopped using sliding sync does not keep their connections for ever). */
export function expireSlidingConns(sql: SqlStorage, now: number): void {
  const c = sql.exec("DELETE FROM sliding_conns WHERE ts < ?", now - CONN_TTL_MS);
  c.toArray();
  if (c.rowsWritten > 0) dropOrphanRooms(sql);
}

/** A deleted device's connections go with it. */
export function forgetSlidingDevice(sql: SqlStorage, deviceId: string): void {
  sql.exec("DELETE FROM sliding_conns WHERE device_id = ?", deviceId);
  sql.exec("DELETE FROM sliding_conn_rooms WHERE device_id = ?", deviceId);
}

// ---------------------------------------------------------------------------------------------
// What each room was sent on a connection: rows (device, conn, room, pos) written only for the
// rooms a response changed, so a response costs O(rooms it shows), not O(rooms ever sent).
// The state at pos P is, per room, its row with the highest pos <= P among P's ancestors. Rows of
// positions that are not ancestors of P (a sibling from a retried or cancelled request) are
// dropped when P is presented; so are rows an ancestor row supersedes, for the rooms P wrote.

function keyOf(deviceId: string, connId: string): [string, string] {
  return [deviceId, connId];
}

/** Presenting pos P (with its ancestor chain): drop what no request from P or later can need. */
function settleRooms(sql: SqlStorage, deviceId: string, connId: string, p: number, chain: number[], legacy?: Record<string, SentRoom>): void {
  const [d, c] = keyOf(deviceId, connId);
  if (legacy) {
    // A row from before sliding_conn_rooms: its rooms become rows at P.
    for (const [roomId, s] of Object.entries(legacy)) {
      sql.exec("INSERT OR REPLACE INTO sliding_conn_rooms (device_id, conn_id, room_id, pos, sent) VALUES (?, ?, ?, ?, ?)", d, c, roomId, p, JSON.stringify(s));
    }
  }
  if (chain.length) {
    sql.exec(
      "DELETE FROM sliding_conn_rooms WHERE device_id = ? AND conn_id = ? AND pos >= ? AND pos < ? AND pos NOT IN (SELECT value FROM json_each(?))",
      d,
      c,
      chain[0],
      p,
      JSON.stringify(chain),
    );
  }
  sql.exec(
    `DELETE FROM sliding_conn_rooms WHERE device_id = ?1 AND conn_id = ?2 AND pos < ?3 AND room_id IN
       (SELECT room_id FROM sliding_conn_rooms WHERE device_id = ?1 AND conn_id = ?2 AND pos = ?3)`,
    d,
    c,
    p,
  );
}

/** What the given rooms were sent as of pos P (after settleRooms(P)). */
export function sentRooms(sql: SqlStorage, deviceId: string, connId: string, p: number, roomIds: string[]): Record<string, SentRoom> {
  if (!roomIds.length) return {};
  const out: Record<string, SentRoom> = {};
  const rows = sql
    .exec<{ room_id: string; sent: string }>(
      `SELECT room_id, sent FROM sliding_conn_rooms r WHERE device_id = ?1 AND conn_id = ?2 AND pos <= ?3
         AND room_id IN (SELECT value FROM json_each(?4))
         AND pos = (SELECT MAX(pos) FROM sliding_conn_rooms r2 WHERE r2.device_id = ?1 AND r2.conn_id = ?2 AND r2.room_id = r.room_id AND r2.pos <= ?3)`,
      deviceId,
      connId,
      p,
      JSON.stringify(roomIds),
    )
    .toArray();
  for (const r of rows) out[r.room_id] = JSON.parse(r.sent) as SentRoom;
  return out;
}

/** Rows of connections that are gone (expired, evicted, replaced). */
function dropOrphanRooms(sql: SqlStorage): void {
  sql.exec(
    `DELETE FROM sliding_conn_rooms WHERE NOT EXISTS
       (SELECT 1 FROM sliding_conns c WHERE c.device_id = sliding_conn_rooms.device_id AND c.conn_id = sliding_conn_rooms.conn_id)`,
  );
}
