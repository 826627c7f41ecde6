// End-to-end encryption storage (spec: Client-Server API "End-to-End Encryption"): device keys,
// one-time and fallback keys, cross-signing keys and signatures, the device-list stream, and
// server-side key backup. The server never sees plaintext; what it must get exactly right is
// which keys exist, that a one-time key is handed out once, and who learns of device changes.
//
// Everything here works on D1. Durable Objects are only told (best effort) that something moved
// so long-polling /sync requests wake up; the data itself is read back from D1.
import { and, eq, inArray, sql } from "drizzle-orm";
import type { Env } from "../env";
import { db, type DB } from "../db";
import {
  crossSigningKeys,
  crossSigningSignatures,
  deviceKeys,
  deviceListStream,
  devices,
  fallbackKeys,
  keyBackupKeys,
  keyBackupVersions,
  oneTimeKeys,
} from "../db/schema";
import { canonicalJson } from "../core/canonical-json";
import { verifyJsonSignature } from "../core/signing";
import { MatrixError } from "../api/errors";
import { userStub } from "./notifier";
import { publishDeviceListChange, type DeviceListChange } from "./federation/device-lists";

export type Json = Record<string, unknown>;
export type Signatures = Record<string, Record<string, string>>;

const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

/** The object without `signatures` and `unsigned`: what a signature covers. */
export function signedContent(obj: Json): Json {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return rest;
}

function mergeSignatures(obj: Json, extra: { signerUserId: string; signerKeyId: string; signature: string }[]): Json {
  if (extra.length === 0) return obj;
  const sigs: Signatures = {};
  for (const [u, s] of Object.entries((obj.signatures as Signatures | undefined) ?? {})) sigs[u] = { ...s };
  for (const e of extra) (sigs[e.signerUserId] ??= {})[e.signerKeyId] = e.signature;
  return { ...obj, signatures: sigs };
}

// ---------------------------------------------------------------------------------------------
// Device-list stream (spec: "Tracking the device list for a user"). Every change to a user's
// devices, device keys or cross-signing keys appends a row; the row ID is the stream position.

/** Record that `userId`'s device list changed; returns the new device-list stream position.
 *  With `env`, the sync hubs (UserDO) of every local user sharing a room with `userId`, and of
 *  `userId` themself, are told, so their next /sync carries `device_lists.changed`. Hub
 *  failures are logged: the change is durable in D1 and /keys/changes still reports it. */
export async function markDeviceListChanged(d: DB, userId: string, env?: Env, federate?: DeviceListChange): Promise<number> {
  const [row] = await d.insert(deviceListStream).values({ userId, ts: Date.now() }).returning({ id: deviceListStream.streamId });
  // Other servers sharing a room hear of it too (m.device_list_update / m.signing_key_update).
  if (env && federate) await publishDeviceListChange(env, userId, row.id, federate);
  if (env) {
    const users = await usersSharingRoomWith(env, userId);
    const results = await Promise.allSettled(users.map((u) => userStub(env, u).deviceListChanged(u, userId)));
    for (const [i, r] of results.entries()) if (r.status === "rejected") console.error(`device-list fan-out to ${users[i]} failed`, r.reason);
  }
  return row.id;
}

/** Tell a device's sync hub its current one-time key counts and unused fallback key types
 *  (/sync `device_one_time_keys_count`, `device_unused_fallback_key_types`). Called after every
 *  upload and claim. */
export async function pushKeyCounts(env: Env, userId: string, deviceId: string): Promise<void> {
  const [counts, fallback] = await Promise.all([oneTimeKeyCounts(env, userId, deviceId), unusedFallbackKeyTypes(env, userId, deviceId)]);
  try {
    await userStub(env, userId).setDeviceKeyCounts(userId, deviceId, counts, fallback);
  } catch (e) {
    console.error(`key-count push to ${userId} failed`, e);
  }
}

/** The current device-list stream position (0 when nothing ever changed). */
export async function deviceListPosition(env: Env): Promise<number> {
  const row = await env.DB.prepare("SELECT MAX(stream_id) AS p FROM device_list_stream").first<{ p: number | null }>();
  return row?.p ?? 0;
}

/** The device-list position carried by a /sync `next_batch` token (used by GET /keys/changes).
 *  Accepted forms: a bare stream position ("42"), or a token with a segment "dl<N>" between
 *  `_`, `.`, `~` or `-` separators (e.g. "s12_dl42_t3"). Returns null when there is none. */
