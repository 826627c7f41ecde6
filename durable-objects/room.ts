// RoomDO: one per room, the only writer of that room's events (DESIGN.md §1: "One door per room").
//
// This class holds the room's parts and its RPC surface; each RPC method delegates to the module
// that owns the concern (docs/architecture.md "Inside the RoomDO"):
//   room/core.ts       RoomHead (room ID, version, stream position, current state group), shared types
//   room/schema.ts     SQL schema
//   room/events.ts     event rows and cache, auth chains
//   room/state.ts      state groups, group cache, resolution memo, auth-edge index
//   room/keys.ts       our signing key, other servers' verify keys (memo)
//   room/pdu-checks.ts admit steps 1–2: format, size, hashes, signatures, ACL (no writes)
//   room/admit-auth.ts admit steps 3–5: state before, auth, soft fail (no writes)
//   room/writer.ts     THE WRITE DOOR: serialisation, the admit pipeline, every data-changing statement
//   room/fanout.ts     after a commit: sync hubs (watermark, redelivery), appservices, federation, D1 mirrors
//   room/local.ts      local users' events, room creation, extremity merging
//   room/views.ts      client format and history visibility
//   room/reads.ts      state and members (client and server-side reads), forget and erasure records
//   room/timeline-reads.ts      /event, /messages, /context, timestamp_to_event, peeking
//   room/conversation-reads.ts  /relations, threads, search
//   room/sync-reads.ts          the /sync adapter (room/sync-view.ts)
//   room/fed-serve.ts  what other servers may see and the federation reads
//   room/remote.ts     rooms held elsewhere: federated PDUs, joins, invites, outliers, backfill
//   room/partial-state.ts  partial-state joins: omit_members (both sides), completing the state
//   room/partial-sync.ts   partial-state joins: the alarm-driven fetch of the full state
//
// Pagination tokens ("t<n>"): a position between events; every accepted event with stream <= n is
// before it. /messages, /context and the sync work all use this form.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import type { JsonObject, PDU } from "../src/core/types";
import type { RoomEventFilter } from "../src/core/room-event-filter";
import type { RoomSyncQuery, RoomSyncView } from "./room/sync-view";
import type { RoomSearchQuery, RoomSearchResult } from "./room/search";
import type {
  AdmitOutcome,
  ContextResponse,
  LocalEventSpec,
  MessagesQuery,
  MessagesResponse,
  RelationsQuery,
  RelationsResponse,
  Requester,
  RoomResult,
  RoomSummary,
} from "../src/rpc/room";
import { parseConfig, type Config } from "../src/config";
import { RoomHead } from "./room/core";
import { openRoomStorage } from "./room/schema";
import { EventStore } from "./room/events";
import { FACTS_AT_START, RoomFacts } from "./room/facts";
import { StateStore } from "./room/state";
import { RoomKeys } from "./room/keys";
import { RoomWriter } from "./room/writer";
import { FanOut } from "./room/fanout";
import { LocalEvents } from "./room/local";
import { RoomViews } from "./room/views";
import { ClientReads } from "./room/reads";
import { TimelineReads } from "./room/timeline-reads";
import { ConversationReads } from "./room/conversation-reads";
import { SyncReads } from "./room/sync-reads";
import { FedServe } from "./room/fed-serve";
import { RemoteRoom } from "./room/remote";
import { PartialState } from "./room/partial-state";
import { PartialSync } from "./room/partial-sync";
import { checkEventAuth } from "../src/core/auth-rules";

/** make_/send_ membership asked of a room whose state is still partial waits this long for it
 *  (outside the write queue, which the completion needs), then is refused with 404 as Synapse
 *  does: a server that joined a moment ago and is named as the only `via` can then still let
 *  others in once its members arrived. */
const FED_MEMBERSHIP_WAIT_MS = 20_000;

/** Every part of one room; each module sees only its own narrow Access view of it. */
interface RoomParts {
  head: RoomHead;
  sql: SqlStorage;
  facts: RoomFacts;
  env: Env;
  ctx: DurableObjectState;
  config(): Config;
  events: EventStore;
  state: StateStore;
  keys: RoomKeys;
  writer: RoomWriter;
  fanout: FanOut;
  local: LocalEvents;
  views: RoomViews;
  reads: ClientReads;
  timeline: TimelineReads;
  conversations: ConversationReads;
  syncReads: SyncReads;
  fed: FedServe;
  remote: RemoteRoom;
  partial: PartialState;
}

