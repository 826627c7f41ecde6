// Inbound transactions (spec: Server-Server API "Transactions", PUT /_matrix/federation/v1/send/{txnId}):
// deduplication of retransmissions, per-PDU results, server ACLs, PDUs handed to the room's one
// `admit` door, EDUs handed to registered hooks.
//
// Hooks for other components (register at module load, e.g. in the file that implements them):
//   registerEduHandler("m.typing", async (env, config, origin, content) => { ... })
// Unregistered EDU types are ignored (spec: EDUs are best-effort).
//
// A PDU that arrives after a gap (prev_events we do not hold) goes through admitFederatedPdu
// (services/federation/membership.ts): get_missing_events, then the state at the gap via
// /state_ids, before the RoomDO admits it.
import type { Env } from "../../env";
import type { Config } from "../../config";
import type { AdmitOutcome } from "../../rpc/room";
import { roomStub } from "../../rpc/stubs";
import type { PDU, JsonObject } from "../../core/types";
import { getRoomVersion } from "../../core/room-versions";
import { computeEventId } from "../../core/event-hashes";
import { isValidRoomId } from "../../core/ids";
import { isServerAllowedByAcl } from "../../core/server-acl";
import { MatrixError } from "../../api/errors";
import { admitFederatedPdu } from "./membership";

export const MAX_PDUS = 50;
export const MAX_EDUS = 100;
/** A first attempt at a transaction still unfinished after this long is presumed dead. */
const TXN_STALE_MS = 2 * 60_000;
/** How long processed transaction IDs are remembered. */
const TXN_RETENTION_MS = 7 * 24 * 3600_000;


// ---------------------------------------------------------------------------------------------
// Server ACLs

/** Whether `server` may act in `roomId` under the room's current m.room.server_acl (spec:
 *  "Server Access Control Lists"). The RoomDO owns the ACL state; we ask it. Rooms we do not
 *  know (not in the D1 registry) have no ACL we could apply, and are not woken to ask. */
export async function isServerAllowedInRoom(env: Env, config: Config, roomId: string, server: string): Promise<boolean> {
  if (!isValidRoomId(roomId)) return true;
  if (!(await env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first())) return true;
  const ev = await roomStub(env, config, roomId).getCurrentStateEvent("m.room.server_acl", "");
  return isServerAllowedByAcl((ev?.content as JsonObject | undefined) ?? null, server);
}

/** For endpoints that name a room (make_join, state, backfill, ...): 403 M_FORBIDDEN when the
 *  room's ACL denies `origin`. */
export async function requireServerAllowed(env: Env, config: Config, roomId: string, origin: string): Promise<void> {
  if (!(await isServerAllowedInRoom(env, config, roomId, origin))) {
    throw new MatrixError(403, "M_FORBIDDEN", "Server is banned from this room by its server ACL");
  }
}

// ---------------------------------------------------------------------------------------------
// PDUs

/** The one hand-off from federation into a room: ACL, then RoomDO.admit (which checks shape,
 *  hashes, signatures, auth, and persists). Returns the spec's per-PDU result. */
export async function handOffPdu(env: Env, config: Config, origin: string, pdu: PDU, roomId: string): Promise<{ error?: string }> {
  if (!(await isServerAllowedInRoom(env, config, roomId, origin))) return { error: "Server is denied by the room's server ACL" };
  let out: AdmitOutcome;
  try {
    // admit, fetching missing prev/auth events from the origin when there is a gap.
    out = await admitFederatedPdu(env, config, origin, roomId, pdu);
  } catch (e) {
    console.error("admit failed", roomId, e);
    return { error: "Internal error processing event" };
  }
  switch (out.status) {
    case "accepted":
    case "duplicate":
    case "soft_failed": // handled: stored, just not part of current state
      return {};
    default:
      return { error: out.reason ?? `Event ${out.status}` };
  }
}

/** Room version of a room we know (D1 registry), or undefined. */
async function roomVersionOf(env: Env, roomId: string): Promise<string | undefined> {
  const row = await env.DB.prepare("SELECT room_version FROM rooms WHERE room_id = ?").bind(roomId).first<{ room_version: string }>();
  return row?.room_version;
}

async function processPdus(env: Env, config: Config, origin: string, pdus: unknown[]): Promise<Record<string, { error?: string }>> {
  const results: Record<string, { error?: string }> = {};
  // Same room: in order, one after another. Different rooms: in parallel.
  const byRoom = new Map<string, { eventId: string; pdu: PDU }[]>();
  // A room's version never changes: one registry lookup per room of the transaction.
  const versions = new Map<string, Promise<string | undefined>>();
  for (const raw of pdus) {
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) continue; // nothing to name a result by
    const pdu = raw as PDU;
    const roomId = pdu.room_id;
    if (typeof roomId !== "string") continue;
    if (!versions.has(roomId)) versions.set(roomId, roomVersionOf(env, roomId));
    const versionId = await versions.get(roomId)!;
    const rv = versionId ? getRoomVersion(versionId) : undefined;
    let eventId: string;
    try {
      eventId = rv ? await computeEventId(pdu, rv) : typeof pdu.event_id === "string" ? pdu.event_id : "";
    } catch {
      continue;
    }
    if (!eventId) continue;
    if (!rv) {
      results[eventId] = { error: "Unknown room" };
      continue;
    }
    const list = byRoom.get(roomId) ?? [];
    list.push({ eventId, pdu });
    byRoom.set(roomId, list);
  }
  await Promise.all(
    [...byRoom.entries()].map(async ([roomId, list]) => {
      for (const { eventId, pdu } of list) results[eventId] = await handOffPdu(env, config, origin, pdu, roomId);
    }),
  );
  return results;
}

