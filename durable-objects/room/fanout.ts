// After a commit: the sync hubs (HubFanOut with the `hub_done` watermark and alarm
// redelivery), application services, federation senders (notify), the D1 mirrors of local
// memberships and the user directory, guest kicks when guest access ends, peek waiters, and the
// fan-out facts (joined local users, servers, counts) carried across state changes.
import type { Env } from "../../src/env";
import type { RoomEvent, StateKey } from "../../src/core/types";
import { splitStateKey, stateKey } from "../../src/core/types";
import { CREATE_KEY, powerLevelOf } from "../../src/core/auth-rules";
import { parseHistoryVisibility } from "../../src/core/history-visibility";
import type { Config } from "../../src/config";
import { directoryStatements, type DirectoryMember } from "../../src/services/user-directory";
import { buildNotice, HubFanOut, recipientsOf } from "../../src/services/notifier";
import { DelayedStateWatch } from "../delayed-state-watch";
import type { RoomEventNotice } from "../../src/rpc/user";
import { enqueuePdu } from "../../src/services/federation/sender";
import { AppserviceFanOut, appserviceEvent } from "../../src/services/appservice-fanout";
import { upsertMembership } from "../../src/db/memberships";
import { domainOf } from "../../src/core/ids";
import type { LocalEventSpec, RoomResult } from "../../src/rpc/room";
import { StoredEvent, EventRow, POWER_KEY, HV_KEY, GUEST_ACCESS_KEY, HUB_REDELIVER_MS, HUB_SAVE_MS, ENCRYPTION_KEY, FanOutFacts, diffState, RoomHead } from "./core";
import type { EventStore } from "./events";
import type { PartialState } from "./partial-state";
import type { StateStore } from "./state";

/** What FanOut needs from the rest of the room (wired in durable-objects/room.ts). */
/** An event's notice and the member facts it was taken with (FanOut.noticeFacts). */
export interface NoticeFacts {
  room: FanOutFacts;
  notice: RoomEventNotice;
}

export interface FanOutAccess {
  head: RoomHead;
  partial: Pick<PartialState, "extraDestinations">;
  sql: SqlStorage;
  env: Env;
  ctx: DurableObjectState;
  events: Pick<EventStore, "cachedRow" | "loadEvent" | "membershipsOf">;
  state: Pick<StateStore, "currentAuthMap" | "groupState" | "stateMapOf">;
  /** The configuration, parsed once per instance, with this room's server name. */
  config(): Config;
  /** LocalEvents.createLocalEvent (guest kicks): typed here, as local.ts builds on this module. */
  local: { createLocalEvent(spec: LocalEventSpec): Promise<RoomResult<{ eventId: string; stream: number }>> };
}

export class FanOut {
  constructor(private readonly r: FanOutAccess) {
    this.hubs = new HubFanOut(r.env);
    this.delayedState = new DelayedStateWatch(r.sql, r.env);
  }

  /** MSC4140: others' state cancels a user's delayed state event of the same key. */
  readonly delayedState: DelayedStateWatch;

  /** At start: the hub watermark; notices not known to be delivered when this object last
   *  stopped are redelivered (alarm). Rooms from before the watermark existed count as
   *  delivered. */
  start(meta: Map<string, string>): void {
    this.hubDone = meta.has("hub_done") ? Number(meta.get("hub_done")) : this.r.head.stream;
    if (this.hubDone < this.r.head.stream) void this.r.ctx.storage.setAlarm(Date.now());
  }

  /** Fan-outs still in flight, by event ID (see notify). */
  private fanOuts = new Map<string, Promise<void>>();

