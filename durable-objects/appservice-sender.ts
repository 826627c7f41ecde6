// AppserviceSenderDO: one per application service (idFromName(appservice id)). The ordered
// queue of events and ephemeral data for that appservice, pushed as transactions (spec:
// Application Service API "Pushing events", PUT {url}/_matrix/app/v1/transactions/{txnId}).
//
// Same shape as the federation SenderDO (sender.ts); the shared parts are in queue-base.ts:
// - Items in enqueue order, one transaction in flight, at most MAX_EVENTS_PER_TXN events and
//   MAX_EPHEMERAL_PER_TXN ephemeral items in it.
// - The transaction's ID and extent are persisted before the first attempt, and a failed
//   transaction is retried with the same ID and the same content until the appservice answers
//   2xx ("the application service [...] can NO-OP this request (and it knows if it is the same
//   events based on the transaction ID)"): each event is delivered in exactly one transaction
//   ID. IDs are `<ms>_<last seq>`, so a queue recreated after the registration was removed and
//   re-added never reuses an ID the appservice has seen.
// - Retries on alarms with exponential backoff (full jitter, 1 s doubling up to 5 min). A
//   successful ping (POST /_matrix/client/v1/appservice/{id}/ping) wakes the queue at once.
// - The queue is in the object's SQLite storage, so it survives restarts and eviction. Bounded:
//   past MAX_QUEUE the oldest ephemeral items, then the oldest events, are dropped (counted).
import type { Env } from "../src/env";
import { parseConfig, type Config } from "../src/config";
import { msc3202Fields, type DeviceListItem } from "../src/services/appservice-e2ee";
import { appserviceById } from "../src/services/appservices";
import type { Appservice } from "../src/core/appservice-registration";
import { AppserviceCallError, callAppservice } from "../src/services/appservice-client";
import { jitteredBackoffMs, QueueDO } from "./queue-base";

export const MAX_EVENTS_PER_TXN = 100;
export const MAX_EPHEMERAL_PER_TXN = 100;
export const MAX_QUEUE = 50_000;
const BASE_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 5 * 60_000;
const TXN_TIMEOUT_MS = 60_000;
/** While sending, an alarm this far ahead restarts the pump if the object was evicted. */
const BACKSTOP_MS = TXN_TIMEOUT_MS + 10_000;

/** device_list and keys: MSC3202 (src/services/appservice-e2ee.ts). */
export type AppserviceItemKind = "event" | "ephemeral" | "to_device" | "device_list" | "keys";

