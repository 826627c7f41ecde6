// OpenID (spec: Client-Server API "OpenID"): a client asks for a short-lived token that proves its
// user ID to a third party (integration managers, widgets), which checks it against
// GET /_matrix/federation/v1/openid/userinfo (served in src/api/federation/openid.ts).
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { forbidden } from "../errors";
import { readJsonBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { randomToken, sha256Hex } from "../../services/crypto-util";

export const OPENID_TOKEN_LIFETIME_S = 3600;

export const openid = new Hono<AppEnv>();

openid.post("/user/:userId/openid/request_token", requireAuth, async (c) => {
  const userId = c.req.param("userId");
  if (userId !== c.var.auth.userId) throw forbidden("Cannot request an OpenID token for another user");
  await readJsonBody(c); // the body is an empty object; still refuse non-JSON
  const token = randomToken("lato");
  const now = Date.now();
  await c.env.DB.batch([
    c.env.DB.prepare("DELETE FROM openid_tokens WHERE expires_ts <= ?").bind(now),
    c.env.DB.prepare("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (?, ?, ?)").bind(
      await sha256Hex(token),
      userId,
      now + OPENID_TOKEN_LIFETIME_S * 1000,
    ),
  ]);
  return c.json({
    access_token: token,
    token_type: "Bearer",
    matrix_server_name: c.var.config.serverName,
    expires_in: OPENID_TOKEN_LIFETIME_S,
  });
});