export function deviceListPositionFromToken(token: string): number | null {
  if (/^[0-9]{1,15}$/.test(token)) return Number(token);
  const m = /(?:^|[_.~-])dl([0-9]{1,15})(?=$|[_.~-])/.exec(token);
  return m ? Number(m[1]) : null;
}

/** Users whose device lists changed in (from, to] and who share a room with `userId` (or are
 *  `userId`): what /sync `device_lists.changed` and GET /keys/changes report. "Share a room"
 *  means `userId` is joined and the other user is joined or invited. */
export async function changedDeviceLists(env: Env, userId: string, from: number, to?: number): Promise<string[]> {
  const upper = to ?? Number.MAX_SAFE_INTEGER;
  const { results } = await env.DB.prepare(
    `SELECT DISTINCT s.user_id AS user_id FROM device_list_stream s
     WHERE s.stream_id > ?1 AND s.stream_id <= ?2 AND (
       s.user_id = ?3 OR EXISTS (
         SELECT 1 FROM room_memberships mine JOIN room_memberships theirs ON theirs.room_id = mine.room_id
         WHERE mine.user_id = ?3 AND mine.membership = 'join'
           AND theirs.user_id = s.user_id AND theirs.membership IN ('join', 'invite')))`,
  )
    .bind(from, upper, userId)
    .all<{ user_id: string }>();
  return results.map((r) => r.user_id).sort();
}

/** Of `candidates`, those who no longer share any room with `userId` (for `device_lists.left`
 *  after membership changes). */
export async function noLongerSharingRoom(env: Env, userId: string, candidates: string[]): Promise<string[]> {
  const left: string[] = [];
  for (const other of new Set(candidates)) {
    if (other === userId) continue;
    const row = await env.DB.prepare(
      `SELECT 1 AS x FROM room_memberships mine JOIN room_memberships theirs ON theirs.room_id = mine.room_id
       WHERE mine.user_id = ? AND mine.membership = 'join' AND theirs.user_id = ? AND theirs.membership IN ('join', 'invite') LIMIT 1`,
    )
      .bind(userId, other)
      .first();
    if (!row) left.push(other);
  }
  return left.sort();
}

