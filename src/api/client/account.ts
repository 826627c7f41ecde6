// Account management (spec: Client-Server API "Account management").
import { refreshLocalUser } from "../../services/user-directory";
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { authDictSchema, requireUia } from "./uia";
import { db } from "../../db";
import { hashPassword } from "../../services/passwords";
import { deleteAllDevices } from "../../services/sessions";
import { deletePushersExceptDevice } from "../../services/pushers";
import { roomStub } from "../../services/rooms";
import { roomsEverJoined } from "../../db/memberships";

export const account = new Hono<AppEnv>();

/** OpenID tokens prove the user's identity to third parties for an hour: a password change
 *  (the account may have been taken over) or deactivation ends them with the sessions. */
function revokeOpenidTokens(c: Context<AppEnv>, userId: string): Promise<unknown> {
  return c.env.DB.prepare("DELETE FROM openid_tokens WHERE user_id = ?").bind(userId).run();
}

account.post("/account/password", requireAuth, async (c) => {
  const body = await parseBody(
    c,
    z.object({ new_password: z.string().min(1).max(512), logout_devices: z.boolean().optional(), auth: authDictSchema.optional() }),
  );
  const { userId, deviceId } = c.var.auth;
  await requireUia(c, body.auth, { purpose: `password:${userId}`, flows: [["m.login.password"]], userId });
  await c.env.DB.prepare("UPDATE users SET password_hash = ? WHERE user_id = ?").bind(await hashPassword(body.new_password), userId).run();
  await revokeOpenidTokens(c, userId);
  // Default true (spec): every other device is logged out; this one stays.
  if (body.logout_devices !== false) await deleteAllDevices(db(c.env), userId, deviceId, c.env, c.var.config);
  // Other devices' pushers go even when they stay logged in (Synapse does the same).
  await deletePushersExceptDevice(c.env, c.var.config, userId, deviceId);
  return c.json({});
});

account.post("/account/deactivate", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ auth: authDictSchema.optional(), erase: z.boolean().optional(), id_server: z.string().optional() }));
  const { userId } = c.var.auth;
  await requireUia(c, body.auth, { purpose: `deactivate:${userId}`, flows: [["m.login.password"]], userId });
  // The user ID stays reserved forever (spec); the password goes so nobody can log in again.
  const erase = body.erase === true;
  await c.env.DB.prepare(
    `UPDATE users SET deactivated = 1, password_hash = NULL${erase ? ", displayname = NULL, avatar_url = NULL" : ""} WHERE user_id = ?`,
  )
    .bind(userId)
    .run();
  await deleteAllDevices(db(c.env), userId, undefined, c.env, c.var.config);
  await revokeOpenidTokens(c, userId);
  // Erasure: every room the user was ever in (D1 membership mirror, any membership) serves
  // their events redacted to whoever was not joined when they were sent (RoomDO.eraseSender).
  if (erase) {
    const rooms = await roomsEverJoined(c.env.DB, userId);
    for (let i = 0; i < rooms.length; i += 20) {
      await Promise.all(rooms.slice(i, i + 20).map((roomId) => roomStub(c.env, c.var.config, roomId).eraseSender(userId)));
    }
  }
  await refreshLocalUser(c.env, userId);
  return c.json({ id_server_unbind_result: "no-support" });
});

// No third-party identifiers are supported: the list is honestly empty.
account.get("/account/3pid", requireAuth, (c) => c.json({ threepids: [] }));
