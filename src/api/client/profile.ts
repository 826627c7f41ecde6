// Profiles (spec: Client-Server API "Profiles").
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, notFound } from "../errors";
import { queryAppserviceUser } from "../../services/appservice-queries";
import { parseBody } from "../validate";
import { authenticate } from "../middleware/auth";
import { parseUserId } from "../../core/ids";
import { onProfileChange } from "../../services/profile-hooks";
import { FederationError, federationContext, federationRequest } from "../../services/federation/client";
import { deleteProfileField, extraProfileFields, MAX_PROFILE_BYTES, setProfileField, validProfileKey } from "../../services/profile-fields";
import { readJsonBody } from "../validate";

export const profile = new Hono<AppEnv>();

interface ProfileRow {
  displayname: string | null;
  avatar_url: string | null;
  deactivated: number;
  /** Extended fields (m.tz, custom keys); for remote users as their server answered. */
  extra?: Record<string, unknown>;
}

/** A remote user's profile through their server (spec: Server-Server API "Querying for
 *  information", /query/profile). Their server's 404 stays 404; an unreachable or broken server
 *  is 502, so a client can tell "no such user" from "could not ask". */
async function loadRemoteProfile(c: Context<AppEnv>, userId: string, serverName: string, field?: string): Promise<ProfileRow> {
  try {
    const { body } = await federationRequest<Record<string, unknown>>(federationContext(c.env, c.var.config), serverName, "GET", "/_matrix/federation/v1/query/profile", {
      query: field ? { user_id: userId, field } : { user_id: userId },
      timeoutMs: 10_000,
      maxBytes: 64 * 1024,
    });
    const str = (v: unknown) => (typeof v === "string" && v.length <= 1024 ? v : null);
    const extra: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(body ?? {})) if (k !== "displayname" && k !== "avatar_url" && validProfileKey(k)) extra[k] = v;
    return { displayname: str(body?.displayname), avatar_url: str(body?.avatar_url), deactivated: 0, extra };
  } catch (e) {
    if (e instanceof FederationError && e.status === 404) throw notFound("Profile not found");
    throw new MatrixError(502, "M_UNKNOWN", `Could not fetch the profile from ${serverName}`);
  }
}

async function loadProfile(c: Context<AppEnv>, userId: string, field?: string): Promise<ProfileRow> {
  const parsed = parseUserId(userId, { historical: true });
  if (!parsed) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid user ID");
  if (parsed.serverName !== c.var.config.serverName) return loadRemoteProfile(c, userId, parsed.serverName, field);
  const read = () => c.env.DB.prepare("SELECT displayname, avatar_url, deactivated FROM users WHERE user_id = ?").bind(userId).first<ProfileRow>();
  // Unknown user in an appservice's namespace: ask it (it may create the user), then look again.
  const row = (await read()) ?? ((await queryAppserviceUser(c.env, c.var.config, userId)) ? await read() : null);
  if (!row) throw notFound("Profile not found");
  row.extra = row.deactivated ? {} : await extraProfileFields(c.env, userId);
  return row;
}

const fields = { displayname: "displayname", avatar_url: "avatar_url" } as const;

profile.get("/profile/:userId", async (c) => {
  const row = await loadProfile(c, c.req.param("userId"));
  const out: Record<string, string> = {};
  if (row.displayname !== null) out.displayname = row.displayname;
  if (row.avatar_url !== null) out.avatar_url = row.avatar_url;
  return c.json({ ...row.extra, ...out });
});

for (const field of Object.keys(fields) as (keyof typeof fields)[]) {
  profile.get(`/profile/:userId/${field}`, async (c) => {
    const row = await loadProfile(c, c.req.param("userId"));
    if (row[field] === null) throw notFound(`No ${field} set`);
    return c.json({ [field]: row[field] });
  });

  profile.put(`/profile/:userId/${field}`, async (c) => {
    const auth = await authenticate(c);
    const userId = c.req.param("userId");
    if (auth.userId !== userId) throw forbidden("Cannot set another user's profile");
    const schema =
      field === "avatar_url"
        ? z.object({ avatar_url: z.string().max(1024).regex(/^(mxc:\/\/.+)?$/, "must be an mxc:// URI").nullable().optional() })
        : z.object({ displayname: z.string().max(256).nullable().optional() });
    const body = (await parseBody(c, schema)) as Record<string, string | null | undefined>;
    const value = body[field] || null;
    await c.env.DB.prepare(`UPDATE users SET ${field} = ? WHERE user_id = ?`).bind(value, userId).run();
    await onProfileChange(c.env, c.var.config, userId);
    return c.json({});
  });
}

// Extended profile fields (spec 1.16): m.tz and custom keys; displayname and avatar_url above.
async function ownProfile(c: Context<AppEnv>): Promise<{ userId: string; key: string }> {
  const auth = await authenticate(c);
  const userId = c.req.param("userId")!;
  const key = c.req.param("keyName")!;
  if (!validProfileKey(key)) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid profile key name");
  if (auth.userId !== userId) throw forbidden("Cannot change another user's profile");
  return { userId, key };
}

profile.get("/profile/:userId/:keyName", async (c) => {
  const key = c.req.param("keyName");
  if (!validProfileKey(key)) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid profile key name");
  const row = await loadProfile(c, c.req.param("userId"), key);
  if (!row.extra || !(key in row.extra)) throw notFound(`No ${key} set`);
  return c.json({ [key]: row.extra[key] });
});

profile.put("/profile/:userId/:keyName", async (c) => {
  const { userId, key } = await ownProfile(c);
  const body = await readJsonBody(c);
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw new MatrixError(400, "M_BAD_JSON", "Body must be a JSON object");
  if (!(key in body)) throw new MatrixError(400, "M_MISSING_PARAM", `Body must contain ${key}`);
  const value = (body as Record<string, unknown>)[key];
  // "For m.tz, the value MUST be a valid identifier from the IANA Time Zone Database": a string
  // here (servers MAY validate further; clients expect invalid values anyway).
  if (key === "m.tz" && (typeof value !== "string" || value.length > 100)) throw new MatrixError(400, "M_BAD_JSON", "m.tz must be a time zone name");
  if (JSON.stringify(value ?? null).length >= MAX_PROFILE_BYTES) throw new MatrixError(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB");
  const own = await c.env.DB.prepare("SELECT displayname, avatar_url FROM users WHERE user_id = ?").bind(userId).first<{ displayname: string | null; avatar_url: string | null }>();
  await setProfileField(c.env, userId, key, value ?? null, { displayname: own?.displayname ?? null, avatar_url: own?.avatar_url ?? null });
  return c.json({});
});

profile.delete("/profile/:userId/:keyName", async (c) => {
  const { userId, key } = await ownProfile(c);
  if (key === "displayname" || key === "avatar_url") {
    await c.env.DB.prepare(`UPDATE users SET ${key} = NULL WHERE user_id = ?`).bind(userId).run();
    await onProfileChange(c.env, c.var.config, userId);
  } else {
    await deleteProfileField(c.env, userId, key);
  }
  return c.json({});
});
