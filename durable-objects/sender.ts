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
import type { Env } from "../src/env";
import { parseConfig, type Config } from "../src/config";
import { federationRequest, FederationError } from "../src/services/federation/client";
import { jitteredBackoffMs, QueueDO } from "./queue-base";
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

export class SenderDO extends QueueDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env, SCHEMA);
  }

  private parsedConfig?: Config;
  /** Configuration, parsed once per instance. */
  private config(): Config {
    return (this.parsedConfig ??= parseConfig(this.env));
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
    const queued = this.queued();
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

  /** Past MAX_QUEUE, EDUs go first (they are ephemeral), then the oldest PDUs. */
  private enforceBound(): void {
    this.dropOldest(MAX_QUEUE, [["edu"], ["pdu"]]);
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
      maxSeq = this.nextBatchEnd("pdu", MAX_PDUS_PER_TXN, MAX_EDUS_PER_TXN);
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

/** Backoff: uniform in [cap/2, cap], cap = 2 s * 2^(n-1) ≤ 6 h. */
export function backoffMs(failures: number, random: () => number = Math.random): number {
  return jitteredBackoffMs(failures, BASE_BACKOFF_MS, MAX_BACKOFF_MS, random);
}
