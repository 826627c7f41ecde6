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

  await createUser(c.env, { userId, localpart, password: body.password });
  if (tokenUsed) {
    await c.env.DB.prepare("UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?").bind(tokenUsed).run();
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

/** null if the token can be used now, else why not. */
export async function checkRegistrationToken(env: Env, token: string): Promise<string | null> {
  const row = await env.DB.prepare("SELECT uses_allowed, completed, expiry_ts FROM registration_tokens WHERE token = ?")
    .bind(token)
    .first<{ uses_allowed: number | null; completed: number; expiry_ts: number | null }>();
  if (!row) return "Invalid registration token";
  if (row.expiry_ts !== null && row.expiry_ts <= Date.now()) return "Registration token has expired";
  if (row.uses_allowed !== null && row.completed >= row.uses_allowed) return "Registration token has been used up";
  return null;
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