  /** An accepted timeline event was committed (RoomWriter.admitInner, still inside `serial`):
   *  mirror memberships to D1 in order, wake peekers, start the fan-out (not awaited here; the
   *  write RPCs wait for it with fannedOut). */
  async committed(ev: RoomEvent, stream: number, rebroadcast?: boolean): Promise<void> {
    if (rebroadcast) this.rebroadcast.add(ev.event_id);
    this.armRedelivery();
    await this.afterCommit();
    this.wakePeekers();
    const kick = this.guestAccessChanged ? this.kickGuests() : undefined;
    const notified = this.notify(ev, stream).catch((e) => console.error("notify failed", e));
    // The write that revoked guest access answers once its guests have left (as Synapse does).
    const fan = kick ? Promise.all([notified, kick]).then(() => undefined) : notified;
    this.fanOuts.set(ev.event_id, fan);
    void fan.finally(() => this.fanOuts.delete(ev.event_id));
  }

  /** Several events committed in one transaction (a group of local sends: RoomWriter
   *  admitLocalGroup), each with the facts taken right after it was persisted, so each event's
   *  notice and recipients are those of the state at that event even when a later event of the
   *  group changed the membership. The mirrors run once for the group. */
  async committedGroup(items: { ev: RoomEvent; stream: number; facts: NoticeFacts }[]): Promise<void> {
    this.armRedelivery();
    await this.afterCommit();
    this.wakePeekers();
    const kick = this.guestAccessChanged ? this.kickGuests() : undefined;
    for (const { ev, stream, facts } of items) {
      const notified = this.notify(ev, stream, facts).catch((e) => console.error("notify failed", e));
      const fan = kick ? Promise.all([notified, kick]).then(() => undefined) : notified;
      this.fanOuts.set(ev.event_id, fan);
      void fan.finally(() => this.fanOuts.delete(ev.event_id));
    }
    this.factsTaken = false;
  }

  /** Set while facts taken by noticeFacts are waiting for their notify: advanceFanOutFacts then
   *  copies the member sets it would otherwise change in place. */
  private factsTaken = false;

  /** What an event's notice needs from the current state: called right after the event is
   *  persisted (synchronously), or by notify itself. `held`: the facts wait for a notify after
   *  later events of the same transaction. */
  noticeFacts(event: RoomEvent, stream: number, held = false): NoticeFacts {
    const room = this.fanOutFacts();
    if (held) this.factsTaken = true;
    const st = this.r.state.currentAuthMap([POWER_KEY, CREATE_KEY]);
    const notice = buildNotice({
      roomId: this.r.head.roomId!,
      stream,
      event: { event_id: event.event_id, room_id: this.r.head.roomId!, type: event.type, sender: event.sender, content: event.content, origin_server_ts: event.origin_server_ts, ...(event.state_key !== undefined ? { state_key: event.state_key } : {}) },
      memberCount: room.memberCount,
      senderPowerLevel: powerLevelOf(event.sender, st, this.r.head.rv!),
      powerLevels: st.get(POWER_KEY)?.content,
      encrypted: room.encrypted,
    });
    return { room, notice };
  }

  /** A current-state key the user directory mirrors (members, join rules, history visibility),
   *  to send on the next mirrorDirectory. */
  directoryLearns(k: StateKey): void {
    this.directoryDirty.add(k);
  }

  /** A write is starting: nothing pending from an earlier one. */
  beginWrite(): void {
    this.pendingMemberships = [];
  }

  /** Forget what was derived from storage (a rolled-back write, a purge). */
  reset(): void {
    this.fanOutCache = undefined;
    this.pendingMemberships = [];
  }

  /** The room was purged: nothing left to deliver. */
  purged(): void {
    this.hubDone = 0;
    if (this.hubSaveTimer !== undefined) clearTimeout(this.hubSaveTimer);
    this.hubSaveTimer = undefined;
  }

  /** Whether every accepted event has reached its sync hubs (the watermark). */
  hubsCaughtUp(): boolean {
    return this.hubDone >= this.r.head.stream;
  }

