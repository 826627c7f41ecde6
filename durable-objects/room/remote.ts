// Taking part in rooms held by other servers: admitting their PDUs (with the join gate while a
// local join is under way), make_/send_ membership templates as the resident server, invites and
// knocks of a room we are not in, seeding a room from a send_join answer, outliers, gaps and
// backfill.
import type { Env } from "../../src/env";
import type { JsonObject, PDU, RoomEvent, StateIdMap } from "../../src/core/types";
import type { RoomVersion } from "../../src/core/room-versions";
import { stateKey } from "../../src/core/types";
import { getRoomVersion } from "../../src/core/room-versions";
import { checkEventAuth, CREATE_KEY } from "../../src/core/auth-rules";
import { computeEventId, digestPdu, toRoomEvent, type PduDigest } from "../../src/core/event-hashes";
import { signJson } from "../../src/core/signing";
import { redactEvent } from "../../src/core/redaction";
import { buildNotice } from "../../src/services/notifier";
import { upsertMembership } from "../../src/db/memberships";
import { domainOf, parseServerName } from "../../src/core/ids";
import type { AdmitOutcome, RoomResult } from "../../src/rpc/room";
import { MAX_PREV_EVENTS, JOIN_WAIT_MS, fail, asRoomError, isOutlier, HV_KEY, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { RoomKeys } from "./keys";
import type { StateStore } from "./state";
import type { FanOut } from "./fanout";
import type { RoomWriter } from "./writer";
import type { LocalEvents } from "./local";
import type { ClientReads } from "./reads";
import type { FedServe } from "./fed-serve";
import { omitMembersState, PartialStateError, type PartialState } from "./partial-state";

/** What RemoteRoom needs from the rest of the room (wired in durable-objects/room.ts). */
export interface RemoteRoomAccess {
  head: RoomHead;
  sql: SqlStorage;
  env: Env;
  ctx: DurableObjectState;
  keys: Pick<RoomKeys, "signingKey">;
  events: Pick<EventStore, "acceptedAmong" | "authChainIds" | "isPartial" | "loadCreate" | "loadEvent">;
  state: Pick<StateStore, "authMapFrom" | "groupState">;
  fanout: Pick<FanOut, "directoryLearns" | "fanOutFacts" | "fannedOut" | "hubs" | "mirrorDirectory">;
  partial: Pick<PartialState, "begin" | "complete" | "isPartial">;
  writer: Pick<RoomWriter, "admitInner" | "admitOutlierBatch" | "checkSignatures" | "recordRoom" | "reloadAfterFailure" | "serial" | "storePartialMembership">;
  local: Pick<LocalEvents, "eventRefs" | "extremityCount" | "mergeExtremitiesLater" | "newEventFrame">;
  reads: Pick<ClientReads, "getStrippedState">;
  fed: Pick<FedServe, "wireJson">;
}

export class RemoteRoom {
  constructor(private readonly r: RemoteRoomAccess) {}

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
    const out = await this.r.writer.serial(() => this.r.writer.admitInner(pdu, origin, { local: false }));
    if (out.eventId) await this.r.fanout.fannedOut([out.eventId]);
    if (out.status === "accepted") this.r.local.mergeExtremitiesLater();
    return out;
  }

  /** GET /v1/make_join, /v1/make_leave, /v1/make_knock: an unsigned membership event template
   *  on top of our forward extremities, after checking the auth rules would allow it now. */
  async fedTemplate(args: { userId: string; membership: "join" | "leave" | "knock"; authorisedVia?: string }): Promise<RoomResult<{ room_version: string; event: JsonObject }>> {
    return this.r.writer.serial(async () => {
      try {
        const rv = this.r.head.requireRoom();
        if (this.r.events.isPartial()) fail(404, "M_NOT_FOUND", "Unknown room");
        // A room whose members we are still fetching cannot vouch for a join (Synapse refuses
        // make_join for partial-state rooms too): the joining server tries another.
        if (this.r.partial.isPartial()) fail(404, "M_NOT_FOUND", "This server does not have the room's full state yet");
        const content: JsonObject = { membership: args.membership };
        if (args.authorisedVia) content.join_authorised_via_users_server = args.authorisedVia;
        const shape = { type: "m.room.member", sender: args.userId, state_key: args.userId, content };
        const { prevIds, prevs, authIds } = this.r.local.newEventFrame(shape);
        // Refuse early what the auth rules would refuse (spec: 403 "not allowed to join").
        const probe: RoomEvent = { ...shape, event_id: "$probe", room_id: this.r.head.roomId!, origin_server_ts: Date.now(), depth: 0, prev_events: prevIds, auth_events: authIds, pdu: {} as PDU };
        const r = checkEventAuth(probe, this.r.state.authMapFrom(this.r.state.groupState(this.r.head.currentGroup), probe), rv);
        if (!r.allowed) fail(403, "M_FORBIDDEN", `Not allowed: ${r.reason}`);
        const event: JsonObject = {
          room_id: this.r.head.roomId!,
          sender: args.userId,
          state_key: args.userId,
          type: "m.room.member",
          content,
          origin: domainOf(args.userId),
          origin_server_ts: Date.now(),
          depth: Math.max(...prevs.map((p) => p.ev.depth)) + 1,
          prev_events: await this.r.local.eventRefs(prevIds),
          auth_events: await this.r.local.eventRefs(authIds),
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
  }): Promise<RoomResult<{ stateJson?: string; authChainJson?: string; servers_in_room?: string[]; event?: PDU; members_omitted?: boolean; stripped?: JsonObject[] }>> {
    let accepted = false;
    let newServer = false;
    const r = await this.r.writer.serial(async () => {
      try {
        const rv = this.r.head.requireRoom();
        if (this.r.events.isPartial()) fail(404, "M_NOT_FOUND", "Unknown room");
        let pdu = args.pdu;
        if (pdu.type !== "m.room.member" || typeof pdu.state_key !== "string" || pdu.state_key !== pdu.sender) fail(400, "M_BAD_JSON", "Not a membership event of its sender");
        if (pdu.content?.membership !== args.membership) fail(400, "M_BAD_JSON", `Membership must be ${args.membership}`);
        if (domainOf(pdu.sender) !== args.origin) fail(403, "M_FORBIDDEN", "The sender is not a user of the requesting server");
        if (pdu.room_id !== this.r.head.roomId) fail(400, "M_BAD_JSON", "Event is for another room");
        let eventId: string;
        try {
          eventId = await computeEventId(pdu, rv);
        } catch {
          fail(400, "M_BAD_JSON", "Malformed event");
        }
        if (eventId !== args.eventId) fail(400, "M_BAD_JSON", "Event ID does not match the event");
        // Restricted rooms: the resident server whose user authorised the join signs it too.
        const via = pdu.content.join_authorised_via_users_server;
        if (args.membership === "join" && rv.restrictedJoins && typeof via === "string" && domainOf(via) === this.r.head.serverName) {
          const key = await this.r.keys.signingKey();
          const signed = await signJson(redactEvent(pdu, rv), this.r.head.serverName!, key, { strict: rv.strictCanonicalJson });
          pdu = { ...pdu, signatures: { ...pdu.signatures, [this.r.head.serverName!]: signed.signatures[this.r.head.serverName!] } };
        }
        // Our copy lacks member events (a partial-state join of ours): we cannot answer with the
        // state, nor vouch for the event; the other server tries another resident.
        if (this.r.partial.isPartial()) fail(404, "M_NOT_FOUND", "This server does not have the room's full state yet");
        newServer = args.membership === "join" && !this.r.fanout.fanOutFacts().joinedServers.has(args.origin);
        // "servers_in_room: the servers active in the room (ie, those with joined members) before the join".
        const serversBefore = [...this.r.fanout.fanOutFacts().joinedServers];
        const out = await this.r.writer.admitInner(pdu, args.origin, { local: false, rebroadcast: true });
        if (out.status === "missing") fail(400, "M_BAD_JSON", "Event refers to events this server does not have");
        if (out.status !== "accepted" && out.status !== "duplicate") fail(403, "M_FORBIDDEN", `Event refused: ${out.reason ?? out.status}`);
        accepted = out.status === "accepted";
        const se = this.r.events.loadEvent(eventId)!;
        if (se.status !== "accepted") fail(403, "M_FORBIDDEN", `Event refused: ${se.status}`);
        if (args.membership === "leave") return { ok: true as const, value: {} };
        if (args.membership === "knock") return { ok: true as const, value: { stripped: await this.r.reads.getStrippedState() } };
        // "The resolved current room state prior to the join event" and its auth chain.
        const stateMap = this.r.state.groupState(se.stateBefore);
        let stateIds = [...stateMap.values()];
        if (args.omitMembers) {
          const nonEmpty = (type: string, field: string) => {
            const id = stateMap.get(stateKey(type, ""));
            const v = id ? this.r.events.loadEvent(id)?.ev.content[field] : undefined;
            return typeof v === "string" && v !== "";
          };
          // Member events in stream order, for the heroes (a cursor: read only until five).
          const ordered = this.r.sql.exec<{ userId: string; eventId: string; membership: string }>("SELECT user_id AS userId, event_id AS eventId, membership FROM memberships ORDER BY stream");
          stateIds = omitMembersState(
            stateMap,
            pdu.sender,
            nonEmpty("m.room.name", "name") || nonEmpty("m.room.canonical_alias", "alias"),
            ordered,
            (id) => this.r.events.loadEvent(id)?.ev.content.membership as string | undefined,
          );
        }
        // The auth chain of the state returned and of the join; with omit_members "any events
        // that are returned in state may be omitted from auth_chain".
        const inState = new Set(stateIds);
        const chain = this.r.events
          .authChainIds([...stateIds, eventId])
          .map((x) => x.id)
          .filter((id) => !(args.omitMembers && inState.has(id)));
        // The events as JSON text (FedServe.wireJson), which the Worker puts in its answer as
        // they are.
        const value: { stateJson: string; authChainJson: string; servers_in_room: string[]; event?: PDU; members_omitted?: boolean } = {
          stateJson: this.r.fed.wireJson(stateIds),
          authChainJson: this.r.fed.wireJson(chain),
          servers_in_room: serversBefore,
        };
        if (pdu !== args.pdu) value.event = pdu;
        if (args.omitMembers) value.members_omitted = true;
        return { ok: true as const, value };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (accepted) await this.r.fanout.fannedOut([args.eventId]);
    // A server that just joined was handed the state before its join, which covers only the
    // extremities its template cited; events on other branches (concurrent joins, more branches
    // than one event cites) were never sent to it. One merge down to a single extremity sends
    // it an event citing all of them, and it fetches what it lacks (get_missing_events).
    if (accepted && newServer) this.r.local.mergeExtremitiesLater(1);
    // Concurrent joins through make_join/send_join fork the DAG, and templates cite only the
    // deepest MAX_PREV_EVENTS extremities: the others were never cited again (165 of them after
    // 3,500 joins, 16 in flight), and the current state — the resolution over every extremity's
    // state — grew costlier with each event. Past twice what one event cites, merge.
    else if (accepted && this.r.local.extremityCount() > 2 * MAX_PREV_EVENTS) this.r.local.mergeExtremitiesLater();
    return r;
  }

  /** PUT /v2/invite on our side, and our user's knock/rejection in a room we are not in: keep
   *  the (already signed) member event as an outlier and the stripped state, and tell the
   *  user's sync hub. The room stays "partial" until a join seeds it. */
  async storeRemoteMembership(args: { serverName: string; roomId: string; roomVersion: string; pdu: PDU; stripped?: JsonObject[] }): Promise<RoomResult<{ eventId: string }>> {
    const r = await this.r.writer.serial(async () => {
      try {
        const rv = getRoomVersion(args.roomVersion);
        if (!rv) fail(400, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version");
        if (this.r.head.roomId && !this.r.events.isPartial()) {
          // We are in the room already: the event is an ordinary PDU.
          const out = await this.r.writer.admitInner(args.pdu, domainOf(args.pdu.sender), { local: false });
          if (out.status === "missing" || out.status === "invalid" || out.status === "rejected") fail(403, "M_FORBIDDEN", out.reason ?? out.status);
          return { ok: true as const, value: { eventId: out.eventId!, fan: out.status === "accepted" ? out.eventId : undefined } };
        }
        this.r.head.roomId = args.roomId;
        this.r.head.rv = rv;
        this.r.head.serverName = args.serverName;
        const ev = await toRoomEvent(args.pdu, rv).catch((e: Error) => fail(400, "M_BAD_JSON", e.message));
        if (ev.room_id !== args.roomId || ev.type !== "m.room.member" || !ev.state_key) fail(400, "M_BAD_JSON", "Not a membership event for this room");
        const sigError = await this.r.writer.checkSignatures(args.pdu, rv);
        if (sigError) fail(403, "M_FORBIDDEN", sigError);
        const stream = this.r.writer.storePartialMembership({ roomId: args.roomId, roomVersion: rv.id, serverName: args.serverName, stripped: args.stripped, ev });
        const membership = String(ev.content.membership);
        await upsertMembership(this.r.env.DB, { roomId: args.roomId, userId: ev.state_key!, membership, eventId: ev.event_id, stream, ts: Date.now() }).run();
        const notice = buildNotice({
          roomId: args.roomId,
          stream,
          event: { event_id: ev.event_id, room_id: args.roomId, type: ev.type, sender: ev.sender, content: ev.content, origin_server_ts: ev.origin_server_ts, state_key: ev.state_key! },
          memberCount: 0,
          senderPowerLevel: 0,
          powerLevels: undefined,
          encrypted: false,
        });
        if (ev.state_key!.endsWith(`:${args.serverName}`)) await this.r.fanout.hubs.notify(notice, [ev.state_key!]);
        return { ok: true as const, value: { eventId: ev.event_id, fan: undefined as string | undefined } };
      } catch (e) {
        return asRoomError(e);
      }
    });
    if (!r.ok) return r;
    if (r.value.fan) await this.r.fanout.fannedOut([r.value.fan]);
    return { ok: true, value: { eventId: r.value.eventId } };
  }

  /** Whether this DO holds only an invite/knock for the room (see storeRemoteMembership). */
  async getPartialInfo(): Promise<{ partial: boolean; roomVersion?: string; members: Record<string, { membership: string; sender: string; eventId: string }> }> {
    const partial = this.r.events.isPartial();
    const members: Record<string, { membership: string; sender: string; eventId: string }> = {};
    if (partial) {
      for (const row of this.r.sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta WHERE key LIKE 'partial_member%'").toArray()) {
        const se = this.r.events.loadEvent(row.value);
        if (se) members[row.key.split("\u0000")[1]] = { membership: String(se.ev.content.membership), sender: se.ev.sender, eventId: se.ev.event_id };
      }
    }
    return { partial, roomVersion: this.r.head.rv?.id, members };
  }

  /** Joining a room held elsewhere (Server-Server API "Joining Rooms"): validate the state and
   *  auth chain a resident server returned from send_join — signatures, content hashes (an
   *  event whose hash does not match is redacted), the auth rules for each event in auth-chain
   *  order — make that state the room's starting state and admit our join on top of it. */
  async seedFromJoin(args: {
    serverName: string;
    roomId: string;
    roomVersion: string;
    origin: string;
    join: PDU;
    state?: unknown[];
    authChain?: unknown[];
    /** The send_join answer's JSON text as the resident sent it, instead of `state` and
     *  `authChain`: its `state` and `auth_chain` are taken, a co-signed copy of our join in
     *  `event` (same event ID, `joinEventId`), and when we asked for `omit_members`
     *  (`askedOmitMembers`) and the resident answered `members_omitted`, the room is seeded
     *  partial with its `servers_in_room`. Parsed here only (not in the Worker too). */
    answerJson?: string;
    joinEventId?: string;
    askedOmitMembers?: boolean;
    /** The resident omitted the member events (send_join `members_omitted`): the room stays
     *  partial until completePartialState. */
    partialState?: { serversInRoom: string[] };
  }): Promise<RoomResult<{ eventId: string; stream: number; rejected: number }>> {
    let joinId: string | undefined;
    const r = await this.r.writer.serial(async () => {
      try {
        const rv = getRoomVersion(args.roomVersion);
        if (!rv) fail(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version");
        // Another local user's join may have seeded the room meanwhile (joins at once through
        // federation): then this join goes on top of it the same way, its state merged in.
        const seeded = !!this.r.head.roomId && !this.r.events.isPartial();
        if (seeded && (this.r.head.roomId !== args.roomId || this.r.head.rv?.id !== rv.id)) fail(409, "M_UNKNOWN", "Another room lives here");
        // Rejoining after this server left: our copy stopped at the leave, and its forward
        // extremities are long superseded. The resident server's state (merged in below) is the
        // room now; our join becomes the one extremity.
        const rejoin = seeded && this.r.fanout.fanOutFacts().joinedLocal.length === 0;
        this.r.head.roomId = args.roomId;
        this.r.head.rv = rv;
        this.r.head.serverName = args.serverName;
        // Parse everything, keeping the first copy of each event.
        let received = { state: args.state ?? [], authChain: args.authChain ?? [] };
        let join = args.join;
        let partialState = args.partialState;
        if (args.answerJson !== undefined) {
          const answer = sendJoinAnswer(args.answerJson, args.origin, args.askedOmitMembers === true);
          received = { state: answer.state, authChain: answer.authChain };
          if (answer.partialState) partialState = answer.partialState;
          // Restricted joins come back co-signed by the authorising server: same event, more signatures.
          if (answer.event && args.joinEventId && (await computeEventId(answer.event, rv).catch(() => undefined)) === args.joinEventId) join = answer.event;
        }
        const { byId, stateIds } = await parseReceived(received.state, received.authChain, rv, args.roomId);
        const decided = new Map<string, string>();
        const rejected = await this.r.writer.admitOutlierBatch([...byId.values()], args.origin, decided);
        // The starting state: the state events that passed (stored accepted by the batch, or
        // held from before: only those are asked of storage, not all 20,000 of a large room).
        const state: StateIdMap = new Map();
        const passed = this.r.events.acceptedAmong([...stateIds].filter((id) => !decided.has(id)));
        for (const [id, status] of decided) if (status === "accepted") passed.add(id);
        for (const id of stateIds) {
          const ev = byId.get(id)!.ev;
          if (!passed.has(id) || ev.state_key === undefined) continue;
          const k = stateKey(ev.type, ev.state_key);
          if (state.has(k)) fail(400, "M_BAD_JSON", `Two state events for ${ev.type}/${ev.state_key}`);
          state.set(k, id);
        }
        const create = state.get(CREATE_KEY);
        if (!create) fail(400, "M_BAD_JSON", "The returned state has no create event");
        if (this.r.events.loadEvent(create)!.ev.content.room_version !== undefined && String(this.r.events.loadEvent(create)!.ev.content.room_version) !== rv.id) {
          fail(400, "M_BAD_JSON", "The create event names another room version");
        }
        // A rejoin replaces our stale forward extremities, in the same transaction that accepts the
        // join (when it is not accepted, they stay as they were).
        const out = await this.r.writer.admitInner(join, args.serverName, { local: false, extraStates: [state], replaceExtremities: rejoin });
        if (seeded && out.status === "duplicate") {
          // The resident server's copy of our join reached us first.
          const se = this.r.events.loadEvent(out.eventId!)!;
          if (se.status !== "accepted" || se.stream === null) fail(403, "M_FORBIDDEN", `Our join was refused: ${se.status}`);
          return { ok: true as const, value: { eventId: out.eventId!, stream: se.stream, rejected } };
        }
        if (out.status !== "accepted") fail(403, "M_FORBIDDEN", `Our join was refused: ${out.reason ?? out.status}`);
        joinId = out.eventId;
        const partial = partialState && !seeded ? { join: out.eventId!, joinStream: out.stream!, servers: partialState.serversInRoom } : undefined;
        this.r.writer.recordRoom(args.roomId, rv.id, args.serverName, { joined: true, partialState: partial });
        if (partial) this.r.partial.begin(partial);
        // The state we joined with came whole, not as changes: the directory learns all of it.
        for (const k of this.r.state.groupState(this.r.head.currentGroup).keys()) {
          if (k.startsWith("m.room.member\u0000") || k === HV_KEY || k === stateKey("m.room.join_rules", "")) this.r.fanout.directoryLearns(k);
        }
        await this.r.fanout.mirrorDirectory();
        const creator = this.r.events.loadEvent(create)!.ev.sender;
        // (joinRemoteRoom registered the room before send_join, without its creator.)
        await this.r.env.DB.prepare("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT(room_id) DO UPDATE SET creator = excluded.creator")
          .bind(args.roomId, rv.id, creator, Date.now())
          .run();
        return { ok: true as const, value: { eventId: out.eventId!, stream: out.stream!, rejected } };
      } catch (e) {
        if (!joinId && !this.r.sql.exec("SELECT 1 FROM meta WHERE key = 'room_id'").toArray().length) {
          this.r.head.roomId = undefined;
          this.r.head.rv = undefined;
        }
        return asRoomError(e);
      }
    });
    if (joinId) await this.r.fanout.fannedOut([joinId]);
    return r;
  }

  /** A state and its auth chain from another server, checked and stored as outliers
   *  (admitOutlierBatch, as a send_join answer is); the state events that passed, by ID. Inside
   *  the caller's `serial`. */
  async admitStateOutliers(state: unknown[], authChain: unknown[], origin: string): Promise<Map<string, RoomEvent>> {
    const rv = this.r.head.requireRoom();
    const { byId, stateIds } = await parseReceived(state, authChain, rv, this.r.head.roomId!);
    await this.r.writer.admitOutlierBatch([...byId.values()], origin);
    const passed = this.r.events.acceptedAmong([...stateIds]);
    return new Map([...stateIds].filter((id) => passed.has(id)).map((id) => [id, byId.get(id)!.ev]));
  }

  /** The full state before our partial-state join, fetched by the Worker
   *  (durable-objects/room/partial-sync.ts): complete the room (PartialState.complete).
   *  Returns what the device lists need: whether the room is encrypted, its joined members. */
  async completePartialState(args: { claim: string; origin: string; state: unknown[]; authChain: unknown[]; stateIds?: string[] }): Promise<RoomResult<{ rejected: string[]; added: number; stream: number; encrypted: boolean; localJoined: string[]; remoteJoined: string[] }>> {
    return this.r.writer.serial(async () => {
      try {
        this.r.head.requireRoom();
        const done = await this.r.partial.complete(args);
        const f = this.r.fanout.fanOutFacts();
        const local = new Set(f.joinedLocal);
        return { ok: true as const, value: { ...done, encrypted: f.encrypted, localJoined: f.joinedLocal, remoteJoined: [...f.joined].filter((u) => !local.has(u)) } };
      } catch (e) {
        if (e instanceof PartialStateError) return { ok: false as const, status: 400, errcode: "M_BAD_JSON", error: e.message };
        this.r.writer.reloadAfterFailure();
        return asRoomError(e);
      }
    });
  }

  /** Admit events received over federation as outliers (missing auth events, state at a gap),
   *  as a join's state is (admitOutlierBatch). Returns how many were not stored. */
  async admitOutliers(pdus: PDU[], origin: string): Promise<number> {
    return this.r.writer.serial(async () => {
      const rv = this.r.head.requireRoom();
      const { byId } = await parseReceived([], pdus, rv);
      return this.r.writer.admitOutlierBatch([...byId.values()], origin);
    });
  }

  /** Admit a PDU whose missing prev events' states the caller fetched (/state_ids). */
  async admitWithStates(pdu: PDU, origin: string, states: Record<string, string>[]): Promise<AdmitOutcome> {
    const extra = states.map((s) => new Map(Object.entries(s)) as StateIdMap);
    const out = await this.r.writer.serial(() => this.r.writer.admitInner(pdu, origin, { local: false, extraStates: extra }));
    if (out.eventId && out.status === "accepted") await this.r.fanout.fannedOut([out.eventId]);
    return out;
  }

  /** The oldest events of our timeline and the prev events they point at that we do not
   *  hold: where /backfill continues from. */
  async getBackfillPoints(): Promise<{ oldestStream: number; missing: string[]; complete: boolean }> {
    if (!this.r.head.rv) return { oldestStream: 0, missing: [], complete: true };
    const oldest = this.r.sql.exec<{ m: number | null }>("SELECT MIN(stream) AS m FROM events WHERE stream IS NOT NULL").one().m ?? 0;
    const rows = this.r.sql
      .exec<{ prev: string }>(
        `SELECT DISTINCT e.prev_event_id AS prev FROM edges e JOIN events x ON x.event_id = e.event_id
         WHERE x.stream IS NOT NULL AND x.stream <= ? AND NOT EXISTS (SELECT 1 FROM events y WHERE y.event_id = e.prev_event_id AND y.stream IS NOT NULL)
         LIMIT 20`,
        oldest + 50,
      )
      .toArray();
    const create = this.r.events.loadCreate();
    return { oldestStream: oldest, missing: rows.map((r) => r.prev), complete: rows.length === 0 || (create !== undefined && create.stream !== null) };
  }

  /** Events from /backfill: newest first, each stored below everything we have, with the state
   *  before its earliest known child as its (approximate) state; no effect on current state. */
  async admitBackfill(pdus: PDU[], origin: string): Promise<{ admitted: number; missingAuth: string[] }> {
    return this.r.writer.serial(async () => {
      const rv = this.r.head.requireRoom();
      const parsed = (await Promise.all(pdus.map((p) => toRoomEvent(p, rv).then((ev) => ({ p, ev }), () => undefined)))).filter((x) => x !== undefined);
      parsed.sort((a, b) => b.ev.depth - a.ev.depth);
      let admitted = 0;
      const missingAuth = new Set<string>();
      for (const { p, ev } of parsed) {
        const known = this.r.events.loadEvent(ev.event_id);
        if (known && !isOutlier(known)) continue;
        const child = this.r.sql
          .exec<{ event_id: string }>(
            "SELECT x.event_id FROM edges e JOIN events x ON x.event_id = e.event_id WHERE e.prev_event_id = ? AND x.stream IS NOT NULL ORDER BY x.stream ASC LIMIT 1",
            ev.event_id,
          )
          .toArray()[0];
        if (!child) continue; // not connected to what we hold
        let childBefore = new Map(this.r.state.groupState(this.r.events.loadEvent(child.event_id)!.stateBefore));
        // The child's state includes this event when it is a state event: take it back out.
        if (ev.state_key !== undefined && childBefore.get(stateKey(ev.type, ev.state_key)) === ev.event_id) {
          childBefore = new Map(childBefore);
          childBefore.delete(stateKey(ev.type, ev.state_key));
        }
        const minStream = this.r.sql.exec<{ m: number | null }>("SELECT MIN(stream) AS m FROM events WHERE stream IS NOT NULL").one().m ?? 1;
        const out = await this.r.writer.admitInner(p, origin, { local: false, backfillStream: Math.min(minStream, 1) - 1, extraStates: [childBefore] });
        if (out.status === "accepted") admitted++;
        if (out.status === "missing") for (const m of out.missing ?? []) missingAuth.add(m);
      }
      return { admitted, missingAuth: [...missingAuth] };
    });
  }

}

/** The parts of a send_join answer's text (Server-Server API PUT /v2/send_join) seedFromJoin
 *  takes. An answer that is not JSON, has no `state` or `auth_chain` list, or omits the members
 *  without `servers_in_room` ("Required if members_omitted is true": without it we would not
 *  know where to send our events or fetch the rest of the state from) is the resident's fault:
 *  502, and the joining Worker tries the next server. */
function sendJoinAnswer(text: string, origin: string, askedOmitMembers: boolean): { state: unknown[]; authChain: unknown[]; event?: PDU; partialState?: { serversInRoom: string[] } } {
  let answer: { state?: unknown; auth_chain?: unknown; event?: unknown; members_omitted?: unknown; servers_in_room?: unknown };
  try {
    answer = JSON.parse(text);
  } catch {
    fail(502, "M_UNKNOWN", `${origin} answered send_join with non-JSON`);
  }
  if (!answer || typeof answer !== "object" || !Array.isArray(answer.state) || !Array.isArray(answer.auth_chain)) fail(502, "M_UNKNOWN", `${origin} answered send_join without state`);
  const event = answer.event && typeof answer.event === "object" && !Array.isArray(answer.event) ? (answer.event as PDU) : undefined;
  if (!askedOmitMembers || answer.members_omitted !== true) return { state: answer.state, authChain: answer.auth_chain, event };
  if (!Array.isArray(answer.servers_in_room)) fail(502, "M_UNKNOWN", `${origin} omitted members without servers_in_room`);
  const servers = answer.servers_in_room.filter((x): x is string => typeof x === "string" && !!parseServerName(x)).slice(0, 1000);
  return { state: answer.state, authChain: answer.auth_chain, event, partialState: { serversInRoom: [origin, ...servers.filter((x) => x !== origin)] } };
}

/** A state and auth chain received from another server, parsed for admitOutlierBatch: each
 *  PDU's digest (PduDigest: its event ID, and what its checks need, from one encoding) and
 *  RoomEvent, the first copy of each event ID, the auth chain's first; `stateIds`, the events
 *  of `state`. Malformed PDUs and, when `roomId` is given, those of another room are dropped. A
 *  PDU that is not canonical JSON keeps its place without a digest: admitOutlierBatch refuses
 *  it (and counts it) as it would any invalid event. */
async function parseReceived(state: unknown[], authChain: unknown[], rv: RoomVersion, roomId?: string) {
  const byId = new Map<string, { pdu: PDU; ev: RoomEvent; digest?: PduDigest }>();
  const stateIds = new Set<string>();
  const parse = async (raw: unknown, inState: boolean) => {
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) return;
    const pdu = raw as PDU;
    try {
      const digest = await digestPdu(pdu, rv).catch(() => undefined);
      const ev = await toRoomEvent(pdu, rv, digest?.eventId);
      if (roomId !== undefined && ev.room_id !== roomId) return;
      if (!byId.has(ev.event_id)) byId.set(ev.event_id, { pdu, ev, digest });
      if (inState) stateIds.add(ev.event_id);
    } catch {
      /* malformed: dropped */
    }
  };
  for (const x of authChain) await parse(x, false);
  for (const x of state) await parse(x, true);
  return { byId, stateIds };
}
