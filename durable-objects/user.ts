// UserDO: one per local user, the sync hub (issue 4). This file is the class: the constructor,
// the alarm and the RPC methods, each delegating in a few lines to the modules in
// durable-objects/user/ (docs/architecture.md has the map):
//   stream.ts        the hub's positions, sync tokens, waking long-polls
//   schema.ts        the tables, and which module writes each
//   fan-in.ts        room notices from RoomDOs; own memberships; bootstrap from D1
//   ephemeral.ts     typing, receipts, read marks, unread counts
//   settings.ts      account data, filters, push rules, notifications, ignored users
//   presence.ts      my presence and that of users I share a room with
//   e2ee-inbox.ts    to-device messages, device lists, one-time key counts
//   position-log.ts  room_log, device sync marks, compaction
//   sync.ts          the /sync assembly (what changed after a token)
//   lazy-members.ts  lazy-loaded members already sent per device
//   push-outbox.ts   push delivery to this user's pushers
//   thread-subscriptions.ts  MSC4306 thread subscriptions (read by the push rules)
// and durable-objects/sliding-conn.ts, sliding-recency.ts for Simplified Sliding Sync.
//
// Everything that can change what a user's /sync returns is pushed here (fan-out on write), and
// each push takes the next position of this user's own stream:
//   - RoomDOs, after committing an event, call roomEvent(s) on every affected local user's hub
//     (src/services/notifier.ts) with the room's new stream position;
//   - the Worker pushes typing, receipts, account data, presence;
//   - the E2EE work pushes to-device messages, device-list changes and key counts.
// A sync token `s<pos>_<epoch>` names a position in this stream (stream.ts); the position log
// (position-log.ts) maps positions to the rooms and room stream positions that changed.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import type { JsonObject } from "../src/core/types";
import type { PushAction, PushKind, RuleKind, Ruleset } from "../src/core/push-rules";
import type { PusherTarget } from "../src/core/push-gateway";
import type { HubResult, LazyMembersRoom, Membership, NotificationRow, RoomEventNotice, RoomPosition, SyncDelta, SyncRequest } from "../src/rpc/user";
import * as sliding from "./sliding-conn";
import { HUB_SCHEMA } from "./user/schema";
import { HubStream } from "./user/stream";
import { PositionLog } from "./user/position-log";
import { FanIn } from "./user/fan-in";
import { Ephemeral, type Receipt } from "./user/ephemeral";
import { Settings } from "./user/settings";
import { Presence } from "./user/presence";
import { E2eeInbox, type ToDeviceMessage } from "./user/e2ee-inbox";
import { SyncAssembly } from "./user/sync";
import { LAZY_MEMBERS_SCHEMA, forgetLazyMembers, settleLazyMembers } from "./user/lazy-members";
import { PushOutbox } from "./user/push-outbox";
import {
  THREAD_SUBSCRIPTIONS_SCHEMA,
  ThreadSubscriptions,
  parseThreadSubscriptionToken,
  threadSubscriptionToken,
  threadSubscriptionsBody,
  type SubscribeOutcome,
} from "./user/thread-subscriptions";
import { parseConfig } from "../src/config";

