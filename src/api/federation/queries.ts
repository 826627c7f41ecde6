// Queries (spec: Server-Server API "Querying for information"):
//   GET /_matrix/federation/v1/query/profile?user_id=&field=
//   GET /_matrix/federation/v1/query/directory?room_alias=
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { parseValue } from "../validate";
import { invalidParam, notFound } from "../errors";
import { parseUserId } from "../../core/ids";
import { aliasServerName, resolveLocalAlias } from "../../services/aliases";
import { extraProfileFields } from "../../services/profile-fields";

export const queries = new Hono<AppEnv>();

const profileQuery = z.object({
  user_id: z.string(),
  field: z.string().max(255).optional(),
});

queries.get("/v1/query/profile", async (c) => {
  const q = parseValue(c.req.query(), profileQuery, "M_INVALID_PARAM");
  const parsed = parseUserId(q.user_id);
  if (!parsed) throw invalidParam("Invalid user_id");
  if (parsed.serverName !== c.var.config.serverName) throw invalidParam("User is not on this server");
  const row = await c.env.DB.prepare("SELECT displayname, avatar_url, deactivated FROM users WHERE user_id = ?")
    .bind(q.user_id)
    .first<{ displayname: string | null; avatar_url: string | null; deactivated: number }>();
  if (!row) throw notFound("User does not exist");
  // The full public profile, or only `field` when given ("the server MUST only return the given
  // field"): extended fields (m.tz, custom keys) included.
  const full: Record<string, unknown> = {};
  if (!row.deactivated) {
    Object.assign(full, await extraProfileFields(c.env, q.user_id));
    if (row.displayname !== null) full.displayname = row.displayname;
    if (row.avatar_url !== null) full.avatar_url = row.avatar_url;
  }
  if (q.field === undefined) return c.json(full);
  return c.json(q.field in full ? { [q.field]: full[q.field] } : {});
});

const directoryQuery = z.object({ room_alias: z.string() });

queries.get("/v1/query/directory", async (c) => {
  const q = parseValue(c.req.query(), directoryQuery, "M_INVALID_PARAM");
  const server = aliasServerName(q.room_alias);
  if (server === null) throw invalidParam("Invalid room alias");
  if (server !== c.var.config.serverName) throw notFound("Room alias not on this server");
  const r = await resolveLocalAlias(c.env, c.var.config, q.room_alias);
  if (!r) throw notFound("Room alias not found");
  return c.json(r);
});
