// Server-side key backups (spec: Client-Server API "End-to-End Encryption" → "Server-side key
// backups": /room_keys/version[/{version}], /room_keys/keys[/{roomId}[/{sessionId}]]).
// The server stores opaque encrypted session data; it only compares the plaintext metadata
// (is_verified, first_message_index, forwarded_count) to decide which copy to keep.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, notFound } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { backupEtagAndCount, createBackupVersion, currentBackupVersion, deleteBackupKeys, deleteBackupVersion, getBackupKeys, getBackupVersion, putBackupKeys, updateBackupAuthData, type BackupVersion, type KeyBackupData } from "../../services/e2ee/backup";

export const keyBackup = new Hono<AppEnv>();
keyBackup.use("/room_keys/*", requireAuth);

const versionBodySchema = z.object({
  algorithm: z.string().min(1),
  auth_data: z.record(z.string(), z.unknown()),
  version: z.string().optional(),
});

const keyBackupDataSchema = z
  .object({
    first_message_index: z.number().int().min(0),
    forwarded_count: z.number().int().min(0),
    is_verified: z.boolean(),
    session_data: z.record(z.string(), z.unknown()),
  })
  .loose();
const roomSessionsSchema = z.object({ sessions: z.record(z.string(), keyBackupDataSchema) });
const allRoomsSchema = z.object({ rooms: z.record(z.string(), roomSessionsSchema) });

async function describeVersion(c: Context<AppEnv>, v: BackupVersion) {
  const { etag, count } = await backupEtagAndCount(c.env, c.var.auth.userId, v.version);
  return { algorithm: v.algorithm, auth_data: v.authData, count, etag: String(etag), version: String(v.version) };
}

// POST /room_keys/version — "Creates a new backup."
keyBackup.post("/room_keys/version", async (c) => {
  const body = await parseBody(c, versionBodySchema);
  const version = await createBackupVersion(c.env, c.var.auth.userId, body.algorithm, body.auth_data);
  return c.json({ version: String(version) });
});

// GET /room_keys/version — "Get information about the latest backup version."
keyBackup.get("/room_keys/version", async (c) => {
  const v = await currentBackupVersion(c.env, c.var.auth.userId);
  if (!v) throw notFound("No current backup version");
  return c.json(await describeVersion(c, v));
});

// GET /room_keys/version/{version}
keyBackup.get("/room_keys/version/:version", async (c) => {
  const v = await getBackupVersion(c.env, c.var.auth.userId, c.req.param("version"));
  if (!v) throw notFound("Unknown backup version");
  return c.json(await describeVersion(c, v));
});

// PUT /room_keys/version/{version} — "Only auth_data can be modified."
keyBackup.put("/room_keys/version/:version", async (c) => {
  const body = await parseBody(c, versionBodySchema);
  const path = c.req.param("version");
  if (body.version !== undefined && body.version !== path) {
    throw new MatrixError(400, "M_INVALID_PARAM", "version in body does not match the version in the path");
  }
  const v = await getBackupVersion(c.env, c.var.auth.userId, path);
  if (!v) throw notFound("Unknown backup version");
  if (body.algorithm !== v.algorithm) throw new MatrixError(400, "M_INVALID_PARAM", "The algorithm of a backup cannot be changed");
  await updateBackupAuthData(c.env, c.var.auth.userId, v.version, body.auth_data);
  return c.json({});
});

// DELETE /room_keys/version/{version} — deletes the backup and all keys in it.
keyBackup.delete("/room_keys/version/:version", async (c) => {
  const v = await getBackupVersion(c.env, c.var.auth.userId, c.req.param("version"));
  if (!v) throw notFound("Unknown backup version");
  await deleteBackupVersion(c.env, c.var.auth.userId, v.version);
  return c.json({});
});

/** The `version` query parameter of the keys endpoints, resolved to an existing backup. For
 *  writes it must also be the current version, else 403 M_WRONG_ROOM_KEYS_VERSION carrying
 *  `current_version` (spec: PUT /room_keys/keys). */
