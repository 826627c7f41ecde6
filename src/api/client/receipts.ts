// Receipts and read markers (spec: modules "Receipts", "Read and unread markers"; OpenAPI
// client-server/receipts.yaml, read_markers.yaml). Receipts are fanned out to the hubs of the
// room's local members (private ones only to the owner); the owner's hub moves its read marks,
// which clears notification counts. m.fully_read is room account data.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, invalidParam } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody } from "../validate";
import { isLocalUser, knownRoom, roomStub, unwrap } from "../../services/rooms";
import { fanOutReceipt, userStub } from "../../services/notifier";
import { sendReceipt as sendReceiptEdu } from "../../services/federation/edus";
import { pushRoomEphemeral } from "../../services/appservice-fanout";

export const receipts = new Hono<AppEnv>();

const RECEIPT_TYPES = new Set(["m.read", "m.read.private", "m.fully_read"]);

async function joinedRoom(c: Context<AppEnv>, roomId: string) {
  await knownRoom(c.env, roomId);
  const stub = roomStub(c.env, c.var.config, roomId);
  if ((await stub.getMembership(c.var.auth.userId)) !== "join") throw forbidden("You are not joined to this room");
  return stub;
}

/** Send one receipt: the event must exist and be visible to the sender. */
async function sendReceipt(c: Context<AppEnv>, roomId: string, type: string, eventId: string, threadId: string): Promise<void> {
  const { userId, deviceId } = c.var.auth;
  const stub = await joinedRoom(c, roomId);
  unwrap(await stub.getEventForClient({ userId, deviceId }, eventId));
  if (type === "m.fully_read") {
    await userStub(c.env, userId, c.var.config).setAccountData(userId, roomId, "m.fully_read", { event_id: eventId });
    return;
  }
  const members = type === "m.read.private" ? [] : (await stub.getJoinedUserIds()).filter((u) => isLocalUser(c.var.config, u));
  const receipt = { roomId, userId, type, eventId, threadId, ts: Date.now() };
  await fanOutReceipt(c.env, c.var.config, receipt, members);
  // Public receipts go to the room's other servers as m.receipt (spec: Server-Server API "Receipts").
  if (type === "m.read") c.executionCtx.waitUntil(sendReceiptEdu(c.env, c.var.config, receipt).catch((e) => console.error("m.receipt EDU failed", e)));
  // And to application services that receive ephemeral data (MSC2409) for this room.
  if (type === "m.read") {
    const content = { [eventId]: { "m.read": { [userId]: { ts: receipt.ts, ...(threadId ? { thread_id: threadId } : {}) } } } };
    c.executionCtx.waitUntil(pushRoomEphemeral(c.env, c.var.config.serverName, roomId, { type: "m.receipt", content }).catch((e) => console.error("appservice receipt failed", e)));
  }
}

const receiptBody = z.object({ thread_id: z.unknown().optional() }).loose();

receipts.post("/rooms/:roomId/receipt/:receiptType/:eventId", requireAuth, async (c) => {
  const type = c.req.param("receiptType");
  if (!RECEIPT_TYPES.has(type)) throw invalidParam(`Unknown receipt type ${type}`);
  const b = await parseBody(c, receiptBody);
  let threadId = "";
  if (b.thread_id !== undefined) {
    // "thread_id field must be a non-empty string"; not for m.fully_read.
    if (typeof b.thread_id !== "string" || b.thread_id === "") throw invalidParam("thread_id field must be a non-empty string");
    if (type === "m.fully_read") throw invalidParam("thread_id is not allowed for m.fully_read");
    threadId = b.thread_id;
  }
  await sendReceipt(c, c.req.param("roomId"), type, c.req.param("eventId"), threadId);
  return c.json({});
});

const markersBody = z.object({
  "m.fully_read": z.string().optional(),
  "m.read": z.string().optional(),
  "m.read.private": z.string().optional(),
});

receipts.post("/rooms/:roomId/read_markers", requireAuth, async (c) => {
  const b = await parseBody(c, markersBody);
  const roomId = c.req.param("roomId");
  for (const type of ["m.fully_read", "m.read", "m.read.private"] as const) {
    const eventId = b[type];
    if (eventId !== undefined) await sendReceipt(c, roomId, type, eventId, "");
  }
  return c.json({});
});

export { MatrixError };
