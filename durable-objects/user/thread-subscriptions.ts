// Thread subscriptions (MSC4306, unstable prefix io.element.msc4306): which threads this user
// has subscribed to, kept in the hub because the hub evaluates the push rules whose
// `io.element.msc4306.thread_subscription` condition reads them (fan-in.ts), in the same
// storage, with no RPC on the write path of room events.
//
// Table `thread_subscriptions`, one row per (room, thread root) the user ever subscribed to:
//   subscribed        1 subscribed, 0 unsubscribed (the row stays, for the ordering rule below)
//   automatic         1 when the subscription was made automatically by a client (on mention)
//   unsubscribed_at   the room's stream position when the user last unsubscribed (null: never)
//   upos              the hub position of the last change: MSC4308's `bump_stamp`, and what the
//                     sliding-sync extension and /thread_subscriptions page by
//
// "Server-side automatic subscription ordering": an automatic subscription whose cause event
// the room had already admitted (stream position <= unsubscribed_at) when the user unsubscribed
// is skipped (409), so a dormant device cannot resubscribe the user to a thread they left.
import type { ThreadSubscriptionChange } from "../../src/rpc/sliding";

export const THREAD_SUBSCRIPTIONS_SCHEMA = `
CREATE TABLE IF NOT EXISTS thread_subscriptions (room_id TEXT NOT NULL, root_id TEXT NOT NULL, subscribed INTEGER NOT NULL,
  automatic INTEGER NOT NULL, unsubscribed_at INTEGER, upos INTEGER NOT NULL, PRIMARY KEY (room_id, root_id));
CREATE INDEX IF NOT EXISTS thread_subscriptions_upos ON thread_subscriptions(upos);
`;

/** What this module needs from the hub. */
export interface ThreadSubscriptionsAccess {
  sql: SqlStorage;
  transaction<T>(fn: () => T): T;
  next(): number;
  wake(): void;
}

/** One row as MSC4308 lists it (defined with sliding sync's RPC types, src/rpc/sliding.ts). */
export type { ThreadSubscriptionChange };

/** The outcome of PUT .../subscription. */
export type SubscribeOutcome = "ok" | "conflicting_unsubscription";

type Row = {
  subscribed: number;
  automatic: number;
  unsubscribed_at: number | null;
};

export class ThreadSubscriptions {
  constructor(private a: ThreadSubscriptionsAccess) {}

  private row(roomId: string, rootId: string): Row | undefined {
    return this.a.sql
      .exec<Row>("SELECT subscribed, automatic, unsubscribed_at FROM thread_subscriptions WHERE room_id = ? AND root_id = ?", roomId, rootId)
      .toArray()[0];
  }

  /** GET: the subscription, or null when not subscribed. */
  get(roomId: string, rootId: string): { automatic: boolean } | null {
    const r = this.row(roomId, rootId);
    return r && r.subscribed ? { automatic: !!r.automatic } : null;
  }

  /** Whether the user is subscribed to the thread (the push condition). */
  isSubscribed(roomId: string, rootId: string): boolean {
    return this.get(roomId, rootId) !== null;
  }

  /** PUT. `causeStream`: for an automatic subscription, the room stream position of the event
   *  that caused it (null when that event has none: an outlier, ordered before everything);
   *  undefined for a manual subscription. */
  subscribe(roomId: string, rootId: string, causeStream: number | null | undefined): SubscribeOutcome {
    const automatic = causeStream !== undefined;
    let changed = false;
    const outcome = this.a.transaction((): SubscribeOutcome => {
      const r = this.row(roomId, rootId);
      if (r?.subscribed) {
        // Already subscribed: "manual subscriptions take precedence over automatic
        // subscriptions", so only automatic → manual changes anything.
        if (automatic || !r.automatic) return "ok";
      } else if (automatic && r?.unsubscribed_at != null && (causeStream ?? -Infinity) <= r.unsubscribed_at) {
        return "conflicting_unsubscription";
      }
      changed = true;
      this.a.sql.exec(
        `INSERT INTO thread_subscriptions (room_id, root_id, subscribed, automatic, unsubscribed_at, upos) VALUES (?, ?, 1, ?, NULL, ?)
         ON CONFLICT(room_id, root_id) DO UPDATE SET subscribed = 1, automatic = excluded.automatic, unsubscribed_at = NULL, upos = excluded.upos`,
        roomId,
        rootId,
        automatic ? 1 : 0,
        this.a.next(),
      );
      return "ok";
    });
    if (changed) this.a.wake();
    return outcome;
  }

