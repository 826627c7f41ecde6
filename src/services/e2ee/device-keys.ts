// Device keys, one-time and fallback keys (spec: "Device keys", "One-time and fallback keys",
// POST /keys/upload, /keys/query, /keys/claim), and removing them with a device. Writes here do
// not announce device-list changes: the caller does (device-list-changes.ts), so that the
// federation side (services/federation/device-lists.ts) can use this module without a cycle.
import { and, eq, inArray } from "drizzle-orm";
import type { Env } from "../../env";
import type { Config } from "../../config";
import { db, type DB } from "../../db";
import { crossSigningSignatures, deviceKeys, devices, fallbackKeys, oneTimeKeys } from "../../db/schema";
import { verifyJsonSignature } from "../../core/signing";
import { MatrixError } from "../../api/errors";
import { userStub } from "../../rpc/stubs";
import { type Json, type Signatures, same, mergeSignatures } from "./common";
import { signaturesOn } from "./cross-signing";
import { pushKeyCountsChanged } from "../appservice-e2ee";

/** Tell a device's sync hub its current one-time key counts and unused fallback key types
 *  (/sync `device_one_time_keys_count`, `device_unused_fallback_key_types`). Called after every
 *  upload and claim. */
export async function pushKeyCounts(env: Env, config: Config, userId: string, deviceId: string): Promise<void> {
  const [counts, fallback] = await Promise.all([oneTimeKeyCounts(env, userId, deviceId), unusedFallbackKeyTypes(env, userId, deviceId)]);
  try {
    await userStub(env, userId, config).setDeviceKeyCounts(userId, deviceId, counts, fallback);
  } catch (e) {
    console.error(`key-count push to ${userId} failed`, e);
  }
  await pushKeyCountsChanged(env, config.serverName, userId).catch((e) => console.error(`key-count push to appservices for ${userId} failed`, e));
}

// ---------------------------------------------------------------------------------------------
// Device keys (spec: "Device keys", POST /keys/upload).

export interface DeviceKeysInput extends Json {
  user_id: string;
  device_id: string;
  algorithms: string[];
  keys: Record<string, string>;
  signatures: Signatures;
}

/** Check a device_keys object for the uploading device: it must name that user and device and
 *  be signed by its own ed25519 key (spec: "the device's ed25519 key ... signs the object").
 *  Returns an error message, or null when valid. */
export async function checkDeviceKeys(keys: DeviceKeysInput, userId: string, deviceId: string): Promise<string | null> {
  if (keys.user_id !== userId) return "user_id does not match the authenticated user";
  if (keys.device_id !== deviceId) return "device_id does not match the authenticated device";
  const keyId = `ed25519:${deviceId}`;
  const ed = keys.keys[keyId];
  if (typeof ed !== "string") return `device_keys.keys must contain ${keyId}`;
  if (!(await verifyJsonSignature(keys, userId, keyId, ed))) return "device_keys is not signed by the device's ed25519 key";
  return null;
}

/** Store (or replace) a device's identity keys. Returns true when they differ from what was
 *  stored: the caller then announces a device-list change (markDeviceListChanged). (A client that lost its store
 *  and logs in again with the same device ID uploads new keys; other clients see the change
 *  through the device list and treat the device as new.) */
export async function storeDeviceKeys(env: Env, userId: string, deviceId: string, keys: Json): Promise<boolean> {
  const d = db(env);
  const [existing] = await d
    .select()
    .from(deviceKeys)
    .where(and(eq(deviceKeys.userId, userId), eq(deviceKeys.deviceId, deviceId)));
  if (existing) {
    const old = JSON.parse(existing.keyJson) as Json;
    if (same(old, keys)) return false;
  }
  await d
    .insert(deviceKeys)
    .values({ userId, deviceId, keyJson: JSON.stringify(keys), updatedTs: Date.now() })
    .onConflictDoUpdate({ target: [deviceKeys.userId, deviceKeys.deviceId], set: { keyJson: JSON.stringify(keys), updatedTs: Date.now() } });
  return true;
}

// ---------------------------------------------------------------------------------------------
// One-time and fallback keys (spec: "One-time and fallback keys").

function splitKeyId(fullId: string): { algorithm: string; id: string } | null {
  const i = fullId.indexOf(":");
  if (i <= 0 || i === fullId.length - 1) return null;
  return { algorithm: fullId.slice(0, i), id: fullId.slice(i + 1) };
}

/** Store one-time keys. A key ID already held with different content is an error; the same
 *  content again is a no-op (a retried upload). */
