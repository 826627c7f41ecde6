// Registration (spec: Client-Server API "Account registration").
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import type { Env } from "../../env";
import { MatrixError, forbidden } from "../errors";
import { parseBody } from "../validate";
import { LIMITS, clientAddress, rateLimit } from "../middleware/rate-limit";
import { authDictSchema, requireUia, type Stage } from "./uia";
import { db } from "../../db";
import { createUser, userExists, validateNewLocalpart } from "../../services/accounts";
import { clientSession } from "../../services/sessions";
import { randomString } from "../../services/crypto-util";

const registerSchema = z.object({
  auth: authDictSchema.optional(),
  username: z.string().max(255).optional(),
  password: z.string().max(512).optional(),
  device_id: z.string().min(1).max(255).optional(),
  initial_device_display_name: z.string().max(512).optional(),
  inhibit_login: z.boolean().optional(),
  refresh_token: z.boolean().optional(),
});

export const register = new Hono<AppEnv>();

register.post("/register", async (c) => {
  const config = c.var.config;
  const kind = c.req.query("kind") ?? "user";
  if (kind === "guest") throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled on this server");
  if (kind !== "user") throw new MatrixError(400, "M_INVALID_PARAM", "kind must be user or guest");
  if (config.registration === "closed") throw forbidden("Registration is disabled on this server");
  const body = await parseBody(c, registerSchema);

  // Check the username before UIA so clients learn of a bad or taken name at once.
  const localpart = (body.username ?? randomString(12).toLowerCase()).toLowerCase();
  const userId = validateNewLocalpart(localpart, config.serverName);
  if (await userExists(c.env, userId)) throw new MatrixError(400, "M_USER_IN_USE", "User ID already taken");

  const flows: Stage[][] = config.registration === "open" ? [["m.login.dummy"]] : [["m.login.registration_token"]];
  let tokenUsed: string | undefined;
  if (!body.auth?.session) await rateLimit(c, "register-ip", clientAddress(c), LIMITS.registerPerAddress);
  await requireUia(c, body.auth, {
    purpose: `register`,
    flows,
    checkToken: async (token) => {
      const problem = await checkRegistrationToken(c.env, token);
      if (!problem) tokenUsed = token;
      return problem;
    },
  });

  if (config.registration === "token") {
    if (!tokenUsed) throw forbidden("A registration token is required");
    // The stage only looked at the token; N parallel requests could all pass it. Claim one use
    // atomically now, and turn the claim into a completed use only once the account exists.
    if (!(await claimRegistrationToken(c.env, tokenUsed))) {
      throw new MatrixError(401, "M_FORBIDDEN", "Registration token has been used up or has expired");
    }
    try {
      await createUser(c.env, { userId, localpart, password: body.password });
    } catch (e) {
      await settleRegistrationToken(c.env, tokenUsed, false);
      throw e;
    }
    await settleRegistrationToken(c.env, tokenUsed, true);
  } else {
    await createUser(c.env, { userId, localpart, password: body.password });
  }
  if (body.inhibit_login) return c.json({ user_id: userId, home_server: config.serverName });
  const session = await clientSession(db(c.env), {
    userId,
    serverName: config.serverName,
    lifetimeMs: config.accessTokenLifetimeMs,
    deviceId: body.device_id,
    displayName: body.initial_device_display_name,
    refresh: body.refresh_token,
  });
  return c.json(session);
});

register.get("/register/available", async (c) => {
  const config = c.var.config;
  if (config.registration === "closed") throw forbidden("Registration is disabled on this server");
  const username = c.req.query("username");
  if (!username) throw new MatrixError(400, "M_MISSING_PARAM", "username is required");
  const userId = validateNewLocalpart(username.toLowerCase(), config.serverName);
  if (await userExists(c.env, userId)) throw new MatrixError(400, "M_USER_IN_USE", "User ID already taken");
  return c.json({ available: true });
});

/** null if the token can be used now, else why not. Registrations in progress (`pending`) count
 *  as uses, as in Synapse's admin API. */
export async function checkRegistrationToken(env: Env, token: string): Promise<string | null> {
  const row = await env.DB.prepare("SELECT uses_allowed, pending, completed, expiry_ts FROM registration_tokens WHERE token = ?")
    .bind(token)
    .first<{ uses_allowed: number | null; pending: number; completed: number; expiry_ts: number | null }>();
  if (!row) return "Invalid registration token";
  if (row.expiry_ts !== null && row.expiry_ts <= Date.now()) return "Registration token has expired";
  if (row.uses_allowed !== null && row.pending + row.completed >= row.uses_allowed) return "Registration token has been used up";
  return null;
}

/** Take one use of the token for a registration in progress: one conditional UPDATE, so of N
 *  concurrent registrations at most `uses_allowed` get a claim. False if none is left. */
async function claimRegistrationToken(env: Env, token: string): Promise<boolean> {
  const r = await env.DB.prepare(
    `UPDATE registration_tokens SET pending = pending + 1
     WHERE token = ? AND (expiry_ts IS NULL OR expiry_ts > ?) AND (uses_allowed IS NULL OR pending + completed < uses_allowed)`,
  )
    .bind(token, Date.now())
    .run();
  return r.meta.changes === 1;
}

/** End a claim: a completed use if the account was created, else the use goes back. */
async function settleRegistrationToken(env: Env, token: string, created: boolean): Promise<void> {
  await env.DB.prepare(`UPDATE registration_tokens SET pending = MAX(pending - 1, 0), completed = completed + ? WHERE token = ?`)
    .bind(created ? 1 : 0, token)
    .run();
}

/** GET /_matrix/client/v1/register/m.login.registration_token/validity */
export const registrationTokenValidity = new Hono<AppEnv>();
registrationTokenValidity.get("/register/m.login.registration_token/validity", async (c) => {
  if (c.var.config.registration !== "token") throw forbidden("Registration tokens are not in use on this server");
  const token = c.req.query("token");
  if (!token) throw new MatrixError(400, "M_MISSING_PARAM", "token is required");
  await rateLimit(c, "register-ip", clientAddress(c), LIMITS.registerPerAddress);
  return c.json({ valid: (await checkRegistrationToken(c.env, token)) === null });
});