/** Local users who share a room with `userId` (they must hear of `userId`'s device changes). */
export async function usersSharingRoomWith(env: Env, userId: string): Promise<string[]> {
  const { results } = await env.DB.prepare(
    `SELECT DISTINCT theirs.user_id AS user_id FROM room_memberships mine
     JOIN room_memberships theirs ON theirs.room_id = mine.room_id
     WHERE mine.user_id = ? AND mine.membership IN ('join', 'invite') AND theirs.membership = 'join'`,
  )
    .bind(userId)
    .all<{ user_id: string }>();
  const out = new Set(results.map((r) => r.user_id));
  out.add(userId);
  return [...out].sort();
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

/** Store (or replace) a device's identity keys; announces a device-list change when they
 *  differ from what was stored. Returns true when they changed. (A client that lost its store
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
  await markDeviceListChanged(d, userId, env, { devices: [deviceId] });
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
// Cross-signing (spec: "Cross-signing").

export type CrossSigningType = "master" | "self_signing" | "user_signing";
export const CROSS_SIGNING_TYPES: CrossSigningType[] = ["master", "self_signing", "user_signing"];

export interface CrossSigningKey extends Json {
  user_id: string;
  usage: string[];
  keys: Record<string, string>;
  signatures?: Signatures;
}

/** The single ed25519 key of a cross-signing key object: its key ID and public key. */
export function crossSigningPublicKey(key: CrossSigningKey): { keyId: string; publicKey: string } | null {
  const entries = Object.entries(key.keys ?? {});
  if (entries.length !== 1) return null;
  const [keyId, publicKey] = entries[0];
  if (!keyId.startsWith("ed25519:") || typeof publicKey !== "string" || keyId !== `ed25519:${publicKey}`) return null;
  return { keyId, publicKey };
}

export async function getCrossSigningKeys(env: Env, userId: string): Promise<Partial<Record<CrossSigningType, CrossSigningKey>>> {
  const rows = await db(env).select().from(crossSigningKeys).where(eq(crossSigningKeys.userId, userId));
  const out: Partial<Record<CrossSigningType, CrossSigningKey>> = {};
  for (const r of rows) out[r.keyType as CrossSigningType] = JSON.parse(r.keyJson);
  return out;
}

export async function storeCrossSigningKeys(env: Env, userId: string, keys: Partial<Record<CrossSigningType, CrossSigningKey>>): Promise<void> {
  const d = db(env);
  let changed = false;
  for (const type of CROSS_SIGNING_TYPES) {
    const key = keys[type];
    if (!key) continue;
    const pub = crossSigningPublicKey(key)!;
    const row = { publicKey: pub.publicKey, keyJson: JSON.stringify(key), updatedTs: Date.now() };
    await d
      .insert(crossSigningKeys)
      .values({ userId, keyType: type, ...row })
      .onConflictDoUpdate({ target: [crossSigningKeys.userId, crossSigningKeys.keyType], set: row });
    changed = true;
  }
  if (changed) await markDeviceListChanged(d, userId, env, { signingKeys: true });
}

/** Store one signature from POST /keys/signatures/upload. */
export async function storeSignature(
  env: Env,
  s: { signerUserId: string; signerKeyId: string; targetUserId: string; targetKeyId: string; signature: string },
): Promise<void> {
  await db(env)
    .insert(crossSigningSignatures)
    .values(s)
    .onConflictDoUpdate({
      target: [crossSigningSignatures.signerUserId, crossSigningSignatures.signerKeyId, crossSigningSignatures.targetUserId, crossSigningSignatures.targetKeyId],
      set: { signature: s.signature },
    });
}

async function signaturesOn(env: Env, targetUserId: string, targetKeyIds: string[]) {
  if (targetKeyIds.length === 0) return [];
  const out = [];
  for (let i = 0; i < targetKeyIds.length; i += 80) {
    out.push(
      ...(await db(env)
        .select()
        .from(crossSigningSignatures)
        .where(and(eq(crossSigningSignatures.targetUserId, targetUserId), inArray(crossSigningSignatures.targetKeyId, targetKeyIds.slice(i, i + 80))))),
    );
  }
  return out;
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

/** Cross-signing keys of `userId` as `requester` may see them: the user-signing key only for
 *  its owner (spec: POST /keys/query `user_signing_keys`), and signatures on the master key
 *  made by other users' user-signing keys only for the user who made them. */
export async function queryCrossSigningKeys(
  env: Env,
  requester: string,
  userId: string,
): Promise<Partial<Record<CrossSigningType, CrossSigningKey>>> {
  const keys = await getCrossSigningKeys(env, userId);
  if (requester !== userId) delete keys.user_signing;
  if (keys.master) {
    const pub = crossSigningPublicKey(keys.master);
    if (pub) {
      const sigs = (await signaturesOn(env, userId, [pub.publicKey])).filter((s) => s.signerUserId === userId || s.signerUserId === requester);
      keys.master = mergeSignatures(keys.master, sigs) as CrossSigningKey;
    }
  }
  return keys;
}

/** A remote user's master key (from the cache or their server) with the signatures `requester`
 *  made on it with their user-signing key added (POST /keys/signatures/upload keeps them here;
 *  they are never federated, so the remote copy cannot carry them). */
export async function withRequesterSignatures(env: Env, requester: string, userId: string, master: CrossSigningKey): Promise<CrossSigningKey> {
  const pub = crossSigningPublicKey(master);
  if (!pub) return master;
  const sigs = (await signaturesOn(env, userId, [pub.publicKey])).filter((s) => s.signerUserId === requester);
  return mergeSignatures(master, sigs) as CrossSigningKey;
}

// ---------------------------------------------------------------------------------------------
// Deleting a device (spec: "Device management": deleting a device deletes its keys).

/** Remove everything E2EE kept for a device and announce the device-list change. Called from
 *  services/sessions.ts deleteDevice. */
export async function deleteDeviceE2ee(d: DB, userId: string, deviceId: string, env?: Env): Promise<void> {
  await d.batch([
    d.delete(deviceKeys).where(and(eq(deviceKeys.userId, userId), eq(deviceKeys.deviceId, deviceId))),
    d.delete(oneTimeKeys).where(and(eq(oneTimeKeys.userId, userId), eq(oneTimeKeys.deviceId, deviceId))),
    d.delete(fallbackKeys).where(and(eq(fallbackKeys.userId, userId), eq(fallbackKeys.deviceId, deviceId))),
    d.delete(crossSigningSignatures).where(and(eq(crossSigningSignatures.targetUserId, userId), eq(crossSigningSignatures.targetKeyId, deviceId))),
  ]);
  if (env) {
    try {
      await userStub(env, userId).deleteDevice(userId, deviceId);
    } catch (e) {
      console.error(`hub deleteDevice for ${userId} failed`, e);
    }
  }
  await markDeviceListChanged(d, userId, env, { devices: [deviceId] });
}

// ---------------------------------------------------------------------------------------------
// Server-side key backups (spec: "Server-side key backups").

export interface BackupVersion {
  version: number;
  algorithm: string;
  authData: Json;
  etag: number;
}

export async function currentBackupVersion(env: Env, userId: string): Promise<BackupVersion | null> {
  const row = await env.DB.prepare(
    "SELECT version, algorithm, auth_data, etag FROM key_backup_versions WHERE user_id = ? AND deleted = 0 ORDER BY version DESC LIMIT 1",
  )
    .bind(userId)
    .first<{ version: number; algorithm: string; auth_data: string; etag: number }>();
  return row ? { version: row.version, algorithm: row.algorithm, authData: JSON.parse(row.auth_data), etag: row.etag } : null;
}

/** A version by its string form ("1", "2", ...); null when unknown or deleted. */
export async function getBackupVersion(env: Env, userId: string, version: string): Promise<BackupVersion | null> {
  if (!/^[1-9][0-9]{0,15}$/.test(version)) return null;
  const row = await env.DB.prepare(
    "SELECT version, algorithm, auth_data, etag FROM key_backup_versions WHERE user_id = ? AND version = ? AND deleted = 0",
  )
    .bind(userId, Number(version))
    .first<{ version: number; algorithm: string; auth_data: string; etag: number }>();
  return row ? { version: row.version, algorithm: row.algorithm, authData: JSON.parse(row.auth_data), etag: row.etag } : null;
}

/** Create a new version; numbers are never reused, even after deletion. One statement, so two
 *  concurrent creations cannot pick the same number (the primary key would refuse it). */
export async function createBackupVersion(env: Env, userId: string, algorithm: string, authData: Json): Promise<number> {
  const row = await env.DB.prepare(
    `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
     SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3, 0, 0 FROM key_backup_versions WHERE user_id = ?1
     RETURNING version`,
  )
    .bind(userId, algorithm, JSON.stringify(authData))
    .first<{ version: number }>();
  return row!.version;
}

export async function updateBackupAuthData(env: Env, userId: string, version: number, authData: Json): Promise<void> {
  await db(env)
    .update(keyBackupVersions)
    .set({ authData: JSON.stringify(authData) })
    .where(and(eq(keyBackupVersions.userId, userId), eq(keyBackupVersions.version, version)));
}

export async function deleteBackupVersion(env: Env, userId: string, version: number): Promise<void> {
  const d = db(env);
  await d.batch([
    d.update(keyBackupVersions).set({ deleted: true }).where(and(eq(keyBackupVersions.userId, userId), eq(keyBackupVersions.version, version))),
    d.delete(keyBackupKeys).where(and(eq(keyBackupKeys.userId, userId), eq(keyBackupKeys.version, version))),
  ]);
}

export async function backupKeyCount(env: Env, userId: string, version: number): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM key_backup_keys WHERE user_id = ? AND version = ?").bind(userId, version).first<{ n: number }>();
  return row?.n ?? 0;
}

export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: Json;
}

