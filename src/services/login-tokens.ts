// Login tokens for m.login.token (minted by POST /login/get_token, src/api/client/login-token.ts),
// stored hashed, single use.
import type { Context } from "hono";
import type { AppEnv } from "../api/types";
import { MatrixError, forbidden } from "../api/errors";
import { sha256Hex } from "./crypto-util";

/** "120000 (2 minutes) is recommended as a default." */
export const LOGIN_TOKEN_LIFETIME_MS = 120_000;

/** Redeem a login token (once): the user it was minted for. "In the case that the token is not
 *  valid, the homeserver must respond with 403 Forbidden and an error code of M_FORBIDDEN." */
export async function redeemLoginToken(c: Context<AppEnv>, token: string | undefined): Promise<string> {
  if (!token) throw new MatrixError(400, "M_MISSING_PARAM", "token is required");
  const row = await c.env.DB.prepare("DELETE FROM login_tokens WHERE token_hash = ? RETURNING user_id, expires_ts")
    .bind(await sha256Hex(token))
    .first<{ user_id: string; expires_ts: number }>();
  if (!row || row.expires_ts <= Date.now()) throw forbidden("Invalid or expired login token");
  const user = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(row.user_id).first<{ deactivated: number }>();
  if (!user) throw forbidden("Invalid or expired login token");
  if (user.deactivated) throw new MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated");
  return row.user_id;
}
