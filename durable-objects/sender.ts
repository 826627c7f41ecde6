// SenderDO: one per destination server. The ordered outbound queue of PDUs and EDUs for that
// server, delivered as transactions (spec: Server-Server API "Transactions",
// PUT /_matrix/federation/v1/send/{txnId}).
//
// - Batches of at most 50 PDUs and 100 EDUs, in enqueue order, one transaction in flight. A
//   failed transaction is retried with the same txnId and the same content until the peer
//   answers 200 ("The sending server must wait and retry for a 200 OK response before sending a
//   transaction with a different txnId").
// - Retries run on alarms with exponential backoff and full jitter. After DOWN_AFTER_FAILURES
//   consecutive failures the destination is marked down: the backoff is long (up to 6 h), but a
//   new event (at most once per PROBE_INTERVAL) or an inbound request from that server (wake())
//   triggers an immediate attempt.
// - The queue is bounded. When it is full, EDUs go first (they are ephemeral), then the oldest
//   PDUs. Dropped PDUs are not lost to the peer: later PDUs reference them in prev_events and
//   the peer fetches the gap (get_missing_events / backfill). So after an outage of any length
//   the peer gets either every event, or the latest ones plus what it needs to fetch the rest.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { parseConfig, type Config } from "../src/config";
import { federationRequest, FederationError } from "../src/services/federation/client";
import type { Edu, SenderStatus } from "../src/rpc/sender";

export const MAX_PDUS_PER_TXN = 50;
export const MAX_EDUS_PER_TXN = 100;
/** Queue bound (items). */
export const MAX_QUEUE = 5000;
const BASE_BACKOFF_MS = 2_000;
const MAX_BACKOFF_MS = 6 * 3600_000;
export const DOWN_AFTER_FAILURES = 6;
/** While down, a new event triggers an attempt at most this often. */
const PROBE_INTERVAL_MS = 60_000;
const TXN_TIMEOUT_MS = 60_000;
/** A batch the peer refuses outright (4xx other than 401/408/429) this many times is dropped so
 *  that it cannot wedge the queue forever. */
const MAX_REJECTIONS = 5;


