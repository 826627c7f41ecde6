// THE WRITE DOOR of the room (DESIGN.md §1 "One door per room"; docs/architecture.md "The write
// door"). Every change to the room's rows goes through here: `serial` orders writes, and the
// admit pipeline — format and size → hashes and signatures → auth against auth_events → auth
// against the state before → soft fail against the current state → persist (DAG edges, state
// group, stream position) → forward extremities → current state — runs its decide-and-persist
// part in one transactionSync. The server signing key and the remote key memo live here because
// signature checks are a step of the door.
//
// Concurrency: Durable Object input gates do not cover awaits on crypto (hashing, signing), so
// every write runs through `serial()`, a promise chain: events are created and admitted one at a
// time, each choosing the previous one as its prev_event. 100 concurrent sends give one chain.
import type { Env } from "../../src/env";
import type { PDU, RoomEvent, StateIdMap, StateKey } from "../../src/core/types";
import { splitStateKey, stateKey } from "../../src/core/types";
import { getRoomVersion, type RoomVersion } from "../../src/core/room-versions";
import type { Config } from "../../src/config";
import { readMeta, SCHEMA } from "./schema";
import { canonicalJson } from "../../src/core/canonical-json";
import { authEventKeys, buildAuthState, checkAuthEventsShape, checkEventAuth, CREATE_KEY, namedPowerLevel, powerLevelOf } from "../../src/core/auth-rules";
import { partialAuthState, type PartialState } from "./partial-state";
import { checkContentHash, computeEventId, toRoomEvent } from "../../src/core/event-hashes";
import { verifyJsonSignature, type SigningKey } from "../../src/core/signing";
import { redactEvent } from "../../src/core/redaction";
import { getServerSigningKey } from "../../src/services/server-key";
import { layerState } from "./state-layers";
import { getVerifyKey, type VerifyKey } from "../../src/services/federation/keys";
import { isServerAllowedByAcl } from "../../src/core/server-acl";
import { domainOf } from "../../src/core/ids";
import type { AdmitMode, AdmitOutcome } from "../../src/rpc/room";
import { MAX_PDU_BYTES, MAX_ID_BYTES, SNAPSHOT_FRACTION, SNAPSHOT_MIN, OUTLIER_BATCH, utf8, StoredEvent, fail, ACL_KEY, isOutlier, GUEST_ACCESS_KEY, StateAt, txnKey, diffState, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { StateStore } from "./state";
import type { FanOut } from "./fanout";

/** What RoomWriter needs from the rest of the room (wired in durable-objects/room.ts). */
export interface RoomWriterAccess {
  head: RoomHead;
  sql: SqlStorage;
  env: Env;
  ctx: DurableObjectState;
  /** The configuration, parsed once per instance, with this room's server name. */
  config(): Config;
  events: Pick<EventStore, "clearCache" | "loadCreate" | "loadEvent" | "uncache">;
  state: Pick<StateStore, "authMapFrom" | "cacheGroup" | "clear" | "groupState" | "rememberAcross" | "resolveMaps" | "stateBefore">;
  fanout: Pick<FanOut, "advanceFanOutFacts" | "beginWrite" | "committed" | "currentStateChanged" | "hubsCaughtUp" | "purged" | "reset">;
  partial: Pick<PartialState, "isPartial">;
}

export class RoomWriter {
  constructor(private readonly r: RoomWriterAccess) {}

  private queue: Promise<unknown> = Promise.resolve();
  private keyPromise?: Promise<SigningKey>;

  /** The room's identity and position from `meta` (at start). */
  loadHead(meta: Map<string, string>): void {
    const head = this.r.head;
    head.roomId = meta.get("room_id");
    head.serverName = meta.get("server_name");
    if (meta.has("room_version")) head.rv = getRoomVersion(meta.get("room_version")!);
    head.stream = Number(meta.get("stream") ?? "0");
    head.currentGroup = meta.has("current_group") ? Number(meta.get("current_group")) : null;
  }

  /** Run `fn` after every earlier write has finished (see "Concurrency" above). */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  setMeta(key: string, value: string | number): void {
    this.r.sql.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }

  signingKey(): Promise<SigningKey> {
    if (!this.keyPromise) {
      this.keyPromise = getServerSigningKey(this.r.env, this.r.config()).catch((e) => {
        this.keyPromise = undefined;
        throw e;
      });
    }
    return this.keyPromise;
  }

  /** Public key for a server's key ID. Our own keys come from D1; remote keys from
   *  src/services/federation/keys.ts (getVerifyKey: cache, key query, notaries). */
  async verifyKey(server: string, keyId: string, ts?: number): Promise<string | undefined> {
    if (server === this.r.head.serverName) {
      const k = await this.signingKey();
      if (k.keyId === keyId) return k.publicKey;
      const row = await this.r.env.DB.prepare("SELECT public_key FROM server_signing_keys WHERE key_id = ?").bind(keyId).first<{ public_key: string }>();
      return row?.public_key;
    }
    // Remote keys: the federation key ring (cache, then the server itself, then notaries). A
    // short-lived memo keeps a 10,000-event send_join answer from asking D1 per event; the
    // validity rule is the key ring's (valid_until_ts covers ts; an old key until it expired).
    const memoKey = `${server}\u0000${keyId}`;
    const hit = this.keyMemo.get(memoKey);
    if (hit && hit.until > Date.now() && (ts === undefined || (hit.k.validUntilTs >= ts && (hit.k.expiredTs === undefined || hit.k.expiredTs > ts)))) return hit.k.publicKey;
    const k = await getVerifyKey({ env: this.r.env, config: this.r.config() }, server, keyId, { purpose: "event", ts });
    if (k) {
      if (this.keyMemo.size > 1024) this.keyMemo.clear();
      this.keyMemo.set(memoKey, { k, until: Date.now() + 60_000 });
    }
    return k?.publicKey;
  }
  private keyMemo = new Map<string, { k: VerifyKey; until: number }>();

  /** The admit pipeline. Steps before persisting do not touch storage, so a refused local event
   *  leaves no trace. */
  async admitInner(pdu: PDU, origin: string, opts: AdmitMode): Promise<AdmitOutcome> {
    const checked = await this.checkPdu(pdu, origin, opts);
    if (!("ev" in checked)) return checked;
    const { ev } = checked;
    // 3–5 and persisting run synchronously: nothing can interleave.
    let out: AdmitOutcome;
    try {
      this.r.fanout.beginWrite();
      out = this.r.ctx.storage.transactionSync(() => this.decideAndPersist(ev, opts));
    } catch (e) {
      // The transaction rolled back: forget in-memory state derived from it.
      this.reloadAfterFailure();
      throw e;
    }
    if (out.status === "accepted" && !opts.outlier && opts.backfillStream === undefined) await this.r.fanout.committed(ev, out.stream!, opts.rebroadcast);
    return out;
  }

  /** Steps 1–2 of admit and parsing: format, size, event ID, duplicates, content hash,
   *  signatures, room and server ACL. No writes: a batch can check every PDU before storing. */
  async checkPdu(pdu: PDU, origin: string, opts: AdmitMode, knownEventId?: string): Promise<{ ev: RoomEvent } | AdmitOutcome> {
    const rv = this.r.head.requireRoom();
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
    const known = this.r.events.loadEvent(eventId);
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
    if (ev.room_id !== this.r.head.roomId) return { status: "invalid", eventId, reason: "event is for another room" };
    // Server ACLs (Server-Server API "Server Access Control Lists"): PDUs from a denied origin
    // are dropped, whatever path they came by.
    if (!opts.local && origin !== this.r.head.serverName) {
      const aclId = this.r.head.currentGroup === null ? undefined : this.r.state.groupState(this.r.head.currentGroup).get(ACL_KEY);
      const acl = aclId ? this.r.events.loadEvent(aclId)?.ev.content : undefined;
      if (!isServerAllowedByAcl(acl ?? null, origin)) return { status: "invalid", eventId, reason: "origin is denied by the room's server ACL" };
    }
    return { ev };
  }

  reloadAfterFailure(): void {
    this.r.events.clearCache();
    this.r.state.clear();
    this.r.fanout.reset();
    const meta = readMeta(this.r.sql);
    this.r.head.stream = Number(meta.get("stream") ?? "0");
    this.r.head.currentGroup = meta.has("current_group") ? Number(meta.get("current_group")) : null;
  }

  async checkSignatures(pdu: PDU, rv: RoomVersion): Promise<string | undefined> {
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

  decideAndPersist(ev: RoomEvent, opts: AdmitMode): AdmitOutcome {
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
    const knownCreate = isCreate ? this.r.events.loadCreate() : undefined;
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
      const a = this.r.events.loadEvent(id);
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
        const create = this.r.events.loadCreate();
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
    if (opts.local && status !== "accepted") return { status, eventId: ev.event_id, reason };

    // Persist (over the row of an outlier that now gets a place in the DAG: the upsert below).
    let beforeGroup: number | null = null;
    let afterGroup: number | null = null;
    let prevState: string | null = null;
    const sk = ev.state_key !== undefined ? stateKey(ev.type, ev.state_key) : undefined;
    if (!opts.outlier) {
      const parent = prevs[0]?.stateAfter ?? null;
      beforeGroup = before.resolved ? this.newGroup(parent, diffState(this.r.state.groupState(parent), before.map)) : before.group;
      if (before.memoKey) this.r.state.rememberAcross(before.memoKey, before.map, beforeGroup);
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
        stream = this.r.head.stream + 1;
        this.r.head.stream = stream;
        this.setMeta("stream", stream);
      }
    }
    const columns = ["stream", "depth", "type", "state_key", "sender", "origin_server_ts", "pdu", "status", "rejection_reason", "state_before", "state_after", "prev_state", "txn_device", "txn_id", "received_ts"];
    this.r.sql.exec(
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
      this.r.sql.exec("INSERT OR IGNORE INTO txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)", ev.sender, opts.txn.deviceId, txnKey(opts.txn), ev.event_id);
    }
    this.r.events.uncache(ev.event_id);
    if (status !== "accepted" || opts.outlier) return { status, eventId: ev.event_id, reason };

    if (ev.type === "m.room.member" && ev.state_key !== undefined) {
      this.r.sql.exec("INSERT OR REPLACE INTO memberships (event_id, user_id, membership, stream) VALUES (?, ?, ?, ?)", ev.event_id, ev.state_key, String(ev.content.membership), stream);
    }
    if (ev.type === "m.room.redaction" && ev.redacts) {
      const st = this.r.state.authMapFrom(before.map, ev);
      const powerful = powerLevelOf(ev.sender, st, rv) >= namedPowerLevel("redact", st, rv) ? 1 : 0;
      this.r.sql.exec("INSERT OR IGNORE INTO redactions (redacts, event_id, sender, powerful) VALUES (?, ?, ?, ?)", ev.redacts, ev.event_id, ev.sender, powerful);
      this.r.events.uncache(ev.redacts);
    }
    // Backfilled history has no say in the present: no extremities, no current state.
    if (backfill) return { status: "accepted", eventId: ev.event_id, stream: stream! };

    // Forward extremities: the event replaces its prev_events (unless something already points at it).
    for (const p of ev.prev_events) this.r.sql.exec("DELETE FROM extremities WHERE event_id = ?", p);
    const referenced = this.r.sql.exec("SELECT 1 FROM edges e JOIN events x ON x.event_id = e.event_id WHERE e.prev_event_id = ? AND x.status = 'accepted' AND x.stream > 0 LIMIT 1", ev.event_id).toArray().length > 0;
    if (!referenced) this.r.sql.exec("INSERT OR IGNORE INTO extremities (event_id) VALUES (?)", ev.event_id);

    // Current state (Server-Server API "Room State Resolution"): the resolution of the states
    // after the forward extremities. One extremity state (a linear room, or an event that cited
    // every branch) needs no resolution; only real forks pay for it. Resolving the old current
    // state against the new event's state instead would depend on arrival order.
    const old = this.r.head.currentGroup;
    let next: number | null;
    const tips = isCreate
      ? [afterGroup]
      : [
          ...new Set(
            this.r.sql
              .exec<{ state_after: number | null }>("SELECT e.state_after FROM extremities x JOIN events e ON e.event_id = x.event_id")
              .toArray()
              .map((r) => r.state_after),
          ),
        ];
    if (tips.length <= 1) next = tips[0] ?? afterGroup;
    else {
      const oldMap = this.r.state.groupState(old);
      const resolved = this.r.state.resolveMaps(tips.map((g) => this.r.state.groupState(g)));
      next = this.newGroup(old, diffState(oldMap, resolved));
    }
    if (next !== old) {
      const changes =
        old === beforeGroup && sk !== undefined && afterGroup === next
          ? new Map([[sk, ev.event_id]])
          : diffState(this.r.state.groupState(old), this.r.state.groupState(next));
      this.applyCurrentState(changes);
      this.r.head.currentGroup = next;
      this.setMeta("current_group", next ?? 0);
      this.r.sql.exec("INSERT OR REPLACE INTO current_groups (stream, grp) VALUES (?, ?)", stream, next);
      this.r.fanout.advanceFanOutFacts(old, next, changes);
    }
    return { status: "accepted", eventId: ev.event_id, stream: stream! };
  }

  /** (eventId, target) rows, several per statement: a statement costs more than its rows (it
   *  was a fifth of admitting a 30,000-event room state), and SQLite here binds at most 100
   *  parameters per statement. */
  insertEdges(table: "edges" | "auth_edges", column: "prev_event_id" | "auth_event_id", eventId: string, targets: string[]): void {
    for (let i = 0; i < targets.length; i += 40) {
      const chunk = targets.slice(i, i + 40);
      this.r.sql.exec(`INSERT OR IGNORE INTO ${table} (event_id, ${column}) VALUES ${chunk.map(() => "(?, ?)").join(", ")}`, ...chunk.flatMap((t) => [eventId, t]));
    }
  }

  applyCurrentState(changes: Map<StateKey, string | null>): void {
    for (const [k, id] of changes) {
      const [type, skey] = splitStateKey(k);
      if (id === null) this.r.sql.exec("DELETE FROM current_state WHERE type = ? AND state_key = ?", type, skey);
      else this.r.sql.exec("INSERT INTO current_state (type, state_key, event_id) VALUES (?, ?, ?) ON CONFLICT(type, state_key) DO UPDATE SET event_id = excluded.event_id", type, skey, id);
    }
    this.r.fanout.currentStateChanged(changes);
  }


  newGroup(parent: number | null, delta: Map<StateKey, string | null>): number | null {
    if (delta.size === 0) return parent;
    // `chain`: delta entries stored from the last snapshot down to this group (see
    // SNAPSHOT_FRACTION). A group without a parent is a snapshot (its delta is its state).
    const parentChain = parent === null ? 0 : (this.r.sql.exec<{ chain: number }>("SELECT chain FROM state_groups WHERE id = ?", parent).toArray()[0]?.chain ?? 0);
    const full = layerState(this.r.state.groupState(parent), delta);
    const chain = parent === null ? 0 : parentChain + delta.size;
    const snapshot = parent !== null && chain > Math.max(SNAPSHOT_MIN, full.size * SNAPSHOT_FRACTION);
    const id = (this.r.sql.exec<{ id: number }>("SELECT COALESCE(MAX(id), 0) + 1 AS id FROM state_groups").one().id as number);
    this.r.sql.exec("INSERT INTO state_groups (id, parent, chain) VALUES (?, ?, ?)", id, snapshot ? null : parent, snapshot ? 0 : chain);
    const entries: Iterable<[StateKey, string | null]> = snapshot ? full : delta;
    for (const [k, v] of entries) {
      const [type, skey] = splitStateKey(k);
      this.r.sql.exec("INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)", id, type, skey, v);
    }
    this.r.state.cacheGroup(id, full);
    return id;
  }

  /** Admin room deletion (src/services/admin-rooms.ts): once the evicted members' leaves have
   *  reached their sync hubs (bounded wait), drop every row this room stored and forget it in
   *  memory; the Worker has removed it from the D1 registry, so nothing addresses it again. */
  async purge(): Promise<void> {
    await this.serial(async () => {
      for (let i = 0; i < 50 && !this.r.fanout.hubsCaughtUp(); i++) await new Promise((r) => setTimeout(r, 100));
      await this.r.ctx.storage.deleteAll();
      this.r.sql.exec(SCHEMA);
      this.r.events.clearCache();
      this.r.state.clear();
      this.r.head.roomId = this.r.head.rv = this.r.head.serverName = undefined;
      this.r.head.stream = 0;
      this.r.head.currentGroup = null;
      this.r.fanout.reset();
      this.r.fanout.purged();
    });
  }

  /** A room's state and auth chain from another server, stored as outliers: every PDU's hashes
   *  and signatures are checked first (no storage), then each is authorised against its
   *  auth_events and stored in auth order (Kahn's algorithm over auth_events, depth breaking
   *  ties), OUTLIER_BATCH to a transaction rather than one each: for a 30,000-event state the
   *  commits were a large part of the join. `events` are parsed from their PDUs here (toRoomEvent),
   *  one per event ID. Returns how many were not stored (invalid, rejected, missing auth events,
   *  auth cycles). */
  async admitOutlierBatch(events: { pdu: PDU; ev: RoomEvent }[], origin: string): Promise<number> {
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
        this.r.ctx.storage.transactionSync(() => {
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

}
