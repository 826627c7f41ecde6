// Server-side key backup (spec: "Server-side key backups").
import { and, eq, inArray, sql } from "drizzle-orm";
import type { Env } from "../../env";
import { db, type DB } from "../../db";
import { keyBackupKeys, keyBackupVersions } from "../../db/schema";
import { type Json, same } from "./common";

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
