// Device authorization grants (RFC 8628; spec "Device authorisation flow"), stored in D1.
import type { Env } from "../../env";
import { randomString, randomToken, sha256Hex } from "../crypto-util";
import { sweepOAuth } from "./sweep";

/** RFC 8628 §3.2 expires_in; the spec's example uses 1800 s, ten minutes is plenty to sign in. */
export const DEVICE_GRANT_LIFETIME_MS = 10 * 60_000;
/** Minimum seconds between polls (RFC 8628 §3.5: polling faster → slow_down). */
export const POLL_INTERVAL_S = 5;
/** RFC 8628 §6.1: base-20 consonants, no vowels (no words), no look-alikes; 8 characters. */
const USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ";

export interface DeviceGrant {
  userCode: string;
  clientId: string;
  scope: string;
  deviceId: string;
  expiresTs: number;
  lastPollTs: number | null;
  status: "pending" | "approved" | "denied" | "exchanged";
  userId: string | null;
}

interface Row {
  device_code_hash: string;
  user_code: string;
  client_id: string;
  scope: string;
  device_id: string;
  expires_ts: number;
  last_poll_ts: number | null;
  status: DeviceGrant["status"];
  user_id: string | null;
}

const fromRow = (r: Row): DeviceGrant => ({
  userCode: r.user_code,
  clientId: r.client_id,
  scope: r.scope,
  deviceId: r.device_id,
  expiresTs: r.expires_ts,
  lastPollTs: r.last_poll_ts,
  status: r.status,
  userId: r.user_id,
});

/** "bcdf-ghjk", "BCDFGHJK", "BCDF GHJK" → "BCDF-GHJK"; null if it cannot be a user code. */
export function normalizeUserCode(input: string): string | null {
  const s = input.toUpperCase().replace(/[\s-]/g, "");
  if (s.length !== 8 || [...s].some((ch) => !USER_CODE_ALPHABET.includes(ch))) return null;
  return `${s.slice(0, 4)}-${s.slice(4)}`;
}

export async function createDeviceGrant(env: Env, req: { clientId: string; scope: string; deviceId: string }): Promise<{ deviceCode: string; userCode: string }> {
  await sweepOAuth(env, "oauth_device_grants");
  const deviceCode = randomToken("latd");
  const now = Date.now();
  // A collision of user codes is rare (20^8); retry a few times on the unique index.
  for (let attempt = 0; ; attempt++) {
    const raw = randomString(8, USER_CODE_ALPHABET);
    const userCode = `${raw.slice(0, 4)}-${raw.slice(4)}`;
    try {
      await env.DB.prepare(
        "INSERT INTO oauth_device_grants (device_code_hash, user_code, client_id, scope, device_id, created_ts, expires_ts, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
      )
        .bind(await sha256Hex(deviceCode), userCode, req.clientId, req.scope, req.deviceId, now, now + DEVICE_GRANT_LIFETIME_MS)
        .run();
      return { deviceCode, userCode };
    } catch (e) {
      if (attempt >= 3) throw e;
    }
  }
}

export async function deviceGrantByUserCode(env: Env, userCode: string): Promise<DeviceGrant | null> {
  const r = await env.DB.prepare("SELECT * FROM oauth_device_grants WHERE user_code = ? AND expires_ts > ?").bind(userCode, Date.now()).first<Row>();
  return r ? fromRow(r) : null;
}

/** The user decided on the verification page (only while pending). */
export async function decideDeviceGrant(env: Env, userCode: string, userId: string, approve: boolean): Promise<boolean> {
  const r = await env.DB.prepare("UPDATE oauth_device_grants SET status = ?, user_id = ? WHERE user_code = ? AND status = 'pending' AND expires_ts > ?")
    .bind(approve ? "approved" : "denied", userId, userCode, Date.now())
    .run();
  return r.meta.changes === 1;
}

export type PollOutcome =
  | { ok: DeviceGrant }
  | { error: "invalid_grant" | "expired_token" | "authorization_pending" | "slow_down" | "access_denied"; description: string };

/** One poll of the token endpoint (RFC 8628 §3.4-3.5). An approved grant is claimed once. */
export async function pollDeviceGrant(env: Env, deviceCode: string, clientId: string): Promise<PollOutcome> {
  const hash = await sha256Hex(deviceCode);
  const r = await env.DB.prepare("SELECT * FROM oauth_device_grants WHERE device_code_hash = ?").bind(hash).first<Row>();
  if (!r || r.client_id !== clientId) return { error: "invalid_grant", description: "unknown device_code" };
  const now = Date.now();
  if (r.status === "exchanged") return { error: "invalid_grant", description: "device_code was already used" };
  if (r.expires_ts <= now) return { error: "expired_token", description: "the device code has expired" };
  if (r.status === "denied") return { error: "access_denied", description: "the user denied the request" };
  if (r.status === "pending") {
    await env.DB.prepare("UPDATE oauth_device_grants SET last_poll_ts = ? WHERE device_code_hash = ?").bind(now, hash).run();
    // A little slack for network jitter before telling the client to slow down.
    if (r.last_poll_ts !== null && now - r.last_poll_ts < POLL_INTERVAL_S * 1000 - 500) return { error: "slow_down", description: `poll at most every ${POLL_INTERVAL_S} s` };
    return { error: "authorization_pending", description: "the user has not decided yet" };
  }
  const claimed = await env.DB.prepare("UPDATE oauth_device_grants SET status = 'exchanged' WHERE device_code_hash = ? AND status = 'approved'").bind(hash).run();
  if (claimed.meta.changes !== 1) return { error: "invalid_grant", description: "device_code was already used" };
  return { ok: fromRow(r) };
}
