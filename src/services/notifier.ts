// Fan-out on write (docs/architecture.md, "Request flow"): after a RoomDO commits an event it
// tells the UserDOs (sync hubs) of the affected local users; typing, receipts and presence are
// fanned out the same way by the Worker. Each hub records the change in its own stream and
// wakes its long-polling /sync.
import type { Env } from "../env";
import type { Config } from "../config";
import { parseConfig } from "../config";
import type { RoomEventNotice } from "../rpc/user";
import { joinedCoMembers } from "../db/memberships";
import type { JsonObject } from "../core/types";

// Addressing hubs lives in src/rpc/stubs.ts; re-exported for this module's many importers.
export { userStub, type UserStub } from "../rpc/stubs";
import { userStub, type UserStub } from "../rpc/stubs";

/** Which local users a committed event concerns: everyone joined now, plus the target of a
 *  member event (so invitees, the kicked and the banned hear about it). Pure. */
export function recipientsOf(ev: { type: string; state_key?: string }, joinedLocal: string[], isLocal: (userId: string) => boolean): string[] {
  const out = new Set(joinedLocal);
  if (ev.type === "m.room.member" && ev.state_key && isLocal(ev.state_key)) out.add(ev.state_key);
  return [...out];
}

/** Tell every recipient's hub about a committed event (fan-out on write).
 *
 * Semantics: the returned promise waits only for the hub of the user the event comes from (the
 * sender, when a local recipient; else the local user a member event is about), so that user
 * reads their own write: when their send returns, their next /sync has it. Every other
 * recipient is told asynchronously — their long-polling /sync wakes the moment the notice
 * lands, typically within milliseconds of the send returning. Waiting for all of them made a
 * send cost one hub storage commit per joined local user (hundreds of ms under `wrangler dev`
 * with 10 members, docs/benchmarks.md).
 *
 * Primary hubs first: the events notified in one synchronous run (one commit, or a group commit
 * of several senders' events) form a round; the round's primary hubs are called at once, the
 * other recipients' hubs once every primary's first attempt has settled (delivered or failed).
 * Started together, the others' work (push rules, pushes) ran on the same thread as the
 * primary's commit under `wrangler dev` and the send's answer waited behind it
 * (docs/benchmarks.md "Push"). The other hubs are still called before the RoomDO answers (so
 * each holds the notice before any later request reaches it: read-after-write for every
 * user), but with `defer`: each hub registers the notice and does its work a timer turn later,
 * and its readers wait for it (UserDO.roomEvents), so the send's answer goes out first.
 *
 * Nothing is lost: notices go through one queue per recipient hub (per isolate), delivered in
 * order, batched (UserDO.roomEvents: one storage transaction for everything queued meanwhile)
 * and retried with backoff when a hub call fails; hubs ignore a notice they already hold, so
 * redelivery is safe. A queue takes its notices in stream order at once and only holds back
 * the head while its round is closed to it, so a later notice never overtakes an earlier one.
 * `onSettled(stream)` runs once every recipient has the notice (the RoomDO keeps a delivery
 * watermark with it, to redeliver after a restart). */
export class HubFanOut {
  /** One queue per recipient hub. Owned by one Durable Object (stubs and promises must not
   *  cross objects' I/O contexts). */
  private queues = new Map<string, HubQueue>();
  private config: Config;
  /** The round the current synchronous run adds to (closed by a microtask). */
  private round: Round | null = null;

  /** Configuration is parsed here once per instance (one per RoomDO). */
  constructor(private env: Env) {
    this.config = parseConfig(env);
  }

  async notify(notice: RoomEventNotice, recipients: string[], onSettled?: (stream: number) => void): Promise<void> {
    if (recipients.length === 0) {
      onSettled?.(notice.stream);
      return;
    }
    const ev = notice.event;
    const primary = recipients.includes(ev.sender) ? ev.sender : ev.type === "m.room.member" && ev.state_key && recipients.includes(ev.state_key) ? ev.state_key : null;
    let round = this.round;
    if (!round) {
      const made = (round = this.round = new Round());
      queueMicrotask(() => {
        if (this.round === made) this.round = null;
        made.close();
      });
    }
    let left = recipients.length;
    let primaryDone: Promise<void> = Promise.resolve();
    for (const u of recipients) {
      const delivered = this.queue(u).push(notice, round);
      if (u === primary) {
        primaryDone = delivered.attempted;
        round.addPrimary(u, delivered.attempted);
      }
      void delivered.done.then(() => {
        if (--left === 0) onSettled?.(notice.stream);
      });
    }
    await primaryDone;
  }

