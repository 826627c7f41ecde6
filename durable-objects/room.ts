// RoomDO: one per room, the only writer of that room's events (DESIGN.md §1: "One door per room").
//
// Every event — created here for a local user, or (later) received over federation — goes through
// `admit`: format and size → hashes and signatures → auth against its auth_events → auth against
// the state before it → soft-fail against the current state → persist (DAG edges, state group,
// stream position) → forward extremities → current state → notify.
//
// Storage (the DO's own SQLite):
//   events            one row per PDU we hold, with status accepted | rejected | soft_failed.
//                     `stream` (the room's monotonic stream position) is set only for accepted
//                     events: rejected and soft-failed events are never served as part of the room.
//   edges, auth_edges prev_events and auth_events references.
//   extremities       forward extremities (accepted events no accepted event points at yet).
//   state_groups      state snapshots as deltas: a group's state = its parent's state + its own
//   + entries         entries (event_id NULL = key removed). When the deltas since the last
//                     full snapshot would exceed half the state's size, a snapshot is written
//                     instead, so a lookup reads at most ~1.5 × the state (SNAPSHOT_FRACTION).
//                     Each event records the group of the state before it and after it, so state
//                     at any event is answerable without copying state per event.
//   current_state     the resolved state of the room now (mirrors meta.current_group).
//   current_groups    the current (resolved) state group from each stream position on where it
//                     changed: what /sync and /members?at= show at a position, over every
//                     forward extremity rather than the branch of the event at that position.
//   memberships       membership history (accepted member events in stream order) for history
//                     visibility ("joined at any point after").
//   redactions, txns  redaction index; per-device transaction IDs for idempotent sends.
//
// Concurrency: Durable Object input gates do not cover awaits on crypto (hashing, signing), so
// every write runs through `serial()`, a promise chain: events are created and admitted one at a
// time, each choosing the previous one as its prev_event. 100 concurrent sends give one chain.
//
// Pagination tokens ("t<n>"): a position between events; every accepted event with stream <= n is
// before it. /messages, /context and the sync work all use this form.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import type { JsonObject, JsonValue, PDU, RoomEvent, StateIdMap, StateKey, StateMap } from "../src/core/types";
import { splitStateKey, stateKey } from "../src/core/types";
import { getRoomVersion, type RoomVersion } from "../src/core/room-versions";
import { canonicalJson, CanonicalJsonError } from "../src/core/canonical-json";
import {
  authEventKeys,
  buildAuthState,
  checkAuthEventsShape,
  checkEventAuth,
  CREATE_KEY,
  namedPowerLevel,
  powerLevelOf,
  requiredPowerLevel,
  memberKey,
} from "../src/core/auth-rules";
import { checkContentHash, computeEventId, computeReferenceHash, hashAndSignEvent, toRoomEvent } from "../src/core/event-hashes";
import { randomString } from "../src/services/crypto-util";
import { verifyJsonSignature, type SigningKey } from "../src/core/signing";
import { redactEvent } from "../src/core/redaction";
import { resolveState } from "../src/core/state-res";
import { isEventVisible, parseHistoryVisibility, type HistoryVisibility } from "../src/core/history-visibility";
import { matchesRoomEventFilter, type RoomEventFilter } from "../src/core/room-event-filter";
import { getServerSigningKey } from "../src/services/server-key";
import { parseConfig } from "../src/config";
import { syncRoomView, type RoomSyncQuery, type RoomSyncView } from "./room-sync";
import { mirrorRoomForDirectory, type DirectoryMember } from "../src/services/user-directory";
import { searchRoom, type RoomSearchQuery, type RoomSearchResult } from "./room-search";
import { bundleAggregations, hasAnnotation, relationsCap, threadRoots, type RelationsAccess, type ThreadsQuery } from "./room-relations";
import { diffShared, LayeredState, layerState, splitShared } from "./state-layers";
import { buildNotice, HubFanOut, recipientsOf } from "../src/services/notifier";
import { DelayedStateWatch } from "./delayed-state-watch";
import type { RoomEventNotice } from "../src/rpc/user";
import { getVerifyKey, type VerifyKey } from "../src/services/federation/keys";
import { enqueuePdu } from "../src/services/federation/sender";
import { AppserviceFanOut, appserviceEvent } from "../src/services/appservice-fanout";
import { isServerAllowedByAcl } from "../src/core/server-acl";
import { signJson } from "../src/core/signing";
import { upsertMembership } from "../src/db/memberships";
import { domainOf } from "../src/core/ids";

// RPC types live in src/rpc/room.ts (the Worker imports them from there, not from this file).
import type {
  AdmitMode,
  AdmitOutcome,
  ContextResponse,
  LocalEventSpec,
  MessagesQuery,
  MessagesResponse,
  RelationsQuery,
  RelationsResponse,
  Requester,
  RoomError,
  RoomResult,
  RoomSummary,
} from "../src/rpc/room";

// ---------------------------------------------------------------------------------------------

const MAX_PDU_BYTES = 65536;
const MIN_STREAM = -1e12;
/** /relations with recurse: levels of relations followed ("Homeservers SHOULD traverse at least
 *  3 levels"). */
const RELATIONS_DEPTH = 3;
const MAX_ID_BYTES = 255;
/** State groups are deltas on a parent; a group whose chain of deltas back to the last full
 *  snapshot would hold more than SNAPSHOT_FRACTION of its state's size in entries (and at least
 *  SNAPSHOT_MIN) is written as a full snapshot instead. Proportional, not every N groups: in a
 *  room with 30,000 state entries a snapshot every 64 groups wrote 30,000 rows per 64 events,
 *  quadratic in time and storage as the room grows; this way snapshots cost ~2 rows per delta
 *  entry and reading a group ~1.5 × its size, in two queries (groupState). */
const SNAPSHOT_FRACTION = 0.5;
const SNAPSHOT_MIN = 64;
const MAX_PREV_EVENTS = 10;
/** How long federated events wait for a local join under way (expectJoin): the join's own
 *  send_join timeout. */
const JOIN_WAIT_MS = 120_000;
/** Outliers stored per transaction when a join seeds a room (admitOutlierBatch). */
const OUTLIER_BATCH = 2_000;
const EVENT_CACHE = 4096;
const GROUP_CACHE = 256;
/** Bound on the state-group cache by total entries too: in a 10,000-member room every cached
 *  group is a 10,000-entry map, and 256 of them do not fit a 128 MB isolate. */
const GROUP_CACHE_ENTRIES = 200_000;
/** Resolved prev-event states remembered (stateAcross). */
const ACROSS_MEMO = 4;
/** Events whose auth event IDs are kept in memory for state resolution (authIdsOf). */
const AUTH_INDEX = 200_000;
const utf8 = new TextEncoder();

interface StoredEvent {
  ev: RoomEvent;
  stream: number | null;
  status: "accepted" | "rejected" | "soft_failed";
  stateBefore: number | null;
  stateAfter: number | null;
  prevState: string | null;
  txnDevice: string | null;
  txnId: string | null;
}

