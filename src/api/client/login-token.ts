// m.login.token for the legacy API (spec: POST /_matrix/client/v1/login/get_token, v1.7, from
// MSC3882): a signed-in device mints a single-use, two-minute token; a new device logs in with it
// through POST /login {"type": "m.login.token"}. Tokens are stored hashed.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { forbidden } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { rateLimit, type Limit } from "../middleware/rate-limit";
import { authDictSchema, requireUia } from "./uia";
import { randomToken, sha256Hex } from "../../services/crypto-util";
import { LOGIN_TOKEN_LIFETIME_MS } from "../../services/login-tokens";
import { sweepOAuth } from "../../services/oauth/sweep";
import { isOAuthDevice } from "../../services/oauth/cross-signing-reset";

/** "Servers are encouraged to apply stricter than normal rate limiting to this endpoint, such as
 *  maximum of 1 request per minute." A small burst lets a UIA round trip (two calls) through. */
const GET_TOKEN_LIMIT: Limit = { perSecond: 1 / 60, burst: 3 };

export const loginToken = new Hono<AppEnv>();

/** Whether this session may mint login tokens: not appservices, not guests, and not OAuth
 *  sessions (UIA does not work with the OAuth 2.0 API; they sign devices in with the device
 *  authorization grant instead). Also the m.get_login_token capability. */
export async function mayGetLoginToken(c: Context<AppEnv>): Promise<boolean> {
  const { userId, deviceId, isGuest, appservice } = c.var.auth;
  return !isGuest && !appservice && !(await isOAuthDevice(c.env, userId, deviceId));
}

loginToken.post("/login/get_token", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ auth: authDictSchema.optional() }));
  const { userId, deviceId } = c.var.auth;
  if (!(await mayGetLoginToken(c))) throw forbidden("This session cannot create login tokens");
  await rateLimit(c, "get-login-token", userId, GET_TOKEN_LIMIT);
  // "Servers MUST always re-prompt": a UIA session is deleted once completed, so every token
  // needs a fresh password prompt.
  await requireUia(c, body.auth, { purpose: `get_login_token:${userId}:${deviceId}`, flows: [["m.login.password"]], userId });
  await sweepOAuth(c.env, "login_tokens");
  const token = randomToken("latl");
  await c.env.DB.prepare("INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)")
    .bind(await sha256Hex(token), userId, Date.now() + LOGIN_TOKEN_LIFETIME_MS)
    .run();
  return c.json({ login_token: token, expires_in_ms: LOGIN_TOKEN_LIFETIME_MS });
});