export interface AppserviceQueueStatus {
  appservice: string | null;
  queued: number;
  failures: number;
  nextAttemptTs: number | null;
  inFlightTxnId: string | null;
  sentTxns: number;
  dropped: number;
  lastError: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS queue (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  body TEXT NOT NULL,
  enqueued_ts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS typing (room_id TEXT NOT NULL, user_id TEXT NOT NULL, expires_ts INTEGER NOT NULL, PRIMARY KEY (room_id, user_id));
`;

export class AppserviceSenderDO extends QueueDO {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env, SCHEMA);
  }

  /** The configuration, parsed once per instance; the server name is the one the queue was
   *  filled for. */
  private parsedConfig?: Config;
  private config(serverName: string): Config {
    if (this.parsedConfig?.serverName !== serverName) this.parsedConfig = { ...parseConfig(this.env), serverName };
    return this.parsedConfig;
  }

  /** Queue items for appservice `id` of server `serverName`, in order. */
  async enqueue(id: string, serverName: string, items: { kind: AppserviceItemKind; body: unknown }[]): Promise<void> {
    if (items.length === 0) return;
    this.setMeta("appservice", id);
    this.setMeta("server_name", serverName);
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      for (const i of items) this.sql.exec("INSERT INTO queue (kind, body, enqueued_ts) VALUES (?, ?, ?)", i.kind, JSON.stringify(i.body), now);
      this.enforceBound();
    });
    // Send now unless a retry is already scheduled (its backoff stands). Sending starts here,
    // not from an alarm (an alarm round trip added ~100 ms under wrangler dev); the alarm stays
    // as the backstop should this object be evicted mid-way.
    if (!this.num("next_attempt_ts")) {
      await this.scheduleAt(now + BACKSTOP_MS);
      void this.pump();
    }
  }

  /** A typing change in a room the appservice is interested in. m.typing carries the whole list
   *  of typers, which no single request knows, so this queue keeps the room's typers (with their
   *  timeouts) and enqueues the current list. */
  async typing(id: string, serverName: string, roomId: string, userId: string, timeoutMs: number): Promise<void> {
    const now = Date.now();
    this.sql.exec("DELETE FROM typing WHERE expires_ts <= ?", now);
    if (timeoutMs > 0) {
      this.sql.exec("INSERT INTO typing (room_id, user_id, expires_ts) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET expires_ts = excluded.expires_ts", roomId, userId, now + timeoutMs);
    } else this.sql.exec("DELETE FROM typing WHERE room_id = ? AND user_id = ?", roomId, userId);
    const userIds = this.sql.exec<{ user_id: string }>("SELECT user_id FROM typing WHERE room_id = ? ORDER BY user_id", roomId).toArray().map((r) => r.user_id);
    await this.enqueue(id, serverName, [{ kind: "ephemeral", body: { type: "m.typing", room_id: roomId, content: { user_ids: userIds } } }]);
  }

  /** The appservice is up (it pinged us): retry now. */
  async wake(): Promise<void> {
    this.setMeta("failures", 0);
    if (!this.hasQueue()) return;
    await this.scheduleAt(Date.now() + BACKSTOP_MS, true);
    void this.pump();
  }

  /** The registration was removed: forget everything queued. */
  async clear(): Promise<void> {
    this.sql.exec("DELETE FROM queue");
    this.sql.exec("DELETE FROM meta");
    this.sql.exec("DELETE FROM typing");
    await this.ctx.storage.deleteAlarm();
  }

  async status(): Promise<AppserviceQueueStatus> {
    return {
      appservice: this.meta("appservice") ?? null,
      queued: this.queued(),
      failures: this.num("failures"),
      nextAttemptTs: this.num("next_attempt_ts") || null,
      inFlightTxnId: this.meta("txn_id") ?? null,
      sentTxns: this.num("sent_txns"),
      dropped: this.num("dropped"),
      lastError: this.meta("last_error") ?? null,
    };
  }

  /** Past MAX_QUEUE, ephemeral, to-device and key-count items go first, then device-list
   *  changes, then the oldest events. */
  private enforceBound(): void {
    this.dropOldest(MAX_QUEUE, [["ephemeral", "to_device", "keys"], ["device_list"], ["event"]]);
  }

  async alarm(): Promise<void> {
    await this.pump();
  }

  /** Send transactions until the queue is empty or one fails (then the backoff alarm is set).
   *  One pump at a time: one transaction in flight. */
  private async pump(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (await this.sendOne());
    } finally {
      this.sending = false;
    }
    // An enqueue that arrived while the last step was finishing found the pump busy.
    if (this.num("failures") === 0 && this.hasQueue()) void this.pump();
  }

  /** The body of the transaction holding the queue up to `maxSeq`. Events, ephemeral and
   *  to-device items are the same on every attempt; MSC3202 key counts are read now. */
  private async transactionBody(service: Appservice, maxSeq: number): Promise<Record<string, unknown>> {
    const items = this.sql.exec<{ kind: string; body: string }>("SELECT kind, body FROM queue WHERE seq <= ? ORDER BY seq", maxSeq).toArray();
    const of = (kind: string) => items.filter((i) => i.kind === kind).map((i) => JSON.parse(i.body));
    const body: Record<string, unknown> = { events: of("event") };
    const ephemeral = of("ephemeral");
    if (ephemeral.length) {
      // Stable name (spec v1.13) and MSC2409's unstable one, which matrix-appservice-bridge reads.
      body.ephemeral = ephemeral;
      body["de.sorunome.msc2409.ephemeral"] = ephemeral;
    }
    const toDevice = of("to_device");
    if (toDevice.length) body["de.sorunome.msc2409.to_device"] = toDevice;
    if (service.msc3202) {
      const deviceLists = of("device_list") as DeviceListItem[];
      const keyUsers = (of("keys") as { user_id: string }[]).map((k) => k.user_id);
      Object.assign(body, await msc3202Fields(this.env, service, { deviceLists, keyUsers, toDevice, events: body.events as never }));
    }
    return body;
  }

  /** Send (or resend) one transaction; true when it succeeded and more is queued. */
  private async sendOne(): Promise<boolean> {
    const id = this.meta("appservice");
    const serverName = this.meta("server_name");
    if (!id || !serverName) return false;
    const config = this.config(serverName);
    const service = await appserviceById(this.env, serverName, id);
    if (!service || !service.url) {
      // Removed, or registered without a URL (receives nothing): nothing to deliver to.
      await this.clear();
      return false;
    }
    let txnId = this.meta("txn_id");
    let maxSeq = this.num("txn_max_seq");
    if (!txnId) {
      if (!this.hasQueue()) {
        this.setMeta("next_attempt_ts", null);
        await this.ctx.storage.deleteAlarm();
        return false;
      }
      maxSeq = this.nextBatchEnd("event", MAX_EVENTS_PER_TXN, MAX_EPHEMERAL_PER_TXN);
      txnId = `${Date.now()}_${maxSeq}`;
      this.setMeta("txn_id", txnId);
      this.setMeta("txn_max_seq", maxSeq);
    }
    const body = await this.transactionBody(service, maxSeq);

    this.setMeta("last_attempt_ts", Date.now());
    try {
      await callAppservice(config, service, "PUT", `/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`, { body, timeoutMs: TXN_TIMEOUT_MS });
    } catch (e) {
      const why = e instanceof AppserviceCallError ? e.message : String(e);
      console.warn(`appservice ${id}: transaction ${txnId} failed: ${why}`);
      this.setMeta("last_error", why);
      const failures = this.num("failures") + 1;
      this.setMeta("failures", failures);
      await this.scheduleAt(Date.now() + appserviceBackoffMs(failures), true);
      return false;
    }
    this.ctx.storage.transactionSync(() => {
      this.sql.exec("DELETE FROM queue WHERE seq <= ?", maxSeq);
      for (const k of ["txn_id", "txn_max_seq", "last_error"]) this.setMeta(k, null);
      this.setMeta("failures", 0);
      this.setMeta("sent_txns", this.num("sent_txns") + 1);
    });
    if (this.hasQueue()) {
      await this.scheduleAt(Date.now() + BACKSTOP_MS, true);
      return true;
    }
    this.setMeta("next_attempt_ts", null);
    await this.ctx.storage.deleteAlarm();
    return false;
  }
}

/** Backoff: uniform in [cap/2, cap], cap = 1 s * 2^(n-1) ≤ 5 min. */
export function appserviceBackoffMs(failures: number, random: () => number = Math.random): number {
  return jitteredBackoffMs(failures, BASE_BACKOFF_MS, MAX_BACKOFF_MS, random);
}
