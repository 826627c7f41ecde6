// Account management (spec: Client-Server API "Account management").
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
import { deactivateAccount } from "../../services/admin-accounts";

export const account = new Hono<AppEnv>();

/** OpenID tokens prove the user's identity to third parties for an hour: a password change
 *  (the account may have been taken over) or deactivation (services/admin-accounts.ts) ends them with the sessions. */
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
  await deactivateAccount(c.env, c.var.config, userId, body.erase === true);
  return c.json({ id_server_unbind_result: "no-support" });
});

// No third-party identifiers are supported: the list is honestly empty.
account.get("/account/3pid", requireAuth, (c) => c.json({ threepids: [] }));