export async function storeOneTimeKeys(env: Env, userId: string, deviceId: string, keys: Record<string, unknown>): Promise<void> {
  const entries = Object.entries(keys);
  if (entries.length === 0) return;
  for (const [fullId] of entries) {
    if (!splitKeyId(fullId)) throw new MatrixError(400, "M_INVALID_PARAM", `Invalid one-time key ID ${fullId}`);
  }
  const d = db(env);
  const existing = new Map<string, string>();
  for (let i = 0; i < entries.length; i += 80) {
    const ids = entries.slice(i, i + 80).map(([k]) => k);
    const rows = await d
      .select({ keyId: oneTimeKeys.keyId, keyJson: oneTimeKeys.keyJson })
      .from(oneTimeKeys)
      .where(and(eq(oneTimeKeys.userId, userId), eq(oneTimeKeys.deviceId, deviceId), inArray(oneTimeKeys.keyId, ids)));
    for (const r of rows) existing.set(r.keyId, r.keyJson);
  }
  const fresh: (typeof oneTimeKeys.$inferInsert)[] = [];
  for (const [fullId, value] of entries) {
    const old = existing.get(fullId);
    if (old !== undefined) {
      if (!same(JSON.parse(old), value)) {
        throw new MatrixError(400, "M_INVALID_PARAM", `One-time key ${fullId} already exists with different content`);
      }
      continue;
    }
    fresh.push({ userId, deviceId, algorithm: splitKeyId(fullId)!.algorithm, keyId: fullId, keyJson: JSON.stringify(value) });
  }
  // D1 allows 100 bound parameters per statement: 5 columns → 20 rows per insert.
  const stmts = [];
  for (let i = 0; i < fresh.length; i += 20) stmts.push(d.insert(oneTimeKeys).values(fresh.slice(i, i + 20)).onConflictDoNothing());
  if (stmts.length) await d.batch(stmts as [(typeof stmts)[0], ...typeof stmts]);
}

/** Store fallback keys: each replaces the device's previous fallback key of its algorithm
 *  (unused again), unless it is the very same key, which keeps its `used` flag. */
export async function storeFallbackKeys(env: Env, userId: string, deviceId: string, keys: Record<string, unknown>): Promise<void> {
  const d = db(env);
  for (const [fullId, value] of Object.entries(keys)) {
    const parts = splitKeyId(fullId);
    if (!parts) throw new MatrixError(400, "M_INVALID_PARAM", `Invalid fallback key ID ${fullId}`);
    const [old] = await d
      .select()
      .from(fallbackKeys)
      .where(and(eq(fallbackKeys.userId, userId), eq(fallbackKeys.deviceId, deviceId), eq(fallbackKeys.algorithm, parts.algorithm)));
    if (old && old.keyId === fullId && same(JSON.parse(old.keyJson), value)) continue;
    const row = { keyId: fullId, keyJson: JSON.stringify(value), used: false };
    await d
      .insert(fallbackKeys)
      .values({ userId, deviceId, algorithm: parts.algorithm, ...row })
      .onConflictDoUpdate({ target: [fallbackKeys.userId, fallbackKeys.deviceId, fallbackKeys.algorithm], set: row });
  }
}

/** Unclaimed one-time keys per algorithm (POST /keys/upload response and /sync
 *  `device_one_time_keys_count`). `signed_curve25519` is always present, 0 when none, as
 *  clients decide from it whether to upload more. */
export async function oneTimeKeyCounts(env: Env, userId: string, deviceId: string): Promise<Record<string, number>> {
  const { results } = await env.DB.prepare(
    "SELECT algorithm, COUNT(*) AS n FROM one_time_keys WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
  )
    .bind(userId, deviceId)
    .all<{ algorithm: string; n: number }>();
  const counts: Record<string, number> = { signed_curve25519: 0 };
  for (const r of results) counts[r.algorithm] = r.n;
  return counts;
}

/** Algorithms of the device's fallback keys that were not claimed yet (/sync
 *  `device_unused_fallback_key_types`). */
export async function unusedFallbackKeyTypes(env: Env, userId: string, deviceId: string): Promise<string[]> {
  const { results } = await env.DB.prepare(
    "SELECT algorithm FROM fallback_keys WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm",
  )
    .bind(userId, deviceId)
    .all<{ algorithm: string }>();
  return results.map((r) => r.algorithm);
}

/** Claim one key of `algorithm` for a device (POST /keys/claim). A one-time key is removed by
 *  one DELETE … RETURNING statement, so two concurrent claims can never both get it. With none
 *  left, the fallback key is returned and marked used (spec: "Fallback keys"). */
