// Devices and their tokens. Access and refresh tokens are 256-bit random strings; only their
// SHA-256 hashes are stored, so a leaked database does not leak sessions.
import { and, eq, isNull, sql } from "drizzle-orm";
import type { DB } from "../db";
import { accessTokens, devices, refreshTokens } from "../db/schema";
import { randomString, randomToken, sha256Hex } from "./crypto-util";
import { deleteDeviceE2ee } from "./e2ee/device-keys";
import { markDeviceListChanged } from "./e2ee/device-list-changes";
import type { Config } from "../config";
import { deletePushersOfDevices } from "./pushers";
import type { Env } from "../env";

export interface IssuedTokens {
  access_token: string;
  refresh_token?: string;
  expires_in_ms?: number;
}

export function newDeviceId(): string {
  return randomString(10, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
}

/** Create the device if needed (keeping its name if it exists) and issue tokens for it.
 *  Logging in again with an existing device ID replaces that device's old tokens (spec: /login). */
export async function startSession(
  d: DB,
  opts: { userId: string; deviceId: string; displayName?: string; refresh: boolean; lifetimeMs: number },
): Promise<IssuedTokens> {
  const now = Date.now();
  await d
    .insert(devices)
    .values({ userId: opts.userId, deviceId: opts.deviceId, displayName: opts.displayName ?? null, createdTs: now, lastSeenTs: now })
    .onConflictDoNothing();
  await revokeDeviceTokens(d, opts.userId, opts.deviceId);
  return issueTokens(d, opts.userId, opts.deviceId, opts.refresh, opts.lifetimeMs);
}

/** Log a client in after /register or /login: new or given device, tokens, the common response
 *  fields (spec: the `/login` and `/register` responses share them). */
export async function clientSession(
  d: DB,
  opts: { userId: string; serverName: string; lifetimeMs: number; deviceId?: string; displayName?: string; refresh?: boolean },
): Promise<{ user_id: string; device_id: string; home_server: string } & IssuedTokens> {
  const deviceId = opts.deviceId ?? newDeviceId();
  const tokens = await startSession(d, {
    userId: opts.userId,
    deviceId,
    displayName: opts.displayName,
    refresh: opts.refresh === true,
    lifetimeMs: opts.lifetimeMs,
  });
  return { user_id: opts.userId, device_id: deviceId, home_server: opts.serverName, ...tokens };
}

async function issueTokens(d: DB, userId: string, deviceId: string, refresh: boolean, lifetimeMs: number): Promise<IssuedTokens> {
  const now = Date.now();
  const access = randomToken("lat");
  if (!refresh) {
    await d.insert(accessTokens).values({ tokenHash: await sha256Hex(access), userId, deviceId, createdTs: now });
    return { access_token: access };
  }
  const refreshToken = randomToken("latr");
  const [row] = await d
    .insert(refreshTokens)
    .values({ tokenHash: await sha256Hex(refreshToken), userId, deviceId, createdTs: now })
    .returning({ id: refreshTokens.id });
  await d.insert(accessTokens).values({
    tokenHash: await sha256Hex(access),
    userId,
    deviceId,
    createdTs: now,
    expiresTs: now + lifetimeMs,
    refreshTokenId: row.id,
  });
  return { access_token: access, refresh_token: refreshToken, expires_in_ms: lifetimeMs };
}

/** Exchange a refresh token (once) for a new access/refresh pair (spec: POST /refresh). */
export async function refreshSession(d: DB, refreshToken: string, lifetimeMs: number): Promise<IssuedTokens | null> {
  const hash = await sha256Hex(refreshToken);
  // Mark used atomically: only one concurrent exchange of the same token succeeds.
  const [used] = await d
    .update(refreshTokens)
    .set({ usedTs: Date.now() })
    .where(and(eq(refreshTokens.tokenHash, hash), isNull(refreshTokens.usedTs)))
    .returning();
  if (!used) return null;
  // The old access token dies with the refresh token it came from.
  await d.delete(accessTokens).where(eq(accessTokens.refreshTokenId, used.id));
  await d.delete(refreshTokens).where(eq(refreshTokens.id, used.id));
  return issueTokens(d, used.userId, used.deviceId, true, lifetimeMs);
}

export async function revokeDeviceTokens(d: DB, userId: string, deviceId: string): Promise<void> {
  await d.delete(accessTokens).where(and(eq(accessTokens.userId, userId), eq(accessTokens.deviceId, deviceId)));
  await d.delete(refreshTokens).where(and(eq(refreshTokens.userId, userId), eq(refreshTokens.deviceId, deviceId)));
  // OAuth refresh-token chains of the device go too (src/services/oauth/tokens.ts).
  await d.run(sql`DELETE FROM oauth_refresh_tokens WHERE session_id IN (SELECT id FROM oauth_sessions WHERE user_id = ${userId} AND device_id = ${deviceId})`);
}

/** Delete a device and everything that authenticates as it, with its E2EE keys and one-time
 *  keys; the device-list change reaches the sync hubs of users who share a room and other
 *  servers (spec: "Device management"). `config`: the request's (c.var.config). */
export async function deleteDevice(d: DB, userId: string, deviceId: string, env: Env, config: Config): Promise<void> {
  await revokeDeviceTokens(d, userId, deviceId);
  await d.delete(devices).where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
  // A dehydrated device (MSC3814) goes with its data, whichever way it is deleted.
  await d.run(sql`DELETE FROM dehydrated_devices WHERE user_id = ${userId} AND device_id = ${deviceId}`);
  await deleteDeviceE2ee(d, userId, deviceId, env, config);
  await markDeviceListChanged(env, config, userId, { devices: [deviceId] });
  // Pushers go with the device whose token created them (module "Push Notifications").
  await deletePushersOfDevices(env, config, userId, [deviceId]);
}

export async function deleteAllDevices(d: DB, userId: string, exceptDeviceId: string | undefined, env: Env, config: Config): Promise<void> {
  const all = await d.select({ deviceId: devices.deviceId }).from(devices).where(eq(devices.userId, userId));
  for (const { deviceId } of all) if (deviceId !== exceptDeviceId) await deleteDevice(d, userId, deviceId, env, config);
}
