// What the outbound delivery queues share: SenderDO (federation, sender.ts), AppserviceSenderDO
// (appservice-sender.ts) and PusherDO (pusher.ts). Each keeps its items in a `queue` table and
// its progress (failures, transaction in flight, counters) in a `meta` key/value table of its
// SQLite storage, retries on alarms with jittered exponential backoff, and sends in enqueue
// order. The policies (batch sizes, backoff limits, what is dropped first) stay in each queue.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";

export abstract class QueueDO extends DurableObject<Env> {
  protected sql: SqlStorage;
  /** One send loop at a time: one request in flight. */
  protected sending = false;

  /** `schema` creates the `queue` and `meta` tables (and any others the queue needs). */
  constructor(ctx: DurableObjectState, env: Env, schema: string) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(schema);
  }

  protected meta(key: string): string | undefined {
    return this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value;
  }
  protected setMeta(key: string, value: string | number | null): void {
    if (value === null) this.sql.exec("DELETE FROM meta WHERE key = ?", key);
    else this.sql.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }
  protected num(key: string): number {
    return Number(this.meta(key) ?? "0");
  }

  protected hasQueue(): boolean {
    return this.sql.exec("SELECT 1 FROM queue LIMIT 1").toArray().length > 0;
  }

  protected queued(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM queue").one().n;
  }

  /** Record the next attempt and arm the alarm for it: only if that is earlier than the alarm
   *  already set, unless `force` (a later retry replaces a sooner backstop). */
  protected async scheduleAt(ts: number, force = false): Promise<void> {
    this.setMeta("next_attempt_ts", ts);
    const current = await this.ctx.storage.getAlarm();
    if (force || current === null || current > ts) await this.ctx.storage.setAlarm(ts);
  }

  /** Bound the queue to `max` items: drop the oldest of each kind group in turn (the first group
   *  goes first), never an item of the transaction in flight (seq ≤ meta txn_max_seq, resent
   *  unchanged). Counted in meta `dropped`. */
  protected dropOldest(max: number, kindGroups: string[][]): void {
    let excess = this.queued() - max;
    if (excess <= 0) return;
    const inflightMax = this.num("txn_max_seq");
    for (const kinds of kindGroups) {
      if (excess <= 0) break;
      const r = this.sql.exec(
        `DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE kind IN (${kinds.map(() => "?").join(",")}) AND seq > ? ORDER BY seq LIMIT ?)`,
        ...kinds,
        inflightMax,
        excess,
      );
      excess -= r.rowsWritten;
      this.setMeta("dropped", this.num("dropped") + r.rowsWritten);
    }
  }

  /** The last seq of the next transaction: queue items in order until `maxMain` items of kind
   *  `mainKind` or `maxOther` of the other kinds would be exceeded. 0 when the queue is empty. */
  protected nextBatchEnd(mainKind: string, maxMain: number, maxOther: number): number {
    const rows = this.sql.exec<{ seq: number; kind: string }>("SELECT seq, kind FROM queue ORDER BY seq LIMIT ?", maxMain + maxOther).toArray();
    let main = 0;
    let other = 0;
    let maxSeq = 0;
    for (const r of rows) {
      if (r.kind === mainKind ? main >= maxMain : other >= maxOther) break;
      if (r.kind === mainKind) main++;
      else other++;
      maxSeq = r.seq;
    }
    return maxSeq;
  }
}

/** Exponential backoff with jitter: uniform in [cap/2, cap], cap = base * 2^(failures-1) ≤ max. */
export function jitteredBackoffMs(failures: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(failures - 1, 30));
  return Math.round(cap / 2 + (random() * cap) / 2);
}