  /** DELETE. `roomStream`: the room's stream position now (every event at or below it counts
   *  as seen by this unsubscription). Not subscribed: nothing changes (idempotent). */
  unsubscribe(roomId: string, rootId: string, roomStream: number): void {
    let changed = false;
    this.a.transaction(() => {
      if (!this.row(roomId, rootId)?.subscribed) return;
      changed = true;
      this.a.sql.exec(
        "UPDATE thread_subscriptions SET subscribed = 0, automatic = 0, unsubscribed_at = ?, upos = ? WHERE room_id = ? AND root_id = ?",
        roomStream,
        this.a.next(),
        roomId,
        rootId,
      );
    });
    if (changed) this.a.wake();
  }

  /** The account was deactivated: every subscription goes (no one can sync them any more). */
  clear(): void {
    this.a.sql.exec("DELETE FROM thread_subscriptions");
  }

  /** Changes with from < upos <= to, the newest `limit` of them, oldest first; `more` when
   *  older ones in the range were left out (MSC4308). One row per thread, so no intermediate
   *  state is ever sent. */
  changes(from: number, to: number, limit: number): { changes: ThreadSubscriptionChange[]; more: boolean } {
    const rows = this.a.sql
      .exec<{ room_id: string; root_id: string; subscribed: number; automatic: number; upos: number }>(
        "SELECT room_id, root_id, subscribed, automatic, upos FROM thread_subscriptions WHERE upos > ? AND upos <= ? ORDER BY upos DESC LIMIT ?",
        from,
        to,
        limit + 1,
      )
      .toArray();
    const more = rows.length > limit;
    return {
      changes: rows
        .slice(0, limit)
        .reverse()
        .map((r) => ({ roomId: r.room_id, rootId: r.root_id, subscribed: !!r.subscribed, automatic: !!r.automatic, upos: r.upos })),
      more,
    };
  }

  /** Whether anything changed after `after` (wakes a sliding-sync long-poll). */
  changedAfter(after: number): boolean {
    return this.a.sql.exec("SELECT 1 FROM thread_subscriptions WHERE upos > ? LIMIT 1", after).toArray().length > 0;
  }
}

// MSC4308 tokens. `tsub<n>`: the changes at hub positions <= n (a `from`/`prev_batch`/`end`),
// or > n (a `to`). A sliding-sync `pos` is accepted as `to` as well (the MSC has clients pass
// the request's pos there); the hub turns it into the position that response covered.
export function threadSubscriptionToken(n: number): string {
  return `tsub${n}`;
}
export function parseThreadSubscriptionToken(t: string): number | null {
  const m = /^tsub(-?\d{1,15})$/.exec(t);
  return m ? Number(m[1]) : null;
}

/** The response shape of MSC4308 (sliding-sync extension and /thread_subscriptions): rooms →
 *  thread roots, subscribed ones with `automatic` and unsubscribed ones, each with its
 *  `bump_stamp`. Empty maps are left out ("If omitted, has the same semantics as an empty map"). */
export function threadSubscriptionsBody(changes: ThreadSubscriptionChange[]): { subscribed?: Record<string, Record<string, { automatic: boolean; bump_stamp: number }>>; unsubscribed?: Record<string, Record<string, { bump_stamp: number }>> } {
  const subscribed: Record<string, Record<string, { automatic: boolean; bump_stamp: number }>> = {};
  const unsubscribed: Record<string, Record<string, { bump_stamp: number }>> = {};
  for (const c of changes) {
    if (c.subscribed) (subscribed[c.roomId] ??= {})[c.rootId] = { automatic: c.automatic, bump_stamp: c.upos };
    else (unsubscribed[c.roomId] ??= {})[c.rootId] = { bump_stamp: c.upos };
  }
  return { ...(Object.keys(subscribed).length ? { subscribed } : {}), ...(Object.keys(unsubscribed).length ? { unsubscribed } : {}) };
}
