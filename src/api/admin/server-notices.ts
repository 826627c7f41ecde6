// Server notices (Synapse's docs/admin_api/server_notices.md; spec module "Server Notices"): a
// message from the server's notices account into a room it shares with the user, created on first
// use, with the user invited and the room tagged m.server_notice for them.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam, notFound } from "../errors";
import { parseBody } from "../validate";
import { requireAdmin } from "./common";
import { isValidUserId } from "../../core/ids";
import { createUser } from "../../services/accounts";
import { roomStub, unwrap } from "../../services/rooms";
import { userStub } from "../../services/notifier";
import { planRoom, executePlan } from "../client/rooms";
import type { JsonObject } from "../../core/types";

export const adminServerNotices = new Hono<AppEnv>();

/** The notices account: @notices:<server> (SERVER_NOTICES_LOCALPART), created without a password
 *  the first time it is needed. An existing ordinary account of that name is never taken over. */
async function noticesUser(c: Context<AppEnv>): Promise<string> {
  const localpart = c.env.SERVER_NOTICES_LOCALPART || "notices";
  const userId = `@${localpart}:${c.var.config.serverName}`;
  const row = await c.env.DB.prepare("SELECT password_hash, admin FROM users WHERE user_id = ?").bind(userId).first<{ password_hash: string | null }>();
  if (!row) await createUser(c.env, { userId, localpart, displayname: "Server Notices" }).catch(() => undefined);
  else if (row.password_hash !== null) throw new MatrixError(400, "M_UNKNOWN", `${userId} is an ordinary account; set SERVER_NOTICES_LOCALPART to a free name`);
  return userId;
}

/** The notices room shared with `userId` (invited or joined), or a new one. */
async function noticesRoom(c: Context<AppEnv>, sender: string, userId: string): Promise<string> {
  const existing = await c.env.DB.prepare(
    `SELECT m.room_id FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id
     WHERE r.creator = ? AND m.user_id = ? AND m.membership IN ('invite', 'join') ORDER BY r.created_ts DESC LIMIT 1`,
  )
    .bind(sender, userId)
    .first<{ room_id: string }>();
  if (existing) return existing.room_id;
  const plan = await planRoom(c.env, c.var.config, sender, { preset: "private_chat", name: "Server Notices", invite: [userId], power_level_content_override: { users_default: -10 } });
  const roomId = await executePlan(c.env, c.var.config, plan);
  await userStub(c.env, userId, c.var.config).setAccountData(userId, roomId, "m.tag", { tags: { "m.server_notice": { order: 0.5 } } });
  return roomId;
}

const noticeSchema = z.object({
  user_id: z.string().max(255),
  content: z.record(z.string(), z.unknown()),
  type: z.string().max(255).optional(),
  state_key: z.string().max(255).optional(),
});

async function sendNotice(c: Context<AppEnv>): Promise<Response> {
  await requireAdmin(c);
  const body = await parseBody(c, noticeSchema);
  if (!isValidUserId(body.user_id) || !body.user_id.endsWith(`:${c.var.config.serverName}`)) throw invalidParam("Server notices can only be sent to local users");
  const target = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(body.user_id).first<{ deactivated: number }>();
  if (!target || target.deactivated) throw notFound("User not found");
  const sender = await noticesUser(c);
  const roomId = await noticesRoom(c, sender, body.user_id);
  const txnId = c.req.param("txnId");
  const r = await roomStub(c.env, c.var.config, roomId).createLocalEvent({
    type: body.type ?? "m.room.message",
    content: body.content as JsonObject,
    sender,
    ...(body.state_key !== undefined ? { state_key: body.state_key } : {}),
    ...(txnId ? { txn: { deviceId: "server-notices", txnId } } : {}),
  });
  return c.json({ event_id: unwrap(r).eventId });
}

adminServerNotices.post("/v1/send_server_notice", sendNotice);
adminServerNotices.put("/v1/send_server_notice/:txnId", sendNotice);