/** The spec's rule for whether an uploaded session key replaces the stored one: better
 *  `is_verified` wins; then the lower `first_message_index`; then the lower `forwarded_count`.
 *  Equal on all three keeps the stored key. Pure. */
export function shouldReplaceBackupKey(existing: Omit<KeyBackupData, "session_data">, incoming: Omit<KeyBackupData, "session_data">): boolean {
  if (existing.is_verified !== incoming.is_verified) return incoming.is_verified;
  if (existing.first_message_index !== incoming.first_message_index) return incoming.first_message_index < existing.first_message_index;
  return incoming.forwarded_count < existing.forwarded_count;
}

/** Upload keys into `version` (which the caller checked is the current version). Returns the
 *  new etag and count. The etag moves only when a stored key actually changed. */
export async function putBackupKeys(
  env: Env,
  userId: string,
  version: number,
  rooms: Record<string, Record<string, KeyBackupData>>,
): Promise<{ etag: number; count: number }> {
  const d = db(env);
  const writes = [];
  for (const [roomId, sessions] of Object.entries(rooms)) {
    const ids = Object.keys(sessions);
    const existing = new Map<string, typeof keyBackupKeys.$inferSelect>();
    for (let i = 0; i < ids.length; i += 80) {
      const rows = await d
        .select()
        .from(keyBackupKeys)
        .where(
          and(
            eq(keyBackupKeys.userId, userId),
            eq(keyBackupKeys.version, version),
            eq(keyBackupKeys.roomId, roomId),
            inArray(keyBackupKeys.sessionId, ids.slice(i, i + 80)),
          ),
        );
      for (const r of rows) existing.set(r.sessionId, r);
    }
    for (const [sessionId, k] of Object.entries(sessions)) {
      const old = existing.get(sessionId);
      if (
        old &&
        !shouldReplaceBackupKey(
          { is_verified: old.isVerified, first_message_index: old.firstMessageIndex, forwarded_count: old.forwardedCount },
          k,
        )
      ) {
        continue;
      }
      const row = {
        firstMessageIndex: k.first_message_index,
        forwardedCount: k.forwarded_count,
        isVerified: k.is_verified,
        sessionData: JSON.stringify(k.session_data),
      };
      writes.push(
        d
          .insert(keyBackupKeys)
          .values({ userId, version, roomId, sessionId, ...row })
          .onConflictDoUpdate({ target: [keyBackupKeys.userId, keyBackupKeys.version, keyBackupKeys.roomId, keyBackupKeys.sessionId], set: row }),
      );
    }
  }
  if (writes.length) {
    writes.push(
      d
        .update(keyBackupVersions)
        .set({ etag: sql`${keyBackupVersions.etag} + 1` })
        .where(and(eq(keyBackupVersions.userId, userId), eq(keyBackupVersions.version, version))),
    );
    for (let i = 0; i < writes.length; i += 50) {
      const chunk = writes.slice(i, i + 50);
      await d.batch(chunk as [(typeof chunk)[0], ...typeof chunk]);
    }
  }
  return backupEtagAndCount(env, userId, version);
}