  /** Hub stubs, kept while their queue comes and goes (a queue is dropped when idle, after about
   *  every send; addressing a hub hashes its name). Bounded; a failing hub gets a fresh one. */
  private stubs = new Map<string, UserStub>();

  private stubOf(userId: string, fresh: boolean): UserStub {
    let stub = fresh ? undefined : this.stubs.get(userId);
    if (!stub) {
      if (this.stubs.size >= MAX_STUBS) this.stubs.clear();
      this.stubs.set(userId, (stub = userStub(this.env, userId, this.config)));
    }
    return stub;
  }

  private queue(userId: string): HubQueue {
    let q = this.queues.get(userId);
    if (!q) {
      const made: HubQueue = new HubQueue(
        (fresh) => this.stubOf(userId, fresh),
        userId,
        () => {
          if (this.queues.get(userId) === made) this.queues.delete(userId);
        },
      );
      this.queues.set(userId, made);
      q = made;
    }
    return q;
  }
}

/** The notices of one synchronous run of notify calls. Open at once to its primary hubs; open
 *  to every other hub once each primary's first attempt has settled. */
class Round {
  private primaries = new Set<string>();
  private attempts: Promise<void>[] = [];
  private closed = false;
  private open = false;
  private markClosed!: () => void;
  private readonly whenClosed = new Promise<void>((r) => (this.markClosed = r));
  private opened?: Promise<void>;

  addPrimary(userId: string, attempted: Promise<void>): void {
    this.primaries.add(userId);
    this.attempts.push(attempted);
  }

  /** No more notices join (the run ended). */
  close(): void {
    this.closed = true;
    this.markClosed();
    this.opened = Promise.all(this.attempts).then(() => {
      this.open = true;
    });
  }

  /** Whether `userId` is one of this round's primary hubs (the send waits for it). */
  isPrimary(userId: string): boolean {
    return this.primaries.has(userId);
  }

  /** Whether `userId`'s hub may be sent this round's notices now. */
  passes(userId: string): boolean {
    return this.open || (this.closed && (this.attempts.length === 0 || this.primaries.has(userId)));
  }

  /** Resolves when passes(userId) may have turned true. */
  async wait(userId: string): Promise<void> {
    await this.whenClosed;
    if (!this.passes(userId)) await this.opened;
  }
}

/** Hub stubs a HubFanOut keeps (one per recipient of its room's recent events). */
const MAX_STUBS = 4096;

/** Retry delays for a failing hub (ms); the last one repeats. */
const RETRY_MS = [50, 200, 1000, 5000, 30_000];
/** Notices per hub call. */
const BATCH = 64;

interface Queued {
  notice: RoomEventNotice;
  round: Round;
  /** First delivery attempt finished (ok or not). */
  attempted: () => void;
  /** Delivered. */
  done: () => void;
}

/** One recipient hub's queue: at most one call in flight; what queues up meanwhile goes in the
 *  next call, in order. Notices are sent from the head while their round passes this hub. */
class HubQueue {
  private pending: Queued[] = [];
  private running = false;
  private failures = 0;
  private stub: UserStub;
  constructor(
    private makeStub: (fresh: boolean) => UserStub,
    private userId: string,
    private onIdle: () => void,
  ) {
    this.stub = makeStub(false);
  }

  push(notice: RoomEventNotice, round: Round): { attempted: Promise<void>; done: Promise<void> } {
    let attempted!: () => void;
    let done!: () => void;
    const a = new Promise<void>((r) => (attempted = r));
    const d = new Promise<void>((r) => (done = r));
    // A hub that is failing (waiting to retry): its first attempt at this notice is the retry,
    // seconds away; neither the write nor the other hubs wait for that.
    if (this.failures > 0) attempted();
    this.pending.push({ notice, round, attempted, done });
    if (!this.running) {
      // Start after the current synchronous run: a group commit notifies all its events in one
      // loop, and they go in the first call together (the first alone cost a hub call and
      // commit of its own, which the group's answer waited for).
      this.running = true;
      queueMicrotask(() => void this.pump());
    }
    return { attempted: a, done: d };
  }

