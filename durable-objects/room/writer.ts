// THE WRITE DOOR of the room (DESIGN.md §1 "One door per room"; docs/architecture.md "The write
// door"). Every change to the room's rows goes through here: `serial` orders writes, and the
// admit pipeline — format and size → hashes and signatures → auth against auth_events → auth
// against the state before → soft fail against the current state → persist (DAG edges, state
// group, stream position) → forward extremities → current state — runs its decide-and-persist
// part in one transactionSync. Steps 1–2 (room/pdu-checks.ts) and the decision of steps 3–5
// (room/admit-auth.ts) read only and live in their own files; the writer runs them and
// persists what they decide.
//
// Concurrency: Durable Object input gates do not cover awaits on crypto (hashing, signing), so
// every write runs through `serial()`, a promise chain: events are created and admitted one at a
// time, each choosing the previous one as its prev_event. 100 concurrent sends give one chain.
//
// Why near 700 lines: this file is every row-changing statement of the room on purpose — the
// admit pipeline's persist step, group commit (`admitLocalGroup`), outlier batches and the
// partial-state writes — so that `scripts/check-write-door.mjs` can hold the rule "no
// data-changing SQL outside writer.ts" with a short exception list. Splitting the writes would
// mean a second file the check trusts; what only reads went to pdu-checks.ts and admit-auth.ts.
import type { Env } from "../../src/env";
import type { JsonObject, PDU, RoomEvent, StateKey } from "../../src/core/types";
import { splitStateKey, stateKey } from "../../src/core/types";
import { type RoomVersion } from "../../src/core/room-versions";
import type { Config } from "../../src/config";
import { openSchema, readMeta } from "./schema";
import { namedPowerLevel, powerLevelOf } from "../../src/core/auth-rules";
import type { PartialState, PartialStateMeta, PartialWrites } from "./partial-state";
import type { PduDigest } from "../../src/core/event-hashes";
import { layerState } from "./state-layers";
import type { AdmitMode, AdmitOutcome } from "../../src/rpc/room";
import { jsonBatches, authOrder, SNAPSHOT_FRACTION, SNAPSHOT_MIN, OUTLIER_BATCH, StoredEvent, txnKey, diffState, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { RoomKeys } from "./keys";
import type { StateStore } from "./state";
import type { FanOut, NoticeFacts } from "./fanout";
import { PduChecks } from "./pdu-checks";
import { AdmitAuth } from "./admit-auth";
import { countsAfter, formatMemberCounts, MEMBER_COUNTS_SQL, MEMBER_KEY_PREFIX, parseMemberCounts, type MemberCountsRow } from "./member-counts";

/** Only this module can name DOOR, so only it can make a WriteTx. */
const DOOR: unique symbol = Symbol("write door");
/** The WriteTx values whose transaction is still running. */
const openTx = new WeakSet<WriteTx>();

/** Proof that a write runs inside the write door: RoomWriter.transact makes one for the length of
 *  one transactionSync, and it is the only way to run data-changing SQL on the room's storage.
 *  Every function that changes rows takes one, so holding the door shows in its signature.
 *  scripts/check-write-door.mjs checks the rest of the room never writes around it. */
export class WriteTx {
  constructor(
    door: typeof DOOR,
    private readonly sql: SqlStorage,
  ) {
    if (door !== DOOR) throw new Error("A WriteTx is made by the room's writer only");
  }

  exec<T extends Record<string, SqlStorageValue>>(query: string, ...bindings: unknown[]): SqlStorageCursor<T> {
    if (!openTx.has(this)) throw new Error("Write after its transaction ended");
    return this.sql.exec<T>(query, ...bindings);
  }
}

/** Admit options inside the room: AdmitMode, and for a rejoin (RemoteRoom.seedFromJoin) that
 *  the event replaces every forward extremity (our copy stopped at our leave; the resident
 *  server's state is the room now). */
export interface AdmitOptions extends AdmitMode {
  replaceExtremities?: boolean;
  /** Built and signed by this room a moment ago (group commit, room creation): nothing can
   *  cite it yet, as its ID hashes its own content. */
  builtHere?: boolean;
  /** The event cites every forward extremity (a room being created: one linear chain), so it is
   *  the only one after it: its state is the current state, with no read of the extremities. */
  soleExtremity?: boolean;
}

/** A room being created here: its create event (checked, not stored) and its record in `meta`. */
export interface NewRoomRecord {
  ev: RoomEvent;
  roomId: string;
  roomVersion: string;
  serverName: string;
  /** The D1 registry row (and createRoom's alias and directory rows), written with the D1
   *  mirrors after the commit once the room exists; `onResult` gets the statement's result. */
  registry: { stmt: D1PreparedStatement; onResult?: (r: D1Result) => void }[];
}

/** What RoomWriter needs from the rest of the room (wired in durable-objects/room.ts). */
export interface RoomWriterAccess {
  head: RoomHead;
  sql: SqlStorage;
  env: Env;
  ctx: DurableObjectState;
  /** The configuration, parsed once per instance, with this room's server name. */
  config(): Config;
  keys: Pick<RoomKeys, "verifyKey">;
  events: Pick<EventStore, "clearCache" | "loadCreate" | "loadEvent" | "partialMarkChanged" | "remember" | "storedAmong" | "uncache">;
  state: Pick<StateStore, "authMapFrom" | "cacheGroup" | "clear" | "groupState" | "rememberAcross" | "resolveMaps" | "stateBefore">;
  fanout: Pick<FanOut, "advanceFanOutFacts" | "beginWrite" | "mirrorWithNextCommit" | "committed" | "committedGroup" | "noticeFacts" | "currentStateChanged" | "hubsCaughtUp" | "purged" | "reset">;
  partial: Pick<PartialState, "isPartial">;
}

export class RoomWriter {
  /** Steps 1–2 of admit (room/pdu-checks.ts) and 3–5 (room/admit-auth.ts): no writes. */
  private readonly checks: PduChecks;
  private readonly auth: AdmitAuth;

  constructor(private readonly r: RoomWriterAccess) {
    this.checks = new PduChecks(r);
    this.auth = new AdmitAuth(r);
  }

  private queue: Promise<unknown> = Promise.resolve();

  /** Run `fn` after every earlier write has finished (see "Concurrency" above). */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Run `fn` in one storage transaction, holding a WriteTx. If it throws, the transaction rolls
   *  back and what memory holds from storage is read again. Synchronous: nothing interleaves,
   *  so writes that decide nothing across an await (forget, erasure) need not wait in `serial`.
   *  Other modules may hold the WriteTx only to pass it to the writer's functions (the SQL that
   *  changes rows is all in this file: scripts/check-write-door.mjs). */
  private transact<T>(fn: (tx: WriteTx) => T, keepsSoleExtremity = false): T {
    this.r.head.beforeWrite();
    // Only decideAndPersist keeps soleExtremity exact; any other write forgets it (a partial
    // state's completion, rejectAfterAll, moves extremities too).
    if (!keepsSoleExtremity) this.soleExtremity = undefined;
    const tx = new WriteTx(DOOR, this.r.sql);
    openTx.add(tx);
    try {
      return this.r.ctx.storage.transactionSync(() => {
        const out = fn(tx);
        this.flushMetaAtEnd(tx);
        return out;
      });
    } catch (e) {
      this.metaAtEnd.clear();
      this.currentGroupsAtEnd = [];
      this.reloadAfterFailure();
      throw e;
    } finally {
      openTx.delete(tx);
    }
  }

  private setMeta(tx: WriteTx, key: string, value: string | number): void {
    this.metaAtEnd.delete(key);
    tx.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }

  /** `meta` values each event of a transaction moves (stream, current_group), written once at
   *  its end with the last value: a group of n events wrote them n times. */
  private metaAtEnd = new Map<string, string | number>();
  private setMetaAtEnd(key: string, value: string | number): void {
    this.metaAtEnd.set(key, value);
  }

  /** The values kept for the end of the transaction, in one statement (createRoom wrote seven
   *  `meta` rows one statement each). */
  private flushMetaAtEnd(tx: WriteTx): void {
    this.flushCurrentGroups(tx);
    if (this.metaAtEnd.size === 0) return;
    const rows = [...this.metaAtEnd];
    this.metaAtEnd.clear();
    tx.exec(
      `INSERT INTO meta (key, value) VALUES ${rows.map(() => "(?, ?)").join(", ")} ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
      ...rows.flatMap(([key, value]) => [key, String(value)]),
    );
  }

  /** `current_groups` rows (stream, group) of the transaction's events, written at its end in
   *  one statement: only readers outside the write read that table, and a group commit (a
   *  createRoom's seven events) wrote one statement per event. */
  private currentGroupsAtEnd: [number, number | null][] = [];
  private flushCurrentGroups(tx: WriteTx): void {
    for (let i = 0; i < this.currentGroupsAtEnd.length; i += 40) {
      const rows = this.currentGroupsAtEnd.slice(i, i + 40);
      tx.exec(`INSERT OR REPLACE INTO current_groups (stream, grp) VALUES ${rows.map(() => "(?, ?)").join(", ")}`, ...rows.flat());
    }
    this.currentGroupsAtEnd = [];
  }

  /** The admit pipeline. Steps before persisting do not touch storage, so a refused local event
   *  leaves no trace. */
  async admitInner(pdu: PDU, origin: string, opts: AdmitOptions): Promise<AdmitOutcome> {
    const checked = await this.checks.checkPdu(pdu, origin, opts);
    if (!("ev" in checked)) return checked;
    const { ev } = checked;
    // 3–5 and persisting run synchronously: nothing can interleave.
    this.r.fanout.beginWrite();
    const out = this.transact((tx) => this.decideAndPersist(tx, ev, opts), true);
    if (out.status === "accepted" && !opts.outlier && opts.backfillStream === undefined) await this.r.fanout.committed(ev, out.stream!, opts.rebroadcast);
    return out;
  }

  /** Steps 1–2 for the create event of a room being created here. This server's Worker has
   *  just hashed and signed it (createRoomInDO), and a room being created holds no events: no
   *  hash and signature check again, and no lookup — which, as the new object's first
   *  statement, created its schema outside the room's one transaction. */
  checkCreate(pdu: PDU): Promise<{ ev: RoomEvent } | AdmitOutcome> {
    return this.checks.checkPdu(pdu, this.r.head.serverName!, { local: true }, { signedHere: true, unknown: true });
  }

  /** Steps 1–2 for a local event this room has just built, hashed and signed (group commit).
   *  `size`: hashAndSignEvent's count. `newRoom`: the room is being created
   *  (LocalEvents.createRoom): it holds no event yet, so no duplicate lookup (see checkCreate). */
  checkLocal(pdu: PDU, eventId: string, txn: AdmitMode["txn"], size?: number, newRoom = false): Promise<{ ev: RoomEvent } | AdmitOutcome> {
    return this.checks.checkPdu(pdu, this.r.head.serverName!, { local: true, txn }, { eventId, signedHere: true, size, unknown: newRoom });
  }

  /** Group commit (LocalEvents.admitRun): local events built on one chain, each citing the one
   *  before, persisted in one transaction in order — each authorised on its own — up to the
   *  first the auth rules refuse (which stores nothing, and the events after it cited it: they
   *  are not tried). Returns the outcomes of the events tried. Each accepted event's sync notice
   *  is taken right after it is persisted (its own state's members). Throws (rolled back) if
   *  the transaction fails. */
  async admitLocalGroup(group: { ev: RoomEvent; txn: AdmitMode["txn"] }[], create?: NewRoomRecord): Promise<AdmitOutcome[]> {
    const outs: AdmitOutcome[] = [];
    const accepted: { ev: RoomEvent; stream: number; facts: NoticeFacts }[] = [];
    this.r.fanout.beginWrite();
    this.transact((tx) => {
      // Room creation (LocalEvents.createRoom): the create event and the room's record go in
      // the same transaction as the initial events — one commit for the whole room.
      if (create) {
        // A room being created holds no state group yet (createRoom refuses an object that holds
        // a room): its first group is 1, with no read of the table.
        this.nextGroupId ??= 1;
        const out = this.decideAndPersist(tx, create.ev, { local: true, builtHere: true });
        outs.push(out);
        if (out.status !== "accepted") return;
        // (Written with the values kept for the transaction's end, in one statement.)
        this.recordRoomIn(tx, create.roomId, create.roomVersion, create.serverName, { atEnd: true });
        // The hub watermark from the start: without it a restart would count every event
        // as delivered (FanOut.start) and the initial events might never reach a hub.
        this.setMetaAtEnd("hub_done", 0);
        for (const m of create.registry) this.r.fanout.mirrorWithNextCommit(m.stmt, m.onResult);
        accepted.push({ ev: create.ev, stream: out.stream!, facts: this.r.fanout.noticeFacts(create.ev, out.stream!, true) });
      }
      for (const { ev, txn } of group) {
        const out = this.decideAndPersist(tx, ev, { local: true, txn, builtHere: true, ...(create ? { soleExtremity: true } : {}) });
        outs.push(out);
        if (out.status !== "accepted") break;
        accepted.push({ ev, stream: out.stream!, facts: this.r.fanout.noticeFacts(ev, out.stream!, true) });
      }
    }, true);
    if (accepted.length) await this.r.fanout.committedGroup(accepted);
    return outs;
  }

  /** The one forward extremity, when the `extremities` table is known to hold exactly that row
   *  (undefined: not known; read it). Only this file writes that table; decideAndPersist keeps
   *  this exact (an event built here on it replaces it: its prev_events include it, and nothing
   *  can cite the new event yet; any other event that reaches the extremity step reads the
   *  table again), and every other write transaction (transact without keepsSoleExtremity:
   *  a partial state's completion moves extremities in rejectAfterAll), a rollback and a purge
   *  forget it. A sequential local send then reads neither the extremities
   *  (LocalEvents.newEventFrame) nor their states. */
  private soleExtremity: string | undefined;

  /** The forward extremity when it is known to be the only one (see soleExtremity). */
  knownSoleExtremity(): string | undefined {
    return this.soleExtremity;
  }

  reloadAfterFailure(): void {
    this.soleExtremity = undefined;
    this.nextGroupId = undefined;
    this.groupChains.clear();
    this.r.events.clearCache();
    this.r.state.clear();
    this.r.fanout.reset();
    const meta = readMeta(this.r.sql);
    this.r.head.stream = Number(meta.get("stream") ?? "0");
    this.r.head.currentGroup = meta.has("current_group") ? Number(meta.get("current_group")) : null;
    this.r.head.memberCounts = parseMemberCounts(meta.get("member_counts"));
  }

  /** Signatures of a PDU (PduChecks.checkSignatures), also for a membership event of a room we
   *  are not in (RemoteRoom). */
  checkSignatures(pdu: PDU, rv: RoomVersion, signed?: Uint8Array, sentBy?: string): Promise<string | undefined> {
    return this.checks.checkSignatures(pdu, rv, signed, sentBy);
  }

  /** Steps 3–5 of admit and persisting, inside the write's transaction: auth against the
   *  auth_events, against the state before and (soft fail) the current state (decided in
   *  room/admit-auth.ts); then the row, DAG edges, state groups, stream position, forward
   *  extremities and current state. */
  private decideAndPersist(tx: WriteTx, ev: RoomEvent, opts: AdmitOptions): AdmitOutcome {
    const rv = this.r.head.rv!;
    const isCreate = ev.type === "m.room.create" && ev.state_key === "";
    const backfill = opts.backfillStream !== undefined;
    // Steps 3–5 (room/admit-auth.ts); an outlier batch's events not written yet are found first.
    const decided = this.auth.decide(ev, opts, this.outlierRows);
    if (!("before" in decided)) return decided;
    const { status, reason, prevs, before } = decided;
    if (opts.local && status !== "accepted") return { status, eventId: ev.event_id, reason };

    // Persist (over the row of an outlier that now gets a place in the DAG: the upsert below).
    let beforeGroup: number | null = null;
    let afterGroup: number | null = null;
    let prevState: string | null = null;
    const sk = ev.state_key !== undefined ? stateKey(ev.type, ev.state_key) : undefined;
    if (!opts.outlier) {
      const parent = prevs[0]?.stateAfter ?? null;
      beforeGroup = before.resolved ? this.newGroup(tx, parent, diffState(this.r.state.groupState(parent), before.map)) : before.group;
      if (before.memoKey) this.r.state.rememberAcross(before.memoKey, before.map, beforeGroup);
      afterGroup = beforeGroup;
      if (status === "accepted" && sk !== undefined) {
        prevState = before.map.get(sk) ?? null;
        afterGroup = this.newGroup(tx, beforeGroup, new Map([[sk, ev.event_id]]));
      }
    }
    let stream: number | null = null;
    if (status === "accepted" && !opts.outlier) {
      if (backfill) stream = opts.backfillStream!;
      else {
        stream = this.r.head.stream + 1;
        this.r.head.stream = stream;
        this.setMetaAtEnd("stream", stream);
      }
    }
    if (opts.outlier && this.outlierRows) {
      // A batch of outliers (admitOutlierBatch): the row and its auth edges are written with the
      // batch's others at the end of the transaction; its later events find this one in memory.
      const rows = this.outlierRows;
      rows.events.push([ev.event_id, ev.depth, ev.type, ev.state_key ?? null, ev.sender, ev.origin_server_ts, JSON.stringify(ev.pdu), status, reason ?? null, Date.now()]);
      if (ev.auth_events.length) rows.authEdges.push([ev.event_id, [...ev.auth_events].sort()]);
      const se: StoredEvent = { ev, stream: null, status, stateBefore: null, stateAfter: null, prevState: null, txnDevice: null, txnId: null };
      rows.stored.set(ev.event_id, se);
      if (isCreate && status === "accepted") rows.create = se;
      this.r.events.uncache(ev.event_id);
      return { status, eventId: ev.event_id, reason };
    }
    const columns = ["stream", "depth", "type", "state_key", "sender", "origin_server_ts", "pdu", "status", "rejection_reason", "state_before", "state_after", "prev_state", "txn_device", "txn_id", "received_ts"];
    tx.exec(
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
    if (!opts.outlier) this.insertEdges(tx, "edges", "prev_event_id", ev.event_id, ev.prev_events);
    this.insertEdges(tx, "auth_edges", "auth_event_id", ev.event_id, ev.auth_events);
    if (opts.txn) {
      tx.exec("INSERT OR IGNORE INTO txns (user_id, device_id, txn_id, event_id) VALUES (?, ?, ?, ?)", ev.sender, opts.txn.deviceId, txnKey(opts.txn), ev.event_id);
    }
    // The row as stored (the next event of a group loads it as its prev event); a rollback
    // clears the cache (reloadAfterFailure).
    this.r.events.remember({
      ev,
      stream,
      status,
      stateBefore: beforeGroup,
      stateAfter: afterGroup,
      prevState,
      txnDevice: opts.txn?.deviceId ?? null,
      txnId: opts.txn?.txnId ?? null,
    });
    if (status !== "accepted" || opts.outlier) return { status, eventId: ev.event_id, reason };

    if (ev.type === "m.room.member" && ev.state_key !== undefined) {
      tx.exec("INSERT OR REPLACE INTO memberships (event_id, user_id, membership, stream) VALUES (?, ?, ?, ?)", ev.event_id, ev.state_key, String(ev.content.membership), stream);
    }
    if (ev.type === "m.room.redaction" && ev.redacts) {
      const st = this.r.state.authMapFrom(before.map, ev);
      const powerful = powerLevelOf(ev.sender, st, rv) >= namedPowerLevel("redact", st, rv) ? 1 : 0;
      tx.exec("INSERT OR IGNORE INTO redactions (redacts, event_id, sender, powerful) VALUES (?, ?, ?, ?)", ev.redacts, ev.event_id, ev.sender, powerful);
      this.r.events.uncache(ev.redacts);
    }
    // Backfilled history has no say in the present: no extremities, no current state.
    if (backfill) return { status: "accepted", eventId: ev.event_id, stream: stream! };

    // Forward extremities: the event replaces its prev_events (unless something already points at it).
    // (Built here on the one known extremity: afterwards it is the only one, its state afterGroup.)
    const sole = this.soleExtremity;
    const replacesSole = !!opts.builtHere && !opts.replaceExtremities && sole !== undefined && ev.prev_events.includes(sole);
    this.soleExtremity = undefined;
    let referenced = false;
    // (The table holds `sole` alone: the other prev_events are not in it; one statement.)
    if (replacesSole) tx.exec("UPDATE extremities SET event_id = ? WHERE event_id = ?", ev.event_id, sole);
    else {
      if (opts.replaceExtremities) tx.exec("DELETE FROM extremities");
      for (const p of ev.prev_events) tx.exec("DELETE FROM extremities WHERE event_id = ?", p);
      referenced = !opts.builtHere && this.r.sql.exec("SELECT 1 FROM edges e JOIN events x ON x.event_id = e.event_id WHERE e.prev_event_id = ? AND x.status = 'accepted' AND x.stream > 0 LIMIT 1", ev.event_id).toArray().length > 0;
      if (!referenced) tx.exec("INSERT OR IGNORE INTO extremities (event_id) VALUES (?)", ev.event_id);
    }

    // Current state (Server-Server API "Room State Resolution"): the resolution of the states
    // after the forward extremities. One extremity state (a linear room, or an event that cited
    // every branch) needs no resolution; only real forks pay for it. Resolving the old current
    // state against the new event's state instead would depend on arrival order.
    const old = this.r.head.currentGroup;
    let next: number | null;
    let tips: (number | null)[];
    if (isCreate || replacesSole || opts.soleExtremity) {
      tips = [afterGroup];
      if (!referenced) this.soleExtremity = ev.event_id;
    } else {
      const rows = this.r.sql.exec<{ event_id: string; state_after: number | null }>("SELECT x.event_id, e.state_after FROM extremities x JOIN events e ON e.event_id = x.event_id").toArray();
      if (rows.length === 1) this.soleExtremity = rows[0].event_id;
      tips = [...new Set(rows.map((r) => r.state_after))];
    }
    if (tips.length <= 1) next = tips[0] ?? afterGroup;
    else {
      const oldMap = this.r.state.groupState(old);
      const resolved = this.r.state.resolveMaps(tips.map((g) => this.r.state.groupState(g)));
      next = this.newGroup(tx, old, diffState(oldMap, resolved));
    }
    if (next !== old) {
      const changes =
        old === beforeGroup && sk !== undefined && afterGroup === next
          ? new Map([[sk, ev.event_id]])
          : diffState(this.r.state.groupState(old), this.r.state.groupState(next));
      this.applyCurrentState(tx, changes);
      this.r.head.currentGroup = next;
      this.setMetaAtEnd("current_group", next ?? 0);
      this.currentGroupsAtEnd.push([stream!, next]);
      this.r.fanout.advanceFanOutFacts(old, next, changes);
    }
    return { status: "accepted", eventId: ev.event_id, stream: stream! };
  }

  /** (eventId, target) rows, several per statement: a statement costs more than its rows (it
   *  was a fifth of admitting a 30,000-event room state), and SQLite here binds at most 100
   *  parameters per statement. */
  private insertEdges(tx: WriteTx, table: "edges" | "auth_edges", column: "prev_event_id" | "auth_event_id", eventId: string, targets: string[]): void {
    for (let i = 0; i < targets.length; i += 40) {
      const chunk = targets.slice(i, i + 40);
      tx.exec(`INSERT OR IGNORE INTO ${table} (event_id, ${column}) VALUES ${chunk.map(() => "(?, ?)").join(", ")}`, ...chunk.flatMap((t) => [eventId, t]));
    }
  }

  /** The changes in at most two statements, whatever their number (a JSON parameter through
   *  json_each): a join's starting state is the whole state at once, a statement per key was
   *  two thirds of the join's own write in a 20,000-key state. (A key is once in the map, so
   *  the removed and the set are apart and their order does not matter.) */
  private applyCurrentState(tx: WriteTx, changes: Map<StateKey, string | null>): void {
    // The member counts move with the member entries (room/member-counts.ts), read before.
    const members = new Map<string, string | null>();
    for (const [k, id] of changes) if (k.startsWith(MEMBER_KEY_PREFIX)) members.set(k.slice(MEMBER_KEY_PREFIX.length), id);
    // (No current group: no current state yet, nobody counted.)
    const before = this.r.head.memberCounts ?? (this.r.head.currentGroup === null ? { joined: 0, invited: 0 } : undefined);
    const counts = members.size && before ? countsAfter(this.r.sql, before, members) : undefined;
    const removed: string[][] = [];
    const set: string[][] = [];
    for (const [k, id] of changes) {
      if (id === null) removed.push(splitStateKey(k));
      else set.push([...splitStateKey(k), id]);
    }
    for (const batch of jsonBatches(removed)) tx.exec("DELETE FROM current_state WHERE (type, state_key) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))", batch);
    for (const batch of jsonBatches(set)) {
      tx.exec(
        `INSERT INTO current_state (type, state_key, event_id) SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
         ON CONFLICT(type, state_key) DO UPDATE SET event_id = excluded.event_id`,
        batch,
      );
    }
    if (members.size) {
      // (A room that did not keep them: counted once.)
      this.r.head.memberCounts = counts ?? this.r.sql.exec<MemberCountsRow>(MEMBER_COUNTS_SQL).one();
      this.setMetaAtEnd("member_counts", formatMemberCounts(this.r.head.memberCounts));
    }
    this.r.fanout.currentStateChanged(changes);
  }


  /** The next state group ID and the `chain` of groups made lately (newGroup), so a new group
   *  does not read them back; forgotten on a rollback or purge (reloadAfterFailure, purge). */
  private nextGroupId?: number;
  private groupChains = new Map<number, number>();

  private newGroup(tx: WriteTx, parent: number | null, delta: Map<StateKey, string | null>): number | null {
    if (delta.size === 0) return parent;
    // `chain`: delta entries stored from the last snapshot down to this group (see
    // SNAPSHOT_FRACTION). A group without a parent is a snapshot (its delta is its state).
    const parentChain = parent === null ? 0 : (this.groupChains.get(parent) ?? this.r.sql.exec<{ chain: number }>("SELECT chain FROM state_groups WHERE id = ?", parent).toArray()[0]?.chain ?? 0);
    const full = layerState(this.r.state.groupState(parent), delta);
    const chain = parent === null ? 0 : parentChain + delta.size;
    const snapshot = parent !== null && chain > Math.max(SNAPSHOT_MIN, full.size * SNAPSHOT_FRACTION);
    // Group IDs are taken only here, so the next one is known after the first read.
    const id = (this.nextGroupId ??= this.r.sql.exec<{ id: number }>("SELECT COALESCE(MAX(id), 0) + 1 AS id FROM state_groups").one().id as number);
    this.nextGroupId = id + 1;
    tx.exec("INSERT INTO state_groups (id, parent, chain) VALUES (?, ?, ?)", id, snapshot ? null : parent, snapshot ? 0 : chain);
    if (this.groupChains.size >= 64) this.groupChains.clear();
    this.groupChains.set(id, snapshot ? 0 : chain);
    const entries: Iterable<[StateKey, string | null]> = snapshot ? full : delta;
    // One statement for all of them (a snapshot, or a join's starting state, is the whole state).
    const rows = [...entries].map(([k, v]) => [...splitStateKey(k), v]);
    for (const batch of jsonBatches(rows)) tx.exec("INSERT INTO state_group_entries (group_id, type, state_key, event_id) SELECT ?, value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)", id, batch);
    this.r.state.cacheGroup(id, full);
    return id;
  }

  /** The room this object holds, in `meta` (after its create event or our join was accepted).
   *  `joined`: a room we knew only through an invite or knock is now joined (RemoteRoom.seedFromJoin). */
  recordRoom(roomId: string, roomVersion: string, serverName: string, opts: { joined?: boolean; partialState?: PartialStateMeta } = {}): void {
    this.transact((tx) => this.recordRoomIn(tx, roomId, roomVersion, serverName, opts));
  }

  private recordRoomIn(tx: WriteTx, roomId: string, roomVersion: string, serverName: string, opts: { joined?: boolean; partialState?: PartialStateMeta; atEnd?: boolean } = {}): void {
    const set = (key: string, value: string) => (opts.atEnd ? this.setMetaAtEnd(key, value) : this.setMeta(tx, key, value));
    if (opts.partialState) set("partial_state", JSON.stringify(opts.partialState));
    set("room_id", roomId);
    set("room_version", roomVersion);
    set("server_name", serverName);
    if (opts.joined) {
      tx.exec("DELETE FROM meta WHERE key = 'partial' OR key = 'stripped_state' OR key LIKE 'partial_member%'");
      this.r.events.partialMarkChanged();
    }
  }

  /** Completing a partial-state join (PartialState.complete) writes through these, all in one
   *  transaction. */
  partialWrite<T>(fn: (w: PartialWrites) => T): T {
    return this.transact((tx) =>
      fn({
        addToRootGroups: (from, entries) => this.addToRootGroups(tx, from, entries),
        applyCurrentState: (changes) => this.applyCurrentState(tx, changes),
        rejectAfterAll: (id, reason) => this.rejectAfterAll(tx, id, reason),
        endPartialState: () => {
          // The completion takes a stream position of its own (no event at it): the hubs of
          // the room's local members are told the room moved there, and a sync from before it
          // gets the room's state whole (SyncReads.syncRoom, `partial_state_done`).
          const done = this.r.head.stream;
          const stream = done + 1;
          tx.exec("DELETE FROM meta WHERE key = 'partial_state' OR key = 'partial_sync'");
          tx.exec("DELETE FROM partial_fetch");
          this.setMeta(tx, "partial_state_done", done);
          this.setMeta(tx, "stream", stream);
          tx.exec("INSERT OR REPLACE INTO current_groups (stream, grp) VALUES (?, ?)", stream, this.r.head.currentGroup);
          this.r.head.stream = stream;
          return stream;
        },
        saveSync: (progress) => {
          if (progress === null) tx.exec("DELETE FROM meta WHERE key = 'partial_sync'");
          else this.setMeta(tx, "partial_sync", progress);
        },
        stageIds: (rows) => {
          for (let i = 0; i < rows.length; i += 30) {
            const chunk = rows.slice(i, i + 30);
            // pdu '' (held here), NULL (to fetch).
            tx.exec(`INSERT OR IGNORE INTO partial_fetch (event_id, in_state, pdu) VALUES ${chunk.map(() => "(?, ?, ?)").join(", ")}`, ...chunk.flatMap((r) => [r.id, r.inState ? 1 : 0, r.held ? "" : null]));
          }
        },
        stagePdus: (rows) => {
          for (const [id, pdu] of rows) tx.exec("UPDATE partial_fetch SET pdu = ? WHERE event_id = ?", pdu, id);
        },
        clearStage: () => {
          tx.exec("DELETE FROM partial_fetch");
        },
      }),
    );
  }

  private addToRootGroups(tx: WriteTx, from: number, entries: [StateKey, string][]): void {
    const roots = this.r.sql
      .exec<{ id: number }>("SELECT id FROM state_groups WHERE parent IS NULL AND id >= ?", from)
      .toArray()
      .map((x) => x.id);
    for (const g of roots) {
      for (let i = 0; i < entries.length; i += 25) {
        const chunk = entries.slice(i, i + 25);
        tx.exec(
          `INSERT OR IGNORE INTO state_group_entries (group_id, type, state_key, event_id) VALUES ${chunk.map(() => "(?, ?, ?, ?)").join(", ")}`,
          ...chunk.flatMap(([k, id]) => [g, ...splitStateKey(k), id]),
        );
      }
    }
  }

  /** An event accepted against partial state that the full state forbids: rejected now, as it
   *  would have been on arrival. It leaves the timeline (no stream position: readers serve
   *  accepted events with one) and the forward extremities (its prev events come back where
   *  nothing else accepted cites them); a state event leaves the current state, where it is
   *  still there, for the value before it. Later events keep the state groups they were given. */
  private rejectAfterAll(tx: WriteTx, id: string, reason: string): void {
    const se = this.r.events.loadEvent(id);
    if (!se) return;
    tx.exec("UPDATE events SET status = 'rejected', rejection_reason = ?, stream = NULL, state_after = state_before WHERE event_id = ?", reason, id);
    tx.exec("DELETE FROM memberships WHERE event_id = ?", id);
    this.soleExtremity = undefined;
    if (tx.exec("DELETE FROM extremities WHERE event_id = ? RETURNING event_id", id).toArray().length) {
      for (const p of se.ev.prev_events) {
        const cited = this.r.sql
          .exec("SELECT 1 FROM edges e JOIN events x ON x.event_id = e.event_id WHERE e.prev_event_id = ? AND x.status = 'accepted' AND x.stream IS NOT NULL LIMIT 1", p)
          .toArray().length;
        const ok = this.r.sql.exec("SELECT 1 FROM events WHERE event_id = ? AND status = 'accepted' AND stream IS NOT NULL", p).toArray().length;
        if (!cited && ok) tx.exec("INSERT OR IGNORE INTO extremities (event_id) VALUES (?)", p);
      }
    }
    if (se.ev.state_key === undefined || se.stateAfter === null) return;
    // A state event: every state group that took it (its own, the deltas and snapshots after
    // it, a resolution that chose it) gets the value the key had before it, in the full state
    // now known, so the states of later events and the current state the room moves to no
    // longer hold it (Synapse recomputes the state of each event when un-partialling).
    const k = stateKey(se.ev.type, se.ev.state_key);
    const before = this.r.state.groupState(se.stateBefore).get(k) ?? null;
    const oldCurrent = this.r.state.groupState(this.r.head.currentGroup);
    if (before === null) {
      // Absent before it: a snapshot (a group without a parent, its whole state) loses the
      // row; a delta gets NULL, which removes the key from what it inherits.
      tx.exec("DELETE FROM state_group_entries WHERE event_id = ? AND group_id >= ? AND group_id IN (SELECT id FROM state_groups WHERE parent IS NULL)", id, se.stateAfter);
      tx.exec("UPDATE state_group_entries SET event_id = NULL WHERE event_id = ? AND group_id >= ?", id, se.stateAfter);
    } else tx.exec("UPDATE state_group_entries SET event_id = ? WHERE event_id = ? AND group_id >= ?", before, id, se.stateAfter);
    this.r.state.clear();
    const changes = diffState(oldCurrent, this.r.state.groupState(this.r.head.currentGroup));
    if (changes.size) this.applyCurrentState(tx, changes);
  }

  /** A membership event of a room we are not in (an invite, or our knock or rejection through
   *  another server): the room is "partial" (stripped state, our member event as an outlier at
   *  the next stream position) until a join seeds it. Returns that stream position. */
  storePartialMembership(args: { roomId: string; roomVersion: string; serverName: string; stripped?: JsonObject[]; ev: RoomEvent }): number {
    const { ev } = args;
    const stream = this.r.head.stream + 1;
    this.transact((tx) => {
      this.setMeta(tx, "room_id", args.roomId);
      this.setMeta(tx, "room_version", args.roomVersion);
      this.setMeta(tx, "server_name", args.serverName);
      this.setMeta(tx, "partial", "1");
      this.r.events.partialMarkChanged();
      if (args.stripped) this.setMeta(tx, "stripped_state", JSON.stringify(args.stripped));
      this.setMeta(tx, `partial_member\u0000${ev.state_key}`, ev.event_id);
      this.setMeta(tx, `partial_stream\u0000${ev.state_key}`, stream);
      this.setMeta(tx, "stream", stream);
      tx.exec(
        `INSERT OR REPLACE INTO events (event_id, stream, depth, type, state_key, sender, origin_server_ts, pdu, status, state_before, state_after, received_ts)
         VALUES (?, NULL, ?, ?, ?, ?, ?, ?, 'accepted', NULL, NULL, ?)`,
        ev.event_id, ev.depth, ev.type, ev.state_key!, ev.sender, ev.origin_server_ts, JSON.stringify(ev.pdu), Date.now(),
      );
    });
    this.r.head.stream = stream;
    this.r.events.uncache(ev.event_id);
    return stream;
  }

  /** POST /forget: the user forgot the room at this member event (ClientReads.forget). */
  forget(userId: string, memberEventId: string): void {
    this.transact((tx) => tx.exec("INSERT OR REPLACE INTO forgotten (user_id, member_event_id) VALUES (?, ?)", userId, memberEventId));
  }

  /** Erasure: this sender's events are served redacted to later joiners (ClientReads.eraseSender). */
  eraseSender(userId: string): void {
    this.transact((tx) => tx.exec("INSERT OR IGNORE INTO erased_senders (user_id) VALUES (?)", userId));
  }

  /** Admin room deletion (src/services/admin-rooms.ts): once the evicted members' leaves have
   *  reached their sync hubs (bounded wait), drop every row this room stored and forget it in
   *  memory; the Worker has removed it from the D1 registry, so nothing addresses it again. */
  async purge(): Promise<void> {
    await this.serial(async () => {
      for (let i = 0; i < 50 && !this.r.fanout.hubsCaughtUp(); i++) await new Promise((r) => setTimeout(r, 100));
      this.r.head.beforeWrite();
      await this.r.ctx.storage.deleteAll();
      this.soleExtremity = undefined;
      this.nextGroupId = undefined;
      this.groupChains.clear();
      this.r.head.memberCounts = parseMemberCounts(openSchema(this.r.sql).get("member_counts"));
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
   *  auth cycles). `decided`, when given, receives the status each event stored by this batch
   *  was stored with (a join's starting state is read from it, not queried back). */
  async admitOutlierBatch(events: { pdu: PDU; ev: RoomEvent; digest?: PduDigest }[], origin: string, decided?: Map<string, string>): Promise<number> {
    const mode: AdmitMode = { local: false, outlier: true };
    let refused = 0;
    const checked = new Map<string, RoomEvent>();
    // Which are stored already, 90 to a query rather than one query each.
    const held = new Set(this.r.events.storedAmong(events.map((x) => x.ev.event_id)).map((r) => r.event_id));
    for (const { pdu, ev, digest } of events) {
      const c = await this.checks.checkPdu(pdu, origin, mode, { eventId: ev.event_id, digest, ev, unknown: !held.has(ev.event_id) });
      if ("ev" in c) checked.set(ev.event_id, c.ev);
      else if (c.status !== "duplicate") refused++;
    }
    // Auth order over every event given (also those refused or already held: their dependants
    // wait for them, then find them stored or not).
    const { order, cycles } = authOrder(events.map((x) => x.ev));
    for (const id of cycles) if (checked.delete(id)) refused++; // auth cycles: never admitted
    const toStore = order.filter((id) => checked.has(id));
    this.outlierRows = { events: [], authEdges: [], stored: new Map() };
    try {
      for (let i = 0; i < toStore.length; i += OUTLIER_BATCH) {
        this.transact((tx) => {
          for (const id of toStore.slice(i, i + OUTLIER_BATCH)) {
            const out = this.decideAndPersist(tx, checked.get(id)!, mode);
            if (out.status !== "accepted" && out.status !== "duplicate") refused++;
            if (out.status !== "duplicate") decided?.set(id, out.status);
          }
          this.flushOutlierRows(tx);
        });
      }
    } finally {
      this.outlierRows = undefined;
    }
    return refused;
  }

  /** While admitOutlierBatch runs: the rows decided and not yet written, and every event the
   *  batch stored (status and parsed form, for the auth checks of the events after it, which
   *  read the row back and parsed it again before). */
  private outlierRows?: { events: SqlStorageValue[][]; authEdges: [string, string[]][]; stored: Map<string, StoredEvent>; create?: StoredEvent };

  /** The batch's pending rows in a statement or two per kind (rows as JSON parameters,
   *  jsonBatches: a statement per row was most of storing a large room's state).
   *  The columns not named are those of an outlier: NULL. ("WHERE true": SQLite's upsert after
   *  INSERT ... SELECT needs a WHERE to parse.) Rows go in ordered by their keys: event IDs are
   *  hashes, so in auth order each row landed on a random page of the primary-key indexes; in
   *  key order neighbours share pages (in a micro-benchmark of 20,000 events, SQLite's inserts
   *  ~20 % cheaper, the auth edges' ~30 %); an event's auth event IDs sorted too. */
  private flushOutlierRows(tx: WriteTx): void {
    const rows = this.outlierRows!;
    const cmp = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);
    rows.events.sort((a, b) => cmp(a[0] as string, b[0] as string));
    rows.authEdges.sort((a, b) => cmp(a[0], b[0]));
    for (const batch of jsonBatches(rows.events)) {
      const columns = ["stream", "depth", "type", "state_key", "sender", "origin_server_ts", "pdu", "status", "rejection_reason", "state_before", "state_after", "prev_state", "txn_device", "txn_id", "received_ts"];
      tx.exec(
        `INSERT INTO events (event_id, ${columns.join(", ")})
         SELECT value ->> 0, NULL, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, NULL, NULL, NULL, NULL, NULL, value ->> 9
         FROM json_each(?) WHERE true
         ON CONFLICT(event_id) DO UPDATE SET ${columns.map((c) => `${c} = excluded.${c}`).join(", ")}`,
        batch,
      );
    }
    // An event's auth edges as one item, [event ID, [auth event IDs]], not an item per edge:
    // a quarter of the items to write as JSON and for SQLite to parse (node's SQLite, 80,000
    // edges of 20,000 events: ~30 % less time).
    for (const batch of jsonBatches(rows.authEdges)) {
      tx.exec("INSERT OR IGNORE INTO auth_edges (event_id, auth_event_id) SELECT e.value ->> 0, a.value FROM json_each(?) e, json_each(e.value, '$[1]') a", batch);
    }
    rows.events = [];
    rows.authEdges = [];
  }

}
