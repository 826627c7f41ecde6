// The `m.oauth` UIA stage (spec: Client-Server API "OAuth authentication"): a session that came
// from the OAuth 2.0 API cannot do m.login.password, so replacing cross-signing keys is approved
// by the user on the account page instead, for a short while.
import type { Env } from "../../env";

export async function approveCrossSigningReset(env: Env, userId: string, windowMs: number): Promise<void> {
  await env.DB.prepare(
    "INSERT INTO oauth_cross_signing_resets (user_id, approved_until_ts) VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET approved_until_ts = excluded.approved_until_ts",
  )
    .bind(userId, Date.now() + windowMs)
    .run();
}

/** Use the approval (once): true if the user approved a reset that has not expired. */
export async function takeCrossSigningResetApproval(env: Env, userId: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM oauth_cross_signing_resets WHERE user_id = ? AND approved_until_ts > ?").bind(userId, Date.now()).run();
  return r.meta.changes === 1;
}

/** Whether the device signed in through the OAuth 2.0 API (a live OAuth session). */
export async function isOAuthDevice(env: Env, userId: string, deviceId: string): Promise<boolean> {
  if (!deviceId) return false;
  return !!(await env.DB.prepare("SELECT 1 FROM oauth_sessions WHERE user_id = ? AND device_id = ? AND revoked_ts IS NULL").bind(userId, deviceId).first());
}