export class RoomDO extends DurableObject<Env> {
  private readonly head = new RoomHead();
  private readonly events: EventStore;
  private readonly state: StateStore;
  private readonly writer: RoomWriter;
  private readonly fanout: FanOut;
  private readonly local: LocalEvents;
  private readonly views: RoomViews;
  private readonly reads: ClientReads;
  private readonly timeline: TimelineReads;
  private readonly conversations: ConversationReads;
  private readonly syncReads: SyncReads;
  private readonly fed: FedServe;
  private readonly remote: RemoteRoom;
  private readonly partial: PartialState;
  private readonly partialSync: PartialSync;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const { sql, meta } = openRoomStorage(ctx.storage.sql, FACTS_AT_START);
    const factsAtStart = meta.get(FACTS_AT_START.key);
    meta.delete(FACTS_AT_START.key);
    // The configuration, parsed once per instance (the server name is the room's, set once it
    // is created or joined).
    let config: Config | undefined;
    const configFn = () => (config && config.serverName === this.head.serverName ? config : (config = { ...parseConfig(env), serverName: this.head.serverName! }));
    const r = { head: this.head, sql, env, ctx, config: configFn } as RoomParts;
    r.facts = new RoomFacts(r, factsAtStart);
    this.events = r.events = new EventStore(r);
    this.state = r.state = new StateStore(r);
    r.keys = new RoomKeys(r);
    this.writer = r.writer = new RoomWriter(r);
    this.fanout = r.fanout = new FanOut(r);
    this.local = r.local = new LocalEvents(r);
    this.views = r.views = new RoomViews(r);
    this.reads = r.reads = new ClientReads(r);
    this.timeline = r.timeline = new TimelineReads(r);
    this.conversations = r.conversations = new ConversationReads(r);
    this.syncReads = r.syncReads = new SyncReads(r);
    this.fed = r.fed = new FedServe(r);
    this.remote = r.remote = new RemoteRoom(r);
    this.partial = r.partial = new PartialState({
      sql,
      metaFromStart: (key) => this.head.metaFromStart(key),
      currentGroup: () => this.head.currentGroup,
      loadEvent: (id) => this.events.loadEvent(id),
      groupState: (g) => this.state.groupState(g),
      admitState: (state, authChain, origin) => this.remote.admitStateOutliers(state, authChain, origin),
      heldState: (ids) => this.events.storedAmong(ids, "status = 'accepted' AND state_key IS NOT NULL").map((x) => ({ event_id: x.event_id, type: x.type, state_key: x.state_key! })),
      authCheck: (ev, st) => {
        const c = checkEventAuth(ev, this.state.authMapFrom(st, ev), this.head.rv!);
        return c.allowed ? null : (c.reason ?? "refused");
      },
      write: (fn) => this.writer.partialWrite(fn),
      dropCaches: () => {
        this.events.clearCache();
        this.state.clear();
        this.fanout.reset();
      },
      afterCommit: () => this.fanout.afterCommit(),
      armSync: () => void this.partialSync.kick().catch((e) => console.error("partial-state alarm", e)),
    });
    this.partialSync = new PartialSync({
      sql,
      env,
      ctx,
      config: configFn,
      roomId: () => this.head.roomId,
      roomVersion: () => this.head.rv,
      partial: this.partial,
      held: (ids) => new Set(this.events.storedAmong(ids).map((x) => x.event_id)),
      write: (fn) => this.writer.partialWrite(fn),
      signersWithoutKeys: (pdus, sentBy) => r.keys.signersWithoutKeys(pdus, sentBy),
      admitOutliers: (pdus, origin) => this.remote.admitOutliers(pdus, origin),
      complete: (args) => this.remote.completePartialState(args),
    });
    this.head.load(meta);
    this.fanout.start(meta);
  }

  /** Redeliver what the hub watermark says may be missing (after a restart), and what the
   *  appservice queues may have missed (fanout.ts). */
  async alarm(): Promise<void> {
    try {
      await this.fanout.alarm();
    } finally {
      // The background fetch of a partial-state join (room/partial-sync.ts) shares the alarm.
      await this.partialSync.alarm();
    }
  }

  /** Room version ID, or null when this DO holds no room. */
  async getRoomVersion(): Promise<string | null> {
    return this.head.rv?.id ?? null;
  }

  async getSummary(): Promise<RoomSummary | null> {
    if (!this.head.roomId || !this.head.rv) return null;
    return { roomId: this.head.roomId, roomVersion: this.head.rv.id, stream: this.head.stream };
  }

  createRoom(args: { serverName: string; roomId: string; roomVersion: string; createPdu: PDU; events: LocalEventSpec[]; alias?: string; publish?: boolean }): Promise<RoomResult<{ roomId: string; eventIds: string[]; aliasClaimed?: boolean }>> {
    return this.local.createRoom(args);
  }
  createLocalEvent(spec: LocalEventSpec): Promise<RoomResult<{ eventId: string; stream: number }>> {
    return this.local.createLocalEvent(spec);
  }
  /** MSC4140: watch (type, stateKey) for a user's delayed state event (delayed-state-watch.ts). */
  async watchDelayedState(userId: string, type: string, stateKey: string): Promise<void> {
    this.fanout.delayedState.watch(userId, type, stateKey);
  }
  expectJoin(): Promise<void> {
    return this.remote.expectJoin();
  }
  joinSettled(): Promise<void> {
    return this.remote.joinSettled();
  }
  admit(pdu: PDU, origin: string): Promise<AdmitOutcome> {
    return this.remote.admit(pdu, origin);
  }
  forget(userId: string): Promise<RoomResult<null>> {
    return this.reads.forget(userId);
  }
  eraseSender(userId: string): Promise<void> {
    return this.reads.eraseSender(userId);
  }
  mediaInRoom(limit = 10_000): Promise<string[]> {
    return this.reads.mediaInRoom(limit);
  }
  purge(): Promise<void> {
    return this.writer.purge();
  }
  getCurrentStateEvent(type: string, stateKey_: string): Promise<JsonObject | null> {
    return this.reads.getCurrentStateEvent(type, stateKey_);
  }
  getCurrentState(): Promise<JsonObject[]> {
    return this.reads.getCurrentState();
  }
  getCurrentStateOfType(type: string): Promise<JsonObject[]> {
    return this.reads.getCurrentStateOfType(type);
  }
  getMembership(userId: string): Promise<string | null> {
    return this.reads.getMembership(userId);
  }
  canSend(userId: string, type: string, isState: boolean): Promise<boolean> {
    return this.reads.canSend(userId, type, isState);
  }
  getPowerInfo(userId: string): Promise<{ level: number; invite: number; kick: number; ban: number; redact: number; stateDefault: number }> {
    return this.reads.getPowerInfo(userId);
  }
  getState(req: Requester): Promise<RoomResult<JsonObject[]>> {
    return this.reads.getState(req);
  }
  getStateEvent(req: Requester, type: string, key: string): Promise<RoomResult<JsonObject>> {
    return this.reads.getStateEvent(req, type, key);
  }
  getEventForClient(req: Requester, eventId: string): Promise<RoomResult<JsonObject>> {
    return this.timeline.getEventForClient(req, eventId);
  }
  threadEventInfo(req: Requester, eventId: string): Promise<RoomResult<{ stream: number | null; threadRoot: string | null; roomStream: number }>> {
    return this.conversations.threadEventInfo(req, eventId);
  }
  getMembers(req: Requester, q: { at?: string; membership?: string; notMembership?: string }): Promise<RoomResult<JsonObject[]>> {
    return this.reads.getMembers(req, q);
  }
  getJoinedMembers(req: Requester): Promise<RoomResult<Record<string, JsonObject>>> {
    return this.reads.getJoinedMembers(req);
  }
  getResidency(): Promise<{ localJoined: number; servers: string[] }> {
    return this.reads.getResidency();
  }
  getRemoteServers(): Promise<string[]> {
    return this.reads.getRemoteServers();
  }
  getJoinedUserIds(): Promise<string[]> {
    return this.reads.getJoinedUserIds();
  }
  getMessages(req: Requester, q: MessagesQuery): Promise<RoomResult<MessagesResponse>> {
    return this.timeline.getMessages(req, q);
  }
  getContext(req: Requester, eventId: string, limit: number, filter?: RoomEventFilter): Promise<RoomResult<ContextResponse>> {
    return this.timeline.getContext(req, eventId, limit, filter);
  }
  getRelations(req: Requester, q: RelationsQuery): Promise<RoomResult<RelationsResponse>> {
    return this.conversations.getRelations(req, q);
  }
  getThreads(req: Requester, q: { include: "all" | "participated"; from?: string; limit: number }): Promise<RoomResult<{ chunk: JsonObject[]; next_batch?: string }>> {
    return this.conversations.getThreads(req, q);
  }
  searchEvents(req: Requester, q: RoomSearchQuery): Promise<RoomResult<RoomSearchResult>> {
    return this.conversations.searchEvents(req, q);
  }
  hasAnnotation(sender: string, parent: string, type: string, key: string): Promise<boolean> {
    return this.conversations.hasAnnotation(sender, parent, type, key);
  }
  timestampToEvent(req: Requester, ts: number, dir: "f" | "b"): Promise<RoomResult<{ event_id: string; origin_server_ts: number }>> {
    return this.timeline.timestampToEvent(req, ts, dir);
  }
  fedTimestampToEvent(origin: string, ts: number, dir: "f" | "b"): Promise<RoomResult<{ event_id: string; origin_server_ts: number }>> {
    return this.fed.fedTimestampToEvent(origin, ts, dir);
  }
  getPdu(eventId: string): Promise<{ pdu: PDU; status: string; stream: number | null } | null> {
    return this.fed.getPdu(eventId);
  }
  getForwardExtremities(): Promise<string[]> {
    return this.reads.getForwardExtremities();
  }
  getStrippedState(): Promise<JsonObject[]> {
    return this.reads.getStrippedState();
  }
  syncRoom(req: Requester, q: RoomSyncQuery): Promise<RoomResult<RoomSyncView>> {
    return this.syncReads.syncRoom(req, q);
  }
  peekEvents(req: Requester, q: { from?: string; timeoutMs: number }): Promise<RoomResult<{ start: string; end: string; chunk: JsonObject[] }>> {
    return this.timeline.peekEvents(req, q);
  }
  async fedTemplate(args: { userId: string; membership: "join" | "leave" | "knock"; authorisedVia?: string }): Promise<RoomResult<{ room_version: string; event: JsonObject }>> {
    await this.partial.awaitFull(FED_MEMBERSHIP_WAIT_MS);
    return this.remote.fedTemplate(args);
  }
  async fedSendMembership(args: { eventId: string; pdu: PDU; origin: string; membership: "join" | "leave" | "knock"; omitMembers?: boolean; }): Promise<RoomResult<{ stateJson?: string; authChainJson?: string; servers_in_room?: string[]; event?: PDU; members_omitted?: boolean; stripped?: JsonObject[] }>> {
    await this.partial.awaitFull(FED_MEMBERSHIP_WAIT_MS);
    return this.remote.fedSendMembership(args);
  }
  fedStateAt(origin: string, eventId: string, ids: boolean): Promise<RoomResult<{ pdu_ids?: string[]; auth_chain_ids?: string[]; pdusJson?: string; authChainJson?: string }>> {
    return this.fed.fedStateAt(origin, eventId, ids);
  }
  fedEventAuth(origin: string, eventId: string): Promise<RoomResult<PDU[]>> {
    return this.fed.fedEventAuth(origin, eventId);
  }
  fedEvent(origin: string, eventId: string): Promise<RoomResult<PDU>> {
    return this.fed.fedEvent(origin, eventId);
  }
  fedBackfill(origin: string, v: string[], limit: number): Promise<RoomResult<PDU[]>> {
    return this.fed.fedBackfill(origin, v, limit);
  }
  fedMissingEvents(origin: string, earliest: string[], latest: string[], limit: number, minDepth: number): Promise<RoomResult<PDU[]>> {
    return this.fed.fedMissingEvents(origin, earliest, latest, limit, minDepth);
  }
  storeRemoteMembership(args: { serverName: string; roomId: string; roomVersion: string; pdu: PDU; stripped?: JsonObject[] }): Promise<RoomResult<{ eventId: string }>> {
    return this.remote.storeRemoteMembership(args);
  }
  getPartialInfo(): Promise<{ partial: boolean; roomVersion?: string; members: Record<string, { membership: string; sender: string; eventId: string }> }> {
    return this.remote.getPartialInfo();
  }
  seedFromJoin(args: { serverName: string; roomId: string; roomVersion: string; origin: string; join: PDU; state?: unknown[]; authChain?: unknown[]; answerJson?: string; joinEventId?: string; askedOmitMembers?: boolean; partialState?: { serversInRoom: string[] } }): Promise<RoomResult<{ eventId: string; stream: number; rejected: number }>> {
    return this.remote.seedFromJoin(args);
  }
  // Partial-state joins (room/partial-state.ts; the fetch: src/services/federation/partial-state.ts).
  async isPartialState(): Promise<boolean> {
    return this.partial.isPartial();
  }
  awaitFullState(ms: number): Promise<boolean> {
    return this.partial.awaitFull(Math.min(ms, 120_000));
  }
  /** Make sure the background fetch of the full state is scheduled (room/partial-sync.ts). */
  async kickPartialStateSync(): Promise<void> {
    await this.partialSync.kick();
  }
  heldAmong(ids: string[]): Promise<{ held: string[]; state: { event_id: string; type: string; state_key: string }[] }> {
    return this.fed.heldAmong(ids);
  }
  admitOutliers(pdus: PDU[], origin: string): Promise<number> {
    return this.remote.admitOutliers(pdus, origin);
  }
  admitWithStates(pdu: PDU, origin: string, states: Record<string, string>[]): Promise<AdmitOutcome> {
    return this.remote.admitWithStates(pdu, origin, states);
  }
  getBackfillPoints(): Promise<{ oldestStream: number; missing: string[]; complete: boolean }> {
    return this.remote.getBackfillPoints();
  }
  admitBackfill(pdus: PDU[], origin: string): Promise<{ admitted: number; missingAuth: string[] }> {
    return this.remote.admitBackfill(pdus, origin);
  }
  prepareLocalEvent(spec: LocalEventSpec): Promise<RoomResult<{ pdu: PDU; eventId: string }>> {
    return this.local.prepareLocalEvent(spec);
  }
}
