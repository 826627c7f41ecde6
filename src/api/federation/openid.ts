// GET /_matrix/federation/v1/openid/userinfo (spec: Server-Server API "OpenID"): authenticated by
// the OpenID token itself, not by X-Matrix — the caller is usually not a homeserver.
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { sha256Hex } from "../../services/crypto-util";

export const federationOpenid = new Hono<AppEnv>();

federationOpenid.get("/v1/openid/userinfo", async (c) => {
  const token = c.req.query("access_token");
  if (!token) throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Missing OpenID access token");
  // A deactivated account proves nothing (its tokens are also deleted on deactivation).
  const row = await c.env.DB.prepare(
    "SELECT o.user_id AS user_id FROM openid_tokens o JOIN users u ON u.user_id = o.user_id WHERE o.token_hash = ? AND o.expires_ts > ? AND u.deactivated = 0",
  )
    .bind(await sha256Hex(token), Date.now())
    .first<{ user_id: string }>();
  if (!row) throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID access token");
  return c.json({ sub: row.user_id });
});