export async function backupEtagAndCount(env: Env, userId: string, version: number): Promise<{ etag: number; count: number }> {
  const row = await env.DB.prepare(
    `SELECT v.etag AS etag, (SELECT COUNT(*) FROM key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) AS n
     FROM key_backup_versions v WHERE v.user_id = ? AND v.version = ?`,
  )
    .bind(userId, version)
    .first<{ etag: number; n: number }>();
  return { etag: row?.etag ?? 0, count: row?.n ?? 0 };
}

/** Stored keys, optionally only one room or one session, shaped as the spec's nested maps. */
export async function getBackupKeys(
  env: Env,
  userId: string,
  version: number,
  roomId?: string,
  sessionId?: string,
): Promise<Record<string, Record<string, KeyBackupData>>> {
  const conds = [eq(keyBackupKeys.userId, userId), eq(keyBackupKeys.version, version)];
  if (roomId !== undefined) conds.push(eq(keyBackupKeys.roomId, roomId));
  if (sessionId !== undefined) conds.push(eq(keyBackupKeys.sessionId, sessionId));
  const rows = await db(env).select().from(keyBackupKeys).where(and(...conds));
  const out: Record<string, Record<string, KeyBackupData>> = {};
  for (const r of rows) {
    (out[r.roomId] ??= {})[r.sessionId] = {
      first_message_index: r.firstMessageIndex,
      forwarded_count: r.forwardedCount,
      is_verified: r.isVerified,
      session_data: JSON.parse(r.sessionData),
    };
  }
  return out;
}

