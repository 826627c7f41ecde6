// Events of local users: building and signing a PDU on our forward extremities (the event
// frame: prev_events, auth_events, depth), transaction-ID idempotency, local redaction rules,
// room creation, and merging forward extremities with dummy events when there are too many.
import type { Env } from "../../src/env";
import type { JsonValue, PDU, RoomEvent, StateKey } from "../../src/core/types";
import { stateKey } from "../../src/core/types";
import { getRoomVersion } from "../../src/core/room-versions";
import { authEventKeys, CREATE_KEY, namedPowerLevel, powerLevelOf } from "../../src/core/auth-rules";
import { computeReferenceHash, hashAndSignEvent } from "../../src/core/event-hashes";
import { randomString } from "../../src/services/crypto-util";
import { claimAliasStatement } from "../../src/services/aliases";
import { publishStatement } from "../../src/services/room-directory";
import type { AdmitOutcome, LocalEventSpec, RoomError, RoomResult } from "../../src/rpc/room";
import { MAX_PREV_EVENTS, StoredEvent, fail, asRoomError, POWER_KEY, txnKey, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { RoomKeys } from "./keys";
import type { StateStore } from "./state";
import type { FanOut } from "./fanout";
import type { NewRoomRecord, RoomWriter } from "./writer";

/** What LocalEvents needs from the rest of the room (wired in durable-objects/room.ts). */
export interface LocalEventsAccess {
  head: RoomHead;
  sql: SqlStorage;
  env: Env;
  ctx: DurableObjectState;
  keys: Pick<RoomKeys, "signingKey">;
  events: Pick<EventStore, "isPartial" | "loadEvent">;
  state: Pick<StateStore, "currentAuthMap" | "stateAcross">;
  fanout: Pick<FanOut, "fanOutFacts" | "fannedOut" | "afterCommit" | "delayedState">;
  writer: Pick<RoomWriter, "serial" | "checkCreate" | "checkLocal" | "admitLocalGroup" | "knownSoleExtremity">;
}

type SendResult = RoomResult<{ eventId: string; stream: number }>;

/** Where the next event of a group goes: after the group's previous event, with the state
 *  after it (for auth_events). */
interface Tip {
  prevId: string;
  depth: number;
  before: Map<StateKey, string>;
  /** The group's events built so far (not stored yet): room versions 1 and 2 cite them by
   *  reference hash, which needs their PDU. */
  pdus: Map<string, PDU>;
}

/** The room being created by LocalEvents.createRoom: its create event goes first in the group
 *  (`outcome`: what became of it). */
interface NewRoomRun {
  record: NewRoomRecord;
  pdu: PDU;
  outcome?: AdmitOutcome;
}

/** Local sends admitted together at most (one transaction, one flush). */
const GROUP_MAX = 64;
/** Gathering (LocalEvents.gather) scales with the senders' trip time (answer to their next
 *  send, averaged): a group waits at most GATHER_TRIPS trips for senders still out, and a sender
 *  not back after EXPECT_TRIPS trips is not waited for (a person, or a client that stopped). */
const GATHER_TRIPS = 2;
const EXPECT_TRIPS = 3;
/** Bounds of the trip time used (ms): the first guess, and the least and most gathering. */
const TRIP_FIRST_MS = 10;
const TRIP_MIN_MS = 2;
const TRIP_MAX_MS = 50;

export class LocalEvents {
  constructor(private readonly r: LocalEventsAccess) {}

  /** Create the room: admit the (already signed) create event, then build the events the
   *  createRoom request implies, in order. The Worker signed the create event because the room
   *  ID (this DO's name) is derived from it in room version 12. */
  async createRoom(args: {
    serverName: string;
    roomId: string;
    roomVersion: string;
    createPdu: PDU;
    events: LocalEventSpec[];
    /** createRoom's room_alias_name and visibility "public": claimed and published in the
     *  same D1 batch as the room's registry row (aliasClaimed: whether the alias was free). */
    alias?: string;
    publish?: boolean;
  }): Promise<RoomResult<{ roomId: string; eventIds: string[]; aliasClaimed?: boolean }>> {
    const r = await this.r.writer.serial(async () => {
      try {
        if (this.r.head.roomId) fail(409, "M_ROOM_IN_USE", "Room already exists");
        const rv = getRoomVersion(args.roomVersion);
        if (!rv) fail(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version");
        this.r.head.roomId = args.roomId;
        this.r.head.rv = rv;
        this.r.head.serverName = args.serverName;
        const refused = (out: AdmitOutcome): never => fail(400, "M_INVALID_PARAM", `Create event refused: ${out.reason ?? out.status}`);
        const results: (SendResult | undefined)[] = new Array(args.events.length);
        let aliasClaimed: boolean | undefined = args.alias !== undefined ? false : undefined;
        let eventIds: string[];
        // Whatever stops the creation leaves the object as it was: no room.
        try {
          const checked = await this.r.writer.checkCreate(args.createPdu);
          if (!("ev" in checked)) refused(checked);
          const createEv = (checked as { ev: RoomEvent }).ev;
          const creator = args.createPdu.sender;
          // The D1 registry row goes in one batch with the creator's membership and the directory
          // rows (FanOut.afterCommit after the group), not in a D1 round trip of its own.
          const registry: NewRoomRecord["registry"] = [{ stmt: this.r.env.DB.prepare("INSERT OR IGNORE INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?)").bind(args.roomId, rv.id, creator, Date.now()) }];
          // The alias and the directory listing too (each was a D1 round trip of the Worker's
          // after the answer from here): the alias insert's result says whether it was free.
          if (args.alias !== undefined) registry.push({ stmt: claimAliasStatement(this.r.env.DB, args.alias, args.roomId, creator), onResult: (res) => (aliasClaimed = res.meta.changes === 1) });
          if (args.publish) registry.push({ stmt: publishStatement(this.r.env.DB, args.roomId, args.alias) });
          eventIds = [createEv.event_id];
          // The create event and the initial events are built and checked first (no storage),
          // then stored in one transaction with the room's record: one commit and one flush for
          // the room, one round of hub notices. The first refused event fails the request; the
          // events after it are not created (those before it are kept, as before).
          // (Nobody can have asked this room to watch a key: it did not exist.)
          this.r.fanout.delayedState.holdsNone();
          const run: NewRoomRun = { record: { ev: createEv, roomId: args.roomId, roomVersion: rv.id, serverName: args.serverName, registry }, pdu: args.createPdu };
          await this.admitRun(args.events, args.events.map((_, i) => i), results, [], true, run);
          if (run.outcome?.status !== "accepted") refused(run.outcome ?? { status: "invalid", reason: "not stored" });
        } catch (e) {
          this.r.head.roomId = this.r.head.rv = undefined;
          throw e;
        }
        // Nothing of the group accepted (the registry row is still waiting): write it now.
        await this.r.fanout.afterCommit();
        for (const r of results) {
          if (!r) fail(500, "M_UNKNOWN", "Room creation stopped");
          if (!r.ok) return r;
          eventIds.push(r.value.eventId);
        }
        return { ok: true as const, value: { roomId: args.roomId, eventIds, ...(aliasClaimed !== undefined ? { aliasClaimed } : {}) } };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (r.ok) await this.r.fanout.fannedOut(r.value.eventIds);
    return r;
  }

  /** Build, sign and admit an event for a local user: prev_events = the forward extremities,
   *  auth_events by the auth events selection over the state before it, depth = max(prev) + 1. */
  async createLocalEvent(spec: LocalEventSpec): Promise<SendResult> {
    const r = await new Promise<SendResult>((resolve) => {
      const k = LocalEvents.senderKey(spec);
      if (k) this.cameBack(k);
      this.sendQueue.push({ spec, resolve });
      if (this.sendQueue.length === 1) void this.r.writer.serial(() => this.admitQueued());
      else this.onQueued?.();
    });
    if (r.ok) await this.r.fanout.fannedOut([r.value.eventId]);
    // Its trip back starts now (a group's answers leave as their senders' hubs hold them).
    const k = LocalEvents.senderKey(spec);
    if (k && this.outstanding.has(k)) this.outstanding.set(k, { at: Date.now(), pending: false });
    return r;
  }

  // -------------------------------------------------------------------------------------------
  // Group commit. Sends that queue up while the room is busy with a write are admitted together
  // when their turn comes: built one after another on one linear chain (each cites the one
  // before it), each checked and authorised on its own (a refused one is answered alone and the
  // ones built on it are built again), and persisted in one transaction — one commit and one
  // flush of the output gate instead of one per event.

  private sendQueue: { spec: LocalEventSpec; resolve: (r: SendResult) => void }[] = [];
  /** The largest group admitted so far (tests and benchmarks read it). */
  largestGroup = 0;
  /** Groups admitted so far, and how many of them waited for senders (tests read them). */
  groups = 0;
  gathered = 0;

  /** Senders (sender and device) of the groups admitted lately that have not sent again: when
   *  their answer left (`pending` while it waits for their hub); a wake-up for gather(). */
  private outstanding = new Map<string, { at: number; pending: boolean }>();
  private onQueued?: () => void;
  /** The senders' trip time (ms), a moving average. It learns only from senders back within
   *  EXPECT_TRIPS trips of the current estimate (the others are forgotten first), so it climbs
   *  only towards trips under three times itself: from its first guess of 10 ms, senders on
   *  trips over ~30 ms (clients across a network) teach it nothing and are not gathered —
   *  only sends that queue while the room is busy go together for them, and theirs never wait. */
  private tripMs = TRIP_FIRST_MS;

  private cameBack(k: string): void {
    const o = this.outstanding.get(k);
    if (!o) return;
    this.outstanding.delete(k);
    if (!o.pending) this.tripMs += (Math.min(Date.now() - o.at, TRIP_MAX_MS) - this.tripMs) / 8;
  }

  /** Senders answered together come back at about the same time, each after its own trip
   *  through the Worker — but one after another, as the Worker serves them on the same thread.
   *  Before a group starts, wait (at most GATHER_TRIPS trips) for the senders answered lately
   *  that are not back yet, so they go in one group again: else the first came alone, the rest
   *  formed groups behind it, and the groups stayed small (one room commit and a round of hub
   *  calls each: most of a send's cost in a busy room). Only senders of a group of several are
   *  waited for, so sends one at a time (a lone sender, people taking turns, a bridge sending as
   *  one puppet after another) never wait. */
  private gather(): Promise<void> {
    const trip = Math.max(TRIP_MIN_MS, Math.min(TRIP_MAX_MS, this.tripMs));
    /** Whether a sender is still worth waiting for (and forget those that are not). */
    const waiting = () => {
      if (this.sendQueue.length >= GROUP_MAX) return false;
      const now = Date.now();
      let any = false;
      for (const [k, o] of this.outstanding) {
        // An answer still waiting for its hub is waited for too, within reason.
        if (now - o.at >= (o.pending ? 1000 : EXPECT_TRIPS * trip)) this.outstanding.delete(k);
        else any = true;
      }
      return any;
    };
    if (!waiting()) return Promise.resolve();
    this.gathered++;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.onQueued = undefined;
        resolve();
      };
      const timer = setTimeout(done, GATHER_TRIPS * trip);
      this.onQueued = () => {
        if (!waiting()) done();
      };
    });
  }

  private static senderKey(spec: LocalEventSpec): string | undefined {
    return spec.txn ? `${spec.sender}\u0000${spec.txn.deviceId}` : undefined;
  }

  private async admitQueued(): Promise<void> {
    await this.gather();
    const batch = this.sendQueue.splice(0, GROUP_MAX);
    // More than a group waited: the rest go next (new sends only start a drain when alone).
    if (this.sendQueue.length) void this.r.writer.serial(() => this.admitQueued());
    const results: (SendResult | undefined)[] = new Array(batch.length);
    try {
      const specs = batch.map((q) => q.spec);
      const sameAs: [number, number][] = [];
      let todo = specs.map((_, i) => i);
      // Each round persists at least the events before the first refusal and answers it.
      for (let round = 0; todo.length && round <= specs.length; round++) todo = await this.admitRun(specs, todo, results, sameAs);
      for (const [dup, first] of sameAs) results[dup] = results[first];
    } catch (e) {
      const err = asRoomError(e);
      for (let i = 0; i < batch.length; i++) results[i] ??= err;
    }
    const answered = Date.now();
    // Only the senders of a group of several are waited for: one sender at a time (a person, a
    // bridge sending as one puppet after another) is not a crowd that comes back together.
    const crowd = batch.length > 1;
    batch.forEach((q, i) => {
      const k = LocalEvents.senderKey(q.spec);
      if (k && crowd) this.outstanding.set(k, { at: answered, pending: true });
      q.resolve(results[i] ?? { ok: false, status: 500, errcode: "M_UNKNOWN", error: "Event was not admitted" });
    });
    // Hold the write door until this group's commit is on disk. Its answers wait for that
    // anyway (the output gate), and sends that arrive meanwhile queue up and go in the next
    // group together: without this wait every send came alone (the room's own work is short),
    // one commit and one flush each — the group commit never formed a group under load.
    if (this.sendQueue.length === 0) await this.r.ctx.storage.sync().catch((e) => console.error("storage sync failed", e));
  }

  /** One round of a group: build and check `todo` (indices into `specs`) in order, each on the
   *  one before, then persist them in one transaction up to the first the auth rules refuse.
   *  Fills `results`; returns the indices to build again (those after a refused event, which
   *  cited it). `sameAs` collects repeated transaction IDs within the group (answered with the
   *  first's result). `stopAtRefusal`: nothing after the first refused event (room creation). */
  async admitRun(specs: LocalEventSpec[], todo: number[], results: (SendResult | undefined)[], sameAs: [number, number][], stopAtRefusal = false, create?: NewRoomRun): Promise<number[]> {
    const built: { i: number; ev: RoomEvent; txn?: LocalEventSpec["txn"] }[] = [];
    const txnsHere = new Map<string, number>();
    // Room creation: the group is built on the create event, which is stored with it.
    let tip: Tip | undefined = create && {
      prevId: create.record.ev.event_id,
      depth: create.record.ev.depth,
      before: new Map([[CREATE_KEY, create.record.ev.event_id]]),
      pdus: new Map([[create.record.ev.event_id, create.pdu]]),
    };
    for (const i of todo) {
      const spec = specs[i];
      try {
        this.r.head.requireRoom();
        if (spec.txn) {
          const key = `${spec.sender}\u0000${spec.txn.deviceId}\u0000${txnKey(spec.txn)}`;
          const first = txnsHere.get(key);
          if (first !== undefined) {
            sameAs.push([i, first]);
            continue;
          }
          const row = this.r.sql
            .exec<{ event_id: string }>("SELECT event_id FROM txns WHERE user_id = ? AND device_id = ? AND txn_id = ?", spec.sender, spec.txn.deviceId, txnKey(spec.txn))
            .toArray()[0];
          if (row) {
            results[i] = { ok: true, value: { eventId: row.event_id, stream: this.r.events.loadEvent(row.event_id)?.stream ?? this.r.head.stream } };
            continue;
          }
          txnsHere.set(key, i);
        }
        const { pdu, eventId, size, before } = await this.buildLocalPdu(spec, tip);
        const checked = await this.r.writer.checkLocal(pdu, eventId, spec.txn, size, create !== undefined);
        if (!("ev" in checked)) {
          results[i] = checked.status === "duplicate" ? { ok: true, value: { eventId: checked.eventId!, stream: this.r.events.loadEvent(checked.eventId!)?.stream ?? this.r.head.stream } } : refusal(checked);
          continue;
        }
        const ev = checked.ev;
        built.push({ i, ev, txn: spec.txn });
        const after = ev.state_key === undefined ? before : new Map(before).set(stateKey(ev.type, ev.state_key), ev.event_id);
        tip = { prevId: ev.event_id, depth: ev.depth, before: after, pdus: (tip?.pdus ?? new Map<string, PDU>()).set(ev.event_id, ev.pdu) };
      } catch (e) {
        results[i] = asRoomError(e);
      }
      if (stopAtRefusal && results[i] && !results[i]!.ok) break;
    }
    if (built.length === 0 && !create) return [];
    this.largestGroup = Math.max(this.largestGroup, built.length);
    this.groups++;

    let outs: AdmitOutcome[];
    try {
      outs = await this.r.writer.admitLocalGroup(
        built.map((b) => ({ ev: b.ev, txn: b.txn })),
        create?.record,
      );
    } catch (e) {
      // The transaction rolled back: none of the group was stored.
      if (create) throw e;
      const err = asRoomError(e);
      for (const b of built) results[b.i] = err;
      return [];
    }
    if (create) {
      create.outcome = outs.shift()!;
      if (create.outcome.status !== "accepted") return [];
    }
    let again: number[] = [];
    outs.forEach((out, k) => {
      const { i, ev } = built[k];
      if (out.status === "accepted") results[i] = { ok: true, value: { eventId: ev.event_id, stream: out.stream! } };
      else {
        // Refused: nothing of it was stored; the events built on it are built again.
        results[i] = refusal(out);
        again = built.slice(k + 1).map((b) => b.i);
      }
    });
    return again;
  }

  private merging = false;

  extremityCount(): number {
    return this.r.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM extremities").one().n;
  }
  /** The extremity count the running merge works down to (the lowest asked for). */
  private mergeTarget = MAX_PREV_EVENTS;

  /** Keep the forward extremities at most `most` (MAX_PREV_EVENTS by default). Concurrent
   *  remote events (e.g. many joins at once) can leave more branches than one event may cite;
   *  then local events — and the join templates other servers build on — see only some of them,
   *  and a server joining later misses the state of the others until something merges them. As
   *  Synapse does, a local member sends `org.matrix.dummy_event`s, each citing MAX_PREV_EVENTS
   *  extremities, until few remain. */
  mergeExtremitiesLater(most = MAX_PREV_EVENTS): void {
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
    this.r.ctx.waitUntil(run());
  }

  /** The joined local member with the highest power level (so events_default cannot stop it). */
  private mergeSender(): string | undefined {
    const local = this.r.fanout.fanOutFacts().joinedLocal;
    if (local.length <= 1) return local[0];
    const st = this.r.state.currentAuthMap([POWER_KEY, CREATE_KEY]);
    let best = local[0];
    let bestLevel = powerLevelOf(best, st, this.r.head.rv!);
    for (const u of local.slice(1)) {
      const level = powerLevelOf(u, st, this.r.head.rv!);
      if (level > bestLevel) [best, bestLevel] = [u, level];
    }
    return best;
  }

  /** Build and sign a local user's event: prev_events = the forward extremities, auth_events
   *  by the auth events selection over the state before it, depth = max(prev) + 1. */
  private async buildLocalPdu(spec: LocalEventSpec, tip?: Tip): Promise<{ pdu: PDU; eventId: string; size: number; before: Map<StateKey, string> }> {
    const rv = this.r.head.requireRoom();
    // (In a group after its first event the room was checked already: nothing else writes
    // while the group is built, inside `serial`. A room being created has no partial mark.)
    if (!tip && this.r.events.isPartial()) fail(403, "M_FORBIDDEN", "This server is not in the room");
    if (spec.type === "m.room.redaction") this.checkLocalRedaction(spec);

    const shape = { type: spec.type, sender: spec.sender, state_key: spec.state_key, content: spec.content };
    // In a group after the first event: on the group's previous event (not stored yet).
    const { prevIds, depth, authIds, before } = tip ? { prevIds: [tip.prevId], depth: tip.depth + 1, authIds: this.authIdsFrom(tip.before, shape), before: tip.before } : this.frameHere(shape);
    const content = { ...spec.content };
    const pdu: Record<string, unknown> = {
      room_id: this.r.head.roomId,
      sender: spec.sender,
      type: spec.type,
      content,
      origin_server_ts: spec.ts ?? Date.now(),
      depth,
      prev_events: await this.eventRefs(prevIds, tip?.pdus),
      auth_events: await this.eventRefs(authIds, tip?.pdus),
    };
    // Room versions 1 and 2: the event names itself, `$opaque_id:domain` (rooms/v1.md "Event IDs").
    if (rv.eventIdFormat === 1) pdu.event_id = `$${randomString(24)}:${this.r.head.serverName!}`;
    if (spec.state_key !== undefined) pdu.state_key = spec.state_key;
    if (spec.redacts !== undefined) {
      // v11 moved `redacts` into content; older versions keep it top level.
      if (rv.v11Redaction) content.redacts = spec.redacts;
      else pdu.redacts = spec.redacts;
    }
    const key = await this.r.keys.signingKey();
    return { ...(await hashAndSignEvent(pdu as unknown as PDU, rv, this.r.head.serverName!, key)), before };
  }

  /** newEventFrame for a local event: on the forward extremities, depth = max(prev) + 1. */
  private frameHere(shape: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): { prevIds: string[]; depth: number; authIds: string[]; before: Map<StateKey, string> } {
    const { prevIds, prevs, authIds, before } = this.newEventFrame(shape);
    if (prevIds.length === 0) fail(500, "M_UNKNOWN", "Room has no forward extremities");
    return { prevIds, depth: Math.min(Number.MAX_SAFE_INTEGER, Math.max(...prevs.map((p) => p.ev.depth)) + 1), authIds, before };
  }

  /** The auth events selection over a state map. */
  private authIdsFrom(before: Map<StateKey, string>, shape: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): string[] {
    const authIds: string[] = [];
    for (const k of authEventKeys(this.r.head.rv!, shape)) {
      const id = before.get(k);
      if (id) authIds.push(id);
    }
    return authIds;
  }

  /** Where a new event goes (local events and make_* templates): prev_events = the deepest
   *  MAX_PREV_EVENTS forward extremities, auth_events by the auth events selection over the
   *  state across them. */
  newEventFrame(shape: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">): { prevIds: string[]; prevs: StoredEvent[]; authIds: string[]; before: Map<StateKey, string> } {
    // (The writer knows when there is one extremity, as after every local send: no read.)
    const sole = this.r.writer.knownSoleExtremity();
    const prevIds = sole !== undefined ? [sole] : this.r.sql
      .exec<{ event_id: string }>(
        // CROSS JOIN: extremities first (a handful of rows); with a plain JOIN SQLite scanned
        // every event to order by depth (15 ms at 13,500 events, per local event and make_join).
        "SELECT x.event_id FROM extremities x CROSS JOIN events e ON e.event_id = x.event_id ORDER BY e.depth DESC, e.stream DESC LIMIT ?",
        MAX_PREV_EVENTS,
      )
      .toArray()
      .map((r) => r.event_id);
    const prevs = prevIds.map((id) => this.r.events.loadEvent(id)!);
    const before = prevs.length ? this.r.state.stateAcross(prevs).map : new Map<StateKey, string>();
    return { prevIds, prevs, authIds: this.authIdsFrom(before, shape), before };
  }

  /** "Handling redactions": a local user may redact their own events, or others' with the
   *  redact power level. (The auth rules only check the sender's server.) */
  private checkLocalRedaction(spec: LocalEventSpec): void {
    const rv = this.r.head.rv!;
    if (!spec.redacts) fail(400, "M_BAD_JSON", "Redaction needs a target event");
    const target = this.r.events.loadEvent(spec.redacts);
    // Only an event of this room can be redacted from here (an event ID of another room is
    // unknown to this RoomDO, so it is refused and never touched).
    if (!target || target.status !== "accepted") fail(404, "M_NOT_FOUND", "Event not found in this room");
    if (target.ev.sender === spec.sender) return;
    const state = this.r.state.currentAuthMap([POWER_KEY, CREATE_KEY]);
    if (powerLevelOf(spec.sender, state, rv) < namedPowerLevel("redact", state, rv)) {
      fail(403, "M_FORBIDDEN", "You may not redact other users' events");
    }
  }

  /** `prev_events` / `auth_events` as the room version writes them: event IDs (v3+), or
   *  `[event_id, {sha256: reference hash}]` pairs (v1, v2: rooms/v1.md "Event format"). */
  async eventRefs(ids: string[], unstored?: Map<string, PDU>): Promise<JsonValue[]> {
    const rv = this.r.head.rv!;
    if (rv.eventIdFormat !== 1) return ids;
    return Promise.all(ids.map(async (id): Promise<JsonValue> => [id, { sha256: await computeReferenceHash(unstored?.get(id) ?? this.r.events.loadEvent(id)!.ev.pdu, rv) }]));
  }

  /** Build and sign a local event without admitting it (outbound invites: the invitee's server
   *  signs it first, then it comes back through admit). */
  async prepareLocalEvent(spec: LocalEventSpec): Promise<RoomResult<{ pdu: PDU; eventId: string }>> {
    return this.r.writer.serial(async () => {
      try {
        const { pdu, eventId } = await this.buildLocalPdu(spec);
        return { ok: true as const, value: { pdu, eventId } };
      } catch (e) {
        return asRoomError(e);
      }
    });
  }
}

/** The client error for a local event the admit pipeline did not accept. */
function refusal(out: AdmitOutcome): RoomError {
  if (out.status === "invalid" && out.reason === "M_TOO_LARGE") return { ok: false, status: 413, errcode: "M_TOO_LARGE", error: "Event is too large" };
  if (out.status === "invalid") return { ok: false, status: 400, errcode: "M_BAD_JSON", error: out.reason ?? "Invalid event" };
  return { ok: false, status: 403, errcode: "M_FORBIDDEN", error: out.reason ?? "Not allowed by the room's auth rules" };
}