const SCHEMA = `
CREATE TABLE IF NOT EXISTS queue (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,          -- 'pdu' | 'edu'
  body TEXT NOT NULL,
  enqueued_ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

export class SenderDO extends DurableObject<Env> {
  private sql: SqlStorage;
  private sending = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(SCHEMA);
  }

  private parsedConfig?: Config;
  /** Configuration, parsed once per instance. */
  private config(): Config {
    return (this.parsedConfig ??= parseConfig(this.env));
  }

  private meta(key: string): string | undefined {
    return this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value;
  }
  private setMeta(key: string, value: string | number | null): void {
    if (value === null) this.sql.exec("DELETE FROM meta WHERE key = ?", key);
    else this.sql.exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", key, String(value));
  }
  private num(key: string): number {
    return Number(this.meta(key) ?? "0");
  }

  /** Queue PDUs and EDUs for `destination`, sent as `origin` (our server name). */
  async enqueue(origin: string, destination: string, pdus: unknown[], edus: Edu[] = []): Promise<void> {
    this.setMeta("origin", origin);
    if (this.meta("destination") !== destination) {
      // First use: register the destination for the admin API's list (once per SenderDO).
      await this.env.DB.prepare("INSERT INTO federation_destinations (destination, first_seen_ts) VALUES (?, ?) ON CONFLICT DO NOTHING").bind(destination, Date.now()).run();
    }
    this.setMeta("destination", destination);
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      for (const p of pdus) this.sql.exec("INSERT INTO queue (kind, body, enqueued_ts) VALUES ('pdu', ?, ?)", JSON.stringify(p), now);
      for (const e of edus) this.sql.exec("INSERT INTO queue (kind, body, enqueued_ts) VALUES ('edu', ?, ?)", JSON.stringify(e), now);
      this.enforceBound();
    });
    const down = this.num("failures") >= DOWN_AFTER_FAILURES;
    if (!down) {
      // Healthy (or retrying): send now unless a retry is already scheduled.
      if (!this.num("next_attempt_ts")) await this.scheduleAt(now);
    } else if (now - this.num("last_attempt_ts") >= PROBE_INTERVAL_MS) {
      await this.scheduleAt(now); // a new event wakes a down destination (rate-limited probe)
    }
  }

  /** The destination showed signs of life (it sent us a request): retry now. */
  async wake(): Promise<void> {
    if (this.num("failures") === 0 && !this.hasQueue()) return;
    this.setMeta("failures", 0);
    this.setMeta("failure_ts", null);
    this.setMeta("next_attempt_ts", null);
    if (this.hasQueue()) await this.scheduleAt(Date.now());
  }

  async status(): Promise<SenderStatus> {
    const queued = this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM queue").one().n;
    const failures = this.num("failures");
    return {
      destination: this.meta("destination") ?? null,
      queued,
      failures,
      down: failures >= DOWN_AFTER_FAILURES,
      nextAttemptTs: this.num("next_attempt_ts") || null,
      failureTs: this.num("failure_ts") || null,
      lastAttemptTs: this.num("last_attempt_ts") || null,
      inFlightTxnId: this.meta("txn_id") ?? null,
      sentTxns: this.num("sent_txns"),
      dropped: this.num("dropped"),
    };
  }

  private hasQueue(): boolean {
    return this.sql.exec("SELECT 1 FROM queue LIMIT 1").toArray().length > 0;
  }

  private enforceBound(): void {
    const count = this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM queue").one().n;
    let excess = count - MAX_QUEUE;
    if (excess <= 0) return;
    // Never drop items of the batch in flight (it must be retried unchanged).
    const inflightMax = this.num("txn_max_seq");
    for (const kind of ["edu", "pdu"]) {
      if (excess <= 0) break;
      const r = this.sql.exec(
        "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?)",
        kind,
        inflightMax,
        excess,
      );
      excess -= r.rowsWritten;
      this.setMeta("dropped", this.num("dropped") + r.rowsWritten);
    }
  }

  private async scheduleAt(ts: number): Promise<void> {
    this.setMeta("next_attempt_ts", ts);
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > ts) await this.ctx.storage.setAlarm(ts);
  }

  async alarm(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      await this.sendOne();
    } finally {
      this.sending = false;
    }
  }

  /** Send (or resend) one transaction, then schedule the next step. */
  private async sendOne(): Promise<void> {
    const origin = this.meta("origin");
    const destination = this.meta("destination");
    if (!origin || !destination) return;
    let txnId = this.meta("txn_id");
    let maxSeq = this.num("txn_max_seq");
    if (!txnId) {
      if (!this.hasQueue()) {
        this.setMeta("next_attempt_ts", null);
        return;
      }
      // Next batch: items in order until 50 PDUs or 100 EDUs would be exceeded.
      const rows = this.sql
        .exec<{ seq: number; kind: string }>("SELECT seq, kind FROM queue ORDER BY seq LIMIT ?", MAX_PDUS_PER_TXN + MAX_EDUS_PER_TXN)
        .toArray();
      let p = 0;
      let e = 0;
      maxSeq = 0;
      for (const r of rows) {
        if (r.kind === "pdu" ? p >= MAX_PDUS_PER_TXN : e >= MAX_EDUS_PER_TXN) break;
        if (r.kind === "pdu") p++;
        else e++;
        maxSeq = r.seq;
      }
      txnId = `${Date.now()}_${maxSeq}`;
      this.setMeta("txn_id", txnId);
      this.setMeta("txn_max_seq", maxSeq);
      this.setMeta("txn_ts", Date.now());
      this.setMeta("rejections", 0);
    }
    const items = this.sql.exec<{ kind: string; body: string }>("SELECT kind, body FROM queue WHERE seq <= ? ORDER BY seq", maxSeq).toArray();
    const pdus = items.filter((i) => i.kind === "pdu").map((i) => JSON.parse(i.body));
    const edus = items.filter((i) => i.kind === "edu").map((i) => JSON.parse(i.body));
    const body: Record<string, unknown> = { origin, origin_server_ts: this.num("txn_ts"), pdus };
    if (edus.length) body.edus = edus;

    const config = { ...this.config(), serverName: origin };
    this.setMeta("last_attempt_ts", Date.now());
    let ok = false;
    let rejected = false;
    try {
      await federationRequest(
        { env: this.env, config },
        destination,
        "PUT",
        `/_matrix/federation/v1/send/${encodeURIComponent(txnId)}`,
        { body, timeoutMs: TXN_TIMEOUT_MS, maxBytes: 1024 * 1024 },
      );
      ok = true;
    } catch (e) {
      const status = e instanceof FederationError ? e.status : undefined;
      rejected = status !== undefined && status >= 400 && status < 500 && ![401, 408, 429].includes(status);
      console.warn(`federation: transaction ${txnId} to ${destination} failed: ${(e as Error).message}`);
    }
    if (!ok && rejected && this.num("rejections") + 1 >= MAX_REJECTIONS) {
      console.warn(`federation: ${destination} keeps refusing transaction ${txnId}; dropping it`);
      this.setMeta("dropped", this.num("dropped") + items.length);
      ok = true;
    }
    if (ok) {
      this.ctx.storage.transactionSync(() => {
        this.sql.exec("DELETE FROM queue WHERE seq <= ?", maxSeq);
        for (const k of ["txn_id", "txn_max_seq", "txn_ts", "rejections"]) this.setMeta(k, null);
        this.setMeta("failures", 0);
        this.setMeta("failure_ts", null);
        this.setMeta("sent_txns", this.num("sent_txns") + 1);
      });
      if (this.hasQueue()) await this.scheduleAt(Date.now());
      else this.setMeta("next_attempt_ts", null);
      return;
    }
    if (rejected) this.setMeta("rejections", this.num("rejections") + 1);
    const failures = this.num("failures") + 1;
    this.setMeta("failures", failures);
    if (failures === 1) this.setMeta("failure_ts", Date.now());
    await this.scheduleAt(Date.now() + backoffMs(failures));
  }
}

/** Exponential backoff with full jitter: uniform in [cap/2, cap], cap = base * 2^(n-1). */
export function backoffMs(failures: number, random: () => number = Math.random): number {
  const cap = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** Math.min(failures - 1, 30));
  return Math.round(cap / 2 + (random() * cap) / 2);
}
