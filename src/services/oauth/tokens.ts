// OAuth sessions and their tokens. Access tokens go into the same `access_tokens` table as legacy
// ones (hashed, with an expiry), so the auth middleware treats them alike; refresh tokens form a
// chain per session in `oauth_refresh_tokens` (RFC 9700 §4.14.2: rotation with replay detection).
import type { Env } from "../../env";
import type { Config } from "../../config";
import { db } from "../../db";
import { randomToken, sha256Hex } from "../crypto-util";
import { deleteDevice, revokeDeviceTokens } from "../sessions";

/** Spec: "The access token MUST be short-lived". Five minutes unless ACCESS_TOKEN_LIFETIME_MS is shorter. */
export function oauthAccessLifetimeMs(config: Config): number {
  return Math.min(config.accessTokenLifetimeMs, 5 * 60_000);
}

/** A used refresh token may be presented again within this window if the token it was exchanged
 *  for was never used: the spec says the server "MUST ensure that the client is able to retry the
 *  refresh request in the case that the response to the request is lost". */
export const REFRESH_RETRY_WINDOW_MS = 2 * 60_000;

export interface TokenResponse {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  refresh_token: string;
  scope: string;
}

export interface SessionInfo {
  id: number;
  clientId: string;
  userId: string;
  deviceId: string;
  scope: string;
}

/** Start an OAuth session for the device the scope allocated: created, or reused (its earlier
 *  tokens and OAuth sessions end, as a legacy /login with a known device_id replaces them). */
