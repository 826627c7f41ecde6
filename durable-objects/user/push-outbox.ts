// The hub's side of push delivery (spec: module "Push Notifications", "Server behaviour": a new
// event's push rules may result in "a request to the configured push gateway").
//
// Inside the hub's transaction that records an event (durable-objects/user/fan-in.ts), `recordEvent` writes
// an outbox row when the rules said notify, the user did not send it, and the user has pushers;
// `recordBadge` does the same for a read receipt that lowers the count (badge update, counts
// only, as Synapse sends). After the commit, `drain` delivers the new rows per pusher: while
// that pusher's queue (PusherDO) last said it was idle and healthy, the hub sends the requests
// itself (src/services/push-send.ts), one at a time, in order; otherwise, and with the rest after
// a failed request, it hands them to the queue, which retries with backoff. It remembers per
// pusher (in memory) how far its rows were delivered or accepted. The rows every queue accepted are deleted in the hub's next
// transaction or by its alarm — not in a commit of their own: under `wrangler dev` every commit
// is an fsync on the one thread all objects share, and a commit per push per recipient is what
// slowed sends in rooms whose members have pushers (docs/benchmarks.md). A hub that restarts
// before that hands the rows over again (at-least-once). The alarm, set with the first row,
// retries a failed hand-over, so nothing committed is lost to a restart.
// Nothing here runs in the send path: the RoomDO's fan-out to hubs is already asynchronous for
// everyone but the sender, and the sender is never pushed.
import type { Env } from "../../src/env";
import type { JsonObject, JsonValue } from "../../src/core/types";
import { parseConfig, type Config } from "../../src/config";
import { callNoteOf, prioOf, tweaksOf, type PendingPush, type PushCounts, type PusherTarget } from "../../src/core/push-gateway";
import { pusherStub } from "../../src/rpc/stubs";
import { postNotify, PushDeadlines, sendDirect } from "../../src/services/push-send";

export const PUSH_OUTBOX_SCHEMA = `
CREATE TABLE IF NOT EXISTS push_targets (app_id TEXT NOT NULL, pushkey TEXT NOT NULL, target TEXT NOT NULL, PRIMARY KEY (app_id, pushkey));
CREATE TABLE IF NOT EXISTS push_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS push_calls (room_id TEXT NOT NULL, call_id TEXT NOT NULL, stream INTEGER NOT NULL, expires_ts INTEGER NOT NULL,
  taken INTEGER NOT NULL DEFAULT 0, ended INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (room_id, call_id));
`;

/** push_calls rows kept at most (unanswered calls after the read mark, the only ones that can
 *  still count); beyond it the oldest go. */
const MAX_CALLS = 500;


/** A retry of a failed (or still running) hand-over. */
const OUTBOX_RETRY_MS = 5_000;
/** The safety net armed with new rows, in case the immediate hand-over never runs (the process
 *  died). Longer than the retry: each firing of 100 hubs' alarms is 100 commits, the cost this
 *  module exists to avoid; accepted rows are deleted by it too when no transaction came first. */
const OUTBOX_SAFETY_MS = 30_000;