  /** The current state changed (RoomWriter.applyCurrentState, inside the write's transaction):
   *  note what the directory mirror, the D1 membership mirror and the guest rule must look at
   *  after the commit. */
  currentStateChanged(changes: Map<StateKey, string | null>): void {
    const localMembers: { userId: string; eventId: string; membership: string }[] = [];
    for (const [k, id] of changes) {
      const [type, skey] = splitStateKey(k);
      if (k === GUEST_ACCESS_KEY) this.guestAccessChanged = true;
      if (type === "m.room.member" || type === "m.room.join_rules" || type === "m.room.history_visibility") this.directoryDirty.add(k);
      if (type === "m.room.member" && skey.endsWith(`:${this.r.head.serverName}`)) {
        const m = id === null ? "leave" : String(this.r.events.loadEvent(id)?.ev.content.membership ?? "leave");
        localMembers.push({ userId: skey, eventId: id ?? "", membership: m });
      }
    }
    if (localMembers.length) this.pendingMemberships.push(...localMembers);
  }

  /** Wait until the sync hubs have heard of these events, so a send that returns is visible in
   *  the recipients' next /sync. Outside `serial`: the next write does not wait for fan-out. */
  async fannedOut(eventIds: string[]): Promise<void> {
    await Promise.all(eventIds.map((id) => this.fanOuts.get(id)));
  }

  /** Called after each accepted event is committed. The sync work wires UserDOs here (wake the
   *  affected local users), the federation work its Sender DOs. Not awaited inside `serial`;
   *  the write RPCs wait for it before returning (fannedOut): for the sync hubs that is the hub
   *  of the event's own user (read-your-writes), the others are told asynchronously with
   *  retries, and a delivery watermark redelivers after a restart (notifyHubs). */
  private async notify(event: RoomEvent, stream: number, facts: NoticeFacts = this.noticeFacts(event, stream)): Promise<void> {
    const { room, notice } = facts;
    // Application services: queued in commit order (so before any await here); not awaited.
    void this.appservices.push(appserviceEvent(event, this.r.head.roomId!), room.joined, stream);
    this.delayedState.onState(this.r.head.roomId!, event);
    await this.notifyHubs(notice, recipientsOf(event, room.joinedLocal, (u) => u.endsWith(`:${this.r.head.serverName}`)));
    // Federation: events that originate here (and joins/leaves/knocks we accepted as the
    // resident server) go to every server with a joined member, and to the target of a
    // membership change (invitee, kicked, banned) — Server-Server API "PDUs".
    const rebroadcast = this.rebroadcast.delete(event.event_id);
    if (domainOf(event.sender) !== this.r.head.serverName && !rebroadcast) return;
    const destinations = new Set(room.joinedServers);
    // While partial, the member events naming most servers are missing: servers_in_room too.
    for (const s of this.r.partial.extraDestinations()) destinations.add(s);
    if (event.type === "m.room.member" && event.state_key) destinations.add(domainOf(event.state_key));
    if (rebroadcast) destinations.delete(domainOf(event.sender));
    destinations.delete(this.r.head.serverName!);
    if (destinations.size === 0) return;
    await enqueuePdu(this.r.env, this.r.config(), destinations, event.pdu as unknown as Record<string, unknown>).catch((e) => console.error("enqueuePdu failed", e));
  }

  private _appservices?: AppserviceFanOut;
  private get appservices(): AppserviceFanOut {
    return (this._appservices ??= new AppserviceFanOut(this.r.env, this.r.head.serverName!, this.r.ctx.storage));
  }

