// Signed-in browsers on Lattice's own pages. The cookie holds a random token; D1 holds its hash.
import type { Env } from "../../env";
import { randomToken, sha256Hex } from "../crypto-util";
import { sweepOAuth } from "./sweep";

export const BROWSER_SESSION_LIFETIME_MS = 7 * 24 * 3600_000;

export async function createBrowserSession(env: Env, userId: string): Promise<string> {
  await sweepOAuth(env, "oauth_browser_sessions");
  const token = randomToken("lats");
  const now = Date.now();
  await env.DB.prepare("INSERT INTO oauth_browser_sessions (id_hash, user_id, created_ts, expires_ts) VALUES (?, ?, ?, ?)")
    .bind(await sha256Hex(token), userId, now, now + BROWSER_SESSION_LIFETIME_MS)
    .run();
  return token;
}

/** The user signed in with this cookie value, if the session is live and the account usable. */
export async function browserSessionUser(env: Env, token: string | undefined): Promise<string | null> {
  if (!token) return null;
  const row = await env.DB.prepare(
    `SELECT s.user_id FROM oauth_browser_sessions s JOIN users u ON u.user_id = s.user_id
     WHERE s.id_hash = ? AND s.expires_ts > ? AND u.deactivated = 0 AND u.locked = 0`,
  )
    .bind(await sha256Hex(token), Date.now())
    .first<{ user_id: string }>();
  return row?.user_id ?? null;
}

export async function endBrowserSession(env: Env, token: string | undefined): Promise<void> {
  if (token) await env.DB.prepare("DELETE FROM oauth_browser_sessions WHERE id_hash = ?").bind(await sha256Hex(token)).run();
}
