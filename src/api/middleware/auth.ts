// Access-token authentication (spec: Client-Server API "Client Authentication").
// The token comes from `Authorization: Bearer` or (deprecated, still used by matrix-nio and
// others) the `access_token` query parameter.
import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv, Auth } from "../types";
import { MatrixError } from "../errors";
import { sha256Hex } from "../../services/crypto-util";
import { guestMayCall } from "./guest";
import { lockedMayCall, suspendedMayNot } from "./suspension";
import { appserviceByToken } from "../../services/appservices";
import type { Appservice } from "../../core/appservice-registration";
import { clientAddress } from "./rate-limit";

export function extractAccessToken(c: Context): string | undefined {
  const header = c.req.header("authorization");
  if (header) {
    const m = /^Bearer\s+(\S+)$/i.exec(header.trim());
    if (m) return m[1];
  }
  return c.req.query("access_token") || undefined;
}

interface TokenRow {
  id: number;
  user_id: string;
  device_id: string;
  expires_ts: number | null;
  is_guest: number;
  deactivated: number;
  locked: number;
  suspended: number;
  shadow_banned: number;
  messages_per_second: number | null;
  burst_count: number | null;
  displayname: string | null;
  avatar_url: string | null;
  /** 1 when the token's device row exists. */
  has_device: number;
  last_seen_ts: number | null;
  last_seen_ip: string | null;
  last_seen_user_agent: string | null;
}

/** Resolve a token to its session, or throw M_MISSING_TOKEN / M_UNKNOWN_TOKEN; a guest's token
 *  on an endpoint guests may not use throws M_GUEST_ACCESS_FORBIDDEN (guest.ts). */
export async function authenticate(c: Context<AppEnv>): Promise<Auth> {
  const token = extractAccessToken(c);
  if (!token) throw new MatrixError(401, "M_MISSING_TOKEN", "Missing access token");
  const appservice = await appserviceByToken(c.env, c.var.config.serverName, token);
  if (appservice) return assertIdentity(c, appservice);
  const row = await c.env.DB.prepare(
    `SELECT t.id, t.user_id, t.device_id, t.expires_ts, u.is_guest, u.deactivated, u.locked, u.suspended,
            u.shadow_banned, u.displayname, u.avatar_url, r.messages_per_second, r.burst_count,
            d.device_id IS NOT NULL AS has_device, d.last_seen_ts, d.last_seen_ip, d.last_seen_user_agent
     FROM access_tokens t JOIN users u ON u.user_id = t.user_id LEFT JOIN ratelimit_overrides r ON r.user_id = u.user_id
       LEFT JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
     WHERE t.token_hash = ?`,
  )
    .bind(await sha256Hex(token))
    .first<TokenRow>();
  if (!row || row.deactivated) {
    throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token", { soft_logout: false });
  }
  if (row.expires_ts !== null && row.expires_ts <= Date.now()) {
    // Expired tokens can be renewed with the refresh token: soft logout.
    throw new MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired", { soft_logout: true });
  }
  const path = new URL(c.req.url).pathname;
  if (row.locked && !lockedMayCall(c.req.method, path)) {
    throw new MatrixError(401, "M_USER_LOCKED", "This account has been locked", { soft_logout: true });
  }
  if (row.suspended && suspendedMayNot(c.req.method, path)) {
    throw new MatrixError(403, "M_USER_SUSPENDED", "You cannot perform this action while suspended.");
  }
  if (row.is_guest && !guestMayCall(c.req.method, path)) {
    throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest accounts may not use this endpoint");
  }
  recordLastSeen(c, row);
  const overrides = { shadow_banned: row.shadow_banned, messages_per_second: row.messages_per_second, burst_count: row.burst_count };
  const profile: NonNullable<Auth["profile"]> = {};
  if (row.displayname) profile.displayname = row.displayname;
  if (row.avatar_url) profile.avatar_url = row.avatar_url;
  return { userId: row.user_id, deviceId: row.device_id, isGuest: !!row.is_guest, tokenId: row.id, overrides, profile };
}