async function backupFor(c: Context<AppEnv>, write: boolean): Promise<number> {
  const version = c.req.query("version");
  if (!version) throw new MatrixError(400, "M_MISSING_PARAM", "version is required");
  const userId = c.var.auth.userId;
  const v = await getBackupVersion(c.env, userId, version);
  if (!v) throw notFound("Unknown backup version");
  if (write) {
    const current = await currentBackupVersion(c.env, userId);
    if (current && current.version !== v.version) {
      throw new MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version", { current_version: String(current.version) });
    }
  }
  return v.version;
}

const updated = (r: { etag: number; count: number }) => ({ etag: String(r.etag), count: r.count });

// PUT /room_keys/keys, /room_keys/keys/{roomId}, /room_keys/keys/{roomId}/{sessionId}
keyBackup.put("/room_keys/keys", async (c) => {
  const body = await parseBody(c, allRoomsSchema);
  const version = await backupFor(c, true);
  const rooms: Record<string, Record<string, KeyBackupData>> = {};
  for (const [roomId, r] of Object.entries(body.rooms)) rooms[roomId] = r.sessions as Record<string, KeyBackupData>;
  return c.json(updated(await putBackupKeys(c.env, c.var.auth.userId, version, rooms)));
});
keyBackup.put("/room_keys/keys/:roomId", async (c) => {
  const body = await parseBody(c, roomSessionsSchema);
  const version = await backupFor(c, true);
  const rooms = { [c.req.param("roomId")]: body.sessions as Record<string, KeyBackupData> };
  return c.json(updated(await putBackupKeys(c.env, c.var.auth.userId, version, rooms)));
});
keyBackup.put("/room_keys/keys/:roomId/:sessionId", async (c) => {
  const body = await parseBody(c, keyBackupDataSchema);
  const version = await backupFor(c, true);
  const rooms = { [c.req.param("roomId")]: { [c.req.param("sessionId")]: body as KeyBackupData } };
  return c.json(updated(await putBackupKeys(c.env, c.var.auth.userId, version, rooms)));
});

// GET at the three levels. An unknown room gives an empty map; an unknown session is 404.
keyBackup.get("/room_keys/keys", async (c) => {
  const version = await backupFor(c, false);
  const keys = await getBackupKeys(c.env, c.var.auth.userId, version);
  const rooms: Record<string, { sessions: Record<string, KeyBackupData> }> = {};
  for (const [roomId, sessions] of Object.entries(keys)) rooms[roomId] = { sessions };
  return c.json({ rooms });
});
keyBackup.get("/room_keys/keys/:roomId", async (c) => {
  const version = await backupFor(c, false);
  const roomId = c.req.param("roomId");
  const keys = await getBackupKeys(c.env, c.var.auth.userId, version, roomId);
  return c.json({ sessions: keys[roomId] ?? {} });
});
keyBackup.get("/room_keys/keys/:roomId/:sessionId", async (c) => {
  const version = await backupFor(c, false);
  const { roomId, sessionId } = c.req.param();
  const keys = await getBackupKeys(c.env, c.var.auth.userId, version, roomId, sessionId);
  const key = keys[roomId]?.[sessionId];
  if (!key) throw notFound("Key not found");
  return c.json(key);
});

// DELETE at the three levels (any existing version: the spec lists no 403 here); returns the new etag and count.
keyBackup.delete("/room_keys/keys", async (c) => {
  const version = await backupFor(c, false);
  return c.json(updated(await deleteBackupKeys(c.env, c.var.auth.userId, version)));
});
keyBackup.delete("/room_keys/keys/:roomId", async (c) => {
  const version = await backupFor(c, false);
  return c.json(updated(await deleteBackupKeys(c.env, c.var.auth.userId, version, c.req.param("roomId"))));
});
keyBackup.delete("/room_keys/keys/:roomId/:sessionId", async (c) => {
  const version = await backupFor(c, false);
  const { roomId, sessionId } = c.req.param();
  return c.json(updated(await deleteBackupKeys(c.env, c.var.auth.userId, version, roomId, sessionId)));
});