export async function startOAuthSession(
  env: Env,
  config: Config,
  opts: { clientId: string; userId: string; deviceId: string; scope: string; displayName?: string },
): Promise<{ session: SessionInfo; tokens: TokenResponse }> {
  const now = Date.now();
  await env.DB.prepare("INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
    .bind(opts.userId, opts.deviceId, opts.displayName ?? null, now, now)
    .run();
  await revokeDeviceTokens(db(env), opts.userId, opts.deviceId);
  await endSessionsOfDevice(env, opts.userId, opts.deviceId);
  const row = await env.DB.prepare("INSERT INTO oauth_sessions (client_id, user_id, device_id, scope, created_ts) VALUES (?, ?, ?, ?, ?) RETURNING id")
    .bind(opts.clientId, opts.userId, opts.deviceId, opts.scope, now)
    .first<{ id: number }>();
  const session = { id: row!.id, clientId: opts.clientId, userId: opts.userId, deviceId: opts.deviceId, scope: opts.scope };
  return { session, tokens: await issuePair(env, config, session) };
}

async function issuePair(env: Env, config: Config, s: SessionInfo): Promise<TokenResponse & { refreshHash: string }> {
  const now = Date.now();
  const lifetime = oauthAccessLifetimeMs(config);
  const access = randomToken("lato");
  const refresh = randomToken("latr");
  const accessHash = await sha256Hex(access);
  const refreshHash = await sha256Hex(refresh);
  await env.DB.batch([
    env.DB.prepare("INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts) VALUES (?, ?, ?, ?, ?)").bind(accessHash, s.userId, s.deviceId, now, now + lifetime),
    env.DB.prepare("INSERT INTO oauth_refresh_tokens (token_hash, session_id, access_token_hash, created_ts) VALUES (?, ?, ?, ?)").bind(refreshHash, s.id, accessHash, now),
  ]);
  return { access_token: access, token_type: "Bearer", expires_in: Math.floor(lifetime / 1000), refresh_token: refresh, scope: s.scope, refreshHash };
}

interface RefreshRow {
  token_hash: string;
  session_id: number;
  access_token_hash: string;
  successor_hash: string | null;
  used_ts: number | null;
  client_id: string;
  user_id: string;
  device_id: string;
  scope: string;
  revoked_ts: number | null;
}

export type RefreshOutcome = { ok: TokenResponse } | { error: "invalid_grant"; description: string; revoked?: boolean };

/** The refresh token grant (RFC 6749 §6) with rotation. A token used before is a replay unless
 *  it is a quick retry whose successor was never used; a replay revokes the whole session. */
export async function refreshOAuthSession(env: Env, config: Config, refreshToken: string, clientId: string): Promise<RefreshOutcome> {
  const hash = await sha256Hex(refreshToken);
  const row = await env.DB.prepare(
    `SELECT r.*, s.client_id, s.user_id, s.device_id, s.scope, s.revoked_ts FROM oauth_refresh_tokens r
     JOIN oauth_sessions s ON s.id = r.session_id WHERE r.token_hash = ?`,
  )
    .bind(hash)
    .first<RefreshRow>();
  if (!row || row.revoked_ts !== null) return { error: "invalid_grant", description: "unknown or revoked refresh token" };
  // RFC 6749 §6: the refresh token is bound to the client it was issued to.
  if (row.client_id !== clientId) return { error: "invalid_grant", description: "refresh token was issued to another client" };
  const session: SessionInfo = { id: row.session_id, clientId: row.client_id, userId: row.user_id, deviceId: row.device_id, scope: row.scope };
  const now = Date.now();

  if (row.used_ts === null) {
    const claimed = await env.DB.prepare("UPDATE oauth_refresh_tokens SET used_ts = ? WHERE token_hash = ? AND used_ts IS NULL").bind(now, hash).run();
    if (claimed.meta.changes === 1) return { ok: await rotate(env, config, session, row) };
    // Lost a race with a concurrent use of the same token: treat as the replay it is.
  } else if (row.successor_hash !== null && now - row.used_ts < REFRESH_RETRY_WINDOW_MS) {
    const successor = await env.DB.prepare("SELECT access_token_hash, used_ts FROM oauth_refresh_tokens WHERE token_hash = ?")
      .bind(row.successor_hash)
      .first<{ access_token_hash: string; used_ts: number | null }>();
    if (successor && successor.used_ts === null) {
      // A retry after a lost response: the unused successor pair is replaced by a new one.
      await env.DB.batch([
        env.DB.prepare("DELETE FROM access_tokens WHERE token_hash = ?").bind(successor.access_token_hash),
        env.DB.prepare("DELETE FROM oauth_refresh_tokens WHERE token_hash = ?").bind(row.successor_hash),
      ]);
      return { ok: await rotate(env, config, session, row) };
    }
  }
  await revokeOAuthSession(env, config, session);
  return { error: "invalid_grant", description: "refresh token was already used; the session has been revoked", revoked: true };
}

async function rotate(env: Env, config: Config, session: SessionInfo, old: RefreshRow): Promise<TokenResponse> {
  const { refreshHash, ...tokens } = await issuePair(env, config, session);
  await env.DB.batch([
    // The old access token dies with the refresh token it came with.
    env.DB.prepare("DELETE FROM access_tokens WHERE token_hash = ?").bind(old.access_token_hash),
    env.DB.prepare("UPDATE oauth_refresh_tokens SET successor_hash = ? WHERE token_hash = ?").bind(refreshHash, old.token_hash),
  ]);
  return tokens;
}

/** End a session: its device is signed out (tokens, E2EE keys, pushers: as /logout does) and
 *  its refresh-token chain is dropped. */
export async function revokeOAuthSession(env: Env, config: Config, s: { id: number; userId: string; deviceId: string }): Promise<void> {
  const live = await env.DB.prepare("SELECT revoked_ts FROM oauth_sessions WHERE id = ?").bind(s.id).first<{ revoked_ts: number | null }>();
  if (!live || live.revoked_ts !== null) return;
  await env.DB.batch([
    env.DB.prepare("UPDATE oauth_sessions SET revoked_ts = ? WHERE id = ?").bind(Date.now(), s.id),
    env.DB.prepare("DELETE FROM oauth_refresh_tokens WHERE session_id = ?").bind(s.id),
  ]);
  await deleteDevice(db(env), s.userId, s.deviceId, env, config);
}

/** Mark a device's OAuth sessions ended when the device gets new tokens or is deleted. */
async function endSessionsOfDevice(env: Env, userId: string, deviceId: string): Promise<void> {
  const ids = await env.DB.prepare("SELECT id FROM oauth_sessions WHERE user_id = ? AND device_id = ? AND revoked_ts IS NULL").bind(userId, deviceId).all<{ id: number }>();
  for (const { id } of ids.results) {
    await env.DB.batch([
      env.DB.prepare("UPDATE oauth_sessions SET revoked_ts = ? WHERE id = ?").bind(Date.now(), id),
      env.DB.prepare("DELETE FROM oauth_refresh_tokens WHERE session_id = ?").bind(id),
    ]);
  }
}

export async function sessionById(env: Env, id: number): Promise<(SessionInfo & { revoked: boolean }) | null> {
  const r = await env.DB.prepare("SELECT * FROM oauth_sessions WHERE id = ?").bind(id).first<{ id: number; client_id: string; user_id: string; device_id: string; scope: string; revoked_ts: number | null }>();
  return r ? { id: r.id, clientId: r.client_id, userId: r.user_id, deviceId: r.device_id, scope: r.scope, revoked: r.revoked_ts !== null } : null;
}

/** RFC 7009: revoke the session an access or refresh token belongs to. Unknown tokens are fine
 *  (the caller answers 200). Legacy access tokens are revoked too (their device is signed out),
 *  so a leaked token can be revoked whatever API issued it. */
export async function revokeToken(env: Env, config: Config, token: string): Promise<void> {
  const hash = await sha256Hex(token);
  const viaRefresh = await env.DB.prepare(
    "SELECT s.id, s.user_id, s.device_id FROM oauth_refresh_tokens r JOIN oauth_sessions s ON s.id = r.session_id WHERE r.token_hash = ?",
  )
    .bind(hash)
    .first<{ id: number; user_id: string; device_id: string }>();
  if (viaRefresh) return revokeOAuthSession(env, config, { id: viaRefresh.id, userId: viaRefresh.user_id, deviceId: viaRefresh.device_id });
  const access = await env.DB.prepare("SELECT user_id, device_id FROM access_tokens WHERE token_hash = ?").bind(hash).first<{ user_id: string; device_id: string }>();
  if (!access) return;
  const session = await env.DB.prepare("SELECT id FROM oauth_sessions WHERE user_id = ? AND device_id = ? AND revoked_ts IS NULL")
    .bind(access.user_id, access.device_id)
    .first<{ id: number }>();
  if (session) return revokeOAuthSession(env, config, { id: session.id, userId: access.user_id, deviceId: access.device_id });
  await deleteDevice(db(env), access.user_id, access.device_id, env, config);
}