interface EventRow {
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

class RoomFail extends Error {
  constructor(
    readonly status: RoomError["status"],
    readonly errcode: string,
    message: string,
  ) {
    super(message);
  }
}

function fail(status: RoomError["status"], errcode: string, message: string): never {
  throw new RoomFail(status, errcode, message);
}

function asRoomError(e: unknown): RoomError {
  if (e instanceof RoomFail) return { ok: false, status: e.status, errcode: e.errcode, error: e.message };
  // Event content that cannot be signed (integers beyond 2^53, floats, lone surrogates) is bad input.
  if (e instanceof CanonicalJsonError) return { ok: false, status: 400, errcode: "M_BAD_JSON", error: `Not canonical JSON: ${e.message}` };
  console.error("RoomDO error", e);
  return { ok: false, status: 500, errcode: "M_UNKNOWN", error: "Internal error in room" };
}

function parseToken(t: string | undefined): number | undefined {
  if (t === undefined || t === "") return undefined;
  // Backfilled history sits at negative stream positions (below the event we joined at).
  const m = /^t?(-?\d+)$/.exec(t) ?? /^t(-?\d+)/.exec(t);
  if (!m) fail(400, "M_INVALID_PARAM", "Invalid pagination token");
  return Number(m[1]);
}
export function streamToken(n: number): string {
  return `t${Math.max(MIN_STREAM, n)}`;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  event_id TEXT PRIMARY KEY,
  stream INTEGER UNIQUE,
  depth INTEGER NOT NULL,
  type TEXT NOT NULL,
  state_key TEXT,
  sender TEXT NOT NULL,
  origin_server_ts INTEGER NOT NULL,
  pdu TEXT NOT NULL,
  status TEXT NOT NULL,
  rejection_reason TEXT,
  state_before INTEGER,
  state_after INTEGER,
  prev_state TEXT,
  txn_device TEXT,
  txn_id TEXT,
  received_ts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(origin_server_ts) WHERE stream IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_relates_to ON events(json_extract(pdu, '$.content."m.relates_to".event_id')) WHERE stream IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_relation ON events(json_extract(pdu, '$.content."m.relates_to".event_id'), json_extract(pdu, '$.content."m.relates_to".rel_type')) WHERE stream IS NOT NULL;
CREATE TABLE IF NOT EXISTS edges (event_id TEXT NOT NULL, prev_event_id TEXT NOT NULL, PRIMARY KEY (event_id, prev_event_id));
CREATE INDEX IF NOT EXISTS edges_prev ON edges(prev_event_id);
CREATE TABLE IF NOT EXISTS auth_edges (event_id TEXT NOT NULL, auth_event_id TEXT NOT NULL, PRIMARY KEY (event_id, auth_event_id));
CREATE TABLE IF NOT EXISTS extremities (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS state_groups (id INTEGER PRIMARY KEY, parent INTEGER, chain INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state_group_entries (
  group_id INTEGER NOT NULL, type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT,
  PRIMARY KEY (group_id, type, state_key)
);
CREATE TABLE IF NOT EXISTS current_state (type TEXT NOT NULL, state_key TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (type, state_key));
CREATE TABLE IF NOT EXISTS memberships (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, membership TEXT NOT NULL, stream INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS memberships_user ON memberships(user_id, stream);
CREATE TABLE IF NOT EXISTS redactions (redacts TEXT NOT NULL, event_id TEXT NOT NULL, sender TEXT NOT NULL, powerful INTEGER NOT NULL, PRIMARY KEY (redacts, event_id));
CREATE TABLE IF NOT EXISTS txns (user_id TEXT NOT NULL, device_id TEXT NOT NULL, txn_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (user_id, device_id, txn_id));
CREATE TABLE IF NOT EXISTS current_groups (stream INTEGER PRIMARY KEY, grp INTEGER);
CREATE TABLE IF NOT EXISTS forgotten (user_id TEXT PRIMARY KEY, member_event_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS erased_senders (user_id TEXT PRIMARY KEY);
`;

export class RoomDO extends DurableObject<Env> {
  private sql: SqlStorage;
  private queue: Promise<unknown> = Promise.resolve();
  private events = new Map<string, StoredEvent>();
  private groups = new Map<number, StateIdMap>();
  private roomId?: string;
  private rv?: RoomVersion;
  private serverName?: string;
  private stream = 0;
  private currentGroup: number | null = null;
  private keyPromise?: Promise<SigningKey>;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
    const meta = new Map(this.sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray().map((r) => [r.key, r.value]));
    this.roomId = meta.get("room_id");
    this.serverName = meta.get("server_name");
    if (meta.has("room_version")) this.rv = getRoomVersion(meta.get("room_version")!);
    this.stream = Number(meta.get("stream") ?? "0");
    this.currentGroup = meta.has("current_group") ? Number(meta.get("current_group")) : null;
    this.hubs = new HubFanOut(env);
    this.delayedState = new DelayedStateWatch(this.sql, env);
    // Rooms from before the watermark existed count as delivered.
    this.hubDone = meta.has("hub_done") ? Number(meta.get("hub_done")) : this.stream;
    // Notices not known to be delivered when this object last stopped: redeliver (alarm()).
    if (this.hubDone < this.stream) void ctx.storage.setAlarm(Date.now());
  }

  // ===========================================================================================
  // Write path.

  /** Run `fn` after every earlier write has finished (see "Concurrency" above). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private setMeta(key: string, value: string | number): void {
    this.sql.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }

  private requireRoom(): RoomVersion {
    if (!this.rv || !this.roomId) fail(404, "M_NOT_FOUND", "Unknown room");
    return this.rv;
  }

  /** Create the room: admit the (already signed) create event, then build the events the
   *  createRoom request implies, in order. The Worker signed the create event because the room
   *  ID (this DO's name) is derived from it in room version 12. */
  async createRoom(args: {
    serverName: string;
    roomId: string;
    roomVersion: string;
    createPdu: PDU;
    events: LocalEventSpec[];
  }): Promise<RoomResult<{ roomId: string; eventIds: string[] }>> {
    const r = await this.serial(async () => {
      try {
        if (this.roomId) fail(409, "M_ROOM_IN_USE", "Room already exists");
        const rv = getRoomVersion(args.roomVersion);
        if (!rv) fail(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version");
        this.roomId = args.roomId;
        this.rv = rv;
        this.serverName = args.serverName;
        const out = await this.admitInner(args.createPdu, args.serverName, { local: true });
        if (out.status !== "accepted") {
          this.roomId = this.rv = undefined;
          fail(400, "M_INVALID_PARAM", `Create event refused: ${out.reason ?? out.status}`);
        }
        this.setMeta("room_id", args.roomId);
        this.setMeta("room_version", rv.id);
        this.setMeta("server_name", args.serverName);
        const creator = args.createPdu.sender;
        await this.env.DB.prepare("INSERT OR IGNORE INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?)")
          .bind(args.roomId, rv.id, creator, Date.now())
          .run();
        const eventIds = [out.eventId!];
        for (const spec of args.events) eventIds.push(await this.createLocalEventInner(spec));
        return { ok: true as const, value: { roomId: args.roomId, eventIds } };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (r.ok) await this.fannedOut(r.value.eventIds);
    return r;
  }

  /** Build, sign and admit an event for a local user: prev_events = the forward extremities,
   *  auth_events by the auth events selection over the state before it, depth = max(prev) + 1. */
  async createLocalEvent(spec: LocalEventSpec): Promise<RoomResult<{ eventId: string; stream: number }>> {
    const r = await this.serial(async () => {
      try {
        const eventId = await this.createLocalEventInner(spec);
        return { ok: true as const, value: { eventId, stream: this.loadEvent(eventId)?.stream ?? this.stream } };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (r.ok) await this.fannedOut([r.value.eventId]);
    return r;
  }

  /** A local user's join through another server is under way (joinRemoteRoom, from before
   *  send_join until the room is seeded): events the room's servers send meanwhile wait for it.
   *  The resident server merges its forward extremities right after accepting our join and
   *  sends us the merge, often before its send_join answer has even been read here; refused as
   *  for a room we are not in, that event was lost, and with it the members on the branches it
   *  merged (10,000-member benchmark: 2–5 of them). In memory: bounded by JOIN_WAIT_MS. */
  private joinUnderWay?: { settled: Promise<void>; settle: () => void };

  async expectJoin(): Promise<void> {
    if (this.joinUnderWay) return;
    let settle!: () => void;
    const settled = new Promise<void>((r) => (settle = r));
    const timer = setTimeout(() => this.joinSettled(), JOIN_WAIT_MS);
    this.joinUnderWay = { settled, settle: () => (clearTimeout(timer), settle()) };
  }

  async joinSettled(): Promise<void> {
    this.joinUnderWay?.settle();
    this.joinUnderWay = undefined;
  }

  /** The one door for events signed elsewhere (federation). `origin` is the sending server. */
  async admit(pdu: PDU, origin: string): Promise<AdmitOutcome> {
    if (this.joinUnderWay) await this.joinUnderWay.settled;
    const out = await this.serial(() => this.admitInner(pdu, origin, { local: false }));
    if (out.eventId) await this.fannedOut([out.eventId]);
    if (out.status === "accepted") this.mergeExtremitiesLater();
    return out;
  }

  private merging = false;

  private extremityCount(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM extremities").one().n;
  }
  /** The extremity count the running merge works down to (the lowest asked for). */
  private mergeTarget = MAX_PREV_EVENTS;

  /** Keep the forward extremities at most `most` (MAX_PREV_EVENTS by default). Concurrent
   *  remote events (e.g. many joins at once) can leave more branches than one event may cite;
   *  then local events — and the join templates other servers build on — see only some of them,
   *  and a server joining later misses the state of the others until something merges them. As
   *  Synapse does, a local member sends `org.matrix.dummy_event`s, each citing MAX_PREV_EVENTS
   *  extremities, until few remain. */
  private mergeExtremitiesLater(most = MAX_PREV_EVENTS): void {
    this.mergeTarget = Math.min(this.mergeTarget, most);
    if (this.merging) return;
    if (this.extremityCount() <= this.mergeTarget) {
      this.mergeTarget = MAX_PREV_EVENTS;
      return;
    }
    const sender = this.mergeSender();
    if (!sender) return;
    this.merging = true;
    const run = async () => {
      try {
        // Each dummy event replaces up to MAX_PREV_EVENTS extremities by one; bounded rounds.
        for (let round = 0; round < 20 && this.extremityCount() > this.mergeTarget; round++) {
          const r = await this.createLocalEvent({ type: "org.matrix.dummy_event", content: {}, sender });
          if (!r.ok) break;
        }
      } catch (e) {
        console.error("merging forward extremities failed", e);
      } finally {
        this.merging = false;
        this.mergeTarget = MAX_PREV_EVENTS;
      }
    };
    this.ctx.waitUntil(run());
  }

  /** The joined local member with the highest power level (so events_default cannot stop it). */
  private mergeSender(): string | undefined {
    const local = this.fanOutFacts().joinedLocal;
    if (local.length <= 1) return local[0];
    const st = this.currentAuthMap([POWER_KEY, CREATE_KEY]);
    let best = local[0];
    let bestLevel = powerLevelOf(best, st, this.rv!);
    for (const u of local.slice(1)) {
      const level = powerLevelOf(u, st, this.rv!);
      if (level > bestLevel) [best, bestLevel] = [u, level];
    }
    return best;
  }

  /** Fan-outs still in flight, by event ID (see notify). */
  private fanOuts = new Map<string, Promise<void>>();

  /** Wait until the sync hubs have heard of these events, so a send that returns is visible in
   *  the recipients' next /sync. Outside `serial`: the next write does not wait for fan-out. */
  private async fannedOut(eventIds: string[]): Promise<void> {
    await Promise.all(eventIds.map((id) => this.fanOuts.get(id)));
  }

  private async createLocalEventInner(spec: LocalEventSpec): Promise<string> {
    this.requireRoom();
    if (spec.txn) {
      const row = this.sql
        .exec<{ event_id: string }>("SELECT event_id FROM txns WHERE user_id = ? AND device_id = ? AND txn_id = ?", spec.sender, spec.txn.deviceId, txnKey(spec.txn))
        .toArray()[0];
      if (row) return row.event_id;
    }
    const { pdu: signed } = await this.buildLocalPdu(spec);
    const out = await this.admitInner(signed, this.serverName!, { local: true, txn: spec.txn });
    if (out.status === "accepted" || out.status === "duplicate") return out.eventId!;
    if (out.status === "invalid" && out.reason === "M_TOO_LARGE") fail(413, "M_TOO_LARGE", "Event is too large");
    if (out.status === "invalid") fail(400, "M_BAD_JSON", out.reason ?? "Invalid event");
    fail(403, "M_FORBIDDEN", out.reason ?? "Not allowed by the room's auth rules");
  }

  /** Build and sign a local user's event: prev_events = the forward extremities, auth_events
   *  by the auth events selection over the state before it, depth = max(prev) + 1. */
  private async buildLocalPdu(spec: LocalEventSpec): Promise<{ pdu: PDU; eventId: string }> {
    const rv = this.requireRoom();
    if (this.isPartial()) fail(403, "M_FORBIDDEN", "This server is not in the room");
    if (spec.type === "m.room.redaction") this.checkLocalRedaction(spec);

    const { prevIds, prevs, authIds } = this.newEventFrame({ type: spec.type, sender: spec.sender, state_key: spec.state_key, content: spec.content });
    if (prevIds.length === 0) fail(500, "M_UNKNOWN", "Room has no forward extremities");
    const depth = Math.min(Number.MAX_SAFE_INTEGER, Math.max(...prevs.map((p) => p.ev.depth)) + 1);
    const content = { ...spec.content };
    const pdu: Record<string, unknown> = {
      room_id: this.roomId,
      sender: spec.sender,
      type: spec.type,
      content,
      origin_server_ts: spec.ts ?? Date.now(),
      depth,
      prev_events: await this.eventRefs(prevIds),
      auth_events: await this.eventRefs(authIds),
    };
    // Room versions 1 and 2: the event names itself, `$opaque_id:domain` (rooms/v1.md "Event IDs").
    if (rv.eventIdFormat === 1) pdu.event_id = `$${randomString(24)}:${this.serverName!}`;
    if (spec.state_key !== undefined) pdu.state_key = spec.state_key;
    if (spec.redacts !== undefined) {
      // v11 moved `redacts` into content; older versions keep it top level.
      if (rv.v11Redaction) content.redacts = spec.redacts;
      else pdu.redacts = spec.redacts;
    }
    const key = await this.signingKey();
    return hashAndSignEvent(pdu as unknown as PDU, rv, this.serverName!, key);
  }

  /** Where a new event goes (local events and make_* templates): prev_events = the deepest
   *  MAX_PREV_EVENTS forward extremities, auth_events by the auth events selection over the
   *  state across them. */
  private newEventFrame(shape: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): { prevIds: string[]; prevs: StoredEvent[]; authIds: string[] } {
    const prevIds = this.sql
      .exec<{ event_id: string }>(
        // CROSS JOIN: extremities first (a handful of rows); with a plain JOIN SQLite scanned
        // every event to order by depth (15 ms at 13,500 events, per local event and make_join).
        "SELECT x.event_id FROM extremities x CROSS JOIN events e ON e.event_id = x.event_id ORDER BY e.depth DESC, e.stream DESC LIMIT ?",
        MAX_PREV_EVENTS,
      )
      .toArray()
      .map((r) => r.event_id);
    const prevs = prevIds.map((id) => this.loadEvent(id)!);
    const before = prevs.length ? this.stateAcross(prevs).map : new Map<StateKey, string>();
    const authIds: string[] = [];
    for (const k of authEventKeys(this.rv!, shape)) {
      const id = before.get(k);
      if (id) authIds.push(id);
    }
    return { prevIds, prevs, authIds };
  }

  /** "Handling redactions": a local user may redact their own events, or others' with the
   *  redact power level. (The auth rules only check the sender's server.) */
  private checkLocalRedaction(spec: LocalEventSpec): void {
    const rv = this.rv!;
    if (!spec.redacts) fail(400, "M_BAD_JSON", "Redaction needs a target event");
    const target = this.loadEvent(spec.redacts);
    // Only an event of this room can be redacted from here (an event ID of another room is
    // unknown to this RoomDO, so it is refused and never touched).
    if (!target || target.status !== "accepted") fail(404, "M_NOT_FOUND", "Event not found in this room");
    if (target.ev.sender === spec.sender) return;
    const state = this.currentAuthMap([POWER_KEY, CREATE_KEY]);
    if (powerLevelOf(spec.sender, state, rv) < namedPowerLevel("redact", state, rv)) {
      fail(403, "M_FORBIDDEN", "You may not redact other users' events");
    }
  }

  /** `prev_events` / `auth_events` as the room version writes them: event IDs (v3+), or
   *  `[event_id, {sha256: reference hash}]` pairs (v1, v2: rooms/v1.md "Event format"). */
  private async eventRefs(ids: string[]): Promise<JsonValue[]> {
    const rv = this.rv!;
    if (rv.eventIdFormat !== 1) return ids;
    return Promise.all(ids.map(async (id): Promise<JsonValue> => [id, { sha256: await computeReferenceHash(this.loadEvent(id)!.ev.pdu, rv) }]));
  }

  private signingKey(): Promise<SigningKey> {
    if (!this.keyPromise) {
      const config = { ...parseConfig(this.env), serverName: this.serverName! };
      this.keyPromise = getServerSigningKey(this.env, config).catch((e) => {
        this.keyPromise = undefined;
        throw e;
      });
    }
    return this.keyPromise;
  }

  /** Public key for a server's key ID. Our own keys come from D1; remote keys from
   *  src/services/federation/keys.ts (getVerifyKey: cache, key query, notaries). */
  protected async verifyKey(server: string, keyId: string, ts?: number): Promise<string | undefined> {
    if (server === this.serverName) {
      const k = await this.signingKey();
      if (k.keyId === keyId) return k.publicKey;
      const row = await this.env.DB.prepare("SELECT public_key FROM server_signing_keys WHERE key_id = ?").bind(keyId).first<{ public_key: string }>();
      return row?.public_key;
    }
    // Remote keys: the federation key ring (cache, then the server itself, then notaries). A
    // short-lived memo keeps a 10,000-event send_join answer from asking D1 per event; the
    // validity rule is the key ring's (valid_until_ts covers ts; an old key until it expired).
    const memoKey = `${server}\u0000${keyId}`;
    const hit = this.keyMemo.get(memoKey);
    if (hit && hit.until > Date.now() && (ts === undefined || (hit.k.validUntilTs >= ts && (hit.k.expiredTs === undefined || hit.k.expiredTs > ts)))) return hit.k.publicKey;
    const config = { ...parseConfig(this.env), serverName: this.serverName! };
    const k = await getVerifyKey({ env: this.env, config }, server, keyId, { purpose: "event", ts });
    if (k) {
      if (this.keyMemo.size > 1024) this.keyMemo.clear();
      this.keyMemo.set(memoKey, { k, until: Date.now() + 60_000 });
    }
    return k?.publicKey;
  }
  private keyMemo = new Map<string, { k: VerifyKey; until: number }>();

  /** Called after each accepted event is committed. The sync work wires UserDOs here (wake the
   *  affected local users), the federation work its Sender DOs. Not awaited inside `serial`;
   *  the write RPCs wait for it before returning (fannedOut): for the sync hubs that is the hub
   *  of the event's own user (read-your-writes), the others are told asynchronously with
   *  retries, and a delivery watermark redelivers after a restart (notifyHubs). */
  protected async notify(event: RoomEvent, stream: number): Promise<void> {
    const room = this.fanOutFacts();
    // Application services: queued in commit order (so before any await here); not awaited.
    void this.appservices.push(appserviceEvent(event, this.roomId!), room.joined, stream);
    const st = this.currentAuthMap([POWER_KEY, CREATE_KEY]);
    const notice = buildNotice({
      roomId: this.roomId!,
      stream,
      event: { event_id: event.event_id, room_id: this.roomId!, type: event.type, sender: event.sender, content: event.content, origin_server_ts: event.origin_server_ts, ...(event.state_key !== undefined ? { state_key: event.state_key } : {}) },
      memberCount: room.memberCount,
      senderPowerLevel: powerLevelOf(event.sender, st, this.rv!),
      powerLevels: st.get(POWER_KEY)?.content,
      encrypted: room.encrypted,
    });
    this.delayedState.onState(this.roomId!, event); // MSC4140: others' state cancels delayed state
    await this.notifyHubs(notice, recipientsOf(event, room.joinedLocal, (u) => u.endsWith(`:${this.serverName}`)));
    // Federation: events that originate here (and joins/leaves/knocks we accepted as the
    // resident server) go to every server with a joined member, and to the target of a
    // membership change (invitee, kicked, banned) — Server-Server API "PDUs".
    const rebroadcast = this.rebroadcast.delete(event.event_id);
    if (domainOf(event.sender) !== this.serverName && !rebroadcast) return;
    const destinations = new Set(room.joinedServers);
    if (event.type === "m.room.member" && event.state_key) destinations.add(domainOf(event.state_key));
    if (rebroadcast) destinations.delete(domainOf(event.sender));
    destinations.delete(this.serverName!);
    if (destinations.size === 0) return;
    const config = { ...parseConfig(this.env), serverName: this.serverName! };
    await enqueuePdu(this.env, config, destinations, event.pdu as unknown as Record<string, unknown>).catch((e) => console.error("enqueuePdu failed", e));
  }

  private _appservices?: AppserviceFanOut;
  private get appservices(): AppserviceFanOut {
    return (this._appservices ??= new AppserviceFanOut(this.env, this.serverName!, this.ctx.storage));
  }

  /** Hand over again the events the appservice queues may have missed because this object
   *  stopped before handing them over (AppserviceFanOut's watermark; called by alarm()). */
  private async redeliverToAppservices(): Promise<void> {
    if (!this.rv || !this.roomId) return;
    const missed = await this.appservices.behind(this.stream);
    if (missed === null) return;
    const rows = this.sql
      .exec<EventRow>("SELECT * FROM events WHERE stream > ? AND stream <= ? AND status = 'accepted' AND state_after IS NOT NULL ORDER BY stream", missed.after, missed.upTo)
      .toArray();
    for (const row of rows) {
      const se = this.events.get(row.event_id) ?? this.fromRow(row);
      void this.appservices.push(appserviceEvent(se.ev, this.roomId), this.noticeAt(se).recipients, se.stream!);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sync-hub delivery (src/services/notifier.ts HubFanOut). Every accepted timeline event must
  // reach the hubs of its local recipients, even if this object stops mid-way: `hub_done` (meta)
  // is a watermark — every event with stream <= it has reached all its hubs. Events above it
  // are redelivered by alarm() after a restart (hubs skip notices they already hold).

  private hubs: HubFanOut;
  private delayedState: DelayedStateWatch;
  /** MSC4140: watch (type, stateKey) for a user's delayed state event (delayed-state-watch.ts). */
  async watchDelayedState(userId: string, type: string, stateKey: string): Promise<void> {
    this.delayedState.watch(userId, type, stateKey);
  }
  private hubDone: number;
  /** Streams handed to the fan-out and not yet delivered everywhere; highest handed. */
  private hubPending = new Set<number>();
  private hubMax = 0;
  /** Whether hubPending was filled in increasing stream order (then, a Set iterating in
   *  insertion order, its first element is the oldest undelivered stream). */
  private hubPendingOrdered = true;
  private alarmArmed = false;

  private async notifyHubs(notice: RoomEventNotice, recipients: string[]): Promise<void> {
    if (this.hubPending.size === 0) this.hubPendingOrdered = true;
    else if (notice.stream < this.hubMax) this.hubPendingOrdered = false;
    this.hubPending.add(notice.stream);
    this.hubMax = Math.max(this.hubMax, notice.stream);
    if (!this.alarmArmed) {
      // Backstop if this object stops before delivery completes.
      this.alarmArmed = true;
      void this.ctx.storage.setAlarm(Date.now() + HUB_REDELIVER_MS);
    }
    await this.hubs.notify(notice, recipients, (s) => this.hubSettled(s));
  }

  private hubSettled(stream: number): void {
    this.hubPending.delete(stream);
    let done = this.hubMax;
    // O(1) in the usual case: a slow hub leaves thousands pending, and a scan per delivery took
    // 6% of the isolate's CPU under a burst of federated events (bench/sync-initial.mjs set-up).
    if (this.hubPendingOrdered) {
      const oldest = this.hubPending.values().next();
      if (!oldest.done) done = oldest.value - 1;
    } else for (const p of this.hubPending) done = Math.min(done, p - 1);
    if (done > this.hubDone) {
      this.hubDone = done;
      this.setMeta("hub_done", done);
    }
  }

  /** Redeliver what the watermark says may be missing (after a restart), or check again later
   *  while deliveries are still being retried in memory. */
  async alarm(): Promise<void> {
    this.alarmArmed = false;
    await this.redeliverToAppservices().catch((e) => console.error("appservice redelivery failed", e));
    if (this.hubDone >= this.stream || !this.rv) return;
    if (this.hubPending.size > 0) {
      this.alarmArmed = true;
      await this.ctx.storage.setAlarm(Date.now() + HUB_REDELIVER_MS);
      return;
    }
    const rows = this.sql
      .exec<EventRow>("SELECT * FROM events WHERE stream > ? AND stream <= ? AND status = 'accepted' AND state_after IS NOT NULL ORDER BY stream LIMIT 1000", this.hubDone, this.stream)
      .toArray();
    if (rows.length === 0) {
      this.hubDone = this.stream;
      this.setMeta("hub_done", this.hubDone);
      return;
    }
    const deliveries: Promise<void>[] = [];
    for (const row of rows) {
      const se = this.events.get(row.event_id) ?? this.fromRow(row);
      const { notice, recipients } = this.noticeAt(se);
      deliveries.push(this.notifyHubs(notice, recipients));
    }
    await Promise.all(deliveries);
  }

  /** The notice for an event from the state after it (for redelivery; notify() uses the
   *  current state, which is the same for the newest event). The members then are the current
   *  ones (fanOutFacts) corrected by the member entries that differ between the two states, so
   *  only those member events are read, not every member's. */
  private noticeAt(se: StoredEvent): { notice: RoomEventNotice; recipients: string[] } {
    const st = this.groupState(se.stateAfter);
    const now = this.fanOutFacts();
    const isLocal = (u: string) => u.endsWith(`:${this.serverName}`);
    let memberCount = now.memberCount;
    const localThen = new Map<string, boolean>();
    for (const [k, id] of diffState(this.groupState(now.group), st)) {
      if (!k.startsWith("m.room.member\u0000")) continue;
      const u = splitStateKey(k)[1];
      const joinedThen = id !== null && this.loadEvent(id)?.ev.content.membership === "join";
      if (joinedThen === now.joined.has(u)) continue;
      memberCount += joinedThen ? 1 : -1;
      if (isLocal(u)) localThen.set(u, joinedThen);
    }
    const joinedLocal = now.joinedLocal.filter((u) => localThen.get(u) !== false);
    for (const [u, joinedThen] of localThen) if (joinedThen) joinedLocal.push(u);
    const auth = this.stateMapOf(st, [POWER_KEY, CREATE_KEY]);
    const event = se.ev;
    const notice = buildNotice({
      roomId: this.roomId!,
      stream: se.stream!,
      event: { event_id: event.event_id, room_id: this.roomId!, type: event.type, sender: event.sender, content: event.content, origin_server_ts: event.origin_server_ts, ...(event.state_key !== undefined ? { state_key: event.state_key } : {}) },
      memberCount,
      senderPowerLevel: powerLevelOf(event.sender, auth, this.rv!),
      powerLevels: auth.get(POWER_KEY)?.content,
      encrypted: st.has(ENCRYPTION_KEY),
    });
    return { notice, recipients: recipientsOf(event, joinedLocal, (u) => u.endsWith(`:${this.serverName}`)) };
  }

  /** Event IDs accepted through send_join/send_leave/send_knock, to be forwarded by notify. */
  private rebroadcast = new Set<string>();

  private fanOutCache?: FanOutFacts;

  /** Joined local users, joined count and encryption of the current state (cached per group,
   *  and carried forward across state changes by advanceFanOutFacts). */
  private fanOutFacts(): FanOutFacts {
    if (this.fanOutCache && this.fanOutCache.group === this.currentGroup) return this.fanOutCache;
    const joinedLocal: string[] = [];
    const joined = new Set<string>();
    const serverCounts = new Map<string, number>();
    const st = this.groupState(this.currentGroup);
    for (const [k, id] of st) {
      if (!k.startsWith("m.room.member\u0000") || this.loadEvent(id)?.ev.content.membership !== "join") continue;
      const u = splitStateKey(k)[1];
      joined.add(u);
      serverCounts.set(domainOf(u), (serverCounts.get(domainOf(u)) ?? 0) + 1);
      if (u.endsWith(`:${this.serverName}`)) joinedLocal.push(u);
    }
    this.fanOutCache = {
      group: this.currentGroup,
      joinedLocal,
      joinedServers: new Set(serverCounts.keys()),
      memberCount: joined.size,
      encrypted: st.has(stateKey("m.room.encryption", "")),
      joined,
      serverCounts,
    };
    return this.fanOutCache;
  }

  /** The current state moved from `old` to `next` by `changes`: update the cached fan-out facts
   *  from the changed entries only. Rescanning every member event on each join made joins
   *  O(members) event loads each — quadratic for a room filling up, and past the event cache
   *  (4096) every one a storage read. Holders of the previous facts object keep a consistent
   *  snapshot: its arrays and sets are replaced, not mutated. */
  private advanceFanOutFacts(old: number | null, next: number | null, changes: Map<StateKey, string | null>): void {
    const f = this.fanOutCache;
    if (!f || f.group !== old) return;
    let { joinedLocal, joinedServers, encrypted } = f;
    for (const [k, id] of changes) {
      if (k === ENCRYPTION_KEY) {
        encrypted = id !== null;
        continue;
      }
      if (!k.startsWith("m.room.member\u0000")) continue;
      const u = splitStateKey(k)[1];
      const was = f.joined.has(u);
      const now = id !== null && this.loadEvent(id)?.ev.content.membership === "join";
      if (was === now) continue;
      const server = domainOf(u);
      const count = (f.serverCounts.get(server) ?? 0) + (now ? 1 : -1);
      if (now) f.joined.add(u);
      else f.joined.delete(u);
      if (count > 0) f.serverCounts.set(server, count);
      else f.serverCounts.delete(server);
      if ((count > 0) !== joinedServers.has(server)) joinedServers = new Set(f.serverCounts.keys());
      if (u.endsWith(`:${this.serverName}`)) joinedLocal = now ? [...joinedLocal, u] : joinedLocal.filter((x) => x !== u);
    }
    this.fanOutCache = { ...f, group: next, joinedLocal, joinedServers, memberCount: f.joined.size, encrypted };
  }

  /** The admit pipeline. Steps before persisting do not touch storage, so a refused local event
   *  leaves no trace. */
  private async admitInner(pdu: PDU, origin: string, opts: AdmitMode): Promise<AdmitOutcome> {
    const checked = await this.checkPdu(pdu, origin, opts);
    if (!("ev" in checked)) return checked;
    const { ev } = checked;
    // 3–5 and persisting run synchronously: nothing can interleave.
    let out: AdmitOutcome;
    try {
      this.pendingMemberships = [];
      out = this.ctx.storage.transactionSync(() => this.decideAndPersist(ev, opts));
    } catch (e) {
      // The transaction rolled back: forget in-memory state derived from it.
      this.reloadAfterFailure();
      throw e;
    }
    if (out.status === "accepted" && !opts.outlier && opts.backfillStream === undefined) {
      if (opts.rebroadcast) this.rebroadcast.add(ev.event_id);
      await this.afterCommit();
      this.wakePeekers();
      const kick = this.guestAccessChanged ? this.kickGuests() : undefined;
      const notified = this.notify(ev, out.stream!).catch((e) => console.error("notify failed", e));
      // The write that revoked guest access answers once its guests have left (as Synapse does).
      const fan = kick ? Promise.all([notified, kick]).then(() => undefined) : notified;
      this.fanOuts.set(ev.event_id, fan);
      void fan.finally(() => this.fanOuts.delete(ev.event_id));
    }
    return out;
  }

  /** Steps 1–2 of admit and parsing: format, size, event ID, duplicates, content hash,
   *  signatures, room and server ACL. No writes: a batch can check every PDU before storing. */
  private async checkPdu(pdu: PDU, origin: string, opts: AdmitMode, knownEventId?: string): Promise<{ ev: RoomEvent } | AdmitOutcome> {
    const rv = this.requireRoom();
    // 1. Format and size (spec: "Size limits": 65536 bytes of canonical JSON, IDs <= 255 bytes).
    let encoded: string;
    try {
      encoded = canonicalJson(pdu, { strict: rv.strictCanonicalJson });
    } catch (e) {
      return { status: "invalid", reason: `not canonical JSON: ${(e as Error).message}` };
    }
    if (utf8.encode(encoded).length > MAX_PDU_BYTES) return { status: "invalid", reason: "M_TOO_LARGE" };
    for (const f of ["sender", "room_id", "type", "state_key", "event_id"] as const) {
      const v = pdu[f];
      if (v !== undefined && (typeof v !== "string" || utf8.encode(v).length > MAX_ID_BYTES)) {
        return { status: "invalid", reason: `${f} is malformed or longer than 255 bytes` };
      }
    }
    if (typeof pdu.content !== "object" || pdu.content === null || Array.isArray(pdu.content)) {
      return { status: "invalid", reason: "content must be an object" };
    }
    let eventId: string;
    try {
      // (A batch passes the ID it computed from this PDU when parsing it.)
      eventId = knownEventId ?? (await computeEventId(pdu, rv));
    } catch (e) {
      return { status: "invalid", reason: (e as Error).message };
    }
    const known = this.loadEvent(eventId);
    // An outlier (state or auth chain from another server) may later arrive as part of the
    // timeline: then it is admitted again, this time with a place in the DAG.
    if (known && (opts.outlier || !isOutlier(known))) return { status: "duplicate", eventId };

    // 2. Hashes and signatures (server-server API "Checks performed on receipt of a PDU").
    if (!(await checkContentHash(pdu))) {
      if (opts.local) return { status: "invalid", eventId, reason: "content hash mismatch" };
      pdu = redactEvent(pdu, rv); // "the event is redacted and processed as usual"
    }
    const sigError = await this.checkSignatures(pdu, rv);
    if (sigError) return { status: "invalid", eventId, reason: sigError };

    let ev: RoomEvent;
    try {
      ev = await toRoomEvent(pdu, rv, eventId);
    } catch (e) {
      return { status: "invalid", eventId, reason: (e as Error).message };
    }
    if (ev.room_id !== this.roomId) return { status: "invalid", eventId, reason: "event is for another room" };
    // Server ACLs (Server-Server API "Server Access Control Lists"): PDUs from a denied origin
    // are dropped, whatever path they came by.
    if (!opts.local && origin !== this.serverName) {
      const aclId = this.currentGroup === null ? undefined : this.groupState(this.currentGroup).get(ACL_KEY);
      const acl = aclId ? this.loadEvent(aclId)?.ev.content : undefined;
      if (!isServerAllowedByAcl(acl ?? null, origin)) return { status: "invalid", eventId, reason: "origin is denied by the room's server ACL" };
    }
    return { ev };
  }

  private reloadAfterFailure(): void {
    this.events.clear();
    this.createId = undefined;
    this.fanOutCache = undefined;
    this.groups.clear();
    this.groupEntries = 0;
    this.baseRefs.clear();
    this.acrossMemo.clear();
    this.authIndex.clear();
    this.authLists.clear();
    this.pendingMemberships = [];
    const meta = new Map(this.sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray().map((r) => [r.key, r.value]));
    this.stream = Number(meta.get("stream") ?? "0");
    this.currentGroup = meta.has("current_group") ? Number(meta.get("current_group")) : null;
  }

  private async checkSignatures(pdu: PDU, rv: RoomVersion): Promise<string | undefined> {
    const servers = new Set<string>([domainOf(pdu.sender)]);
    if (rv.eventIdFormat === 1 && typeof pdu.event_id === "string") servers.add(domainOf(pdu.event_id));
    const via = (pdu.content as { join_authorised_via_users_server?: unknown }).join_authorised_via_users_server;
    if (rv.restrictedJoins && pdu.type === "m.room.member" && typeof via === "string" && pdu.content.membership === "join") {
      servers.add(domainOf(via));
    }
    const redacted = redactEvent(pdu, rv);
    for (const server of servers) {
      const sigs = pdu.signatures?.[server];
      let ok = false;
      if (sigs && typeof sigs === "object") {
        for (const keyId of Object.keys(sigs)) {
          const pub = await this.verifyKey(server, keyId, rv.enforceKeyValidity ? pdu.origin_server_ts : undefined);
          if (pub && (await verifyJsonSignature(redacted, server, keyId, pub, { strict: rv.strictCanonicalJson }))) {
            ok = true;
            break;
          }
        }
      }
      if (!ok) return `no valid signature from ${server}`;
    }
    return undefined;
  }

  private decideAndPersist(ev: RoomEvent, opts: AdmitMode): AdmitOutcome {
    const rv = this.rv!;
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
        const p = this.loadEvent(id);
        if (p && !isOutlier(p)) prevs.push(p);
        else missing.push(id);
      }
    }
    const knownCreate = isCreate ? this.loadCreate() : undefined;
    if (isCreate && (ev.prev_events.length > 0 || (!opts.outlier && !backfill && this.stream > 0) || (knownCreate && knownCreate.ev.event_id !== ev.event_id))) {
      return { status: "invalid", eventId: ev.event_id, reason: "a room has exactly one create event, first" };
    }
    if (!isCreate && !opts.outlier && ev.prev_events.length === 0) return { status: "invalid", eventId: ev.event_id, reason: "no prev_events" };
    if (missing.length && !opts.extraStates && !backfill) return { status: "missing", eventId: ev.event_id, reason: `unknown prev_events`, missing };
    const before: StateAt = isCreate || opts.outlier ? { map: new Map() as StateIdMap, group: null, resolved: false } : this.stateBefore(prevs, opts.extraStates ?? []);

    // 3. Auth against the auth_events.
    const authEvents: RoomEvent[] = [];
    const missingAuth: string[] = [];
    for (const id of ev.auth_events) {
      const a = this.loadEvent(id);
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
        const create = this.loadCreate();
        if (create) authState.set(CREATE_KEY, create.ev);
      }
      const r = checkEventAuth(ev, authState, rv);
      if (!r.allowed) [status, reason] = ["rejected", r.reason];
    }
    // 4. Auth against the state before the event. (Not for outliers, which have no place in
    // the DAG, nor for backfilled history, whose state before is only approximated.)
    if (status === "accepted" && !isCreate && !opts.outlier && !backfill) {
      const r = checkEventAuth(ev, this.authMapFrom(before.map, ev), rv);
      if (!r.allowed) [status, reason] = ["rejected", `against the state before the event: ${r.reason}`];
    }
    // 5. Soft fail against the current state (only differs from 4. when the event is not on top).
    if (status === "accepted" && !isCreate && !opts.outlier && !backfill && before.group !== this.currentGroup) {
      const r = checkEventAuth(ev, this.authMapFrom(this.groupState(this.currentGroup), ev), rv);
      if (!r.allowed) [status, reason] = ["soft_failed", `against the current state: ${r.reason}`];
    }
    if (opts.local && status !== "accepted") return { status, eventId: ev.event_id, reason };

    // Persist (over the row of an outlier that now gets a place in the DAG: the upsert below).
    let beforeGroup: number | null = null;
    let afterGroup: number | null = null;
    let prevState: string | null = null;
    const sk = ev.state_key !== undefined ? stateKey(ev.type, ev.state_key) : undefined;
    if (!opts.outlier) {
      const parent = prevs[0]?.stateAfter ?? null;
      beforeGroup = before.resolved ? this.newGroup(parent, diffState(this.groupState(parent), before.map)) : before.group;
      if (before.memoKey) this.rememberAcross(before.memoKey, before.map, beforeGroup);
      afterGroup = beforeGroup;
      if (status === "accepted" && sk !== undefined) {
        prevState = before.map.get(sk) ?? null;
        afterGroup = this.newGroup(beforeGroup, new Map([[sk, ev.event_id]]));
      }
    }
    let stream: number | null = null;
    if (status === "accepted" && !opts.outlier) {
      if (backfill) stream = opts.backfillStream!;
      else {
        stream = this.stream + 1;
        this.stream = stream;
        this.setMeta("stream", stream);
      }
    }
    const columns = ["stream", "depth", "type", "state_key", "sender", "origin_server_ts", "pdu", "status", "rejection_reason", "state_before", "state_after", "prev_state", "txn_device", "txn_id", "received_ts"];
    this.sql.exec(
      `INSERT INTO events (event_id, ${columns.join(", ")}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
       ON CONFLICT(event_id) DO UPDATE SET ${columns.map((c) => `${c} = excluded.${c}`).join(", ")}`,
      ev.event_id,
      stream,
      ev.depth,
      ev.type,
      ev.state_key ?? null,
      ev.sender,
      ev.origin_server_ts,
      JSON.stringify(ev.pdu),
      status,
      reason ?? null,
      beforeGroup,
      afterGroup,
      prevState,
      opts.txn?.deviceId ?? null,
      opts.txn?.txnId ?? null,
      Date.now(),
    );
    // prev_events of an outlier are not part of our DAG (every reader of edges looks only at
    // children with a stream position); they are stored if it is admitted into the timeline.
    if (!opts.outlier) this.insertEdges("edges", "prev_event_id", ev.event_id, ev.prev_events);
    this.insertEdges("auth_edges", "auth_event_id", ev.event_id, ev.auth_events);
    if (opts.txn) {
      this.sql.exec("INSERT OR IGNORE INTO txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)", ev.sender, opts.txn.deviceId, txnKey(opts.txn), ev.event_id);
    }
    this.events.delete(ev.event_id);
    if (status !== "accepted" || opts.outlier) return { status, eventId: ev.event_id, reason };

    if (ev.type === "m.room.member" && ev.state_key !== undefined) {
      this.sql.exec("INSERT OR REPLACE INTO memberships (event_id, user_id, membership, stream) VALUES (?, ?, ?, ?)", ev.event_id, ev.state_key, String(ev.content.membership), stream);
    }
    if (ev.type === "m.room.redaction" && ev.redacts) {
      const st = this.authMapFrom(before.map, ev);
      const powerful = powerLevelOf(ev.sender, st, rv) >= namedPowerLevel("redact", st, rv) ? 1 : 0;
      this.sql.exec("INSERT OR IGNORE INTO redactions (redacts, event_id, sender, powerful) VALUES (?, ?, ?, ?)", ev.redacts, ev.event_id, ev.sender, powerful);
      this.events.delete(ev.redacts);
    }
    // Backfilled history has no say in the present: no extremities, no current state.
    if (backfill) return { status: "accepted", eventId: ev.event_id, stream: stream! };

    // Forward extremities: the event replaces its prev_events (unless something already points at it).
    for (const p of ev.prev_events) this.sql.exec("DELETE FROM extremities WHERE event_id = ?", p);
    const referenced = this.sql.exec("SELECT 1 FROM edges e JOIN events x ON x.event_id = e.event_id WHERE e.prev_event_id = ? AND x.status = 'accepted' AND x.stream > 0 LIMIT 1", ev.event_id).toArray().length > 0;
    if (!referenced) this.sql.exec("INSERT OR IGNORE INTO extremities (event_id) VALUES (?)", ev.event_id);

    // Current state (Server-Server API "Room State Resolution"): the resolution of the states
    // after the forward extremities. One extremity state (a linear room, or an event that cited
    // every branch) needs no resolution; only real forks pay for it. Resolving the old current
    // state against the new event's state instead would depend on arrival order.
    const old = this.currentGroup;
    let next: number | null;
    const tips = isCreate
      ? [afterGroup]
      : [
          ...new Set(
            this.sql
              .exec<{ state_after: number | null }>("SELECT e.state_after FROM extremities x JOIN events e ON e.event_id = x.event_id")
              .toArray()
              .map((r) => r.state_after),
          ),
        ];
    if (tips.length <= 1) next = tips[0] ?? afterGroup;
    else {
      const oldMap = this.groupState(old);
      const resolved = this.resolveMaps(tips.map((g) => this.groupState(g)));
      next = this.newGroup(old, diffState(oldMap, resolved));
    }
    if (next !== old) {
      const changes =
        old === beforeGroup && sk !== undefined && afterGroup === next
          ? new Map([[sk, ev.event_id]])
          : diffState(this.groupState(old), this.groupState(next));
      this.applyCurrentState(changes);
      this.currentGroup = next;
      this.setMeta("current_group", next ?? 0);
      this.sql.exec("INSERT OR REPLACE INTO current_groups (stream, grp) VALUES (?, ?)", stream, next);
      this.advanceFanOutFacts(old, next, changes);
    }
    return { status: "accepted", eventId: ev.event_id, stream: stream! };
  }

  /** (eventId, target) rows, several per statement: a statement costs more than its rows (it
   *  was a fifth of admitting a 30,000-event room state), and SQLite here binds at most 100
   *  parameters per statement. */
  private insertEdges(table: "edges" | "auth_edges", column: "prev_event_id" | "auth_event_id", eventId: string, targets: string[]): void {
    for (let i = 0; i < targets.length; i += 40) {
      const chunk = targets.slice(i, i + 40);
      this.sql.exec(`INSERT OR IGNORE INTO ${table} (event_id, ${column}) VALUES ${chunk.map(() => "(?, ?)").join(", ")}`, ...chunk.flatMap((t) => [eventId, t]));
    }
  }

  private applyCurrentState(changes: Map<StateKey, string | null>): void {
    const localMembers: { userId: string; eventId: string; membership: string }[] = [];
    for (const [k, id] of changes) {
      const [type, skey] = splitStateKey(k);
      if (id === null) this.sql.exec("DELETE FROM current_state WHERE type = ? AND state_key = ?", type, skey);
      else this.sql.exec("INSERT INTO current_state (type, state_key, event_id) VALUES (?, ?, ?) ON CONFLICT(type, state_key) DO UPDATE SET event_id = excluded.event_id", type, skey, id);
      if (k === GUEST_ACCESS_KEY) this.guestAccessChanged = true;
      if (type === "m.room.member" || type === "m.room.join_rules" || type === "m.room.history_visibility") this.directoryDirty.add(k);
      if (type === "m.room.member" && skey.endsWith(`:${this.serverName}`)) {
        const m = id === null ? "leave" : String(this.loadEvent(id)?.ev.content.membership ?? "leave");
        localMembers.push({ userId: skey, eventId: id ?? "", membership: m });
      }
    }
    if (localMembers.length) this.pendingMemberships.push(...localMembers);
  }

  private pendingMemberships: { userId: string; eventId: string; membership: string }[] = [];
  /** Current-state keys the user directory mirrors (members, join rules, history visibility). */
  private directoryDirty = new Set<StateKey>();

  /** The user directory's view of this room (src/services/user-directory.ts): joined members and
   *  whether the room is public (join_rules public or history world_readable). */
  private async mirrorDirectory(): Promise<void> {
    if (this.directoryDirty.size === 0 || !this.roomId || !this.serverName) return;
    const keys = [...this.directoryDirty];
    this.directoryDirty.clear();
    const st = this.groupState(this.currentGroup);
    const content = (k: StateKey) => {
      const id = st.get(k);
      return id ? this.loadEvent(id)?.ev.content : undefined;
    };
    const members: DirectoryMember[] = [];
    let isPublic: boolean | undefined;
    for (const k of keys) {
      const [type, skey] = splitStateKey(k);
      if (type === "m.room.member") {
        const c = content(k);
        members.push({
          userId: skey,
          membership: typeof c?.membership === "string" ? c.membership : "leave",
          displayname: typeof c?.displayname === "string" ? c.displayname : undefined,
          avatarUrl: typeof c?.avatar_url === "string" ? c.avatar_url : undefined,
        });
      } else {
        isPublic = content(stateKey("m.room.join_rules", ""))?.join_rule === "public" || parseHistoryVisibility(content(HV_KEY)) === "world_readable";
      }
    }
    try {
      await mirrorRoomForDirectory(this.env, this.serverName, this.roomId, members, isPublic);
    } catch (e) {
      console.error("user directory mirror failed", e);
    }
  }

  /** After a commit: mirror local users' memberships to D1 (for /joined_rooms and profile
   *  propagation) and notify. Runs inside `serial`, so D1 sees changes in order. */
  private async afterCommit(): Promise<void> {
    await this.mirrorDirectory();
    const pending = this.pendingMemberships.splice(0);
    if (pending.length === 0) return;
    const now = Date.now();
    await this.env.DB.batch(
      pending.map((p) => upsertMembership(this.env.DB, { roomId: this.roomId!, userId: p.userId, membership: p.membership, eventId: p.eventId, stream: this.stream, ts: now })),
    );
  }

  // ===========================================================================================
  // State groups.

  private groupState(g: number | null): StateIdMap {
    if (g === null) return new Map();
    const hit = this.groups.get(g);
    if (hit) {
      this.groups.delete(g);
      this.groups.set(g, hit);
      return hit;
    }
    // The ancestors up to a cached one or the snapshot (a parent's ID is always lower than its
    // child's), then every delta below that base in one query, applied oldest first.
    let base: StateIdMap | undefined;
    let lowest = g;
    for (const { id } of this.sql.exec<{ id: number }>(GROUP_CHAIN_SQL, g)) {
      const cached = this.groups.get(id);
      if (cached) {
        base = cached;
        break;
      }
      lowest = id;
    }
    const delta = new Map<StateKey, string | null>();
    for (const e of this.sql.exec<{ type: string; state_key: string; event_id: string | null }>(GROUP_ENTRIES_SQL, g, lowest)) {
      const k = stateKey(e.type, e.state_key);
      if (!base && e.event_id === null) delta.delete(k);
      else delta.set(k, e.event_id);
    }
    const map = base ? layerState(base, delta) : (delta as StateIdMap);
    this.cacheGroup(g, map);
    return map;
  }

  private newGroup(parent: number | null, delta: Map<StateKey, string | null>): number | null {
    if (delta.size === 0) return parent;
    // `chain`: delta entries stored from the last snapshot down to this group (see
    // SNAPSHOT_FRACTION). A group without a parent is a snapshot (its delta is its state).
    const parentChain = parent === null ? 0 : (this.sql.exec<{ chain: number }>("SELECT chain FROM state_groups WHERE id = ?", parent).toArray()[0]?.chain ?? 0);
    const full = layerState(this.groupState(parent), delta);
    const chain = parent === null ? 0 : parentChain + delta.size;
    const snapshot = parent !== null && chain > Math.max(SNAPSHOT_MIN, full.size * SNAPSHOT_FRACTION);
    const id = (this.sql.exec<{ id: number }>("SELECT COALESCE(MAX(id), 0) + 1 AS id FROM state_groups").one().id as number);
    this.sql.exec("INSERT INTO state_groups (id, parent, chain) VALUES (?, ?, ?)", id, snapshot ? null : parent, snapshot ? 0 : chain);
    const entries: Iterable<[StateKey, string | null]> = snapshot ? full : delta;
    for (const [k, v] of entries) {
      const [type, skey] = splitStateKey(k);
      this.sql.exec("INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)", id, type, skey, v);
    }
    this.cacheGroup(id, full);
    return id;
  }

  /** Entries held by the cached groups: a full map's size, a layered map's overlay, and each
   *  base in use once (baseRefs counts the cached layered maps on it). */
  private groupEntries = 0;
  private baseRefs = new Map<StateIdMap, number>();

  /** LRU-cache a group's state, bounded by count and by total entries. Groups are mostly
   *  LayeredStates sharing a base (state-layers.ts), so the forward extremities' states of a
   *  large room under concurrent joins stay cached. */
  private cacheGroup(id: number, map: StateIdMap): void {
    const old = this.groups.get(id);
    if (old) this.countGroup(old, -1);
    this.groups.delete(id);
    this.groups.set(id, map);
    this.countGroup(map, 1);
    while (this.groups.size > 1 && (this.groups.size > GROUP_CACHE || this.groupEntries > GROUP_CACHE_ENTRIES)) {
      const [k, m] = this.groups.entries().next().value!;
      this.groups.delete(k);
      this.countGroup(m, -1);
    }
  }

  private countGroup(map: StateIdMap, sign: 1 | -1): void {
    if (!(map instanceof LayeredState)) {
      this.groupEntries += sign * map.size;
      return;
    }
    this.groupEntries += sign * map.over.size;
    const refs = (this.baseRefs.get(map.base) ?? 0) + sign;
    if (refs === 0) this.baseRefs.delete(map.base);
    else this.baseRefs.set(map.base, refs);
    if (refs === 0) this.groupEntries -= map.base.size;
    else if (refs === 1 && sign === 1) this.groupEntries += map.base.size;
  }

  /** State before an event: across its prev events we hold, and the states supplied for
   *  those we do not (see AdmitMode.extraStates). */
  private stateBefore(prevs: StoredEvent[], extra: StateIdMap[]): StateAt {
    if (extra.length === 0) return this.stateAcross(prevs);
    const maps = [...new Set(prevs.map((p) => p.stateAfter))].map((g) => this.groupState(g)).concat(extra);
    if (maps.length === 1) return { map: maps[0], group: null, resolved: true };
    return { map: this.resolveMaps(maps), group: null, resolved: true };
  }

  /** State after a set of prev events: one → its state; several → state resolution. The same
   *  set is often asked for twice in a row (a make_join template, then the send_join built on
   *  it; a local event built, then admitted): recent resolutions are remembered by their groups,
   *  with the group the result was stored as once an event stored it (decideAndPersist). */
  private stateAcross(prevs: StoredEvent[]): StateAt {
    const groups = [...new Set(prevs.map((p) => p.stateAfter))];
    if (groups.length === 1) return { map: this.groupState(groups[0]), group: groups[0], resolved: false };
    const memoKey = groups.map(String).sort().join(",");
    const hit = this.acrossMemo.get(memoKey);
    if (hit) {
      this.acrossMemo.delete(memoKey);
      this.acrossMemo.set(memoKey, hit);
      return hit.group === null ? { map: hit.map, group: null, resolved: true, memoKey } : { map: this.groupState(hit.group), group: hit.group, resolved: false };
    }
    const map = this.resolveMaps(groups.map((g) => this.groupState(g)));
    this.rememberAcross(memoKey, map, null);
    return { map, group: null, resolved: true, memoKey };
  }

  private acrossMemo = new Map<string, { map: StateIdMap; group: number | null }>();

  private rememberAcross(memoKey: string, map: StateIdMap, group: number | null): void {
    this.acrossMemo.delete(memoKey);
    this.acrossMemo.set(memoKey, { map: group === null ? map : new Map(), group });
    // A few full-state maps at most (each is the size of the room's state).
    while (this.acrossMemo.size > ACROSS_MEMO) this.acrossMemo.delete(this.acrossMemo.keys().next().value!);
  }

  /** State resolution over state maps, with the auth-chain walks reading auth event IDs
   *  through authIdsOf instead of loading every event of the state, and the conflicted keys
   *  found among the maps' differences from their shared base (splitShared) when they share
   *  one, instead of comparing every key of every map. */
  private resolveMaps(maps: StateIdMap[]): StateIdMap {
    return resolveState(this.rv!, maps, (id) => this.loadEvent(id)?.ev, {
      isRejected: (id) => this.loadEvent(id)?.status === "rejected",
      authEvents: this.authIdsOf,
      split: splitShared,
    });
  }

  /** Auth event IDs by event ID, for state resolution (ResolveOptions.authEvents). Resolving
   *  walks the auth chains of every event in the state sets: in a room with 10,000 members that
   *  loaded 10,000 whole events per resolution, past the 4,096-event cache each one a storage
   *  read and a JSON parse. This index keeps only the ID lists (shared between events that cite
   *  the same auth events, as most members' joins do), read from auth_edges. */
  private authIndex = new Map<string, readonly string[]>();
  private authLists = new Map<string, readonly string[]>();
  private readonly authIdsOf = (id: string): readonly string[] | undefined => {
    const hit = this.authIndex.get(id);
    if (hit) return hit;
    let ids: string[];
    const se = this.events.get(id);
    if (se) ids = se.ev.auth_events;
    else {
      ids = this.sql.exec<{ a: string }>("SELECT auth_event_id AS a FROM auth_edges WHERE event_id = ?", id).toArray().map((r) => r.a);
      // No auth events: the create event, or an event we do not have.
      if (ids.length === 0 && !this.loadEvent(id)) return undefined;
    }
    const listKey = [...ids].sort().join(" ");
    let list = this.authLists.get(listKey);
    if (!list) {
      list = Object.freeze([...ids]);
      this.authLists.set(listKey, list);
    }
    if (this.authIndex.size >= AUTH_INDEX) {
      this.authIndex.clear();
      this.authLists.clear();
    }
    this.authIndex.set(id, list);
    return list;
  };

  /** The state entries the auth rules consult for `ev` (its auth events selection + create). */
  private authMapFrom(ids: StateIdMap, ev: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): StateMap {
    const keys = authEventKeys(this.rv!, ev);
    keys.push(CREATE_KEY);
    return this.stateMapOf(ids, keys);
  }

  private stateMapOf(ids: StateIdMap, keys: Iterable<StateKey>): StateMap {
    const out: StateMap = new Map();
    for (const k of keys) {
      const id = ids.get(k);
      const e = id ? this.loadEvent(id) : undefined;
      if (e) out.set(k, e.ev);
    }
    return out;
  }

  private currentAuthMap(keys: StateKey[]): StateMap {
    return this.stateMapOf(this.groupState(this.currentGroup), keys);
  }

  // ===========================================================================================
  // Event loading.

  private loadEvent(id: string): StoredEvent | undefined {
    const hit = this.events.get(id);
    if (hit) return hit;
    const row = this.sql.exec<EventRow>("SELECT * FROM events WHERE event_id = ?", id).toArray()[0];
    if (!row) return undefined;
    const se = this.fromRow(row);
    this.events.set(id, se);
    if (this.events.size > EVENT_CACHE) this.events.delete(this.events.keys().next().value!);
    return se;
  }

  private fromRow(row: EventRow): StoredEvent {
    const pdu = JSON.parse(row.pdu) as PDU;
    const rv = this.rv!;
    const refs = (r: unknown): string[] => (Array.isArray(r) ? r.map((x) => (Array.isArray(x) ? String(x[0]) : String(x))) : []);
    const ev: RoomEvent = {
      event_id: row.event_id,
      room_id: this.roomId!,
      sender: row.sender,
      type: row.type,
      content: (pdu.content ?? {}) as JsonObject,
      origin_server_ts: pdu.origin_server_ts,
      depth: pdu.depth,
      prev_events: refs(pdu.prev_events),
      auth_events: refs(pdu.auth_events),
      pdu,
    };
    if (row.state_key !== null) ev.state_key = row.state_key;
    if (row.type === "m.room.redaction") {
      const r = rv.v11Redaction ? (pdu.content as { redacts?: unknown }).redacts : pdu.redacts;
      if (typeof r === "string") ev.redacts = r;
    }
    return {
      ev,
      stream: row.stream,
      status: row.status as StoredEvent["status"],
      stateBefore: row.state_before,
      stateAfter: row.state_after,
      prevState: row.prev_state,
      txnDevice: row.txn_device,
      txnId: row.txn_id,
    };
  }

  /** The create event's ID once known (a room has one; asked for every event's auth). */
  private createId?: string;

  private loadCreate(): StoredEvent | undefined {
    if (!this.createId) {
      const row = this.sql.exec<{ event_id: string }>("SELECT event_id FROM events WHERE type = 'm.room.create' AND state_key = '' AND status = 'accepted' LIMIT 1").toArray()[0];
      this.createId = row?.event_id;
    }
    return this.createId ? this.loadEvent(this.createId) : undefined;
  }

  // ===========================================================================================
  // Forgetting and erasure (per user, read side only: the room's events are unchanged).

  /** The ID of the user's current member event ("" when they have none here). */
  private memberEventId(userId: string): string {
    if (this.isPartial()) return this.partialMember(userId)?.ev.event_id ?? "";
    return this.groupState(this.currentGroup).get(memberKey(userId)) ?? "";
  }

  /** Whether the user forgot the room since their current membership began (POST /forget).
   *  Keyed by that member event, so rejoining (or a new invite) ends it without a write. */
  private forgot(userId: string): boolean {
    const row = this.sql.exec<{ member_event_id: string }>("SELECT member_event_id FROM forgotten WHERE user_id = ?", userId).toArray()[0];
    return row !== undefined && row.member_event_id === this.memberEventId(userId);
  }

  /** POST /rooms/{roomId}/forget ("Forget a room": "a user will no longer be able to retrieve
   *  history for this room"; "If the user is currently joined to the room, they must leave the
   *  room before calling this API": 400 M_UNKNOWN, as is an open invite or knock). Afterwards
   *  the user reads the room as a stranger would (visibilityFor, readableStateGroup). */
  async forget(userId: string): Promise<RoomResult<null>> {
    return this.wrap(() => {
      if (!this.rv) return null;
      const m = this.isPartial() ? (this.partialMember(userId)?.ev.content.membership as string | undefined) : this.currentMembership(userId);
      if (m === "join" || m === "invite" || m === "knock") fail(400, "M_UNKNOWN", "You must leave the room before forgetting it");
      const id = this.memberEventId(userId);
      if (id) this.sql.exec("INSERT OR REPLACE INTO forgotten (user_id, member_event_id) VALUES (?, ?)", userId, id);
      return null;
    });
  }

  private erased?: Set<string>;

  /** POST /account/deactivate with `erase: true` (spec: "Erasure means that any users (or
   *  servers) which join the room after the erasure request are served redacted copies of the
   *  events sent by the erased user. Users which had visibility on the event before the erasure
   *  are still able to see unredacted copies."). Recorded here; applied when serving (erasedFor). */
  async eraseSender(userId: string): Promise<void> {
    this.sql.exec("INSERT OR IGNORE INTO erased_senders (user_id) VALUES (?)", userId);
    this.erased?.add(userId);
  }

  /** An erased user's event is served redacted to a requester who was not joined when it was
   *  sent (so cannot have seen it then); members who were there keep the original (as Synapse
   *  decides it: membership at the event). */
  private erasedFor(se: StoredEvent, userId: string): boolean {
    if (!this.isErased(se.ev.sender) || se.ev.sender === userId) return false;
    const id = this.groupState(se.stateBefore).get(memberKey(userId));
    return (id ? this.loadEvent(id)?.ev.content.membership : undefined) !== "join";
  }

  /** The same for a server ("any users (or servers) which join the room after"): redacted
   *  unless one of its users was joined when the event was sent. */
  private erasedForServer(se: StoredEvent, server: string): boolean {
    if (!this.isErased(se.ev.sender)) return false;
    const suffix = `:${server}`;
    for (const [k, id] of this.groupState(se.stateBefore)) {
      if (k.startsWith("m.room.member\u0000") && k.endsWith(suffix) && this.loadEvent(id)?.ev.content.membership === "join") return false;
    }
    return true;
  }

  private isErased(userId: string): boolean {
    this.erased ??= new Set(this.sql.exec<{ user_id: string }>("SELECT user_id FROM erased_senders").toArray().map((r) => r.user_id));
    return this.erased.size > 0 && this.erased.has(userId);
  }

  // ===========================================================================================
  // Client format and visibility.

  /** The redaction that applies to an event, if any ("Handling redactions": same sender, or
   *  a sender with the redact power level). */
  private redactionOf(se: StoredEvent): StoredEvent | undefined {
    const rows = this.sql.exec<{ event_id: string; sender: string; powerful: number }>("SELECT event_id, sender, powerful FROM redactions WHERE redacts = ?", se.ev.event_id).toArray();
    for (const r of rows) {
      if (r.powerful || r.sender === se.ev.sender) {
        const red = this.loadEvent(r.event_id);
        if (red && red.status === "accepted") return red;
      }
    }
    return undefined;
  }

  /** ClientEvent format (spec: "Room Event Format"): redacted per the room version when a
   *  redaction applies, with unsigned.age, transaction_id (sender's device), prev_content,
   *  redacted_because. */
  private toClient(se: StoredEvent, requester: Requester | undefined, now = Date.now(), nested = false): JsonObject {
    const red = nested ? undefined : this.redactionOf(se);
    const erased = !red && requester !== undefined && this.erasedFor(se, requester.userId);
    const src = red || erased ? redactEvent(se.ev.pdu, this.rv!) : se.ev.pdu;
    const out: JsonObject = {
      type: se.ev.type,
      content: (src.content ?? {}) as JsonObject,
      event_id: se.ev.event_id,
      room_id: this.roomId!,
      sender: se.ev.sender,
      origin_server_ts: se.ev.origin_server_ts,
    };
    if (se.ev.state_key !== undefined) out.state_key = se.ev.state_key;
    if (se.ev.redacts !== undefined) out.redacts = se.ev.redacts;
    const unsigned: JsonObject = { age: Math.max(0, now - se.ev.origin_server_ts) };
    if (requester && se.txnId && se.txnDevice === requester.deviceId && se.ev.sender === requester.userId) unsigned.transaction_id = se.txnId;
    if (se.prevState) {
      const prev = this.loadEvent(se.prevState);
      if (prev) {
        const prevRed = this.redactionOf(prev);
        unsigned.replaces_state = prev.ev.event_id;
        unsigned.prev_content = ((prevRed ? redactEvent(prev.ev.pdu, this.rv!) : prev.ev.pdu).content ?? {}) as JsonObject;
        unsigned.prev_sender = prev.ev.sender;
      }
    }
    if (red) unsigned.redacted_because = this.toClient(red, requester, now, true);
    out.unsigned = unsigned;
    return out;
  }

  /** Filter `event_format: "federation"` ("the raw event as received over federation"): the PDU,
   *  redacted per the room version when a redaction applies, plus `event_id` (room versions 3+
   *  leave it out of the PDU; clients need it) and the client `unsigned` (age, transaction_id,
   *  prev_content, redacted_because), as Synapse serves it. */
  private toFederationFormat(se: StoredEvent, requester: Requester | undefined, now = Date.now()): JsonObject {
    const red = this.redactionOf(se);
    const pdu = (red ? redactEvent(se.ev.pdu, this.rv!) : se.ev.pdu) as JsonObject;
    return { ...pdu, event_id: se.ev.event_id, unsigned: this.toClient(se, requester, now).unsigned };
  }

  /** Events in client format with their aggregations bundled (`unsigned.m.relations`, one
   *  relations query for the whole list: durable-objects/room-relations.ts). */
  private clientEvents(ses: StoredEvent[], req: Requester, now = Date.now()): JsonObject[] {
    const out = ses.map((se) => this.toClient(se, req, now));
    bundleAggregations(this.relationsAccess(req, now), ses, out);
    return out;
  }

  private relationsAccess(req: Requester, now = Date.now()): RelationsAccess<StoredEvent> {
    return { ...this.readAccess(req.userId), userId: req.userId, toClient: (se) => this.toClient(se, req, now) };
  }

  /** Timeline events as `userId` reads them (relations and search): load only accepted events
   *  with a stream position; visibility and redaction for that user. */
  private readAccess(userId: string) {
    return {
      sql: this.sql,
      load: (id: string) => {
        const se = this.loadEvent(id);
        return se && se.status === "accepted" && se.stream !== null ? se : undefined;
      },
      visible: this.visibilityFor(userId),
      redacted: (se: StoredEvent) => !!this.redactionOf(se),
    };
  }

  /** A visibility checker for one user, memoising per state group. */
  private visibilityFor(userId: string): (se: StoredEvent) => boolean {
    // A user who forgot the room reads it as someone who was never in it (world_readable only).
    const forgotten = this.forgot(userId);
    const history = this.sql.exec<{ membership: string; stream: number }>("SELECT membership, stream FROM memberships WHERE user_id = ? ORDER BY stream", userId).toArray();
    const lastJoin = history.filter((h) => h.membership === "join").at(-1)?.stream ?? -1;
    // Whether the user was joined when this server accepted the event (their membership in
    // stream order). Concurrent branches: an event admitted after the user's join, on a branch
    // that does not contain it, has a state before it without that join; the user was in the
    // room when it arrived all the same, and /sync (joinedSince in room-sync.ts) shows it to
    // them. Without this, /messages left out events /sync had delivered.
    const joinedAt = (stream: number): boolean => {
      let m: string | undefined;
      for (const h of history) {
        if (h.stream >= stream) break;
        m = h.membership;
      }
      return m === "join";
    };
    const memo = new Map<number | null, { hv: HistoryVisibility; m: string | undefined }>();
    const at = (g: number | null) => {
      let v = memo.get(g);
      if (!v) {
        const st = this.groupState(g);
        const hvId = st.get(HV_KEY);
        const mId = st.get(memberKey(userId));
        v = {
          hv: parseHistoryVisibility(hvId ? this.loadEvent(hvId)?.ev.content : undefined),
          m: mId ? (this.loadEvent(mId)?.ev.content.membership as string | undefined) : undefined,
        };
        memo.set(g, v);
      }
      return v;
    };
    return (se) => {
      if (!forgotten && se.stream !== null && history.length && joinedAt(se.stream)) return true;
      const b = at(se.stateBefore);
      const visibility = [b.hv];
      const membership = [b.m];
      if (se.ev.type === "m.room.history_visibility" && se.ev.state_key === "") visibility.push(parseHistoryVisibility(se.ev.content));
      if (se.ev.type === "m.room.member" && se.ev.state_key === userId) membership.push(se.ev.content.membership as string);
      if (forgotten) return isEventVisible({ visibility, membership: [undefined], joinedLater: false });
      return isEventVisible({ visibility, membership, joinedLater: se.stream !== null && lastJoin > se.stream });
    };
  }

  private currentMembership(userId: string): string | undefined {
    const id = this.groupState(this.currentGroup).get(memberKey(userId));
    return id ? (this.loadEvent(id)?.ev.content.membership as string | undefined) : undefined;
  }

  /** Which state a user may read: current state when joined (or world_readable); the state at
   *  their leave/kick/ban when they were a member before; nothing otherwise (M_FORBIDDEN). */
  private readableStateGroup(userId: string): number | null {
    const rv = this.requireRoom();
    void rv;
    const m = this.currentMembership(userId);
    if (m === "join") return this.currentGroup;
    const hvId = this.groupState(this.currentGroup).get(HV_KEY);
    if (parseHistoryVisibility(hvId ? this.loadEvent(hvId)?.ev.content : undefined) === "world_readable") return this.currentGroup;
    if ((m === "leave" || m === "ban") && !this.forgot(userId) && this.sql.exec("SELECT 1 FROM memberships WHERE user_id = ? AND membership = 'join' LIMIT 1", userId).toArray().length) {
      const id = this.groupState(this.currentGroup).get(memberKey(userId))!;
      return this.loadEvent(id)!.stateAfter;
    }
    fail(403, "M_FORBIDDEN", "You are not in this room");
  }

  private wrap<T>(fn: () => T): RoomResult<T> {
    try {
      return { ok: true, value: fn() };
    } catch (e) {
      return asRoomError(e);
    }
  }

  // ===========================================================================================
  // Read API (RPC).

  /** Room version ID, or null when this DO holds no room. */
  async getRoomVersion(): Promise<string | null> {
    return this.rv?.id ?? null;
  }

  /** Admin API: every mxc:// URI in the room's accepted events (content, including URLs in
   *  m.room.avatar and member avatars), deduplicated, bounded. */
  async mediaInRoom(limit = 10_000): Promise<string[]> {
    if (!this.rv) return [];
    const out = new Set<string>();
    const rows = this.sql.exec<{ pdu: string }>("SELECT pdu FROM events WHERE status = 'accepted' AND instr(pdu, 'mxc://') > 0");
    for (const r of rows) {
      for (const m of r.pdu.matchAll(/mxc:\/\/[A-Za-z0-9.:\[\]-]+\/[A-Za-z0-9_-]+/g)) {
        out.add(m[0]);
        if (out.size >= limit) return [...out];
      }
    }
    return [...out];
  }

  /** Admin room deletion (src/services/admin-rooms.ts): once the evicted members' leaves have
   *  reached their sync hubs (bounded wait), drop every row this room stored and forget it in
   *  memory; the Worker has removed it from the D1 registry, so nothing addresses it again. */
  async purge(): Promise<void> {
    await this.serial(async () => {
      for (let i = 0; i < 50 && this.hubDone < this.stream; i++) await new Promise((r) => setTimeout(r, 100));
      await this.ctx.storage.deleteAll();
      this.sql.exec(SCHEMA);
      this.events.clear();
      this.groups.clear();
      this.roomId = this.rv = this.serverName = undefined;
      this.stream = this.hubDone = 0;
      this.currentGroup = null;
      this.fanOutCache = undefined;
    });
  }

  async getSummary(): Promise<RoomSummary | null> {
    if (!this.roomId || !this.rv) return null;
    return { roomId: this.roomId, roomVersion: this.rv.id, stream: this.stream };
  }

  /** The current state event (client format) for (type, stateKey), or null. No access check:
   *  for server-side callers (directory, profile propagation, sync's stripped state). */
  async getCurrentStateEvent(type: string, stateKey_: string): Promise<JsonObject | null> {
    if (!this.rv) return null;
    if (type === "m.room.member" && this.isPartial()) {
      const se = this.partialMember(stateKey_);
      return se ? this.toClient(se, undefined) : null;
    }
    const id = this.groupState(this.currentGroup).get(stateKey(type, stateKey_));
    const se = id ? this.loadEvent(id) : undefined;
    return se ? this.toClient(se, undefined) : null;
  }

  /** All current state (client format), no access check (server-side callers). */
  async getCurrentState(): Promise<JsonObject[]> {
    if (!this.rv) return [];
    const now = Date.now();
    return [...this.groupState(this.currentGroup).values()].map((id) => this.toClient(this.loadEvent(id)!, undefined, now));
  }

  /** Current state events of one type (client format), no access check: the space hierarchy
   *  reads a room's m.space.child events without loading its members. */
  async getCurrentStateOfType(type: string): Promise<JsonObject[]> {
    if (!this.rv) return [];
    const out: JsonObject[] = [];
    const now = Date.now();
    for (const [k, id] of this.groupState(this.currentGroup)) {
      if (splitStateKey(k)[0] !== type) continue;
      const se = this.loadEvent(id);
      if (se) out.push(this.toClient(se, undefined, now));
    }
    return out;
  }

  /** A user's current membership (`join`, `invite`, `leave`, `ban`, `knock`) or null. */
  async getMembership(userId: string): Promise<string | null> {
    if (!this.rv) return null;
    if (this.isPartial()) return (this.partialMember(userId)?.ev.content.membership as string | undefined) ?? null;
    return this.currentMembership(userId) ?? null;
  }

  /** Whether `userId` may send an event of this type now (power levels only). */
  async canSend(userId: string, type: string, isState: boolean): Promise<boolean> {
    const rv = this.requireRoom();
    const st = this.currentAuthMap([POWER_KEY, CREATE_KEY]);
    return powerLevelOf(userId, st, rv) >= requiredPowerLevel(type, isState, st, rv);
  }

  /** Current power level of a user, and the named levels (invite, kick, ban, redact). */
  async getPowerInfo(userId: string): Promise<{ level: number; invite: number; kick: number; ban: number; redact: number; stateDefault: number }> {
    const rv = this.requireRoom();
    const st = this.currentAuthMap([POWER_KEY, CREATE_KEY]);
    return {
      level: powerLevelOf(userId, st, rv),
      invite: namedPowerLevel("invite", st, rv),
      kick: namedPowerLevel("kick", st, rv),
      ban: namedPowerLevel("ban", st, rv),
      redact: namedPowerLevel("redact", st, rv),
      stateDefault: requiredPowerLevel("x.any", true, st, rv),
    };
  }

  /** GET /state: the state the requester may see. */
  async getState(req: Requester): Promise<RoomResult<JsonObject[]>> {
    return this.wrap(() => {
      const g = this.readableStateGroup(req.userId);
      const now = Date.now();
      return [...this.groupState(g).values()].map((id) => this.toClient(this.loadEvent(id)!, req, now));
    });
  }

  /** GET /state/{type}/{stateKey}: the event (client format) or M_NOT_FOUND. */
  async getStateEvent(req: Requester, type: string, key: string): Promise<RoomResult<JsonObject>> {
    return this.wrap(() => {
      const g = this.readableStateGroup(req.userId);
      const id = this.groupState(g).get(stateKey(type, key));
      if (!id) fail(404, "M_NOT_FOUND", "Event not found");
      return this.toClient(this.loadEvent(id)!, req);
    });
  }

  /** GET /event/{eventId}: accepted, visible to the requester, else M_NOT_FOUND. */
  async getEventForClient(req: Requester, eventId: string): Promise<RoomResult<JsonObject>> {
    return this.wrap(() => {
      this.requireRoom();
      const se = this.loadEvent(eventId);
      if (!se || se.status !== "accepted" || !this.visibilityFor(req.userId)(se)) fail(404, "M_NOT_FOUND", "Event not found");
      return this.clientEvents([se], req)[0];
    });
  }

  /** GET /members: member events at `at` (a token) or now, filtered by membership. */
  async getMembers(req: Requester, q: { at?: string; membership?: string; notMembership?: string }): Promise<RoomResult<JsonObject[]>> {
    return this.wrap(() => {
      let g = this.readableStateGroup(req.userId);
      const at = parseToken(q.at);
      if (at !== undefined && g === this.currentGroup) g = this.groupAtStream(at);
      const now = Date.now();
      const out: JsonObject[] = [];
      for (const [k, id] of this.groupState(g)) {
        if (!k.startsWith("m.room.member\u0000")) continue;
        const se = this.loadEvent(id)!;
        const m = se.ev.content.membership;
        if (q.membership && m !== q.membership) continue;
        if (q.notMembership && m === q.notMembership) continue;
        out.push(this.toClient(se, req, now));
      }
      return out;
    });
  }

  /** GET /joined_members: requester must be joined. */
  async getJoinedMembers(req: Requester): Promise<RoomResult<Record<string, JsonObject>>> {
    return this.wrap(() => {
      this.requireRoom();
      if (this.currentMembership(req.userId) !== "join") fail(403, "M_FORBIDDEN", "You are not joined to this room");
      const joined: Record<string, JsonObject> = {};
      for (const [k, id] of this.groupState(this.currentGroup)) {
        if (!k.startsWith("m.room.member\u0000")) continue;
        const se = this.loadEvent(id)!;
        if (se.ev.content.membership !== "join") continue;
        const c = this.toClient(se, undefined).content as JsonObject;
        const info: JsonObject = {};
        info.display_name = typeof c.displayname === "string" ? c.displayname : null;
        info.avatar_url = typeof c.avatar_url === "string" ? c.avatar_url : null;
        joined[se.ev.state_key!] = info;
      }
      return joined;
    });
  }

  /** User IDs currently joined (server-side callers: sync fan-out, federation destinations). */
  /** Whether this server is still in the room (local joined members) and which other servers
   *  our copy last saw joined — where to rejoin through once we have left. */
  async getResidency(): Promise<{ localJoined: number; servers: string[] }> {
    if (!this.rv || this.isPartial()) return { localJoined: 0, servers: [] };
    const f = this.fanOutFacts();
    return { localJoined: f.joinedLocal.length, servers: [...f.joinedServers].filter((s) => s !== this.serverName) };
  }

  async getJoinedUserIds(): Promise<string[]> {
    if (!this.rv) return [];
    return [...this.fanOutFacts().joined];
  }

  /** The room's current state as it was at stream position `n`: the resolution over the forward
   *  extremities then (current_groups), not the state after the event at `n`, which after
   *  concurrent events (several joins at once) holds only its own branch. Positions before
   *  current_groups was kept fall back to the state after the event. */
  private groupAtStream(n: number): number | null {
    const cur = this.sql.exec<{ grp: number | null }>("SELECT grp FROM current_groups WHERE stream <= ? ORDER BY stream DESC LIMIT 1", n).toArray()[0];
    if (cur) return cur.grp;
    const row = this.sql.exec<{ event_id: string }>("SELECT event_id FROM events WHERE stream IS NOT NULL AND stream <= ? ORDER BY stream DESC LIMIT 1", n).toArray()[0];
    return row ? this.loadEvent(row.event_id)!.stateAfter : null;
  }

  private mayRead(userId: string): void {
    // Members past and present may paginate (visibility filters each event); others only in
    // world_readable rooms.
    this.requireRoom();
    if (!this.forgot(userId) && this.sql.exec("SELECT 1 FROM memberships WHERE user_id = ? LIMIT 1", userId).toArray().length) return;
    this.readableStateGroup(userId);
  }

  /** Member events of the senders of `events` at those events (lazy-loading members). */
  private lazyMembers(events: StoredEvent[], req: Requester, now: number): JsonObject[] {
    const seen = new Set<string>();
    const out: JsonObject[] = [];
    for (const se of events) {
      if (seen.has(se.ev.sender)) continue;
      seen.add(se.ev.sender);
      const id = this.groupState(se.stateAfter).get(memberKey(se.ev.sender)) ?? this.groupState(this.currentGroup).get(memberKey(se.ev.sender));
      const m = id ? this.loadEvent(id) : undefined;
      if (m) out.push(this.toClient(m, req, now));
    }
    return out;
  }

  /** GET /messages (spec: "Syncing" → /rooms/{roomId}/messages). Stream order; tokens "t<n>". */
  async getMessages(req: Requester, q: MessagesQuery): Promise<RoomResult<MessagesResponse>> {
    return this.wrap(() => {
      this.mayRead(req.userId);
      const visible = this.visibilityFor(req.userId);
      const limit = Math.max(0, Math.min(q.limit, 1000));
      const from = parseToken(q.from) ?? (q.dir === "b" ? this.stream : MIN_STREAM);
      const to = parseToken(q.to);
      const now = Date.now();
      const picked: StoredEvent[] = [];
      let pos = from;
      let exhausted = false;
      let scanned = 0;
      while (picked.length < limit && scanned < 2000) {
        const rows =
          q.dir === "b"
            ? this.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND stream <= ? AND stream > ? ORDER BY stream DESC LIMIT ?", pos, to ?? MIN_STREAM, 100).toArray()
            : this.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND stream > ? AND stream <= ? ORDER BY stream ASC LIMIT ?", pos, to ?? Number.MAX_SAFE_INTEGER, 100).toArray();
        if (rows.length === 0) {
          exhausted = true;
          break;
        }
        for (const row of rows) {
          scanned++;
          const se = this.events.get(row.event_id) ?? this.fromRow(row);
          pos = q.dir === "b" ? se.stream! - 1 : se.stream!;
          if (visible(se) && matchesRoomEventFilter(q.filter, se.ev)) picked.push(se);
          if (picked.length >= limit) break;
        }
      }
      const res: MessagesResponse = { chunk: this.clientEvents(picked, req, now), start: streamToken(from) };
      // "If no further events are available ... this property is omitted from the response."
      if (!exhausted) res.end = streamToken(pos);
      if (q.filter?.lazy_load_members) res.state = this.lazyMembers(picked, req, now);
      return res;
    });
  }

  /** GET /context/{eventId}. */
  async getContext(req: Requester, eventId: string, limit: number, filter?: RoomEventFilter): Promise<RoomResult<ContextResponse>> {
    return this.wrap(() => {
      this.mayRead(req.userId);
      const visible = this.visibilityFor(req.userId);
      const se = this.loadEvent(eventId);
      if (!se || se.status !== "accepted" || !visible(se)) fail(404, "M_NOT_FOUND", "Event not found");
      const now = Date.now();
      const nBefore = Math.floor(limit / 2);
      const nAfter = limit - nBefore;
      const collect = (sqlText: string, n: number) => {
        const out: StoredEvent[] = [];
        if (n <= 0) return out;
        for (const row of this.sql.exec<EventRow>(sqlText, se.stream!, Math.min(2000, n * 4 + 50)).toArray()) {
          const x = this.events.get(row.event_id) ?? this.fromRow(row);
          if (visible(x) && matchesRoomEventFilter(filter, x.ev)) out.push(x);
          if (out.length >= n) break;
        }
        return out;
      };
      const before = collect("SELECT * FROM events WHERE stream IS NOT NULL AND stream < ? ORDER BY stream DESC LIMIT ?", nBefore);
      const after = collect("SELECT * FROM events WHERE stream IS NOT NULL AND stream > ? ORDER BY stream ASC LIMIT ?", nAfter);
      const last = after.length ? after[after.length - 1] : se;
      const state = filter?.lazy_load_members
        ? this.lazyMembers([...before, se, ...after], req, now)
        : [...this.groupState(last.stateAfter).values()].map((id) => this.toClient(this.loadEvent(id)!, req, now));
      const [event, ...around] = this.clientEvents([se, ...before, ...after], req, now);
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

  /** GET /relations (module "Event relationships"): accepted events whose m.relates_to points
   *  at `eventId` (with `recurse`, also at those, up to RELATIONS_DEPTH levels), visible to the
   *  requester and not redacted, in stream order from `from`; `next_batch` continues, absent
   *  when nothing is left. The parent must be visible to the requester, else M_NOT_FOUND. */
  async getRelations(req: Requester, q: RelationsQuery): Promise<RoomResult<RelationsResponse>> {
    return this.wrap(() => {
      this.mayRead(req.userId);
      const visible = this.visibilityFor(req.userId);
      const parent = this.loadEvent(q.eventId);
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
          level = this.sql
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
      const from = parseToken(q.from) ?? (q.dir === "b" ? this.stream : MIN_STREAM);
      const to = parseToken(q.to);
      const conds = [`stream IS NOT NULL`, `${RELATES_TO} IN (${parents.map(() => "?").join(",")})`];
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
      const picked: StoredEvent[] = [];
      let pos = from;
      let exhausted = false;
      let scanned = 0;
      while (picked.length < limit && scanned < 2000) {
        const rows =
          q.dir === "b"
            ? this.sql.exec<EventRow>(`SELECT * FROM events WHERE ${conds.join(" AND ")} AND stream <= ? AND stream > ? ORDER BY stream DESC LIMIT 100`, ...args, pos, to ?? MIN_STREAM).toArray()
            : this.sql.exec<EventRow>(`SELECT * FROM events WHERE ${conds.join(" AND ")} AND stream > ? AND stream <= ? ORDER BY stream ASC LIMIT 100`, ...args, pos, to ?? Number.MAX_SAFE_INTEGER).toArray();
        if (rows.length === 0) {
          exhausted = true;
          break;
        }
        for (const row of rows) {
          scanned++;
          const se = this.events.get(row.event_id) ?? this.fromRow(row);
          pos = q.dir === "b" ? se.stream! - 1 : se.stream!;
          // A redacted event no longer relates to anything (its m.relates_to is gone).
          if (visible(se) && !this.redactionOf(se)) picked.push(se);
          if (picked.length >= limit) break;
        }
      }
      const res: RelationsResponse = { chunk: this.clientEvents(picked, req, now) };
      if (!exhausted) res.next_batch = streamToken(pos);
      if (q.from !== undefined) res.prev_batch = q.from;
      if (q.recurse !== undefined) res.recursion_depth = q.recurse ? depth : 1;
      return res;
    });
  }

  /** GET /v1/rooms/{roomId}/threads (module "Threading"): roots the requester may see, by
   *  latest activity; `next_batch` is the activity position of the last root returned. */
  async getThreads(req: Requester, q: { include: "all" | "participated"; from?: string; limit: number }): Promise<RoomResult<{ chunk: JsonObject[]; next_batch?: string }>> {
    return this.wrap(() => {
      this.mayRead(req.userId);
      const visible = this.visibilityFor(req.userId);
      const limit = Math.max(1, Math.min(q.limit, 100));
      const cap = relationsCap(this.sql, req.userId);
      const tq: ThreadsQuery = { include: q.include, from: parseToken(q.from), limit };
      const roots: StoredEvent[] = [];
      let more = false;
      // Bounded: roots the requester may not see are skipped, at most 10 batches.
      batches: for (let round = 0; round < 10; round++) {
        const batch = threadRoots(this.sql, req.userId, tq, cap, limit + 1);
        for (const r of batch) {
          if (roots.length >= limit) {
            more = true;
            break batches;
          }
          tq.from = r.latest;
          const se = this.loadEvent(r.root);
          if (se && se.status === "accepted" && se.stream !== null && visible(se) && !this.redactionOf(se)) roots.push(se);
        }
        more = batch.length === limit + 1;
        if (!more) break;
      }
      const res: { chunk: JsonObject[]; next_batch?: string } = { chunk: this.clientEvents(roots, req) };
      if (more && tq.from !== undefined) res.next_batch = streamToken(tq.from);
      return res;
    });
  }

  /** POST /search, category room_events, in this room (durable-objects/room-search.ts). "The
   *  search will not include rooms that are end to end encrypted": nothing when the room is. */
  async searchEvents(req: Requester, q: RoomSearchQuery): Promise<RoomResult<RoomSearchResult>> {
    return this.wrap(() => {
      this.mayRead(req.userId);
      if (this.groupState(this.currentGroup).get(stateKey("m.room.encryption", ""))) return { hits: [], count: 0 };
      const now = Date.now();
      return searchRoom(
        {
          ...this.readAccess(req.userId),
          clientEvents: (ses) => this.clientEvents(ses, req, now),
          around: (stream, dir, n) =>
            this.sql
              .exec<{ event_id: string }>(
                dir === "b"
                  ? "SELECT event_id FROM events WHERE stream IS NOT NULL AND stream < ? ORDER BY stream DESC LIMIT ?"
                  : "SELECT event_id FROM events WHERE stream IS NOT NULL AND stream > ? ORDER BY stream ASC LIMIT ?",
                stream,
                n,
              )
              .toArray()
              .map((r) => this.loadEvent(r.event_id)!),
          memberAt: (se, userId) => {
            const id = this.groupState(se.stateAfter).get(memberKey(userId));
            return id ? this.loadEvent(id) : undefined;
          },
          cap: relationsCap(this.sql, req.userId),
        },
        q,
      );
    });
  }

  /** Whether `sender` already annotated `parent` with this type and key (M_DUPLICATE_ANNOTATION). */
  async hasAnnotation(sender: string, parent: string, type: string, key: string): Promise<boolean> {
    return hasAnnotation(this.sql, sender, parent, type, key);
  }

  /** Up to 200 events with a stream position nearest `ts` in direction `dir`, nearest first
   *  (the candidates timestamp_to_event checks for visibility). */
  private timestampCandidates(ts: number, dir: "f" | "b"): EventRow[] {
    return dir === "f"
      ? this.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND origin_server_ts >= ? ORDER BY origin_server_ts ASC, stream ASC LIMIT 200", ts).toArray()
      : this.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND origin_server_ts <= ? ORDER BY origin_server_ts DESC, stream DESC LIMIT 200", ts).toArray();
  }

  /** GET /v1/rooms/{roomId}/timestamp_to_event. */
  async timestampToEvent(req: Requester, ts: number, dir: "f" | "b"): Promise<RoomResult<{ event_id: string; origin_server_ts: number }>> {
    return this.wrap(() => {
      this.mayRead(req.userId);
      const visible = this.visibilityFor(req.userId);
      const rows = this.timestampCandidates(ts, dir);
      for (const row of rows) {
        const se = this.events.get(row.event_id) ?? this.fromRow(row);
        if (visible(se)) return { event_id: se.ev.event_id, origin_server_ts: se.ev.origin_server_ts };
      }
      fail(404, "M_NOT_FOUND", "No event found");
    });
  }

  /** GET /_matrix/federation/v1/timestamp_to_event: as timestampToEvent, with the requesting
   *  server's history visibility (serverMaySee) instead of a user's. */
  async fedTimestampToEvent(origin: string, ts: number, dir: "f" | "b"): Promise<RoomResult<{ event_id: string; origin_server_ts: number }>> {
    return this.wrap(() => {
      // Only a server in the room reads it, like every federation read (see requireServer).
      this.requireServer(origin, { inRoom: true });
      const rows = this.timestampCandidates(ts, dir);
      for (const row of rows) {
        const se = this.events.get(row.event_id) ?? this.fromRow(row);
        if (se.status === "rejected") continue;
        if (this.serverMaySee(origin, se)) return { event_id: se.ev.event_id, origin_server_ts: se.ev.origin_server_ts };
      }
      fail(404, "M_NOT_FOUND", "No event found");
    });
  }

  /** The stored PDU (federation format) of an event, with its status; null if unknown. For
   *  federation (/event, backfill) and tests. */
  async getPdu(eventId: string): Promise<{ pdu: PDU; status: string; stream: number | null } | null> {
    if (!this.rv) return null;
    const se = this.loadEvent(eventId);
    return se ? { pdu: se.ev.pdu, status: se.status, stream: se.stream } : null;
  }

  /** Current forward extremities (event IDs). */
  async getForwardExtremities(): Promise<string[]> {
    return this.sql.exec<{ event_id: string }>("SELECT event_id FROM extremities").toArray().map((r) => r.event_id);
  }

  /** Stripped state for invites and knocks (spec: "Stripped state"): the sync and federation
   *  invite paths use it. */
  async getStrippedState(): Promise<JsonObject[]> {
    if (!this.rv) return [];
    if (this.isPartial()) {
      const row = this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'stripped_state'").toArray()[0];
      return row ? (JSON.parse(row.value) as JsonObject[]) : [];
    }
    const types = ["m.room.create", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption"];
    const out: JsonObject[] = [];
    const st = this.groupState(this.currentGroup);
    for (const t of types) {
      const id = st.get(stateKey(t, ""));
      const se = id ? this.loadEvent(id) : undefined;
      if (se) {
        const c = this.toClient(se, undefined);
        out.push({ type: c.type, state_key: c.state_key!, content: c.content, sender: c.sender });
      }
    }
    return out;
  }

  /** /sync's view of this room for one user between two stream positions (the user's sync hub
   *  supplies them): timeline, state / state_after, summary. See durable-objects/room-sync.ts. */
  async syncRoom(req: Requester, q: RoomSyncQuery): Promise<RoomResult<RoomSyncView>> {
    return this.wrap(() => {
      this.requireRoom();
      if (this.isPartial()) return this.partialSyncView(req, q);
      return syncRoomView<StoredEvent>(
        {
          // IDs, then the event cache: the newest events of a room are what every sync asks for
          // (parsing their PDUs again on each sync was a third of syncRoom at 300 rooms).
          eventsDesc: (upTo, since, limit) =>
            this.sql
              .exec<{ event_id: string }>("SELECT event_id FROM events WHERE stream IS NOT NULL AND stream <= ? AND stream > ? ORDER BY stream DESC LIMIT ?", upTo, since, limit)
              .toArray()
              .map((r) => this.loadEvent(r.event_id)!),
          visibleFor: (u) => this.visibilityFor(u),
          joinedSince: (u) => {
            // Start of the user's current unbroken run of joins (null when not joined now).
            let since: number | null = null;
            for (const r of this.sql.exec<{ membership: string; stream: number }>("SELECT membership, stream FROM memberships WHERE user_id = ? ORDER BY stream DESC LIMIT 50", u)) {
              if (r.membership !== "join") break;
              since = r.stream;
            }
            return since;
          },
          stateAt: (n) => this.groupState(this.groupAtStream(n)),
          load: (id) => this.loadEvent(id),
          toClient: (e, now) => this.toClient(e, req, now),
          bundle: (es, out) => bundleAggregations(this.relationsAccess(req), es, out),
          toFederation: (e, now) => this.toFederationFormat(e, req, now),
          memberships: () => new Map(this.sql.exec<{ event_id: string; membership: string }>("SELECT event_id, membership FROM memberships").toArray().map((r) => [r.event_id, r.membership])),
        },
        req.userId,
        q,
      );
    });
  }

  /** /sync's view of a room we hold only the requester's own member event of (an invite
   *  rejected or a knock retracted through another server, or an invite rejected here when the
   *  inviting server could not be reached): that event, when it is in the range, as the timeline
   *  (and state_after), so the client sees the leave and drops the invite. */
  private partialSyncView(req: Requester, q: RoomSyncQuery): RoomSyncView {
    const se = this.partialMember(req.userId);
    const row = this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", `partial_stream\u0000${req.userId}`).toArray()[0];
    const at = row ? Number(row.value) : q.upTo;
    const events = se && (q.since === null || q.fullState || q.since < at) && at <= q.upTo ? [this.toClient(se, req)] : [];
    const view: RoomSyncView = {
      timeline: { events, limited: false, prev_batch: streamToken(q.upTo) },
      summary: { "m.joined_member_count": 0, "m.invited_member_count": 0 },
    };
    if (q.useStateAfter) view.state_after = { events };
    else view.state = { events: [] };
    return view;
  }

  /** Accepted events after stream position `since` (exclusive), up to `limit`, oldest first,
   *  filtered by the user's visibility — the building block for /sync timelines. `limited` is
   *  true when more events than `limit` exist after `since` (the newest `limit` are returned). */
  async getTimelineSince(req: Requester, since: number, limit: number): Promise<RoomResult<{ events: JsonObject[]; limited: boolean; prevBatch: string; stream: number }>> {
    return this.wrap(() => {
      this.requireRoom();
      const visible = this.visibilityFor(req.userId);
      const rows = this.sql.exec<EventRow>("SELECT * FROM events WHERE stream IS NOT NULL AND stream > ? ORDER BY stream DESC LIMIT ?", since, limit + 1).toArray();
      const limited = rows.length > limit;
      const take = rows.slice(0, limit).reverse().map((r) => this.events.get(r.event_id) ?? this.fromRow(r));
      const now = Date.now();
      const first = take[0]?.stream ?? this.stream + 1;
      return {
        events: this.clientEvents(take.filter(visible), req, now),
        limited,
        prevBatch: streamToken(first - 1),
        stream: this.stream,
      };
    });
  }

  // -------------------------------------------------------------------------------------------
  // Peeking (module "Room Previews"): GET /events?room_id= waits here for the room's next event.

  private peekWaiters = new Set<() => void>();

  private wakePeekers(): void {
    for (const wake of this.peekWaiters) wake();
  }

  private nextEvent(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.peekWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.peekWaiters.add(wake);
    });
  }

  /** GET /events?room_id=: the events after `from` (default: now) that the requester may see —
   *  a non-member only those of world_readable history ("Room Previews", server behaviour) —
   *  waiting up to `timeoutMs` for one. `end` continues the stream. */
  async peekEvents(req: Requester, q: { from?: string; timeoutMs: number }): Promise<RoomResult<{ start: string; end: string; chunk: JsonObject[] }>> {
    const deadline = Date.now() + q.timeoutMs;
    const start = q.from ?? streamToken(this.stream);
    let from = start;
    for (;;) {
      const upTo = this.stream;
      const page = await this.getMessages(req, { dir: "f", from, to: streamToken(upTo), limit: PEEK_LIMIT });
      if (!page.ok) return page;
      const end = page.value.end ?? streamToken(upTo);
      const wait = deadline - Date.now();
      if (page.value.chunk.length > 0 || wait <= 0) return { ok: true, value: { start, end, chunk: page.value.chunk } };
      from = end;
      // Nothing visible up to the room's newest event: wait for the next one.
      if (end === streamToken(upTo) && this.stream === upTo) await this.nextEvent(wait);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Guest access (module "Guest Access", server behaviour): when m.room.guest_access stops being
  // can_join, "the server MUST set those users' m.room.member state to leave".

  private guestAccessChanged = false;

  /** Our joined guests leave, each as its own sender (as Synapse does: no power level needed,
   *  and guest accounts are this server's business). Runs after the write that changed the
   *  room's guest access, queued behind it; that write's RPC waits for it (fannedOut). */
  private async kickGuests(): Promise<void> {
    this.guestAccessChanged = false;
    try {
      const id = this.groupState(this.currentGroup).get(GUEST_ACCESS_KEY);
      if (id && this.loadEvent(id)?.ev.content.guest_access === "can_join") return;
      const local = this.fanOutFacts().joinedLocal;
      const guests: string[] = [];
      for (let i = 0; i < local.length; i += 90) {
        const chunk = local.slice(i, i + 90);
        const rows = await this.env.DB.prepare(`SELECT user_id FROM users WHERE is_guest = 1 AND user_id IN (${chunk.map(() => "?").join(", ")})`)
          .bind(...chunk)
          .all<{ user_id: string }>();
        guests.push(...rows.results.map((r) => r.user_id));
      }
      for (const g of guests) {
        const r = await this.createLocalEvent({ type: "m.room.member", state_key: g, sender: g, content: { membership: "leave" } });
        if (!r.ok) console.error("guest leave refused", g, r.error);
      }
    } catch (e) {
      console.error("kickGuests failed", e);
    }
  }

  // ===========================================================================================
  // Federation (Server-Server API): serving other servers, and taking part in rooms that were
  // created elsewhere. The Worker routes (src/api/federation/rooms.ts) and the joining side
  // (src/services/federation/membership.ts) call these.

  /** A room we only know through an invite or knock (stripped state, our member event as an
   *  outlier), until we join it. */
  private isPartial(): boolean {
    return this.sql.exec("SELECT 1 FROM meta WHERE key = 'partial' AND value = '1'").toArray().length > 0;
  }

  private partialMember(userId: string): StoredEvent | undefined {
    const row = this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", `partial_member\u0000${userId}`).toArray()[0];
    return row ? this.loadEvent(row.value) : undefined;
  }

  /** Whether any user of `server` is joined now (Synapse's "host in room" check for /state,
   *  /backfill, /get_missing_events, /event_auth). */
  private serverInRoom(server: string): boolean {
    return this.fanOutFacts().joinedServers.has(server);
  }

  /** History visibility for a server (Server-Server API: servers "should not send events the
   *  requesting server is not allowed to see"): a server may see an event if any of its users
   *  could. world_readable and shared: any server (callers require it to be in the room now, so
   *  one of its users joined after the event); invited: one of its users invited or joined at
   *  the event; joined: joined.
   *  Outliers (auth and state events, no place in the timeline) are served as they are. */
  private serverMaySee(server: string, se: StoredEvent): boolean {
    if (se.stateAfter === null && se.stream === null) return true;
    const st = this.groupState(se.stateBefore);
    const hvId = st.get(HV_KEY);
    const hv = parseHistoryVisibility(hvId ? this.loadEvent(hvId)?.ev.content : undefined);
    if (hv === "world_readable" || hv === "shared") return true;
    const suffix = `:${server}`;
    for (const [k, id] of st) {
      if (!k.startsWith("m.room.member\u0000") || !k.endsWith(suffix)) continue;
      const m = this.loadEvent(id)?.ev.content.membership;
      if (m === "join" || (hv === "invited" && m === "invite")) return true;
    }
    return false;
  }

  /** The PDU as we send it over federation: no `unsigned`; redacted when redacted here, when
   *  the server may not see it, or when its sender was erased and the server was not in the
   *  room then (the DAG stays intact either way). */
  private wirePdu(se: StoredEvent, server?: string): PDU {
    const { unsigned: _u, ...pdu } = se.ev.pdu;
    void _u;
    if ((server !== undefined && (!this.serverMaySee(server, se) || this.erasedForServer(se, server))) || this.redactionOf(se)) return redactEvent(pdu as PDU, this.rv!);
    return pdu as PDU;
  }

  /** The auth chain of a set of events (their auth events, recursively), in DAG order. */
  private authChain(ids: Iterable<string>): StoredEvent[] {
    const seen = new Set<string>();
    const out: StoredEvent[] = [];
    const stack = [...ids].flatMap((id) => this.loadEvent(id)?.ev.auth_events ?? []);
    while (stack.length) {
      const id = stack.pop()!;
      if (seen.has(id)) continue;
      seen.add(id);
      const se = this.loadEvent(id);
      if (!se) continue;
      out.push(se);
      for (const a of se.ev.auth_events) if (!seen.has(a)) stack.push(a);
    }
    return out.sort((a, b) => a.ev.depth - b.ev.depth);
  }

  /** Common preamble of the serving endpoints: a full room, an allowed and present server.
   *  Every federation read passes inRoom: true: a server with no user joined now (never joined,
   *  or all its users left, were kicked or banned) reads nothing, whatever the history
   *  visibility (as Synapse's "host in room" check); serverMaySee then applies the visibility
   *  at each event. */
  private requireServer(origin: string, opts: { inRoom: boolean }): void {
    this.requireRoom();
    if (this.isPartial()) fail(404, "M_NOT_FOUND", "Unknown room");
    if (opts.inRoom && !this.serverInRoom(origin)) fail(403, "M_FORBIDDEN", "Your server has no joined member in this room");
  }

  /** GET /v1/make_join, /v1/make_leave, /v1/make_knock: an unsigned membership event template
   *  on top of our forward extremities, after checking the auth rules would allow it now. */
  async fedTemplate(args: { userId: string; membership: "join" | "leave" | "knock"; authorisedVia?: string }): Promise<RoomResult<{ room_version: string; event: JsonObject }>> {
    return this.serial(async () => {
      try {
        const rv = this.requireRoom();
        if (this.isPartial()) fail(404, "M_NOT_FOUND", "Unknown room");
        const content: JsonObject = { membership: args.membership };
        if (args.authorisedVia) content.join_authorised_via_users_server = args.authorisedVia;
        const shape = { type: "m.room.member", sender: args.userId, state_key: args.userId, content };
        const { prevIds, prevs, authIds } = this.newEventFrame(shape);
        // Refuse early what the auth rules would refuse (spec: 403 "not allowed to join").
        const probe: RoomEvent = { ...shape, event_id: "$probe", room_id: this.roomId!, origin_server_ts: Date.now(), depth: 0, prev_events: prevIds, auth_events: authIds, pdu: {} as PDU };
        const r = checkEventAuth(probe, this.authMapFrom(this.groupState(this.currentGroup), probe), rv);
        if (!r.allowed) fail(403, "M_FORBIDDEN", `Not allowed: ${r.reason}`);
        const event: JsonObject = {
          room_id: this.roomId!,
          sender: args.userId,
          state_key: args.userId,
          type: "m.room.member",
          content,
          origin: domainOf(args.userId),
          origin_server_ts: Date.now(),
          depth: Math.max(...prevs.map((p) => p.ev.depth)) + 1,
          prev_events: await this.eventRefs(prevIds),
          auth_events: await this.eventRefs(authIds),
        };
        return { ok: true as const, value: { room_version: rv.id, event } };
      } catch (e) {
        return asRoomError(e);
      }
    });
  }

  /** PUT /v2/send_join, /v2/send_leave, /v1/send_knock: check that the event is the membership
   *  change it claims to be from the server that sent it, co-sign a restricted join we
   *  authorised, admit it, and forward it to the other servers in the room. For joins the
   *  answer carries the state before the join and its auth chain. */
  async fedSendMembership(args: {
    eventId: string;
    pdu: PDU;
    origin: string;
    membership: "join" | "leave" | "knock";
    omitMembers?: boolean;
  }): Promise<RoomResult<{ state?: PDU[]; auth_chain?: PDU[]; servers_in_room?: string[]; event?: PDU; members_omitted?: boolean; stripped?: JsonObject[] }>> {
    let accepted = false;
    let newServer = false;
    const r = await this.serial(async () => {
      try {
        const rv = this.requireRoom();
        if (this.isPartial()) fail(404, "M_NOT_FOUND", "Unknown room");
        let pdu = args.pdu;
        if (pdu.type !== "m.room.member" || typeof pdu.state_key !== "string" || pdu.state_key !== pdu.sender) fail(400, "M_BAD_JSON", "Not a membership event of its sender");
        if (pdu.content?.membership !== args.membership) fail(400, "M_BAD_JSON", `Membership must be ${args.membership}`);
        if (domainOf(pdu.sender) !== args.origin) fail(403, "M_FORBIDDEN", "The sender is not a user of the requesting server");
        if (pdu.room_id !== this.roomId) fail(400, "M_BAD_JSON", "Event is for another room");
        let eventId: string;
        try {
          eventId = await computeEventId(pdu, rv);
        } catch {
          fail(400, "M_BAD_JSON", "Malformed event");
        }
        if (eventId !== args.eventId) fail(400, "M_BAD_JSON", "Event ID does not match the event");
        // Restricted rooms: the resident server whose user authorised the join signs it too.
        const via = pdu.content.join_authorised_via_users_server;
        if (args.membership === "join" && rv.restrictedJoins && typeof via === "string" && domainOf(via) === this.serverName) {
          const key = await this.signingKey();
          const signed = await signJson(redactEvent(pdu, rv), this.serverName!, key, { strict: rv.strictCanonicalJson });
          pdu = { ...pdu, signatures: { ...pdu.signatures, [this.serverName!]: signed.signatures[this.serverName!] } };
        }
        newServer = args.membership === "join" && !this.fanOutFacts().joinedServers.has(args.origin);
        const out = await this.admitInner(pdu, args.origin, { local: false, rebroadcast: true });
        if (out.status === "missing") fail(400, "M_BAD_JSON", "Event refers to events this server does not have");
        if (out.status !== "accepted" && out.status !== "duplicate") fail(403, "M_FORBIDDEN", `Event refused: ${out.reason ?? out.status}`);
        accepted = out.status === "accepted";
        const se = this.loadEvent(eventId)!;
        if (se.status !== "accepted") fail(403, "M_FORBIDDEN", `Event refused: ${se.status}`);
        if (args.membership === "leave") return { ok: true as const, value: {} };
        if (args.membership === "knock") return { ok: true as const, value: { stripped: await this.getStrippedState() } };
        // "The resolved current room state prior to the join event" and its auth chain.
        const stateMap = this.groupState(se.stateBefore);
        let stateIds = [...stateMap.values()];
        let omitted = false;
        if (args.omitMembers) {
          // Keep the members a client needs to name the room (heroes) when it has no name.
          const named = stateMap.has(stateKey("m.room.name", "")) || stateMap.has(stateKey("m.room.canonical_alias", ""));
          const heroes = named ? [] : [...stateMap.keys()].filter((k) => k.startsWith("m.room.member\u0000") && splitStateKey(k)[1] !== pdu.sender).map((k) => splitStateKey(k)[1]).sort().slice(0, 5);
          const keep = new Set(heroes.map((u) => stateMap.get(memberKey(u))!));
          // By state key, not by loading each event: a large room's members would each be a read.
          stateIds = [...stateMap].filter(([k, id]) => keep.has(id) || !k.startsWith("m.room.member\u0000")).map(([, id]) => id);
          omitted = true;
        }
        const inState = new Set(stateIds);
        const chain = this.authChain([...stateIds, eventId]).filter((x) => !(args.omitMembers && inState.has(x.ev.event_id)));
        const value: { state: PDU[]; auth_chain: PDU[]; servers_in_room: string[]; event?: PDU; members_omitted?: boolean } = {
          state: stateIds.map((id) => this.wirePdu(this.loadEvent(id)!)),
          auth_chain: chain.map((x) => this.wirePdu(x)),
          servers_in_room: [...this.fanOutFacts().joinedServers],
        };
        if (pdu !== args.pdu) value.event = pdu;
        if (omitted) value.members_omitted = true;
        return { ok: true as const, value };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (accepted) await this.fannedOut([args.eventId]);
    // A server that just joined was handed the state before its join, which covers only the
    // extremities its template cited; events on other branches (concurrent joins, more branches
    // than one event cites) were never sent to it. One merge down to a single extremity sends
    // it an event citing all of them, and it fetches what it lacks (get_missing_events).
    if (accepted && newServer) this.mergeExtremitiesLater(1);
    // Concurrent joins through make_join/send_join fork the DAG, and templates cite only the
    // deepest MAX_PREV_EVENTS extremities: the others were never cited again (165 of them after
    // 3,500 joins, 16 in flight), and the current state — the resolution over every extremity's
    // state — grew costlier with each event. Past twice what one event cites, merge.
    else if (accepted && this.extremityCount() > 2 * MAX_PREV_EVENTS) this.mergeExtremitiesLater();
    return r;
  }

  /** GET /v1/state_ids and /v1/state: the state before `eventId` (Synapse: "the state at the
   *  event, not including said event") and its auth chain. */
  async fedStateAt(origin: string, eventId: string, ids: boolean): Promise<RoomResult<{ pdu_ids?: string[]; auth_chain_ids?: string[]; pdus?: PDU[]; auth_chain?: PDU[] }>> {
    return this.wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const se = this.loadEvent(eventId);
      if (!se || se.stream === null || se.status !== "accepted" || !this.serverMaySee(origin, se)) fail(404, "M_NOT_FOUND", "Event not found");
      const state = [...this.groupState(se.stateBefore).values()];
      const chain = this.authChain(state);
      if (ids) return { pdu_ids: state, auth_chain_ids: chain.map((x) => x.ev.event_id) };
      return { pdus: state.map((id) => this.wirePdu(this.loadEvent(id)!)), auth_chain: chain.map((x) => this.wirePdu(x)) };
    });
  }

  /** GET /v1/event_auth: the auth chain of one event. */
  async fedEventAuth(origin: string, eventId: string): Promise<RoomResult<PDU[]>> {
    return this.wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const se = this.loadEvent(eventId);
      if (!se || !this.serverMaySee(origin, se)) fail(404, "M_NOT_FOUND", "Event not found");
      return this.authChain([eventId]).map((x) => this.wirePdu(x));
    });
  }

  /** GET /v1/event: one event to a server in the room; redacted when the server may not see
   *  it (the redacted form keeps the DAG intact). */
  async fedEvent(origin: string, eventId: string): Promise<RoomResult<PDU>> {
    return this.wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const se = this.loadEvent(eventId);
      if (!se || se.status === "rejected") fail(404, "M_NOT_FOUND", "Event not found");
      return this.wirePdu(se, origin);
    });
  }

  /** GET /v1/backfill: up to `limit` events before and including `v`, walking prev_events
   *  breadth-first, newest (deepest) first. */
  async fedBackfill(origin: string, v: string[], limit: number): Promise<RoomResult<PDU[]>> {
    return this.wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const out: StoredEvent[] = [];
      const seen = new Set<string>();
      let frontier = v.filter((id) => this.loadEvent(id));
      while (frontier.length && out.length < limit) {
        const level: StoredEvent[] = [];
        for (const id of frontier) {
          if (seen.has(id)) continue;
          seen.add(id);
          const se = this.loadEvent(id);
          if (se && se.status !== "rejected" && !isOutlier(se)) level.push(se);
        }
        level.sort((a, b) => b.ev.depth - a.ev.depth || (b.stream ?? 0) - (a.stream ?? 0));
        for (const se of level) if (out.length < limit) out.push(se);
        frontier = level.flatMap((se) => se.ev.prev_events).filter((id) => !seen.has(id));
      }
      return out.map((se) => this.wirePdu(se, origin));
    });
  }

  /** POST /v1/get_missing_events: events between `earliest` (exclusive) and `latest`
   *  (exclusive), walking back from `latest`, at or above `minDepth`, oldest first. */
  async fedMissingEvents(origin: string, earliest: string[], latest: string[], limit: number, minDepth: number): Promise<RoomResult<PDU[]>> {
    return this.wrap(() => {
      this.requireServer(origin, { inRoom: true });
      const stop = new Set(earliest);
      const seen = new Set<string>(latest);
      const out: StoredEvent[] = [];
      let frontier = latest.flatMap((id) => this.loadEvent(id)?.ev.prev_events ?? []);
      while (frontier.length && out.length < limit) {
        const next: string[] = [];
        for (const id of frontier) {
          if (seen.has(id) || stop.has(id)) continue;
          seen.add(id);
          const se = this.loadEvent(id);
          if (!se || isOutlier(se) || se.ev.depth < minDepth) continue;
          if (out.length < limit) out.push(se);
          next.push(...se.ev.prev_events);
        }
        frontier = next;
      }
      return out.sort((a, b) => a.ev.depth - b.ev.depth).map((se) => this.wirePdu(se, origin));
    });
  }

  /** PUT /v2/invite on our side, and our user's knock/rejection in a room we are not in: keep
   *  the (already signed) member event as an outlier and the stripped state, and tell the
   *  user's sync hub. The room stays "partial" until a join seeds it. */
  async storeRemoteMembership(args: { serverName: string; roomId: string; roomVersion: string; pdu: PDU; stripped?: JsonObject[] }): Promise<RoomResult<{ eventId: string }>> {
    const r = await this.serial(async () => {
      try {
        const rv = getRoomVersion(args.roomVersion);
        if (!rv) fail(400, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version");
        if (this.roomId && !this.isPartial()) {
          // We are in the room already: the event is an ordinary PDU.
          const out = await this.admitInner(args.pdu, domainOf(args.pdu.sender), { local: false });
          if (out.status === "missing" || out.status === "invalid" || out.status === "rejected") fail(403, "M_FORBIDDEN", out.reason ?? out.status);
          return { ok: true as const, value: { eventId: out.eventId!, fan: out.status === "accepted" ? out.eventId : undefined } };
        }
        this.roomId = args.roomId;
        this.rv = rv;
        this.serverName = args.serverName;
        const ev = await toRoomEvent(args.pdu, rv).catch((e: Error) => fail(400, "M_BAD_JSON", e.message));
        if (ev.room_id !== args.roomId || ev.type !== "m.room.member" || !ev.state_key) fail(400, "M_BAD_JSON", "Not a membership event for this room");
        const sigError = await this.checkSignatures(args.pdu, rv);
        if (sigError) fail(403, "M_FORBIDDEN", sigError);
        const stream = this.stream + 1;
        this.ctx.storage.transactionSync(() => {
          this.setMeta("room_id", args.roomId);
          this.setMeta("room_version", rv.id);
          this.setMeta("server_name", args.serverName);
          this.setMeta("partial", "1");
          if (args.stripped) this.setMeta("stripped_state", JSON.stringify(args.stripped));
          this.setMeta(`partial_member\u0000${ev.state_key}`, ev.event_id);
          this.setMeta(`partial_stream\u0000${ev.state_key}`, stream);
          this.setMeta("stream", stream);
          this.sql.exec(
            `INSERT OR REPLACE INTO events (event_id, stream, depth, type, state_key, sender, origin_server_ts, pdu, status, state_before, state_after, received_ts)
             VALUES (?, NULL, ?, ?, ?, ?, ?, ?, 'accepted', NULL, NULL, ?)`,
            ev.event_id, ev.depth, ev.type, ev.state_key!, ev.sender, ev.origin_server_ts, JSON.stringify(ev.pdu), Date.now(),
          );
        });
        this.stream = stream;
        this.events.delete(ev.event_id);
        const membership = String(ev.content.membership);
        await upsertMembership(this.env.DB, { roomId: args.roomId, userId: ev.state_key!, membership, eventId: ev.event_id, stream, ts: Date.now() }).run();
        const notice = buildNotice({
          roomId: args.roomId,
          stream,
          event: { event_id: ev.event_id, room_id: args.roomId, type: ev.type, sender: ev.sender, content: ev.content, origin_server_ts: ev.origin_server_ts, state_key: ev.state_key! },
          memberCount: 0,
          senderPowerLevel: 0,
          powerLevels: undefined,
          encrypted: false,
        });
        if (ev.state_key!.endsWith(`:${args.serverName}`)) await this.hubs.notify(notice, [ev.state_key!]);
        return { ok: true as const, value: { eventId: ev.event_id, fan: undefined as string | undefined } };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (!r.ok) return r;
    if (r.value.fan) await this.fannedOut([r.value.fan]);
    return { ok: true, value: { eventId: r.value.eventId } };
  }

  /** Whether this DO holds only an invite/knock for the room (see storeRemoteMembership). */
  async getPartialInfo(): Promise<{ partial: boolean; roomVersion?: string; members: Record<string, { membership: string; sender: string; eventId: string }> }> {
    const partial = this.isPartial();
    const members: Record<string, { membership: string; sender: string; eventId: string }> = {};
    if (partial) {
      for (const row of this.sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta WHERE key LIKE 'partial_member%'").toArray()) {
        const se = this.loadEvent(row.value);
        if (se) members[row.key.split("\u0000")[1]] = { membership: String(se.ev.content.membership), sender: se.ev.sender, eventId: se.ev.event_id };
      }
    }
    return { partial, roomVersion: this.rv?.id, members };
  }

  /** Joining a room held elsewhere (Server-Server API "Joining Rooms"): validate the state and
   *  auth chain a resident server returned from send_join — signatures, content hashes (an
   *  event whose hash does not match is redacted), the auth rules for each event in auth-chain
   *  order — make that state the room's starting state and admit our join on top of it. */
  async seedFromJoin(args: { serverName: string; roomId: string; roomVersion: string; origin: string; join: PDU; state: unknown[]; authChain: unknown[] }): Promise<RoomResult<{ eventId: string; stream: number; rejected: number }>> {
    let joinId: string | undefined;
    const r = await this.serial(async () => {
      try {
        const rv = getRoomVersion(args.roomVersion);
        if (!rv) fail(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version");
        // Another local user's join may have seeded the room meanwhile (joins at once through
        // federation): then this join goes on top of it the same way, its state merged in.
        const seeded = !!this.roomId && !this.isPartial();
        if (seeded && (this.roomId !== args.roomId || this.rv?.id !== rv.id)) fail(409, "M_UNKNOWN", "Another room lives here");
        // Rejoining after this server left: our copy stopped at the leave, and its forward
        // extremities are long superseded. The resident server's state (merged in below) is the
        // room now; our join becomes the one extremity.
        const rejoin = seeded && this.fanOutFacts().joinedLocal.length === 0;
        this.roomId = args.roomId;
        this.rv = rv;
        this.serverName = args.serverName;
        // Parse everything, keeping the first copy of each event.
        const byId = new Map<string, { pdu: PDU; ev: RoomEvent }>();
        const stateIds = new Set<string>();
        const parse = async (raw: unknown, inState: boolean) => {
          if (!raw || typeof raw !== "object" || Array.isArray(raw)) return;
          try {
            const pdu = raw as PDU;
            const ev = await toRoomEvent(pdu, rv);
            if (ev.room_id !== args.roomId) return;
            if (!byId.has(ev.event_id)) byId.set(ev.event_id, { pdu, ev });
            if (inState) stateIds.add(ev.event_id);
          } catch {
            /* malformed: dropped */
          }
        };
        for (const x of args.authChain) await parse(x, false);
        for (const x of args.state) await parse(x, true);
        const rejected = await this.admitOutlierBatch([...byId.values()], args.origin);
        // The starting state: the state events that passed.
        const state: StateIdMap = new Map();
        const passed = this.acceptedAmong([...stateIds]);
        for (const id of stateIds) {
          const ev = byId.get(id)!.ev;
          if (!passed.has(id) || ev.state_key === undefined) continue;
          const k = stateKey(ev.type, ev.state_key);
          if (state.has(k)) fail(400, "M_BAD_JSON", `Two state events for ${ev.type}/${ev.state_key}`);
          state.set(k, id);
        }
        const create = state.get(CREATE_KEY);
        if (!create) fail(400, "M_BAD_JSON", "The returned state has no create event");
        if (this.loadEvent(create)!.ev.content.room_version !== undefined && String(this.loadEvent(create)!.ev.content.room_version) !== rv.id) {
          fail(400, "M_BAD_JSON", "The create event names another room version");
        }
        const stale = rejoin ? this.sql.exec<{ event_id: string }>("SELECT event_id FROM extremities").toArray().map((x) => x.event_id) : [];
        if (rejoin) this.sql.exec("DELETE FROM extremities");
        const out = await this.admitInner(args.join, args.serverName, { local: false, extraStates: [state] });
        if (rejoin && out.status !== "accepted") for (const id of stale) this.sql.exec("INSERT OR IGNORE INTO extremities (event_id) VALUES (?)", id);
        if (seeded && out.status === "duplicate") {
          // The resident server's copy of our join reached us first.
          const se = this.loadEvent(out.eventId!)!;
          if (se.status !== "accepted" || se.stream === null) fail(403, "M_FORBIDDEN", `Our join was refused: ${se.status}`);
          return { ok: true as const, value: { eventId: out.eventId!, stream: se.stream, rejected } };
        }
        if (out.status !== "accepted") fail(403, "M_FORBIDDEN", `Our join was refused: ${out.reason ?? out.status}`);
        joinId = out.eventId;
        this.setMeta("room_id", args.roomId);
        this.setMeta("room_version", rv.id);
        this.setMeta("server_name", args.serverName);
        this.sql.exec("DELETE FROM meta WHERE key = 'partial' OR key = 'stripped_state' OR key LIKE 'partial_member%'");
        // The state we joined with came whole, not as changes: the directory learns all of it.
        for (const k of this.groupState(this.currentGroup).keys()) {
          if (k.startsWith("m.room.member\u0000") || k === HV_KEY || k === stateKey("m.room.join_rules", "")) this.directoryDirty.add(k);
        }
        await this.mirrorDirectory();
        const creator = this.loadEvent(create)!.ev.sender;
        // (joinRemoteRoom registered the room before send_join, without its creator.)
        await this.env.DB.prepare("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT(room_id) DO UPDATE SET creator = excluded.creator")
          .bind(args.roomId, rv.id, creator, Date.now())
          .run();
        return { ok: true as const, value: { eventId: out.eventId!, stream: out.stream!, rejected } };
      } catch (e) {
        if (!joinId && !this.sql.exec("SELECT 1 FROM meta WHERE key = 'room_id'").toArray().length) {
          this.roomId = undefined;
          this.rv = undefined;
        }
        return asRoomError(e);
      }
    });
    if (joinId) await this.fannedOut([joinId]);
    return r;
  }

  /** A room's state and auth chain from another server, stored as outliers: every PDU's hashes
   *  and signatures are checked first (no storage), then each is authorised against its
   *  auth_events and stored in auth order (Kahn's algorithm over auth_events, depth breaking
   *  ties), OUTLIER_BATCH to a transaction rather than one each: for a 30,000-event state the
   *  commits were a large part of the join. `events` are parsed from their PDUs here (toRoomEvent),
   *  one per event ID. Returns how many were not stored (invalid, rejected, missing auth events,
   *  auth cycles). */
  private async admitOutlierBatch(events: { pdu: PDU; ev: RoomEvent }[], origin: string): Promise<number> {
    const mode: AdmitMode = { local: false, outlier: true };
    let refused = 0;
    const checked = new Map<string, RoomEvent>();
    for (const { pdu, ev } of events) {
      const c = await this.checkPdu(pdu, origin, mode, ev.event_id);
      if ("ev" in c) checked.set(ev.event_id, c.ev);
      else if (c.status !== "duplicate") refused++;
    }
    // Auth order over every event given (also those refused or already held: their dependants
    // wait for them, then find them stored or not).
    const pending = new Map(events.map((x) => [x.ev.event_id, x.ev]));
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
    for (const id of pending.keys()) if (checked.delete(id)) refused++; // auth cycles: never admitted
    const toStore = order.filter((id) => checked.has(id));
    for (let i = 0; i < toStore.length; i += OUTLIER_BATCH) {
      try {
        this.ctx.storage.transactionSync(() => {
          for (const id of toStore.slice(i, i + OUTLIER_BATCH)) {
            const out = this.decideAndPersist(checked.get(id)!, mode);
            if (out.status !== "accepted" && out.status !== "duplicate") refused++;
          }
        });
      } catch (e) {
        this.reloadAfterFailure();
        throw e;
      }
    }
    return refused;
  }

  /** Which of these events are stored and accepted (90 to a query: at most 100 parameters). */
  private acceptedAmong(ids: string[]): Set<string> {
    return new Set(this.storedAmong(ids, "status = 'accepted'").map((r) => r.event_id));
  }

  /** Rows of the stored events among `ids` that match `where`, 90 IDs to a query. */
  private storedAmong(ids: string[], where = "1"): { event_id: string; type: string; state_key: string | null; status: string }[] {
    const out: { event_id: string; type: string; state_key: string | null; status: string }[] = [];
    for (let i = 0; i < ids.length; i += 90) {
      const chunk = ids.slice(i, i + 90);
      out.push(
        ...this.sql.exec<{ event_id: string; type: string; state_key: string | null; status: string }>(
          `SELECT event_id, type, state_key, status FROM events WHERE ${where} AND event_id IN (${chunk.map(() => "?").join(", ")})`,
          ...chunk,
        ),
      );
    }
    return out;
  }

  /** For filling a gap with another server's state at an event (/state_ids): which of these
   *  events we hold, and the type and state key of those that are state and not rejected. One
   *  call for a whole state instead of one per event (20,000 calls per gap in a 10,000-member
   *  room). */
  async heldAmong(ids: string[]): Promise<{ held: string[]; state: { event_id: string; type: string; state_key: string }[] }> {
    const rows = this.rv ? this.storedAmong(ids) : [];
    return {
      held: rows.map((r) => r.event_id),
      state: rows.filter((r) => r.state_key !== null && r.status !== "rejected").map((r) => ({ event_id: r.event_id, type: r.type, state_key: r.state_key! })),
    };
  }

  /** Admit events received over federation as outliers (missing auth events, state at a gap),
   *  as a join's state is (admitOutlierBatch). Returns how many were not stored. */
  async admitOutliers(pdus: PDU[], origin: string): Promise<number> {
    return this.serial(async () => {
      const rv = this.requireRoom();
      const byId = new Map<string, { pdu: PDU; ev: RoomEvent }>();
      for (const pdu of pdus) {
        const ev = await toRoomEvent(pdu, rv).catch(() => undefined);
        if (ev && !byId.has(ev.event_id)) byId.set(ev.event_id, { pdu, ev });
      }
      return this.admitOutlierBatch([...byId.values()], origin);
    });
  }

  /** Admit a PDU whose missing prev events' states the caller fetched (/state_ids). */
  async admitWithStates(pdu: PDU, origin: string, states: Record<string, string>[]): Promise<AdmitOutcome> {
    const extra = states.map((s) => new Map(Object.entries(s)) as StateIdMap);
    const out = await this.serial(() => this.admitInner(pdu, origin, { local: false, extraStates: extra }));
    if (out.eventId && out.status === "accepted") await this.fannedOut([out.eventId]);
    return out;
  }

  /** The oldest events of our timeline and the prev events they point at that we do not
   *  hold: where /backfill continues from. */
  async getBackfillPoints(): Promise<{ oldestStream: number; missing: string[]; complete: boolean }> {
    if (!this.rv) return { oldestStream: 0, missing: [], complete: true };
    const oldest = this.sql.exec<{ m: number | null }>("SELECT MIN(stream) AS m FROM events WHERE stream IS NOT NULL").one().m ?? 0;
    const rows = this.sql
      .exec<{ prev: string }>(
        `SELECT DISTINCT e.prev_event_id AS prev FROM edges e JOIN events x ON x.event_id = e.event_id
         WHERE x.stream IS NOT NULL AND x.stream <= ? AND NOT EXISTS (SELECT 1 FROM events y WHERE y.event_id = e.prev_event_id AND y.stream IS NOT NULL)
         LIMIT 20`,
        oldest + 50,
      )
      .toArray();
    const create = this.loadCreate();
    return { oldestStream: oldest, missing: rows.map((r) => r.prev), complete: rows.length === 0 || (create !== undefined && create.stream !== null) };
  }

  /** Events from /backfill: newest first, each stored below everything we have, with the state
   *  before its earliest known child as its (approximate) state; no effect on current state. */
  async admitBackfill(pdus: PDU[], origin: string): Promise<{ admitted: number; missingAuth: string[] }> {
    return this.serial(async () => {
      const rv = this.requireRoom();
      const parsed = (await Promise.all(pdus.map((p) => toRoomEvent(p, rv).then((ev) => ({ p, ev }), () => undefined)))).filter((x) => x !== undefined);
      parsed.sort((a, b) => b.ev.depth - a.ev.depth);
      let admitted = 0;
      const missingAuth = new Set<string>();
      for (const { p, ev } of parsed) {
        const known = this.loadEvent(ev.event_id);
        if (known && !isOutlier(known)) continue;
        const child = this.sql
          .exec<{ event_id: string }>(
            "SELECT x.event_id FROM edges e JOIN events x ON x.event_id = e.event_id WHERE e.prev_event_id = ? AND x.stream IS NOT NULL ORDER BY x.stream ASC LIMIT 1",
            ev.event_id,
          )
          .toArray()[0];
        if (!child) continue; // not connected to what we hold
        let childBefore = new Map(this.groupState(this.loadEvent(child.event_id)!.stateBefore));
        // The child's state includes this event when it is a state event: take it back out.
        if (ev.state_key !== undefined && childBefore.get(stateKey(ev.type, ev.state_key)) === ev.event_id) {
          childBefore = new Map(childBefore);
          childBefore.delete(stateKey(ev.type, ev.state_key));
        }
        const minStream = this.sql.exec<{ m: number | null }>("SELECT MIN(stream) AS m FROM events WHERE stream IS NOT NULL").one().m ?? 1;
        const out = await this.admitInner(p, origin, { local: false, backfillStream: Math.min(minStream, 1) - 1, extraStates: [childBefore] });
        if (out.status === "accepted") admitted++;
        if (out.status === "missing") for (const m of out.missing ?? []) missingAuth.add(m);
      }
      return { admitted, missingAuth: [...missingAuth] };
    });
  }

  /** Build and sign a local event without admitting it (outbound invites: the invitee's server
   *  signs it first, then it comes back through admit). */
  async prepareLocalEvent(spec: LocalEventSpec): Promise<RoomResult<{ pdu: PDU; eventId: string }>> {
    return this.serial(async () => {
      try {
        return { ok: true as const, value: await this.buildLocalPdu(spec) };
      } catch (e) {
        return asRoomError(e);
      }
    });
  }
}

const POWER_KEY = stateKey("m.room.power_levels", "");
/** A state group and its ancestors, newest first, up to its snapshot (parent NULL). */
const GROUP_CHAIN_SQL = `WITH RECURSIVE up(id, parent) AS (
  SELECT id, parent FROM state_groups WHERE id = ?1
  UNION ALL SELECT g.id, g.parent FROM state_groups g JOIN up ON g.id = up.parent
) SELECT id FROM up`;
/** The delta entries of a group and of its ancestors down to (and including) group ?2, oldest
 *  group first. */
const GROUP_ENTRIES_SQL = `WITH RECURSIVE up(id, parent) AS (
  SELECT id, parent FROM state_groups WHERE id = ?1
  UNION ALL SELECT g.id, g.parent FROM state_groups g JOIN up ON g.id = up.parent WHERE up.id > ?2
) SELECT e.type, e.state_key, e.event_id FROM up JOIN state_group_entries e ON e.group_id = up.id ORDER BY e.group_id`;
const ACL_KEY = stateKey("m.room.server_acl", "");

/** Stored without a place in the DAG: auth chain or state received from another server. */
function isOutlier(se: StoredEvent): boolean {
  return se.stream === null && se.stateAfter === null && se.status === "accepted";
}
const HV_KEY = stateKey("m.room.history_visibility", "");
const GUEST_ACCESS_KEY = stateKey("m.room.guest_access", "");
/** Events per GET /events?room_id= answer. */
const PEEK_LIMIT = 100;
/** How long the hub fan-out may stay incomplete before alarm() checks on it. */
const HUB_REDELIVER_MS = 30_000;
const ENCRYPTION_KEY = stateKey("m.room.encryption", "");
/** The state at a point: its map, and the group holding it unless it was just resolved. */
interface StateAt {
  map: StateIdMap;
  group: number | null;
  resolved: boolean;
  /** For a resolution of several groups: its key in RoomDO.acrossMemo. */
  memoKey?: string;
}
interface FanOutFacts {
  group: number | null;
  joinedLocal: string[];
  joinedServers: Set<string>;
  memberCount: number;
  encrypted: boolean;
  /** Internal to the cache: every joined user, and joined users per server. */
  joined: Set<string>;
  serverCounts: Map<string, number>;
}

function txnKey(t: NonNullable<LocalEventSpec["txn"]>): string {
  return t.scope ? `${t.scope}\u0000${t.txnId}` : t.txnId;
}

/** Entries of `next` that differ from `prev` (null = removed). */
function diffState(prev: StateIdMap, next: StateIdMap): Map<StateKey, string | null> {
  // Two states sharing a base (state-layers.ts) differ at most where they differ from it.
  const shared = diffShared(prev, next);
  if (shared) return shared;
  const out = new Map<StateKey, string | null>();
  for (const [k, v] of next) if (prev.get(k) !== v) out.set(k, v);
  for (const k of prev.keys()) if (!next.has(k)) out.set(k, null);
  return out;
}