export async function deleteBackupKeys(env: Env, userId: string, version: number, roomId?: string, sessionId?: string) {
  const d = db(env);
  const conds = [eq(keyBackupKeys.userId, userId), eq(keyBackupKeys.version, version)];
  if (roomId !== undefined) conds.push(eq(keyBackupKeys.roomId, roomId));
  if (sessionId !== undefined) conds.push(eq(keyBackupKeys.sessionId, sessionId));
  const deleted = await d.delete(keyBackupKeys).where(and(...conds)).returning({ s: keyBackupKeys.sessionId });
  if (deleted.length) {
    await d
      .update(keyBackupVersions)
      .set({ etag: sql`${keyBackupVersions.etag} + 1` })
      .where(and(eq(keyBackupVersions.userId, userId), eq(keyBackupVersions.version, version)));
  }
  return backupEtagAndCount(env, userId, version);
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
// Send-to-device messaging (spec: module "Send-to-Device messaging"). Messages go into the
// recipient's sync hub (UserDO), which delivers each exactly once and deletes it when the
// device syncs past it.

export interface ToDeviceMessage {
  sender: string;
  type: string;
  content: Json;
}

/** Claim a transaction ID of PUT /sendToDevice for one device. False if it was already used
 *  (the request is a retry and must not deliver again). */
export async function claimToDeviceTxn(env: Env, userId: string, deviceId: string, txnId: string): Promise<boolean> {
  const row = await env.DB.prepare(
    "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING txn_id",
  )
    .bind(userId, deviceId, txnId, Date.now())
    .first();
  return !!row;
}

export async function releaseToDeviceTxn(env: Env, userId: string, deviceId: string, txnId: string): Promise<void> {
  await env.DB.prepare("DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?").bind(userId, deviceId, txnId).run();
}

/** Queue messages for a local user's devices: `messages` maps device ID (or "*" for all of
 *  the user's devices) to content. Unknown device IDs are dropped. */
export async function deliverToDevice(env: Env, sender: string, type: string, userId: string, messages: Record<string, Json>): Promise<void> {
  const { results } = await env.DB.prepare("SELECT device_id FROM devices WHERE user_id = ?").bind(userId).all<{ device_id: string }>();
  const known = new Set(results.map((r) => r.device_id));
  const perDevice = new Map<string, Json>();
  // A message for "*" goes to every device; an explicit entry for a device wins over it.
  if (messages["*"]) for (const d of known) perDevice.set(d, messages["*"]);
  for (const [deviceId, content] of Object.entries(messages)) if (deviceId !== "*" && known.has(deviceId)) perDevice.set(deviceId, content);
  if (perDevice.size === 0) return;
  const stub = userStub(env, userId);
  // Group devices that receive identical content into one hub call.
  const groups = new Map<string, { content: Json; devices: string[] }>();
  for (const [d, content] of perDevice) {
    const key = canonicalJson(content);
    const g = groups.get(key) ?? { content, devices: [] };
    g.devices.push(d);
    groups.set(key, g);
  }
  for (const g of groups.values()) await stub.pushToDevice(userId, g.devices, [{ sender, type, content: g.content as never }]);
}

// ---------------------------------------------------------------------------------------------
// Dehydrated devices (MSC3814, `org.matrix.msc3814.v1`): a device whose private keys are kept
// encrypted on the server, so messages sent while the user has no client online can be
// decrypted later. At most one per user; the device itself is an ordinary row of `devices`
// (without access tokens), so it shows in /keys/query and receives to-device messages.

export async function getDehydratedDevice(env: Env, userId: string): Promise<{ deviceId: string; deviceData: Json } | null> {
  const row = await env.DB.prepare("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?")
    .bind(userId)
    .first<{ device_id: string; device_data: string }>();
  return row ? { deviceId: row.device_id, deviceData: JSON.parse(row.device_data) } : null;
}

/** Record the dehydrated device (creating its device row); returns the previous one's device
 *  ID, which the caller deletes. */
export async function putDehydratedDevice(
  env: Env,
  userId: string,
  deviceId: string,
  deviceData: Json,
  displayName: string | undefined,
): Promise<string | null> {
  const old = await getDehydratedDevice(env, userId);
  const now = Date.now();
  await env.DB.batch([
    env.DB.prepare(
      "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET display_name = excluded.display_name",
    ).bind(userId, deviceId, displayName ?? null, now),
    env.DB.prepare(
      `INSERT INTO dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data, created_ts = excluded.created_ts`,
    ).bind(userId, deviceId, JSON.stringify(deviceData), now),
  ]);
  return old && old.deviceId !== deviceId ? old.deviceId : null;
}

export async function forgetDehydratedDevice(env: Env, userId: string): Promise<void> {
  await env.DB.prepare("DELETE FROM dehydrated_devices WHERE user_id = ?").bind(userId).run();
}