export class PushOutbox {
  /** Per pusher (keyOf): the highest outbox seq its queue accepted. In memory: after a restart
   *  every row left is handed over again. */
  private handed = new Map<string, number>();
  /** Rows up to here are deleted. */
  private pruned = 0;
  private draining = new Set<string>();
  /** When the alarm is set for (in memory: after a restart it is simply set again). */
  private armedAt: number | null = null;
  private targetsCache: PusherTarget[] | null = null;
  /** Configuration, parsed once per hub instance. */
  private config: Config;
  /** The outbox rows after `memFloor`, in memory, so a hand-over reads no storage (a SELECT and
   *  a JSON parse per push per recipient were a good part of a push's cost on the shared thread,
   *  docs/benchmarks.md). `staged`: added in the transaction running now, moved to `fresh` by
   *  afterCommit. A cache only: when in doubt it is dropped and the rows are read from storage. */
  private fresh: { seq: number; p: PendingPush }[] = [];
  private staged: { seq: number; p: PendingPush }[] = [];
  private memFloor = 0;
  /** Whether push_calls may have rows (false only when known empty): counts() then skips the
   *  missed-calls query. */
  private callsMaybe = true;
  /** The newest outbox seq handed out (rows are inserted with it, no RETURNING per push; a seq
   *  of a rolled-back transaction is simply never used again). */
  private lastSeq: number;
  /** counts.unread as the COUNT in unread() would give it now, kept by recordEvent: +1 for a
   *  notifying event that counts (a row lookup) instead of a COUNT over every unread event per
   *  push. null: count again. Everything else that moves the count goes through here and
   *  clears it: my membership (a member event about me), my read marks (my own event, a
   *  receipt → recordBadge), a rolled-back transaction (rolledBack). `roomCounts` remembers per
   *  room whether a new notifying event there counts (joined; its read mark), cleared with it. */
  private unreadNow: number | null = null;
  private roomCounts = new Map<string, { joined: boolean; mark: number }>();
  /** Timeouts of the hub's own gateway requests (one timer per few seconds, not per push). */
  private deadlines = new PushDeadlines();
  /** Pusher queue stubs, by keyOf. */
  private stubs = new Map<string, ReturnType<typeof pusherStub>>();
  /** Pushers (keyOf) whose queue said it was idle and healthy at its last hand-over: the hub
   *  sends their next notifications itself, one request at a time, in order — no RPC and no
   *  second object per push. A failed request hands that row and the rest to the queue, which
   *  retries with backoff; the hub sends itself again once a hand-over finds the queue idle. In
   *  memory: after a restart the first hand-over goes through the queue. */
  private direct = new Set<string>();

  constructor(
    private ctx: DurableObjectState,
    private env: Env,
  ) {
    this.config = parseConfig(env);
    ctx.storage.sql.exec(PUSH_OUTBOX_SCHEMA);
    // Rows left by a hub that stopped before arming its alarm: retry soon.
    if (ctx.storage.sql.exec("SELECT 1 FROM push_outbox LIMIT 1").toArray().length) this.arm(100);
    this.resetMemory();
    this.lastSeq = this.sql.exec<{ seq: number }>("SELECT seq FROM sqlite_sequence WHERE name = 'push_outbox'").toArray()[0]?.seq ?? this.memFloor;
    this.callsMaybe = ctx.storage.sql.exec("SELECT 1 FROM push_calls LIMIT 1").toArray().length > 0;
  }

  /** Forget the in-memory rows: from now on rows up to the newest stored one are read from
   *  storage, and only rows added later are kept in memory. */
  private resetMemory(): void {
    this.fresh = [];
    this.staged = [];
    this.memFloor = this.sql.exec<{ s: number | null }>("SELECT MAX(seq) AS s FROM push_outbox").one().s ?? 0;
  }

  private get sql(): SqlStorage {
    return this.ctx.storage.sql;
  }

  private targets(): PusherTarget[] {
    return (this.targetsCache ??= this.sql.exec<{ target: string }>("SELECT target FROM push_targets").toArray().map((r) => JSON.parse(r.target) as PusherTarget));
  }

  private hasTargets(): boolean {
    return this.targets().length > 0;
  }

  /** keyOf of every pusher (a lookup per push, not a JSON.stringify per pusher). */
  private targetKeysCache: Set<string> | null = null;
  private targetKeys(): Set<string> {
    return (this.targetKeysCache ??= new Set(this.targets().map(keyOf)));
  }
  private isTarget(k: string): boolean {
    return this.targetKeys().has(k);
  }