export class UserDO extends DurableObject<Env> {
  private sql: SqlStorage;
  private userId?: string;
  private stream: HubStream;
  private log: PositionLog;
  private fanIn: FanIn;
  private ephemeral: Ephemeral;
  private settings: Settings;
  private presence: Presence;
  private inbox: E2eeInbox;
  private syncer: SyncAssembly;
  /** Push delivery: outbox of notifications for this user's pushers (user/push-outbox.ts). */
  private push: PushOutbox;
  /** MSC4306 thread subscriptions (user/thread-subscriptions.ts). */
  private threads: ThreadSubscriptions;
  private threadSubscriptionsOn: boolean;
  /** Room notices taken but not applied yet (roomEvents with `defer`): every method but
   *  RUN_AT_ONCE waits for them (the guard after roomEvents). */
  private deferred = new Set<Promise<void>>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const sql = (this.sql = ctx.storage.sql);
    sql.exec(HUB_SCHEMA);
    this.push = new PushOutbox(ctx, env);
    sql.exec(LAZY_MEMBERS_SCHEMA);
    sql.exec(THREAD_SUBSCRIPTIONS_SCHEMA);
    sliding.initSliding(sql);
    const stream = (this.stream = new HubStream(ctx.storage));
    const meta = stream.initialMeta;
    this.userId = meta.get("user_id");
    if (!meta.has("dl_log")) {
      // Hubs from before device_list_log: start it from the latest entry per user.
      sql.exec("INSERT OR IGNORE INTO device_list_log (upos, user_id, left) SELECT upos, user_id, left FROM device_lists");
      stream.setMeta("dl_log", 1);
    }
    const base = {
      sql,
      transaction: <T>(fn: () => T) => stream.transaction(fn),
      next: () => stream.next(),
      wake: () => stream.wake(),
      setMeta: (key: string, value: string | number) => stream.setMeta(key, value),
    };
    const log = (this.log = new PositionLog({ ...base, pos: () => stream.pos }, Number(meta.get("log_floor") ?? "0")));
    const logRoom = (upos: number, roomId: string, s: number | null) => log.append(upos, roomId, s);
    const maybeCompact = () => log.maybeCompact();
    // The transactions that record pushes (receipts, room notices) tell the push outbox when
    // they roll back: what it staged and counted in memory is void.
    const pushGuarded = <T>(fn: () => T): T => {
      try {
        return fn();
      } catch (e) {
        this.push.rolledBack();
        throw e;
      }
    };
    this.ephemeral = new Ephemeral({
      ...base,
      transaction: (fn) => pushGuarded(() => stream.transaction(fn)),
      logRoom,
      maybeCompact,
      roomTouched: (roomId, from, to) => log.roomTouched(roomId, from, to),
      recordBadge: () => this.push.recordBadge(),
      afterCommit: (me) => this.push.afterCommit(me),
    });
    const threadSubscriptions = (this.threadSubscriptionsOn = parseConfig(env).threadSubscriptions);
    this.threads = new ThreadSubscriptions(base);
    this.settings = new Settings({
      ...base,
      logRoom,
      getMeta: (key) => stream.getMeta(key),
      userId: () => this.userId!,
      ruleOptions: () => ({ threadSubscriptions }),
    });
    this.presence = new Presence(base);
    this.inbox = new E2eeInbox({ ...base, env, parseToken: (t) => stream.parseToken(t), logFloor: () => log.floor });
    this.fanIn = new FanIn({
      ...base,
      env,
      batch: (fn) => pushGuarded(() => stream.batch(fn)),
      logRoom,
      maybeCompact,
      ruleset: () => this.settings.ruleset(),
      ignores: (u) => this.settings.ignores(u),
      threadSubscribed: (roomId, rootId) => this.threads.isSubscribed(roomId, rootId),
      markRead: (roomId, thread, s) => this.ephemeral.markRead(roomId, thread, s),
      recordDeviceList: (u, upos, left) => this.inbox.recordDeviceList(u, upos, left),
      deviceListsAfterMembership: (me, f) => this.inbox.afterMembership(me, f),
      recordPush: (me, roomId, stream, ev, out, flush) => this.push.recordEvent(me, roomId, stream, ev, out, flush),
      logRoomRun: (roomId, entries) => log.appendRun(roomId, entries),
      afterCommit: (me) => this.push.afterCommit(me),
    });
    this.syncer = new SyncAssembly({
      sql,
      stream,
      log,
      presence: this.presence,
      inbox: this.inbox,
      ephemeral: this.ephemeral,
      settings: this.settings,
      bootstrap: () => this.fanIn.bootstrap(this.userId!),
    });
  }

  /** The hub's user: recorded by the first RPC that names them. (Helpers are instance fields:
   *  the prototype is the RPC surface, and the guard after roomEvents wraps all of it.) */
  private me = (userId: string): string => {
    if (!this.userId) {
      this.userId = userId;
      this.stream.setMeta("user_id", userId);
    }
    return this.userId;
  };

  /** Retries of the push hand-over (user/push-outbox.ts). */
  async alarm(): Promise<void> {
    await this.push.alarm(this.userId);
  }

  // ===========================================================================================
  // Fan-in from RoomDOs (src/services/notifier.ts; user/fan-in.ts).

  /** One committed room event that concerns this user: a room they are joined to, or a member
   *  event about them (invite, join, leave, kick, ban, knock). */
  async roomEvent(userId: string, n: RoomEventNotice): Promise<void> {
    await this.roomEvents(userId, [n]);
  }

  /** Several notices in one storage transaction; idempotent (user/fan-in.ts).
   *
   *  `defer` (the RoomDO's notices for hubs other than the sender's, src/services/notifier.ts):
   *  the notice is taken now, at once, but applied a timer turn later. Under `wrangler dev`
   *  every object shares one thread, and 99 hubs' transactions and push rules ran ahead of the
   *  Worker writing the send's answer. The call still resolves only once the notice is stored
   *  (the room's delivery watermark is unchanged), and every reader of the hub waits for the
   *  notices deferred when it arrived (the guard below): the notice reached this hub before the
   *  RoomDO answered, so a request made after the send's answer sees it. */
  async roomEvents(userId: string, notices: RoomEventNotice[], defer = false): Promise<void> {
    const me = this.me(userId);
    if (!defer) return this.fanIn.roomEvents(me, notices);
    const work = new Promise((r) => setTimeout(r, 0)).then(() => this.fanIn.roomEvents(me, notices));
    this.deferred.add(work);
    try {
      await work;
    } finally {
      this.deferred.delete(work);
    }
  }

  /** The methods that run at once, without waiting for deferred notices: the notice takers
   *  (they order themselves) and the alarm (push retries, no read after a send). */
  static readonly RUN_AT_ONCE: ReadonlySet<string> = new Set(["constructor", "alarm", "roomEvent", "roomEvents"]);

  // The one guard of read-after-write: every other method on the prototype (the RPC surface;
  // helpers are instance fields, off it) first waits until the room notices deferred when it
  // was called are applied (or failed: the RoomDO redelivers). It is wrapped here, once, so a
  // method added later is guarded without a line of its own; test/integration/hub-guard.test.ts
  // calls each method while a notice is held back and lists those that did not wait.
  static {
    const proto = UserDO.prototype as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const name of Object.getOwnPropertyNames(proto)) {
      const method = Object.getOwnPropertyDescriptor(proto, name)?.value;
      if (UserDO.RUN_AT_ONCE.has(name) || typeof method !== "function") continue;
      const guarded = async function (this: UserDO, ...args: unknown[]) {
        if (this.deferred.size) await Promise.allSettled([...this.deferred]);
        return method.apply(this, args);
      };
      Object.defineProperty(guarded, "name", { value: name });
      proto[name] = guarded;
    }
  }

  /** A partial-state room of this user got its full state (durable-objects/room/partial-sync.ts):
   *  the room moved to `stream` without an event (user/fan-in.ts). */
  async roomStateCompleted(userId: string, roomId: string, stream: number): Promise<void> {
    this.fanIn.roomStateCompleted(this.me(userId), roomId, stream);
  }

  /** POST /rooms/{roomId}/forget: the room leaves every later /sync of this user until their
   *  membership changes again. */
  async forgetRoom(userId: string, roomId: string): Promise<void> {
    this.me(userId);
    this.fanIn.forgetRoom(roomId);
  }

  /** Membership of the rooms this hub knows (for /joined_rooms-like callers and tests). */
  async getRooms(): Promise<{ roomId: string; membership: Membership; stream: number }[]> {
    return this.fanIn.getRooms();
  }

  // ===========================================================================================
  // Ephemeral: typing and receipts, pushed by the Worker to every local member of the room
  // (user/ephemeral.ts).

  /** `typer` typing in `roomId` until now + timeoutMs (0: stopped). */
  async typing(userId: string, roomId: string, typer: string, timeoutMs: number): Promise<void> {
    this.me(userId);
    this.ephemeral.typing(roomId, typer, timeoutMs);
  }

  /** A receipt in one of my rooms (mine or another member's). `threadId` "" = unthreaded. */
  async receipt(userId: string, r: Receipt): Promise<void> {
    await this.ephemeral.receipt(this.me(userId), r);
  }

  // ===========================================================================================
  // Settings: account data, filters, push rules, notifications (user/settings.ts).

  async setAccountData(userId: string, roomId: string | null, type: string, content: JsonObject): Promise<void> {
    this.me(userId);
    this.settings.setAccountData(roomId, type, content);
  }

  async getAccountData(roomId: string | null, type: string): Promise<JsonObject | null> {
    return this.settings.getAccountData(roomId, type);
  }

  async createFilter(userId: string, filter: JsonObject): Promise<string> {
    this.me(userId);
    return this.settings.createFilter(filter);
  }

  /** The stored filter as JSON text (or null). */
  async getFilter(filterId: string): Promise<string | null> {
    return this.settings.getFilter(filterId);
  }

  async getPushRules(userId: string): Promise<Ruleset> {
    this.me(userId);
    return this.settings.ruleset();
  }

  async putPushRule(
    userId: string,
    kind: PushKind,
    ruleId: string,
    body: { actions: PushAction[]; conditions?: JsonObject[]; pattern?: string },
    placement: { before?: string; after?: string },
  ): Promise<HubResult<null>> {
    this.me(userId);
    return this.settings.putPushRule(kind, ruleId, body, placement);
  }

  async deletePushRule(userId: string, kind: RuleKind, ruleId: string): Promise<HubResult<null>> {
    this.me(userId);
    return this.settings.deletePushRule(userId, kind, ruleId);
  }

  /** enabled / actions of a rule (user-defined or server-default). */
  async setPushRuleAttr(userId: string, kind: RuleKind, ruleId: string, attr: { enabled?: boolean; actions?: PushAction[] }): Promise<HubResult<null>> {
    this.me(userId);
    return this.settings.setPushRuleAttr(userId, kind, ruleId, attr);
  }

  /** GET /notifications: notifying events, newest first, `from` = an upos to continue below. */
  async notifications(userId: string, q: { from?: number; limit: number; onlyHighlight: boolean }): Promise<NotificationRow[]> {
    this.me(userId);
    return this.settings.notifications(q);
  }

  /** The user's pushers changed (src/services/pushers.ts): the targets user/push-outbox.ts uses. */
  async setPushers(userId: string, targets: PusherTarget[]): Promise<void> {
    this.me(userId);
    this.push.setTargets(targets);
  }

  // ===========================================================================================
  // Thread subscriptions (MSC4306; user/thread-subscriptions.ts). The Worker checks the thread
  // root and the cause event against the RoomDO first.

  async getThreadSubscription(userId: string, roomId: string, rootId: string): Promise<{ automatic: boolean } | null> {
    this.me(userId);
    return this.threads.get(roomId, rootId);
  }

  /** `causeStream`: undefined for a manual subscription (see ThreadSubscriptions.subscribe). */
  async subscribeThread(userId: string, roomId: string, rootId: string, causeStream: number | null | undefined): Promise<SubscribeOutcome> {
    this.me(userId);
    return this.threads.subscribe(roomId, rootId, causeStream);
  }

  async unsubscribeThread(userId: string, roomId: string, rootId: string, roomStream: number): Promise<void> {
    this.me(userId);
    this.threads.unsubscribe(roomId, rootId, roomStream);
  }

  /** The user's account was deactivated (src/services/admin-accounts.ts): drop what the hub
   *  keeps for them that the account no longer needs. */
  async accountDeactivated(userId: string): Promise<void> {
    this.me(userId);
    this.threads.clear();
    this.settings.purge();
  }

  /** GET /thread_subscriptions (MSC4308, dir=b): the newest `limit` changes at hub positions in
   *  (to, from]; `from` defaults to now and `to` to the beginning, and `to` may be a sliding-sync
   *  pos of this device. */
  async threadSubscriptionPage(userId: string, q: { deviceId: string; from?: string; to?: string; limit: number }): Promise<HubResult<JsonObject>> {
    this.me(userId);
    const bad = (error: string): HubResult<JsonObject> => ({ ok: false, status: 400, errcode: "M_INVALID_PARAM", error });
    let hi = this.stream.pos;
    if (q.from !== undefined) {
      const n = parseThreadSubscriptionToken(q.from);
      if (n === null) return bad("from is not a valid token");
      hi = Math.min(n, hi);
    }
    let lo = 0;
    if (q.to !== undefined) {
      const n = parseThreadSubscriptionToken(q.to) ?? sliding.hubPosOfPos(this.sql, q.deviceId, q.to);
      if (n === null) return bad("to is not a valid token");
      lo = n;
    }
    const page = this.threads.changes(lo, hi, q.limit);
    const body: JsonObject = { ...threadSubscriptionsBody(page.changes) };
    // "If there are still more thread subscriptions to fetch, a new `from` token".
    if (page.more) body.end = threadSubscriptionToken(page.changes[0].upos - 1);
    return { ok: true, value: body };
  }

  // ===========================================================================================
  // Presence (module "Presence"; user/presence.ts).

  /** My presence, set by PUT /presence or /sync's set_presence. Returns whether it changed
   *  (the Worker then fans it out to users I share a room with). */
  async setPresence(userId: string, presence: string, statusMsg?: string | null): Promise<boolean> {
    return this.presence.setMine(this.me(userId), presence, statusMsg);
  }

  /** Another user's presence (fanned in by the Worker, from a local user or an m.presence EDU). */
  async presenceOf(userId: string, other: { userId: string; presence: string; statusMsg: string | null; lastActiveTs: number }): Promise<void> {
    this.me(userId);
    this.presence.setOther(other);
  }

  async getPresence(userId: string): Promise<{ presence: string; statusMsg: string | null; lastActiveTs: number } | null> {
    return this.presence.get(userId);
  }

  // ===========================================================================================
  // E2EE inbox (modules "Send-to-Device messaging", "End-to-End Encryption"; user/e2ee-inbox.ts).

  async pushToDevice(userId: string, deviceIds: string[], messages: ToDeviceMessage[]): Promise<void> {
    this.me(userId);
    this.inbox.pushToDevice(deviceIds, messages);
  }

  async deviceListChanged(userId: string, changedUserId: string): Promise<void> {
    this.me(userId);
    this.inbox.deviceListChanged(changedUserId);
  }

  /** Several users now share an encrypted room with this one at once (a partial-state join
   *  completed: its members arrived together). */
  async deviceListsChanged(userId: string, changedUserIds: string[]): Promise<void> {
    this.me(userId);
    this.inbox.deviceListsChanged(changedUserIds.filter((u) => u !== userId));
  }

  /** GET /keys/changes between two of this user's sync tokens. */
  async deviceListChanges(userId: string, from: string, to: string): Promise<HubResult<{ changed: string[]; left: string[] }>> {
    this.me(userId);
    return this.inbox.deviceListChanges(from, to);
  }

  async setDeviceKeyCounts(userId: string, deviceId: string, counts: Record<string, number>, fallbackTypes: string[]): Promise<void> {
    this.me(userId);
    this.inbox.setDeviceKeyCounts(deviceId, counts, fallbackTypes);
  }

  /** A deleted device: its inbox, key counts, sync mark, lazy-members and sliding state go. */
  async deleteDevice(userId: string, deviceId: string): Promise<void> {
    this.me(userId);
    this.inbox.deleteDevice(deviceId);
    this.log.forgetDevice(deviceId);
    forgetLazyMembers(this.sql, deviceId);
    sliding.forgetSlidingDevice(this.sql, deviceId);
  }

  // ===========================================================================================
  // Position log (user/position-log.ts).

  /** What one of this user's sync tokens says about one room: the room stream position the
   *  client had seen when it was issued (/messages `from`/`to` and /members `at` given a
   *  `next_batch`; src/services/room-tokens.ts). `low` = `high` when exact; otherwise the client
   *  had seen somewhere in [low, high] and each caller takes the end that returns more events,
   *  never fewer. null: low = before the room's first event, high = the room's newest. */
  async roomPosition(userId: string, roomId: string, token: string): Promise<HubResult<RoomPosition>> {
    this.me(userId);
    const p = this.stream.parseToken(token);
    if ("error" in p) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: p.error };
    return { ok: true, value: this.log.roomPositionAt(roomId, p.pos) };
  }

  /** Compact now (tests and operators; the hub does it by itself every LOG_COMPACT_EVERY
   *  positions). `keep`: positions kept exact (default LOG_KEEP); `now`: the time device marks
   *  are judged at (a later time lets marks expire); `at`: compact no higher than this
   *  position; `slice`: positions per transaction (default COMPACT_SLICE). Returns the floor,
   *  the number of log rows removed and the transactions (slices) it took. */
  async compactLog(opts: { keep?: number; now?: number; at?: number; slice?: number } = {}): Promise<{ floor: number; removed: number; slices: number }> {
    return this.log.compactLog(opts);
  }

  // ===========================================================================================
  // Sync (user/sync.ts, user/lazy-members.ts).

  /** Current position token (what an initial sync right now would return). */
  async currentToken(): Promise<string> {
    return this.stream.token(this.stream.pos);
  }

  /** What changed for this user/device after `since` — waiting up to `timeoutMs` for something
   *  to change when nothing has. An invalid token → ok:false (M_INVALID_PARAM). */
  async sync(req: SyncRequest): Promise<HubResult<SyncDelta>> {
    this.me(req.userId);
    return this.syncer.sync(req);
  }

  /** Lazy-loaded members of one /sync response (user/lazy-members.ts): which of the response's
   *  candidate members this device provably has (sent in a response at or before the client's
   *  `since`), and record what the response at `nextBatch` carries. */
  async settleLazyMembers(userId: string, req: { deviceId: string; since?: string; nextBatch: string; rooms: LazyMembersRoom[] }): Promise<Record<string, string[]>> {
    this.me(userId);
    const since = req.since === undefined ? undefined : this.stream.parseToken(req.since);
    const next = this.stream.parseToken(req.nextBatch);
    if ("error" in next || (since && "error" in since)) return {};
    return this.stream.transaction(() => settleLazyMembers(this.sql, req.deviceId, since?.pos, next.pos, req.rooms));
  }

  // ===========================================================================================
  // Simplified Sliding Sync (MSC4186): durable-objects/sliding-conn.ts.

  private slidingAccess = (): sliding.SlidingHubAccess => ({
    sql: this.sql,
    pos: () => this.stream.pos,
    waitForPush: (ms) => this.stream.waitForPush(ms),
    unreadCounts: (roomId) => this.ephemeral.unreadCounts(roomId, false).main,
    ephemeralSince: (roomId, from, q) => this.ephemeral.ephemeralSince(roomId, from, q),
    accountDataSince: (roomId, from, q) => this.settings.accountDataSince(roomId, from, q),
    threadSubscriptions: this.threadSubscriptionsOn ? this.threads : undefined,
    transaction: (fn) => this.stream.transaction(fn),
  });

  async slidingBegin(userId: string, req: sliding.BeginRequest): Promise<sliding.SlidingResult<sliding.BeginResult>> {
    this.me(userId);
    await this.fanIn.bootstrap(this.userId!);
    return sliding.slidingBegin(this.slidingAccess(), req);
  }

  async slidingCommit(userId: string, req: sliding.CommitRequest): Promise<string> {
    this.me(userId);
    return sliding.slidingCommit(this.slidingAccess(), req);
  }
}