/** How stale a device's stored last_seen_ts may get before a request refreshes it (the spec
 *  allows "a few minutes out of date, for efficiency reasons"; Synapse batches too). */
export const LAST_SEEN_INTERVAL_MS = 5 * 60_000;

/** Longest User-Agent stored (Synapse keeps the whole header; a bound keeps the row small). */
export const USER_AGENT_MAX = 512;

/** Refresh the device's last_seen_ts / last_seen_ip / last_seen_user_agent (GET /devices, whois,
 *  the admin API, the account page) when the stored time, read by the token lookup, is older
 *  than LAST_SEEN_INTERVAL_MS, or when a trustworthy address or a User-Agent is known and none
 *  is stored yet (the first request after login).
 *  Otherwise nothing: a fresh row costs no statement. The response does not wait for the UPDATE
 *  (waitUntil keeps the Worker alive for it) and a failure only logs. Without a trustworthy
 *  address (clientAddress: CF-Connecting-IP on Cloudflare, never X-Forwarded-For) the stored one
 *  is kept. Guests' devices are tracked like any; appservice (as_token) requests never reach here:
 *  the token is the appservice's, not a device's session (Synapse too, by default:
 *  track_appservice_user_ips is off). */
function recordLastSeen(c: Context<AppEnv>, row: TokenRow): void {
  if (!row.has_device) return;
  const now = Date.now();
  const ip = clientAddress(c) ?? null;
  // (Cut at USER_AGENT_MAX, not inside a surrogate pair.)
  const ua = c.req.header("user-agent")?.slice(0, USER_AGENT_MAX).replace(/[\uD800-\uDBFF]$/, "") || null;
  const stale = row.last_seen_ts === null || now - row.last_seen_ts >= LAST_SEEN_INTERVAL_MS;
  if (!stale && (ip === null || row.last_seen_ip !== null) && (ua === null || row.last_seen_user_agent !== null)) return;
  const write = (async () => {
    await c.env.DB.prepare(
      "UPDATE devices SET last_seen_ts = ?, last_seen_ip = COALESCE(?, last_seen_ip), last_seen_user_agent = COALESCE(?, last_seen_user_agent) WHERE user_id = ? AND device_id = ?",
    )
      .bind(now, ip, ua, row.user_id, row.device_id)
      .run();
  })().catch((e) => console.error("recording device last seen failed", e));
  try {
    c.executionCtx.waitUntil(write);
  } catch {
    // No ExecutionContext (hono's app.request in a unit test): the write runs on its own.
  }
}

/** Application service identity assertion (spec: Application Service API "Identity
 *  assertion"): act as `user_id` (default: the sender_localpart user), which must be in the
 *  appservice's users namespace and registered; optionally as one of its devices (`device_id`,
 *  or MSC3202's `org.matrix.msc3202.device_id`), else 400 M_UNKNOWN_DEVICE. Without a device the
 *  request has none (deviceId ""). */
async function assertIdentity(c: Context<AppEnv>, appservice: Appservice): Promise<Auth> {
  const userId = c.req.query("user_id") || appservice.senderUserId;
  if (!userId.endsWith(`:${c.var.config.serverName}`) || !appservice.mayActAs(userId)) {
    throw new MatrixError(403, "M_FORBIDDEN", `Application service cannot masquerade as ${userId}`);
  }
  const user = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(userId).first<{ deactivated: number }>();
  if (!user) throw new MatrixError(403, "M_FORBIDDEN", `Application service has not registered ${userId}`);
  if (user.deactivated) throw new MatrixError(403, "M_USER_DEACTIVATED", `${userId} is deactivated`);
  const deviceId = c.req.query("device_id") || c.req.query("org.matrix.msc3202.device_id") || "";
  if (deviceId) {
    const known = await c.env.DB.prepare("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?").bind(userId, deviceId).first();
    if (!known) throw new MatrixError(400, "M_UNKNOWN_DEVICE", `Device ${deviceId} does not belong to ${userId}`);
  }
  return { userId, deviceId, isGuest: false, tokenId: 0, appservice };
}

export const requireAuth: MiddlewareHandler<AppEnv> = async (c, next) => {
  c.set("auth", await authenticate(c));
  await next();
};