  /** Replace the copy of the user's pushers (src/services/pushers.ts, after every D1 change). A
   *  new pusher gets what is decided from now on, not the rows waiting for the others. */
  setTargets(targets: PusherTarget[]): void {
    const before = new Set(this.targets().map(keyOf));
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM push_targets");
      for (const t of targets) this.sql.exec("INSERT INTO push_targets (app_id, pushkey, target) VALUES (?, ?, ?)", t.appId, t.pushkey, JSON.stringify(t));
      if (!targets.length) this.sql.exec("DELETE FROM push_outbox");
    });
    this.targetsCache = targets;
    this.targetKeysCache = null;
    this.recount();
    this.stubs.clear();
    this.direct.clear();
    if (!targets.length) this.resetMemory();
    const last = this.sql.exec<{ s: number | null }>("SELECT MAX(seq) AS s FROM push_outbox").one().s ?? 0;
    const now = new Set(targets.map(keyOf));
    for (const k of [...this.handed.keys()]) if (!now.has(k)) this.handed.delete(k);
    for (const k of now) if (!before.has(k)) this.handed.set(k, last);
  }

  /** The badge: notifying events after my read mark in every room I am joined to (Push Gateway
   *  API counts.unread: "unread messages ... across all of the rooms they are a member of").
   *  Thread receipts are not applied here; an unthreaded or main receipt is. */
  private unread(): number {
    return this.sql
      .exec<{ n: number }>(
        `SELECT COUNT(*) AS n FROM room_events e JOIN rooms r ON r.room_id = e.room_id AND r.membership = 'join'
         LEFT JOIN read_marks m ON m.room_id = e.room_id AND m.thread_id = ''
         WHERE e.notify = 1 AND e.stream > COALESCE(m.stream, -1)`,
      )
      .one().n;
  }

  /** counts.missed_calls: calls meant for me that ended or expired unanswered after my read mark
   *  in a room I am joined to (callNoteOf). */
  private missedCalls(): number {
    return this.sql
      .exec<{ n: number }>(
        `SELECT COUNT(*) AS n FROM push_calls c JOIN rooms r ON r.room_id = c.room_id AND r.membership = 'join'
         LEFT JOIN read_marks m ON m.room_id = c.room_id AND m.thread_id = ''
         WHERE c.taken = 0 AND (c.ended = 1 OR c.expires_ts <= ?) AND c.stream > COALESCE(m.stream, -1)`,
        Date.now(),
      )
      .one().n;
  }

  /** `beforeCount`: run before counting unread events from storage (the hub's fan-in writes its
   *  pending room_events rows then; with the count kept they wait for the end of the run). */
  private counts(beforeCount?: () => void): PushCounts {
    if (this.unreadNow === null) {
      beforeCount?.();
      this.unreadNow = this.unread();
    }
    return { unread: this.unreadNow, missed_calls: this.callsMaybe ? this.missedCalls() : 0 };
  }

  /** Forget the kept unread count (the next push counts again). */
  private recount(): void {
    this.unreadNow = null;
    this.roomCounts.clear();
  }

  /** A notifying event of `roomId` at `stream` was just recorded: move the kept count as the
   *  COUNT would (joined room, after the read mark). */
  private countNew(roomId: string, stream: number): void {
    if (this.unreadNow === null) return;
    let room = this.roomCounts.get(roomId);
    if (!room) {
      const row = this.sql
        .exec<{ membership: string; mark: number }>(
          "SELECT r.membership, COALESCE(m.stream, -1) AS mark FROM rooms r LEFT JOIN read_marks m ON m.room_id = r.room_id AND m.thread_id = '' WHERE r.room_id = ?",
          roomId,
        )
        .toArray()[0];
      if (!row) return this.recount();
      this.roomCounts.set(roomId, (room = { joined: row.membership === "join", mark: row.mark }));
    }
    if (room.joined && stream > room.mark) this.unreadNow++;
  }

  /** A hub transaction that may record pushes was rolled back (durable-objects/user.ts): what
   *  it staged and counted is void. The rows in memory are dropped and read from storage (which
   *  also keeps any committed row not yet handed over), and the alarm retries soon. */
  rolledBack(): void {
    this.pending = false;
    this.resetMemory();
    this.recount();
    if (this.sql.exec("SELECT 1 FROM push_outbox LIMIT 1").toArray().length) this.arm(OUTBOX_RETRY_MS);
  }

  /** Keep track of calls (for missed_calls). Returns true when a call meant for me just ended
   *  without my answer: the count went up. */
  private noteCall(me: string, roomId: string, stream: number, ev: { type: string; sender: string; content: JsonObject; origin_server_ts?: number }): boolean {
    const note = callNoteOf(ev, me, Date.now());
    if (!note) return false;
    if (note.kind === "invite") {
      this.pruneCalls();
      this.callsMaybe = true;
      this.sql.exec("INSERT OR IGNORE INTO push_calls (room_id, call_id, stream, expires_ts) VALUES (?, ?, ?, ?)", roomId, note.callId, stream, note.expiresTs);
      return false;
    }
    if (note.kind === "taken") {
      this.sql.exec("UPDATE push_calls SET taken = 1 WHERE room_id = ? AND call_id = ?", roomId, note.callId);
      return false;
    }
    return this.sql.exec("UPDATE push_calls SET ended = 1 WHERE room_id = ? AND call_id = ? AND taken = 0 AND ended = 0", roomId, note.callId).rowsWritten > 0;
  }

  /** Keep push_calls bounded (inside the caller's transaction): a row counts only while the
   *  call is unanswered, after my read mark, in a room I am joined to (missedCalls), and read
   *  marks only move forward; so rows that fail that go, and of the rest the newest MAX_CALLS
   *  stay. Run when a call is added and when my read mark moves. */
  private pruneCalls(): void {
    this.sql.exec(
      `DELETE FROM push_calls WHERE taken = 1
         OR room_id NOT IN (SELECT room_id FROM rooms WHERE membership = 'join')
         OR stream <= COALESCE((SELECT m.stream FROM read_marks m WHERE m.room_id = push_calls.room_id AND m.thread_id = ''), -1)`,
    );
    const n = this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM push_calls").one().n;
    this.callsMaybe = n > 0;
    if (n >= MAX_CALLS) {
      this.sql.exec("DELETE FROM push_calls WHERE rowid IN (SELECT rowid FROM push_calls ORDER BY expires_ts LIMIT ?)", n - MAX_CALLS + 1);
    }
  }

  /** Inside the hub's transaction. The event's room_events row may not be written yet:
   *  `writeEvents` writes it (and the run's before it) when the unread count is taken from
   *  storage. */
  recordEvent(
    me: string,
    roomId: string,
    stream: number,
    ev: { event_id: string; type: string; sender: string; state_key?: string; content: JsonObject; origin_server_ts?: number },
    outcome: { notify: boolean; actions: JsonValue[] },
    writeEvents?: () => void,
  ): void {
    const missed = this.noteCall(me, roomId, stream, ev);
    // I left (or was kicked or banned): that room's calls can no longer count.
    if (ev.type === "m.room.member" && ev.state_key === me && ev.content.membership !== "join") this.sql.exec("DELETE FROM push_calls WHERE room_id = ?", roomId);
    // My membership or my read mark (my own event marks the room read) moves the unread count.
    if (ev.sender === me || (ev.type === "m.room.member" && ev.state_key === me) || !this.hasTargets()) this.recount();
    if (!this.hasTargets()) return;
    this.prune();
    if (ev.sender === me) return;
    if (outcome.notify) this.countNew(roomId, stream);
    // A call I missed moves the missed-calls count: the phone's badge hears of it (counts only).
    if (missed && !outcome.notify) return this.add({ counts: this.counts(writeEvents), tweaks: {}, prio: "low" });
    if (!outcome.notify) return;
    const tweaks = tweaksOf(outcome.actions);
    const p: PendingPush = {
      event: { event_id: ev.event_id, room_id: roomId, type: ev.type, sender: ev.sender, content: ev.content, ...(ev.state_key !== undefined ? { state_key: ev.state_key } : {}) },
      userIsTarget: ev.type === "m.room.member" && ev.state_key === me,
      counts: this.counts(writeEvents),
      tweaks,
      prio: prioOf(ev, me, tweaks),
    };
    this.add(p);
  }

  /** Inside the hub's transaction: my read mark moved, so the badge may have gone down. */
  recordBadge(): void {
    this.recount();
    this.pruneCalls();
    if (!this.hasTargets()) return;
    this.prune();
    this.add({ counts: this.counts(), tweaks: {}, prio: "low" });
  }

  private add(p: PendingPush): void {
    const seq = ++this.lastSeq;
    this.sql.exec("INSERT INTO push_outbox (seq, body) VALUES (?, ?)", seq, JSON.stringify(p));
    this.staged.push({ seq, p });
    this.pending = true;
  }

  /** Delete the rows every pusher's queue accepted (inside a transaction the hub makes anyway,
   *  or the alarm's). */
  private prune(): void {
    if (!this.hasTargets()) return;
    let low = Infinity;
    for (const k of this.targetKeys()) low = Math.min(low, this.handed.get(k) ?? 0);
    if (low <= this.pruned) return;
    this.sql.exec("DELETE FROM push_outbox WHERE seq <= ?", low);
    this.pruned = low;
    let i = 0;
    while (i < this.fresh.length && this.fresh[i].seq <= low) i++;
    if (i) this.fresh = this.fresh.slice(i);
  }

  /** Set by add(); the caller drains after its commit. */
  pending = false;

  /** After the commit: arm the safety alarm (the output gate holds the hub's answer until it is
   *  stored, so a crash after the answer still retries) and start the hand-over without waiting
   *  for it: the hub's caller (the RoomDO's fan-out) never waits for pusher queues. */
  async afterCommit(userId: string): Promise<void> {
    if (!this.pending) return;
    this.pending = false;
    this.fresh.push(...this.staged);
    this.staged = [];
    this.arm(OUTBOX_SAFETY_MS);
    void this.drain(userId);
  }

  /** Set the alarm `ms` from now, unless it is set for sooner already. */
  private arm(ms: number): void {
    const at = Date.now() + ms;
    if (this.armedAt !== null && this.armedAt <= at) return;
    this.armedAt = at;
    this.ctx.storage.setAlarm(at).catch((e) => {
      this.armedAt = null;
      console.warn(`push: could not arm the outbox alarm: ${(e as Error).message}`);
    });
  }

  /** Hand the rows each pusher's queue has not accepted yet to it, in order. */
  async drain(userId: string): Promise<void> {
    await Promise.all(this.targets().map((t) => this.drainTo(userId, t)));
  }

  /** One hand-over at a time per pusher; a drain asked for meanwhile is covered by the loop. */
  private async drainTo(userId: string, t: PusherTarget): Promise<void> {
    const k = keyOf(t);
    if (this.draining.has(k)) return;
    this.draining.add(k);
    try {
      // Until nothing is left (the query and the exit run without an await in between, so a row
      // added meanwhile is seen by this loop or starts a drain of its own).
      while (this.isTarget(k)) {
        const from = this.handed.get(k) ?? 0;
        let rows = this.rowsAfter(from);
        if (!rows.length) break;
        let failed = false;
        if (this.direct.has(k)) {
          const r = await sendDirect(
            rows,
            (row) => row.p,
            (p) => postNotify(this.env, this.config, userId, t, p, this.deadlines.signal()),
            (row) => this.markHanded(k, row.seq),
          );
          if (r.end === "dropped") return;
          if (r.end === "sent") continue;
          rows = r.rest;
          failed = r.end === "failed";
          this.direct.delete(k);
        }
        let stub = this.stubs.get(k);
        if (!stub) this.stubs.set(k, (stub = pusherStub(this.env, this.config, userId, t.appId, t.pushkey)));
        const idle = await stub.enqueue(
          userId,
          t,
          rows.map((r) => r.p),
          failed,
        );
        if (idle && this.isTarget(k)) this.direct.add(k);
        else this.direct.delete(k);
        this.markHanded(k, rows[rows.length - 1].seq);
      }
    } catch (e) {
      // The rows stay; the alarm tries again (a queue that took them twice sends twice:
      // at-least-once).
      console.warn(`push: hand-over to pusher ${t.appId} of ${userId} failed: ${(e as Error).message}`);
      this.arm(OUTBOX_RETRY_MS);
    } finally {
      this.draining.delete(k);
    }
  }

  private markHanded(k: string, seq: number): void {
    if (this.handed.has(k) || this.isTarget(k)) this.handed.set(k, Math.max(this.handed.get(k) ?? 0, seq));
  }

  /** Up to 200 outbox rows after `from`, in order: from memory when it holds them all. */
  private rowsAfter(from: number): { seq: number; p: PendingPush }[] {
    if (from >= this.memFloor) {
      const i = this.fresh.findIndex((r) => r.seq > from);
      return i < 0 ? [] : this.fresh.slice(i, i + 200);
    }
    return this.sql
      .exec<{ seq: number; body: string }>("SELECT seq, body FROM push_outbox WHERE seq > ? ORDER BY seq LIMIT 200", from)
      .toArray()
      .map((r) => ({ seq: r.seq, p: JSON.parse(r.body) as PendingPush }));
  }

  /** The hub's alarm: retry what is left, delete what was accepted. */
  async alarm(userId: string | undefined): Promise<void> {
    this.armedAt = null;
    if (!userId) return;
    await this.drain(userId);
    this.prune();
    if (this.sql.exec("SELECT 1 FROM push_outbox LIMIT 1").toArray().length) this.arm(OUTBOX_RETRY_MS);
  }
}

/** Keys of target objects already seen (a drain per commit asks for each pusher's key). */
const keys = new WeakMap<object, string>();
function keyOf(t: { appId: string; pushkey: string }): string {
  let k = keys.get(t);
  if (k === undefined) keys.set(t, (k = JSON.stringify([t.appId, t.pushkey])));
  return k;
}
