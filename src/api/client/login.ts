// Login, logout, refresh, whoami (spec: Client-Server API "Login", "Refreshing access tokens").
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { appserviceFromToken, sessionFor } from "./login-common";
import { redeemLoginToken } from "../../services/login-tokens";
import { LIMITS, clientAddress, rateLimit } from "../middleware/rate-limit";
import { db } from "../../db";
import { verifyPassword } from "../../services/passwords";
import { deleteAllDevices, deleteDevice, refreshSession } from "../../services/sessions";

/** `alice` or `@alice:server` → full user ID on this server (case-folded localpart, as Synapse does). */
export function resolveLoginUser(user: string, serverName: string): string {
  if (user.startsWith("@")) {
    const colon = user.indexOf(":");
    if (colon > 0) return `@${user.slice(1, colon).toLowerCase()}${user.slice(colon)}`;
  }
  return `@${user.toLowerCase()}:${serverName}`;
}

const loginSchema = z.object({
  type: z.string(),
  identifier: z.object({ type: z.string(), user: z.string().optional() }).loose().optional(),
  user: z.string().optional(), // deprecated form
  password: z.string().max(512).optional(),
  device_id: z.string().min(1).max(255).optional(),
  initial_device_display_name: z.string().max(512).optional(),
  refresh_token: z.boolean().optional(),
  /** m.login.token (login-token.ts). */
  token: z.string().max(1024).optional(),
});

export const login = new Hono<AppEnv>();

login.get("/login", (c) =>
  c.json({ flows: [{ type: "m.login.password" }, { type: "m.login.token", get_login_token: true }, { type: "m.login.application_service" }] }),
);

login.post("/login", async (c) => {
  const body = await parseBody(c, loginSchema);
  if (body.type === APPSERVICE_LOGIN) return c.json(await appserviceLogin(c, body));
  if (body.type === "m.login.token") {
    const userId = await redeemLoginToken(c, body.token);
    return c.json({ ...(await sessionFor(c, userId, body)), well_known: { "m.homeserver": { base_url: c.var.config.publicBaseUrl } } });
  }
  if (body.type !== "m.login.password") {
    throw new MatrixError(400, "M_UNKNOWN", `Login type ${body.type} is not supported`);
  }
  let who: string | undefined;
  if (body.identifier) {
    if (body.identifier.type !== "m.id.user") {
      throw new MatrixError(400, "M_UNKNOWN", `Identifier type ${body.identifier.type} is not supported`);
    }
    who = body.identifier.user;
  } else {
    who = body.user;
  }
  if (!who || body.password === undefined) throw new MatrixError(400, "M_BAD_JSON", "identifier and password are required");
  const config = c.var.config;
  const userId = resolveLoginUser(who, config.serverName);
  await rateLimit(c, "login-ip", clientAddress(c), LIMITS.loginPerAddress);
  await rateLimit(c, "login-user", userId, LIMITS.loginPerAccount);

  const user = await c.env.DB.prepare("SELECT password_hash, deactivated FROM users WHERE user_id = ?")
    .bind(userId)
    .first<{ password_hash: string | null; deactivated: number }>();
  // Verify even for unknown users so timing does not reveal which accounts exist.
  const ok = await verifyPassword(body.password, user?.password_hash ?? "pbkdf2-sha512$100000$AAAAAAAAAAAAAAAAAAAAAA$AAAA");
  if (!user || !ok) throw forbidden("Invalid username or password");
  if (user.deactivated) throw new MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated");

  const session = await sessionFor(c, userId, body);
  return c.json({ ...session, well_known: { "m.homeserver": { base_url: config.publicBaseUrl } } });
});

const APPSERVICE_LOGIN = "m.login.application_service";

/** Login as a user of an appservice's namespace with its as_token (spec: Application Service
 *  API "Server admin style permissions"): no password; outside the namespace M_EXCLUSIVE. */
async function appserviceLogin(c: Context<AppEnv>, body: z.infer<typeof loginSchema>) {
  const service = await appserviceFromToken(c);
  const config = c.var.config;
  if (body.identifier && body.identifier.type !== "m.id.user") throw new MatrixError(400, "M_UNKNOWN", `Identifier type ${body.identifier.type} is not supported`);
  const who = body.identifier?.user ?? body.user;
  if (!who) throw new MatrixError(400, "M_BAD_JSON", "identifier is required");
  const userId = resolveLoginUser(who, config.serverName);
  if (!userId.endsWith(`:${config.serverName}`) || !service.mayActAs(userId)) throw new MatrixError(403, "M_EXCLUSIVE", `${userId} is not in the application service's namespace`);
  const user = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(userId).first<{ deactivated: number }>();
  if (!user) throw forbidden("Invalid username or password");
  if (user.deactivated) throw new MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated");
  const session = await sessionFor(c, userId, body);
  return { ...session, well_known: { "m.homeserver": { base_url: config.publicBaseUrl } } };
}

login.post("/refresh", async (c) => {
  const body = await parseBody(c, z.object({ refresh_token: z.string() }));
  const tokens = await refreshSession(db(c.env), body.refresh_token, c.var.config.accessTokenLifetimeMs);
  if (!tokens) throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or used refresh token", { soft_logout: false });
  return c.json(tokens);
});

login.post("/logout", requireAuth, async (c) => {
  const { userId, deviceId } = c.var.auth;
  await deleteDevice(db(c.env), userId, deviceId, c.env, c.var.config);
  return c.json({});
});

login.post("/logout/all", requireAuth, async (c) => {
  await deleteAllDevices(db(c.env), c.var.auth.userId, undefined, c.env, c.var.config);
  return c.json({});
});

login.get("/account/whoami", requireAuth, (c) => {
  const { userId, deviceId, isGuest } = c.var.auth;
  // An appservice acting without a device has none to report.
  return c.json({ user_id: userId, ...(deviceId ? { device_id: deviceId } : {}), is_guest: isGuest });
});
