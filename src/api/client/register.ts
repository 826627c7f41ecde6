// Registration (spec: Client-Server API "Account registration").
import { Hono, type Context } from "hono";
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
import { randomString, sha256Hex } from "../../services/crypto-util";
import { hashPassword } from "../../services/passwords";
import { checkUserNotExclusive } from "../../services/appservices";
import { appserviceFromToken, sessionFor } from "./login-common";

const registerSchema = z.object({
  /** m.login.application_service (spec: Application Service API) puts the type at top level. */
  type: z.string().optional(),
  auth: authDictSchema.optional(),
  username: z.string().max(255).optional(),
  password: z.string().max(512).optional(),
  device_id: z.string().min(1).max(255).optional(),
  initial_device_display_name: z.string().max(512).optional(),
  inhibit_login: z.boolean().optional(),
  refresh_token: z.boolean().optional(),
  /** Upgrading a guest account (spec module "Guest Access"): the guest's access token. */
  guest_access_token: z.string().max(1024).optional(),
});

/** Guest registration: "all parameters in the request body with the exception of
 *  initial_device_display_name MUST BE ignored by the server". */
const guestRegisterSchema = z.object({ initial_device_display_name: z.string().max(512).optional() }).loose();

export const register = new Hono<AppEnv>();

register.post("/register", async (c) => {
  const config = c.var.config;
  const kind = c.req.query("kind") ?? "user";
  if (kind === "guest") {
    // GUEST_ACCESS=on; independent of REGISTRATION (as Synapse's allow_guest_access), no UIA.
    if (!config.guestAccess) throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled on this server");
    const body = await parseBody(c, guestRegisterSchema);
    await rateLimit(c, "register-ip", clientAddress(c), LIMITS.registerPerAddress);
    const localpart = randomString(12).toLowerCase();
    const userId = validateNewLocalpart(localpart, config.serverName);
    await createUser(c.env, { userId, localpart, guest: true });
    // "The server MUST pick a device_id for the account regardless of input."
    return c.json(
      await clientSession(db(c.env), { userId, serverName: config.serverName, lifetimeMs: config.accessTokenLifetimeMs, displayName: body.initial_device_display_name }),
    );
  }
  if (kind !== "user") throw new MatrixError(400, "M_INVALID_PARAM", "kind must be user or guest");
  const body = await parseBody(c, registerSchema);
  if (body.type === APPSERVICE_LOGIN || body.auth?.type === APPSERVICE_LOGIN) return c.json(await appserviceRegister(c, body));
  if (config.registration === "closed") throw forbidden("Registration is disabled on this server");

  // Check the username before UIA so clients learn of a bad or taken name at once.
  const localpart = (body.username ?? randomString(12).toLowerCase()).toLowerCase();
  const userId = validateNewLocalpart(localpart, config.serverName);
  await checkUserNotExclusive(c.env, config.serverName, userId);
  // Upgrading a guest: "specifying the additional POST parameter guest_access_token containing
  // the guest's access token. They are also required to specify the username parameter to the
  // value of the local part of their username" (module "Guest Access"). The user ID stays.
  const upgrade = body.guest_access_token !== undefined;
  if (upgrade) await checkGuestUpgrade(c.env, body.guest_access_token!, body.username, userId);
  else if (await userExists(c.env, userId)) throw new MatrixError(400, "M_USER_IN_USE", "User ID already taken");

  const flows: Stage[][] = config.registration === "open" ? [["m.login.dummy"]] : [["m.login.registration_token"]];
  let tokenUsed: string | undefined;
  if (!body.auth?.session) await rateLimit(c, "register-ip", clientAddress(c), LIMITS.registerPerAddress);
  await requireUia(c, body.auth, {
    purpose: upgrade ? `register:upgrade:${userId}` : `register`,
    flows,
    checkToken: async (token) => {
      const problem = await checkRegistrationToken(c.env, token);
      if (!problem) tokenUsed = token;
      return problem;
    },
  });

  const createAccount = async () => {
    if (upgrade) {
      const r = await c.env.DB.prepare("UPDATE users SET is_guest = 0, password_hash = ? WHERE user_id = ? AND is_guest = 1 AND deactivated = 0")
        .bind(body.password !== undefined ? await hashPassword(body.password) : null, userId)
        .run();
      if (r.meta.changes !== 1) throw new MatrixError(400, "M_USER_IN_USE", "User ID already taken");
    } else await createUser(c.env, { userId, localpart, password: body.password });
  };
  if (config.registration === "token") {
    if (!tokenUsed) throw forbidden("A registration token is required");
    // The stage only looked at the token; N parallel requests could all pass it. Claim one use
    // atomically now, and turn the claim into a completed use only once the account exists.
    if (!(await claimRegistrationToken(c.env, tokenUsed))) {
      throw new MatrixError(401, "M_FORBIDDEN", "Registration token has been used up or has expired");
    }
    try {
      await createAccount();
    } catch (e) {
      await settleRegistrationToken(c.env, tokenUsed, false);
      throw e;
    }
    await settleRegistrationToken(c.env, tokenUsed, true);
  } else await createAccount();
  if (body.inhibit_login) return c.json({ user_id: userId, home_server: config.serverName });
  const session = await sessionFor(c, userId, body);
  return c.json(session);
});

