// Synapse-compatible media administration (Synapse's docs/admin_api/media_admin_api.md and the
// user media list in user_admin_api.md): list per user, query, quarantine by ID or user, delete
// by ID, by user, by date and size, purge the remote media cache.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam, notFound } from "../errors";
import { parseValue } from "../validate";
import { dirQuery, localUserParam, paging, requireAdmin, requireUserRow } from "./common";
import { deleteMedia, quarantineMedia, type MediaRow } from "../../services/media";
import { isValidRoomId, isValidServerName } from "../../core/ids";
import { roomStub } from "../../services/rooms";

export const adminMedia = new Hono<AppEnv>();

function mediaEntry(m: MediaRow) {
  return {
    media_id: m.media_id,
    media_type: m.content_type,
    media_length: m.size,
    upload_name: m.filename,
    created_ts: m.created_ts,
    last_access_ts: m.uploaded_ts,
    quarantined_by: m.quarantined ? m.quarantined_by ?? "" : null,
    safe_from_quarantine: false,
    user_id: m.uploader,
  };
}

const MEDIA_ORDER: Record<string, string> = {
  media_id: "media_id",
  upload_name: "filename",
  created_ts: "created_ts",
  last_access_ts: "uploaded_ts",
  media_length: "size",
  media_type: "content_type",
  quarantined_by: "quarantined_by",
  safe_from_quarantine: "created_ts",
};

function mediaParams(c: Context<AppEnv>): { serverName: string; mediaId: string } {
  const serverName = c.req.param("serverName") ?? "";
  const mediaId = c.req.param("mediaId") ?? "";
  if (!isValidServerName(serverName) || !/^[A-Za-z0-9_-]{1,255}$/.test(mediaId)) throw invalidParam("Invalid media ID");
  return { serverName, mediaId };
}

const tsParam = (c: Context<AppEnv>, name: string): number | undefined => {
  const v = c.req.query(name);
  return v === undefined ? undefined : parseValue(v, z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER));
};

// GET /_synapse/admin/v1/users/{userId}/media: newest first by default (Synapse: created_ts, dir=b? it defaults to f).
adminMedia.get("/v1/users/:userId/media", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  const { from, limit } = paging(c);
  const col = MEDIA_ORDER[c.req.query("order_by") ?? "created_ts"];
  if (!col) throw invalidParam("Unknown value for order_by");
  const dir = dirQuery(c);
  const total = await c.env.DB.prepare("SELECT COUNT(*) AS n FROM media WHERE uploader = ?").bind(userId).first<{ n: number }>();
  const { results } = await c.env.DB.prepare(`SELECT * FROM media WHERE uploader = ? ORDER BY ${col} ${dir}, media_id ${dir} LIMIT ? OFFSET ?`)
    .bind(userId, limit, from)
    .all<MediaRow>();
  const n = total?.n ?? 0;
  const body: Record<string, unknown> = { media: results.map(mediaEntry), total: n };
  if (results.length > 0 && from + results.length < n) body.next_token = from + results.length;
  return c.json(body);
});

adminMedia.delete("/v1/users/:userId/media", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  const { limit } = paging(c);
  const { results } = await c.env.DB.prepare("SELECT server_name, media_id FROM media WHERE uploader = ? ORDER BY created_ts LIMIT ?").bind(userId, limit).all<MediaRow>();
  const deleted: string[] = [];
  for (const m of results) if (await deleteMedia(c.env, m.server_name, m.media_id)) deleted.push(m.media_id);
  return c.json({ deleted_media: deleted, total: deleted.length });
});

adminMedia.get("/v1/media/:serverName/:mediaId", async (c) => {
  await requireAdmin(c);
  const { serverName, mediaId } = mediaParams(c);
  const m = await c.env.DB.prepare("SELECT * FROM media WHERE server_name = ? AND media_id = ?").bind(serverName, mediaId).first<MediaRow>();
  if (!m) throw notFound("Unknown media");
  return c.json({ media_info: { ...mediaEntry(m), media_origin: m.server_name, quarantined: !!m.quarantined } });
});

for (const [action, value] of [["quarantine", true], ["unquarantine", false]] as const) {
  adminMedia.post(`/v1/media/${action}/:serverName/:mediaId`, async (c) => {
    const adminId = await requireAdmin(c);
    const { serverName, mediaId } = mediaParams(c);
    if (!(await quarantineMedia(c.env, serverName, mediaId, adminId, value))) throw notFound("Unknown media");
    return c.json({});
  });
}

// POST /_synapse/admin/v1/user/{userId}/media/quarantine: everything the user uploaded.
adminMedia.post("/v1/user/:userId/media/quarantine", async (c) => {
  const adminId = await requireAdmin(c);
  const userId = localUserParam(c);
  const r = await c.env.DB.prepare("UPDATE media SET quarantined = 1, quarantined_by = ? WHERE uploader = ? AND quarantined = 0").bind(adminId, userId).run();
  return c.json({ num_quarantined: r.meta.changes });
});