  private async pump(): Promise<void> {
    this.running = true;
    while (this.pending.length) {
      let n = 0;
      while (n < this.pending.length && n < BATCH && this.pending[n].round.passes(this.userId)) n++;
      if (n === 0) {
        // The head waits for its round's primary hubs (later notices wait behind it: order).
        await this.pending[0].round.wait(this.userId);
        continue;
      }
      const batch = this.pending.slice(0, n);
      try {
        // A hub that is no round's primary defers its work by a turn (UserDO.roomEvents): it
        // has the notice in hand before the RoomDO answers, but the send's answer goes first.
        const defer = !batch.some((q) => q.round.isPrimary(this.userId));
        await this.stub.roomEvents(this.userId, batch.map((q) => q.notice), defer);
        this.pending.splice(0, batch.length);
        this.failures = 0;
        for (const q of batch) {
          q.attempted();
          q.done();
        }
      } catch (e) {
        // Keep the batch at the head (order is kept) and retry after a pause with a fresh stub;
        // whoever waits for the first attempt stops waiting (the event is committed regardless).
        console.error(`sync fan-out to ${this.userId} failed (attempt ${this.failures + 1})`, e);
        this.failures++;
        for (const q of this.pending) q.attempted();
        await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(this.failures - 1, RETRY_MS.length - 1)]));
        this.stub = this.makeStub(true);
      }
    }
    this.running = false;
    this.onIdle();
  }
}

async function each(env: Env, config: Config, users: string[], fn: (stub: UserStub, userId: string) => Promise<unknown>): Promise<void> {
  const results = await Promise.allSettled(users.map((u) => fn(userStub(env, u, config), u)));
  for (const [i, r] of results.entries()) if (r.status === "rejected") console.error(`fan-out to ${users[i]} failed`, r.reason);
}

/** Typing (module "Typing Notifications") to every local member of the room. */
export function fanOutTyping(env: Env, config: Config, roomId: string, typer: string, timeoutMs: number, localMembers: string[]): Promise<void> {
  return each(env, config, localMembers, (s, u) => s.typing(u, roomId, typer, timeoutMs));
}

/** A receipt (module "Receipts"): public ones to every local member, private ones to the owner. */
export function fanOutReceipt(
  env: Env,
  config: Config,
  r: { roomId: string; userId: string; type: string; eventId: string; threadId: string; ts: number },
  localMembers: string[],
): Promise<void> {
  const users = r.type === "m.read.private" ? [r.userId] : [...new Set([...localMembers, r.userId])];
  return each(env, config, users, (s, u) => s.receipt(u, r));
}

/** Presence (module "Presence"): to local users who share a room with `userId` (from the D1
 *  membership mirror). */
export async function fanOutPresence(env: Env, config: Config, userId: string, p: { presence: string; statusMsg: string | null; lastActiveTs: number }): Promise<void> {
  await each(env, config, await joinedCoMembers(env.DB, userId), (s, u) => s.presenceOf(u, { userId, ...p }));
}

/** The notice a RoomDO sends for one committed event (pure; the RoomDO supplies room facts). */
export function buildNotice(args: {
  roomId: string;
  stream: number;
  event: RoomEventNotice["event"];
  memberCount: number;
  senderPowerLevel: number;
  powerLevels?: JsonObject;
  encrypted: boolean;
}): RoomEventNotice {
  return { ...args };
}

/** Users `userId` ignores (m.ignored_user_list account data, module "Ignoring Users"): for
 *  /messages and /context to drop their events (see withoutIgnored). */
export async function ignoredUserIds(env: Env, userId: string, config: Pick<Config, "jurisdiction" | "locationHint">): Promise<string[]> {
  const content = await userStub(env, userId, config).getAccountData(null, "m.ignored_user_list");
  const list = content?.ignored_users;
  return list && typeof list === "object" && !Array.isArray(list) ? Object.keys(list) : [];
}

/** Module "Ignoring Users": "the client will no longer receive events sent by that user, with
 *  the exception of state events" and "Servers must still send state events sent by ignored
 *  users to clients". So: drop non-state events whose sender is ignored. Pure. */
export function withoutIgnored<E extends { sender?: unknown; state_key?: unknown }>(events: E[], ignored: ReadonlySet<string> | readonly string[]): E[] {
  const set = ignored instanceof Set ? ignored : new Set(ignored as readonly string[]);
  if (set.size === 0) return events;
  return events.filter((e) => e.state_key !== undefined || typeof e.sender !== "string" || !set.has(e.sender));
}