// ---------------------------------------------------------------------------------------------
// EDUs

export type EduHandler = (env: Env, config: Config, origin: string, content: JsonObject) => Promise<void>;
const eduHandlers = new Map<string, EduHandler>();

/** Register the handler for one EDU type (m.typing, m.receipt, m.presence, m.device_list_update,
 *  m.signing_key_update, m.direct_to_device). The handler gets the EDU's content from a verified
 *  origin; room-scoped typing and receipts have already passed the room's server ACL. */
export function registerEduHandler(eduType: string, handler: EduHandler): void {
  eduHandlers.set(eduType, handler);
}

async function processEdu(env: Env, config: Config, origin: string, edu: unknown): Promise<void> {
  const e = edu as { edu_type?: unknown; content?: unknown };
  if (!e || typeof e.edu_type !== "string" || !e.content || typeof e.content !== "object" || Array.isArray(e.content)) return;
  const handler = eduHandlers.get(e.edu_type);
  if (!handler) return;
  let content = e.content as JsonObject;
  // ACLs on room-scoped EDUs (spec "Server Access Control Lists").
  if (e.edu_type === "m.typing") {
    if (typeof content.room_id !== "string" || !(await isServerAllowedInRoom(env, config, content.room_id, origin))) return;
  } else if (e.edu_type === "m.receipt") {
    const allowed: JsonObject = {};
    for (const [roomId, receipts] of Object.entries(content)) {
      if (await isServerAllowedInRoom(env, config, roomId, origin)) allowed[roomId] = receipts;
    }
    if (Object.keys(allowed).length === 0) return;
    content = allowed;
  }
  try {
    await handler(env, config, origin, content);
  } catch (err) {
    console.error(`EDU handler ${e.edu_type} failed`, err);
  }
}

// ---------------------------------------------------------------------------------------------
// Transactions

export interface TransactionResult {
  pdus: Record<string, { error?: string }>;
}

/** Process a transaction once. A retransmission (same origin and txnId) gets the first answer;
 *  one that arrives while the first attempt is still running gets 429 so the sender retries. */
export async function processTransaction(
  env: Env,
  config: Config,
  origin: string,
  txnId: string,
  body: { pdus: unknown[]; edus?: unknown[] },
): Promise<TransactionResult> {
  if (body.pdus.length > MAX_PDUS) throw new MatrixError(400, "M_BAD_JSON", `A transaction may carry at most ${MAX_PDUS} PDUs`);
  if ((body.edus?.length ?? 0) > MAX_EDUS) throw new MatrixError(400, "M_BAD_JSON", `A transaction may carry at most ${MAX_EDUS} EDUs`);
  const now = Date.now();
  const claim = await env.DB.prepare(
    `INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES (?1, ?2, NULL, ?3)
     ON CONFLICT (origin, txn_id) DO UPDATE SET received_ts = ?3
       WHERE federation_inbound_txns.response IS NULL AND federation_inbound_txns.received_ts < ?4`,
  )
    .bind(origin, txnId, now, now - TXN_STALE_MS)
    .run();
  if (claim.meta.changes === 0) {
    const row = await env.DB.prepare("SELECT response FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?")
      .bind(origin, txnId)
      .first<{ response: string | null }>();
    if (row?.response) return JSON.parse(row.response) as TransactionResult;
    throw new MatrixError(429, "M_LIMIT_EXCEEDED", "Transaction is still being processed", { retry_after_ms: 5000 });
  }
  let result: TransactionResult;
  try {
    const [pdus] = await Promise.all([
      processPdus(env, config, origin, body.pdus),
      Promise.all((body.edus ?? []).map((e) => processEdu(env, config, origin, e))),
    ]);
    result = { pdus };
  } catch (e) {
    // Let the sender retry the whole transaction.
    await env.DB.prepare("DELETE FROM federation_inbound_txns WHERE origin = ? AND txn_id = ? AND response IS NULL").bind(origin, txnId).run();
    throw e;
  }
  await env.DB.prepare("UPDATE federation_inbound_txns SET response = ? WHERE origin = ? AND txn_id = ?")
    .bind(JSON.stringify(result), origin, txnId)
    .run();
  if (Math.random() < 0.01) {
    await env.DB.prepare("DELETE FROM federation_inbound_txns WHERE received_ts < ?").bind(now - TXN_RETENTION_MS).run();
  }
  return result;
}