adminMedia.delete("/v1/media/:serverName/:mediaId", async (c) => {
  await requireAdmin(c);
  const { serverName, mediaId } = mediaParams(c);
  if (serverName !== c.var.config.serverName) throw invalidParam("Can only delete local media");
  if (!(await deleteMedia(c.env, serverName, mediaId))) throw notFound("Unknown media");
  return c.json({ deleted_media: [mediaId], total: 1 });
});

// POST /_synapse/admin/v1/media/delete?before_ts=&size_gt=&keep_profiles=: local media created
// before before_ts (required) and larger than size_gt; profile pictures kept unless keep_profiles=false.
async function deleteOld(c: Context<AppEnv>) {
  await requireAdmin(c);
  const before = tsParam(c, "before_ts");
  if (before === undefined) throw new MatrixError(400, "M_MISSING_PARAM", "Missing integer query parameter 'before_ts'");
  const sizeGt = tsParam(c, "size_gt") ?? 0;
  const keepProfiles = c.req.query("keep_profiles") !== "false";
  const server = c.var.config.serverName;
  const { results } = await c.env.DB.prepare(
    `SELECT media_id FROM media WHERE server_name = ? AND created_ts < ? AND coalesce(size, 0) > ?
     ${keepProfiles ? "AND ('mxc://' || server_name || '/' || media_id) NOT IN (SELECT avatar_url FROM users WHERE avatar_url IS NOT NULL)" : ""}
     ORDER BY created_ts LIMIT 1000`,
  )
    .bind(server, before, sizeGt)
    .all<{ media_id: string }>();
  const deleted: string[] = [];
  for (const m of results) if (await deleteMedia(c.env, server, m.media_id)) deleted.push(m.media_id);
  return c.json({ deleted_media: deleted, total: deleted.length });
}
adminMedia.post("/v1/media/delete", deleteOld);
adminMedia.post("/v1/media/:serverName/delete", (c) => {
  if (c.req.param("serverName") !== c.var.config.serverName) throw invalidParam("Can only delete local media");
  return deleteOld(c);
});

// POST /_synapse/admin/v1/purge_media_cache?before_ts=: cached remote media fetched before it.
adminMedia.post("/v1/purge_media_cache", async (c) => {
  await requireAdmin(c);
  const before = tsParam(c, "before_ts");
  if (before === undefined) throw new MatrixError(400, "M_MISSING_PARAM", "Missing integer query parameter 'before_ts'");
  const { results } = await c.env.DB.prepare("SELECT server_name, media_id FROM media WHERE server_name != ? AND coalesce(uploaded_ts, created_ts) < ? LIMIT 1000")
    .bind(c.var.config.serverName, before)
    .all<{ server_name: string; media_id: string }>();
  let deleted = 0;
  for (const m of results) if (await deleteMedia(c.env, m.server_name, m.media_id)) deleted++;
  return c.json({ deleted });
});

// Dashboard numbers (Synapse's /statistics/users/media shape, plus totals).
adminMedia.get("/v1/statistics/users/media", async (c) => {
  await requireAdmin(c);
  const { from, limit } = paging(c);
  const total = await c.env.DB.prepare("SELECT COUNT(DISTINCT uploader) AS n FROM media WHERE uploader IS NOT NULL").first<{ n: number }>();
  const { results } = await c.env.DB.prepare(
    `SELECT m.uploader AS user_id, u.displayname, COUNT(*) AS media_count, coalesce(SUM(m.size), 0) AS media_length
     FROM media m LEFT JOIN users u ON u.user_id = m.uploader WHERE m.uploader IS NOT NULL
     GROUP BY m.uploader ORDER BY media_length DESC, m.uploader LIMIT ? OFFSET ?`,
  )
    .bind(limit, from)
    .all();
  const n = total?.n ?? 0;
  const body: Record<string, unknown> = { users: results, total: n };
  if (results.length > 0 && from + results.length < n) body.next_token = from + results.length;
  return c.json(body);
});

/** mxc URIs in a known room's events (404 for an unknown room). */
async function roomMedia(c: Context<AppEnv>): Promise<string[]> {
  const roomId = c.req.param("roomId") ?? "";
  if (!isValidRoomId(roomId)) throw invalidParam("Invalid room ID");
  if (!(await c.env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first())) throw notFound("Room not found");
  return roomStub(c.env, c.var.config, roomId).mediaInRoom();
}

adminMedia.get("/v1/room/:roomId/media", async (c) => {
  await requireAdmin(c);
  const uris = await roomMedia(c);
  const local = `mxc://${c.var.config.serverName}/`;
  return c.json({ local: uris.filter((u) => u.startsWith(local)), remote: uris.filter((u) => !u.startsWith(local)) });
});

// POST /_synapse/admin/v1/room/{roomId}/media/quarantine: everything the room's events reference.
adminMedia.post("/v1/room/:roomId/media/quarantine", async (c) => {
  const adminId = await requireAdmin(c);
  let n = 0;
  for (const uri of await roomMedia(c)) {
    const [serverName, mediaId] = uri.slice("mxc://".length).split("/");
    const r = await c.env.DB.prepare("UPDATE media SET quarantined = 1, quarantined_by = ? WHERE server_name = ? AND media_id = ? AND quarantined = 0").bind(adminId, serverName, mediaId).run();
    n += r.meta.changes;
  }
  return c.json({ num_quarantined: n });
});