register.get("/register/available", async (c) => {
  const config = c.var.config;
  if (config.registration === "closed") throw forbidden("Registration is disabled on this server");
  const username = c.req.query("username");
  if (!username) throw new MatrixError(400, "M_MISSING_PARAM", "username is required");
  const userId = validateNewLocalpart(username.toLowerCase(), config.serverName);
  await checkUserNotExclusive(c.env, config.serverName, userId);
  if (await userExists(c.env, userId)) throw new MatrixError(400, "M_USER_IN_USE", "User ID already taken");
  return c.json({ available: true });
});

const APPSERVICE_LOGIN = "m.login.application_service";

/** Registration by an application service (spec: Application Service API "Server admin style
 *  permissions"): its as_token, a username in its users namespace (else M_EXCLUSIVE), no
 *  password, no UIA, whatever REGISTRATION says. */
async function appserviceRegister(c: Context<AppEnv>, body: z.infer<typeof registerSchema>) {
  const config = c.var.config;
  const service = await appserviceFromToken(c);
  if (body.username === undefined) throw new MatrixError(400, "M_MISSING_PARAM", "username is required");
  const localpart = body.username.toLowerCase();
  const userId = validateNewLocalpart(localpart, config.serverName);
  if (!service.mayActAs(userId)) throw new MatrixError(400, "M_EXCLUSIVE", `${userId} is not in the application service's namespace`);
  await checkUserNotExclusive(c.env, config.serverName, userId, service);
  await createUser(c.env, { userId, localpart });
  if (body.inhibit_login) return { user_id: userId, home_server: config.serverName };
  return sessionFor(c, userId, body);
}

/** A guest upgrade names the guest by its access token and its localpart; both must agree. */
async function checkGuestUpgrade(env: Env, token: string, username: string | undefined, userId: string): Promise<void> {
  if (username === undefined) throw new MatrixError(400, "M_MISSING_PARAM", "username (the guest's localpart) is required to upgrade a guest account");
  const row = await env.DB.prepare(
    `SELECT u.user_id, u.is_guest FROM access_tokens t JOIN users u ON u.user_id = t.user_id
     WHERE t.token_hash = ? AND u.deactivated = 0 AND (t.expires_ts IS NULL OR t.expires_ts > ?)`,
  )
    .bind(await sha256Hex(token), Date.now())
    .first<{ user_id: string; is_guest: number }>();
  if (!row) throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised guest_access_token", { soft_logout: false });
  if (!row.is_guest || row.user_id !== userId) throw forbidden("guest_access_token does not belong to a guest account with this username");
}

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
export async function claimRegistrationToken(env: Env, token: string): Promise<boolean> {
  const r = await env.DB.prepare(
    `UPDATE registration_tokens SET pending = pending + 1
     WHERE token = ? AND (expiry_ts IS NULL OR expiry_ts > ?) AND (uses_allowed IS NULL OR pending + completed < uses_allowed)`,
  )
    .bind(token, Date.now())
    .run();
  return r.meta.changes === 1;
}

/** End a claim: a completed use if the account was created, else the use goes back. */
export async function settleRegistrationToken(env: Env, token: string, created: boolean): Promise<void> {
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