export async function claimKey(env: Env, userId: string, deviceId: string, algorithm: string): Promise<{ keyId: string; key: unknown } | null> {
  const otk = await env.DB.prepare(
    `DELETE FROM one_time_keys WHERE id = (
       SELECT id FROM one_time_keys WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 ORDER BY id LIMIT 1)
     RETURNING key_id, key_json`,
  )
    .bind(userId, deviceId, algorithm)
    .first<{ key_id: string; key_json: string }>();
  if (otk) return { keyId: otk.key_id, key: JSON.parse(otk.key_json) };
  const fb = await env.DB.prepare(
    "UPDATE fallback_keys SET used = 1 WHERE user_id = ? AND device_id = ? AND algorithm = ? RETURNING key_id, key_json",
  )
    .bind(userId, deviceId, algorithm)
    .first<{ key_id: string; key_json: string }>();
  if (fb) return { keyId: fb.key_id, key: JSON.parse(fb.key_json) };
  return null;
}

// ---------------------------------------------------------------------------------------------
// Key queries (POST /keys/query).

/** Device keys of a local user's devices (all when `deviceIds` is empty), with signatures from
 *  /keys/signatures/upload merged in and `unsigned.device_display_name` added. */
export async function queryDeviceKeys(env: Env, userId: string, deviceIds: string[]): Promise<Record<string, Json>> {
  const d = db(env);
  const where = deviceIds.length
    ? and(eq(deviceKeys.userId, userId), inArray(deviceKeys.deviceId, deviceIds.slice(0, 1000)))
    : eq(deviceKeys.userId, userId);
  const rows = await d
    .select({ deviceId: deviceKeys.deviceId, keyJson: deviceKeys.keyJson, displayName: devices.displayName })
    .from(deviceKeys)
    .innerJoin(devices, and(eq(devices.userId, deviceKeys.userId), eq(devices.deviceId, deviceKeys.deviceId)))
    .where(where);
  // A device's keys are signed by its owner's self-signing key; nobody else signs devices.
  const sigs = (await signaturesOn(env, userId, rows.map((r) => r.deviceId))).filter((s) => s.signerUserId === userId);
  const out: Record<string, Json> = {};
  for (const r of rows) {
    const keys = mergeSignatures(JSON.parse(r.keyJson), sigs.filter((s) => s.targetKeyId === r.deviceId));
    const unsigned = { ...((keys.unsigned as Json | undefined) ?? {}) };
    if (r.displayName) unsigned.device_display_name = r.displayName;
    out[r.deviceId] = { ...keys, unsigned };
  }
  return out;
}

/** A device's stored identity keys as uploaded (no merged signatures), or null. */
export async function getDeviceKeys(env: Env, userId: string, deviceId: string): Promise<Json | null> {
  const row = await env.DB.prepare("SELECT key_json FROM device_keys WHERE user_id = ? AND device_id = ?")
    .bind(userId, deviceId)
    .first<{ key_json: string }>();
  return row ? JSON.parse(row.key_json) : null;
}

/** Whether `userId` has a device with this ID (any device, keys or not). */
export async function deviceExists(env: Env, userId: string, deviceId: string): Promise<boolean> {
  return !!(await env.DB.prepare("SELECT 1 AS x FROM devices WHERE user_id = ? AND device_id = ?").bind(userId, deviceId).first());
}

// ---------------------------------------------------------------------------------------------
// Deleting a device (spec: "Device management": deleting a device deletes its keys).

/** Remove everything E2EE kept for a device and tell its sync hub. Called from
 *  services/sessions.ts deleteDevice, which then announces the device-list change. */
export async function deleteDeviceE2ee(d: DB, userId: string, deviceId: string, env?: Env, config?: Config): Promise<void> {
  await d.batch([
    d.delete(deviceKeys).where(and(eq(deviceKeys.userId, userId), eq(deviceKeys.deviceId, deviceId))),
    d.delete(oneTimeKeys).where(and(eq(oneTimeKeys.userId, userId), eq(oneTimeKeys.deviceId, deviceId))),
    d.delete(fallbackKeys).where(and(eq(fallbackKeys.userId, userId), eq(fallbackKeys.deviceId, deviceId))),
    d.delete(crossSigningSignatures).where(and(eq(crossSigningSignatures.targetUserId, userId), eq(crossSigningSignatures.targetKeyId, deviceId))),
  ]);
  if (env && config) {
    try {
      await userStub(env, userId, config).deleteDevice(userId, deviceId);
    } catch (e) {
      console.error(`hub deleteDevice for ${userId} failed`, e);
    }
  }
}