  /** Hand over again the events the appservice queues may have missed because this object
   *  stopped before handing them over (AppserviceFanOut's watermark; called by alarm()). */
  private async redeliverToAppservices(): Promise<void> {
    if (!this.r.head.rv || !this.r.head.roomId) return;
    const missed = await this.appservices.behind(this.r.head.stream);
    if (missed === null) return;
    const rows = this.r.sql
      .exec<EventRow>("SELECT * FROM events WHERE stream > ? AND stream <= ? AND status = 'accepted' AND state_after IS NOT NULL ORDER BY stream", missed.after, missed.upTo)
      .toArray();
    for (const row of rows) {
      const se = this.r.events.cachedRow(row);
      void this.appservices.push(appserviceEvent(se.ev, this.r.head.roomId), this.noticeAt(se).recipients, se.stream!);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sync-hub delivery (src/services/notifier.ts HubFanOut). Every accepted timeline event must
  // reach the hubs of its local recipients, even if this object stops mid-way: `hub_done` (meta)
  // is a watermark — every event with stream <= it has reached all its hubs. Events above it
  // are redelivered by alarm() after a restart (hubs skip notices they already hold).

  readonly hubs: HubFanOut;
  private hubDone = 0;
  /** Streams handed to the fan-out and not yet delivered everywhere; highest handed. */
  private hubPending = new Set<number>();
  private hubMax = 0;
  /** Whether hubPending was filled in increasing stream order (then, a Set iterating in
   *  insertion order, its first element is the oldest undelivered stream). */
  private hubPendingOrdered = true;
  private alarmArmed = false;

  /** Redeliver what the watermark says may be missing (after a restart), or check again later
   *  while deliveries are still being retried in memory. */
  async alarm(): Promise<void> {
    this.alarmArmed = false;
    await this.redeliverToAppservices().catch((e) => console.error("appservice redelivery failed", e));
    if (this.hubDone >= this.r.head.stream || !this.r.head.rv) return;
    if (this.hubPending.size > 0) {
      this.alarmArmed = true;
      await this.r.ctx.storage.setAlarm(Date.now() + HUB_REDELIVER_MS);
      return;
    }
    const rows = this.r.sql
      .exec<EventRow>("SELECT * FROM events WHERE stream > ? AND stream <= ? AND status = 'accepted' AND state_after IS NOT NULL ORDER BY stream LIMIT 1000", this.hubDone, this.r.head.stream)
      .toArray();
    if (rows.length === 0) {
      this.hubDone = this.r.head.stream;
      this.saveHubDone();
      return;
    }
    const deliveries: Promise<void>[] = [];
    this.redelivering = true;
    this.flushHubDone();
    for (const row of rows) {
      const se = this.r.events.cachedRow(row);
      const { notice, recipients } = this.noticeAt(se);
      deliveries.push(this.notifyHubs(notice, recipients));
    }
    await Promise.all(deliveries);
  }

  /** The watermark's one row in `meta`: delivery bookkeeping, not room data, written outside
   *  the write door (scripts/check-write-door.mjs lists this exception). An upsert of one row
   *  is atomic on its own, and `serial` would make every delivery wait for the writes. */
  private saveHubDone(): void {
    this.r.sql.exec("INSERT INTO meta (key, value) VALUES ('hub_done', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", String(this.hubDone));
  }

  private async notifyHubs(notice: RoomEventNotice, recipients: string[]): Promise<void> {
    if (this.hubPending.size === 0) this.hubPendingOrdered = true;
    else if (notice.stream < this.hubMax) this.hubPendingOrdered = false;
    this.hubPending.add(notice.stream);
    this.hubMax = Math.max(this.hubMax, notice.stream);
    this.armRedelivery();
    await this.hubs.notify(notice, recipients, (s) => this.hubSettled(s));
  }

  /** Backstop if this object stops before delivery completes: the alarm redelivers. Armed by
   *  committed/committedGroup in the same synchronous run as the events' transaction, so the
   *  alarm goes in the same storage commit rather than one of its own after the D1 mirrors. */
  private armRedelivery(): void {
    if (this.alarmArmed) return;
    this.alarmArmed = true;
    void this.r.ctx.storage.setAlarm(Date.now() + HUB_REDELIVER_MS);
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
      // Redelivery (alarm) is rare and nobody waits for it: its progress is saved at once.
      if (this.redelivering) this.saveHubDone();
      else this.saveHubDoneSoon();
    }
    if (this.hubPending.size === 0) this.redelivering = false;
  }

  /** Set while alarm() redelivers, until every pending notice has settled. */
  private redelivering = false;

  /** The watermark in storage may lag the one in memory: it only bounds what a restart
   *  redelivers (hubs skip notices they hold). Saving it at once was a storage commit of its
   *  own per send, and the output gate held the send's answer until it was on disk (one more
   *  fsync on the send's path under `wrangler dev`, docs/benchmarks.md "Send path"); now it is
   *  saved at most once per HUB_SAVE_MS. */
  private hubSaveTimer?: ReturnType<typeof setTimeout>;
  private saveHubDoneSoon(): void {
    if (this.hubSaveTimer !== undefined) return;
    this.hubSaveTimer = setTimeout(() => {
      this.hubSaveTimer = undefined;
      this.saveHubDone();
    }, HUB_SAVE_MS);
  }

  /** Save the watermark now (alarm, tests): nothing left waiting on the timer. */
  flushHubDone(): void {
    if (this.hubSaveTimer === undefined) return;
    clearTimeout(this.hubSaveTimer);
    this.hubSaveTimer = undefined;
    this.saveHubDone();
  }

  /** The notice for an event from the state after it (for redelivery; notify() uses the
   *  current state, which is the same for the newest event). The members then are the current
   *  ones (fanOutFacts) corrected by the member entries that differ between the two states, so
   *  only those member events are read, not every member's. */
  private noticeAt(se: StoredEvent): { notice: RoomEventNotice; recipients: string[] } {
    const st = this.r.state.groupState(se.stateAfter);
    const now = this.fanOutFacts();
    const isLocal = (u: string) => u.endsWith(`:${this.r.head.serverName}`);
    let memberCount = now.memberCount;
    const localThen = new Map<string, boolean>();
    for (const [k, id] of diffState(this.r.state.groupState(now.group), st)) {
      if (!k.startsWith("m.room.member\u0000")) continue;
      const u = splitStateKey(k)[1];
      const joinedThen = id !== null && this.r.events.loadEvent(id)?.ev.content.membership === "join";
      if (joinedThen === now.joined.has(u)) continue;
      memberCount += joinedThen ? 1 : -1;
      if (isLocal(u)) localThen.set(u, joinedThen);
    }
    const joinedLocal = now.joinedLocal.filter((u) => localThen.get(u) !== false);
    for (const [u, joinedThen] of localThen) if (joinedThen) joinedLocal.push(u);
    const auth = this.r.state.stateMapOf(st, [POWER_KEY, CREATE_KEY]);
    const event = se.ev;
    const notice = buildNotice({
      roomId: this.r.head.roomId!,
      stream: se.stream!,
      event: { event_id: event.event_id, room_id: this.r.head.roomId!, type: event.type, sender: event.sender, content: event.content, origin_server_ts: event.origin_server_ts, ...(event.state_key !== undefined ? { state_key: event.state_key } : {}) },
      memberCount,
      senderPowerLevel: powerLevelOf(event.sender, auth, this.r.head.rv!),
      powerLevels: auth.get(POWER_KEY)?.content,
      encrypted: st.has(ENCRYPTION_KEY),
    });
    return { notice, recipients: recipientsOf(event, joinedLocal, (u) => u.endsWith(`:${this.r.head.serverName}`)) };
  }

  /** Event IDs accepted through send_join/send_leave/send_knock, to be forwarded by notify. */
  private rebroadcast = new Set<string>();

  private fanOutCache?: FanOutFacts;

  /** Joined local users, joined count and encryption of the current state (cached per group,
   *  and carried forward across state changes by advanceFanOutFacts). */
  fanOutFacts(): FanOutFacts {
    if (this.fanOutCache && this.fanOutCache.group === this.r.head.currentGroup) return this.fanOutCache;
    const joinedLocal: string[] = [];
    const joined = new Set<string>();
    const serverCounts = new Map<string, number>();
    const st = this.r.state.groupState(this.r.head.currentGroup);
    const members = [...st].filter(([k]) => k.startsWith("m.room.member\u0000"));
    const membership = this.r.events.membershipsOf(members.map(([, id]) => id));
    for (const [k, id] of members) {
      if (membership.get(id) !== "join") continue;
      const u = splitStateKey(k)[1];
      joined.add(u);
      serverCounts.set(domainOf(u), (serverCounts.get(domainOf(u)) ?? 0) + 1);
      if (u.endsWith(`:${this.r.head.serverName}`)) joinedLocal.push(u);
    }
    this.fanOutCache = {
      group: this.r.head.currentGroup,
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
  advanceFanOutFacts(old: number | null, next: number | null, changes: Map<StateKey, string | null>): void {
    let f = this.fanOutCache;
    if (!f || f.group !== old) return;
    // Facts taken for a notice still to be sent (a group commit) keep the members as they were.
    if (this.factsTaken && [...changes.keys()].some((k) => k.startsWith("m.room.member\u0000"))) {
      f = { ...f, joined: new Set(f.joined), serverCounts: new Map(f.serverCounts) };
      this.factsTaken = false;
    }
    let { joinedLocal, joinedServers, encrypted } = f;
    for (const [k, id] of changes) {
      if (k === ENCRYPTION_KEY) {
        encrypted = id !== null;
        continue;
      }
      if (!k.startsWith("m.room.member\u0000")) continue;
      const u = splitStateKey(k)[1];
      const was = f.joined.has(u);
      const now = id !== null && this.r.events.loadEvent(id)?.ev.content.membership === "join";
      if (was === now) continue;
      const server = domainOf(u);
      const count = (f.serverCounts.get(server) ?? 0) + (now ? 1 : -1);
      if (now) f.joined.add(u);
      else f.joined.delete(u);
      if (count > 0) f.serverCounts.set(server, count);
      else f.serverCounts.delete(server);
      if ((count > 0) !== joinedServers.has(server)) joinedServers = new Set(f.serverCounts.keys());
      if (u.endsWith(`:${this.r.head.serverName}`)) joinedLocal = now ? [...joinedLocal, u] : joinedLocal.filter((x) => x !== u);
    }
    this.fanOutCache = { ...f, group: next, joinedLocal, joinedServers, memberCount: f.joined.size, encrypted };
  }

  private pendingMemberships: { userId: string; eventId: string; membership: string }[] = [];
  /** Current-state keys the user directory mirrors (members, join rules, history visibility). */
  private directoryDirty = new Set<StateKey>();

  /** The user directory's view of this room (src/services/user-directory.ts): joined members and
   *  whether the room is public (join_rules public or history world_readable). */
  async mirrorDirectory(): Promise<void> {
    const stmts = this.directoryStatements();
    try {
      for (let i = 0; i < stmts.length; i += 100) await this.r.env.DB.batch(stmts.slice(i, i + 100));
    } catch (e) {
      console.error("user directory mirror failed", e);
    }
  }

  /** The D1 statements that bring the user directory up to date with the keys noted since the
   *  last call (none when nothing changed). */
  private directoryStatements(): D1PreparedStatement[] {
    if (this.directoryDirty.size === 0 || !this.r.head.roomId || !this.r.head.serverName) return [];
    const keys = [...this.directoryDirty];
    this.directoryDirty.clear();
    const st = this.r.state.groupState(this.r.head.currentGroup);
    const content = (k: StateKey) => {
      const id = st.get(k);
      return id ? this.r.events.loadEvent(id)?.ev.content : undefined;
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
    return directoryStatements(this.r.env, this.r.head.serverName, this.r.head.roomId, members, isPublic);
  }

  /** D1 statements to run with the next afterCommit's batch (LocalEvents.createRoom: the room's
   *  registry row goes with its first memberships, one D1 round trip instead of two). */
  private alsoMirror: { stmt: D1PreparedStatement; onResult?: (r: D1Result) => void }[] = [];
  mirrorWithNextCommit(stmt: D1PreparedStatement, onResult?: (r: D1Result) => void): void {
    this.alsoMirror.push({ stmt, onResult });
  }

  /** After a commit: mirror local users' memberships to D1 (for /joined_rooms and profile
   *  propagation) and the user directory, in one D1 batch (each was a round trip and a D1
   *  commit of its own on createRoom's path). Runs inside `serial`, so D1 sees changes in
   *  order. A directory statement that fails does not fail the write: then the parts run
   *  apart, as before they were batched. */
  async afterCommit(): Promise<void> {
    const extraMirrors = this.alsoMirror.splice(0);
    const extra = extraMirrors.map((m) => m.stmt);
    const answer = (results: D1Result[]) => extraMirrors.forEach((m, i) => m.onResult?.(results[i]));
    const directory = this.directoryStatements();
    const pending = this.pendingMemberships.splice(0);
    const now = Date.now();
    const memberships = pending.map((p) => upsertMembership(this.r.env.DB, { roomId: this.r.head.roomId!, userId: p.userId, membership: p.membership, eventId: p.eventId, stream: this.r.head.stream, ts: now }));
    const all = [...extra, ...memberships, ...directory];
    if (all.length === 0) return;
    if (all.length <= 100) {
      try {
        answer(await this.r.env.DB.batch(all));
        return;
      } catch (e) {
        if (directory.length === 0) throw e;
        console.error("D1 mirror batch failed; running its parts apart", e);
      }
    }
    if (extra.length || memberships.length) answer(await this.r.env.DB.batch([...extra, ...memberships]));
    try {
      for (let i = 0; i < directory.length; i += 100) await this.r.env.DB.batch(directory.slice(i, i + 100));
    } catch (e) {
      console.error("user directory mirror failed", e);
    }
  }

  private peekWaiters = new Set<() => void>();

  private wakePeekers(): void {
    for (const wake of this.peekWaiters) wake();
  }

  nextEvent(ms: number): Promise<void> {
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

  // Guest access (module "Guest Access", server behaviour): when m.room.guest_access stops being
  // can_join, "the server MUST set those users' m.room.member state to leave".
  private guestAccessChanged = false;

  /** Our joined guests leave, each as its own sender (as Synapse does: no power level needed,
   *  and guest accounts are this server's business). Runs after the write that changed the
   *  room's guest access, queued behind it; that write's RPC waits for it (fannedOut). */
  private async kickGuests(): Promise<void> {
    this.guestAccessChanged = false;
    try {
      const id = this.r.state.groupState(this.r.head.currentGroup).get(GUEST_ACCESS_KEY);
      if (id && this.r.events.loadEvent(id)?.ev.content.guest_access === "can_join") return;
      const local = this.fanOutFacts().joinedLocal;
      const guests: string[] = [];
      for (let i = 0; i < local.length; i += 90) {
        const chunk = local.slice(i, i + 90);
        const rows = await this.r.env.DB.prepare(`SELECT user_id FROM users WHERE is_guest = 1 AND user_id IN (${chunk.map(() => "?").join(", ")})`)
          .bind(...chunk)
          .all<{ user_id: string }>();
        guests.push(...rows.results.map((r) => r.user_id));
      }
      for (const g of guests) {
        const r = await this.r.local.createLocalEvent({ type: "m.room.member", state_key: g, sender: g, content: { membership: "leave" } });
        if (!r.ok) console.error("guest leave refused", g, r.error);
      }
    } catch (e) {
      console.error("kickGuests failed", e);
    }
  }

}
