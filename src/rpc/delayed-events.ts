// The DelayedEventsDO's RPC types and the delay-ID format (durable-objects/delayed-events.ts, one
// per user; MSC4140), shared with the routes in src/api/client/delayed-events.ts.
import { encodeBase64Url, decodeBase64 } from "../core/base64";
import type { JsonObject } from "../core/types";

/** Longest delay accepted (Synapse's common setting for Element Call; the MSC lets servers choose). */
export const MAX_DELAY_MS = 24 * 3600_000;
/** Delayed events one user may have scheduled at once. */
export const MAX_SCHEDULED = 100;

/** The pseudo device under which the room records a delayed event's send as a transaction
 *  (txn_id = the delay_id): the room then shows it as unsigned["org.matrix.msc4140.delay_id"]
 *  to the sender (MSC4140, like transaction_id), and a send retried after a crash returns the
 *  first event instead of sending twice. Not a device ID a client can log in with (NUL). */
export const DELAYED_TXN_DEVICE = "\u0000msc4140";
/** The unsigned key naming the delayed event an event was sent by (MSC4140, unstable prefix). */
export const DELAY_ID_UNSIGNED = "org.matrix.msc4140.delay_id";

export interface DelayedEventSpec {
  roomId: string;
  type: string;
  stateKey?: string;
  content: JsonObject;
  delay: number;
  /** "<device>\n<txnId>" for idempotent scheduling through /send. */
  txn?: string;
}

/** A delayed event as the GET endpoints show it (durable-objects/delayed-events.ts itemOf). */
export interface DelayedEventItem {
  delay_id: string;
  room_id: string;
  type: string;
  state_key?: string;
  delay: number;
  running_since: number;
  delay_ms: number;
  scheduled_at: number;
  content: JsonObject;
}

/** A finalised one: sent (event_id) or cancelled (by an action, or an error). */
export interface FinalisedDelayedEvent {
  delayed_event: DelayedEventItem;
  outcome: "send" | "cancel";
  reason: "action" | "delay" | "error";
  error?: JsonObject;
  event_id?: string;
  finalised_ts: number;
}

export type DelayedResult<T> = { ok: true; value: T } | { ok: false; status: number; errcode: string; error: string; retryAfterMs?: number };

export function newDelayId(userId: string): string {
  const r = new Uint8Array(16);
  crypto.getRandomValues(r);
  return `d${encodeBase64Url(r)}.${encodeBase64Url(new TextEncoder().encode(userId))}`;
}

/** The owner named in a delay_id, or undefined for a malformed one. */
export function ownerOfDelayId(delayId: string): string | undefined {
  const m = /^d[A-Za-z0-9_-]{22}\.([A-Za-z0-9_-]{4,400})$/.exec(delayId);
  if (!m) return undefined;
  try {
    const user = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(decodeBase64(m[1]));
    return user.startsWith("@") ? user : undefined;
  } catch {
    return undefined;
  }
}
