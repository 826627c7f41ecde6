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

export const profile = new Hono<AppEnv>();

interface ProfileRow {
  displayname: string | null;
  avatar_url: string | null;
  deactivated: number;
}

/** A remote user's profile through their server (spec: Server-Server API "Querying for
 *  information", /query/profile). Their server's 404 stays 404; an unreachable or broken server
 *  is 502, so a client can tell "no such user" from "could not ask". */
async function loadRemoteProfile(c: Context<AppEnv>, userId: string, serverName: string): Promise<ProfileRow> {
  try {
    const { body } = await federationRequest<Record<string, unknown>>(federationContext(c.env, c.var.config), serverName, "GET", "/_matrix/federation/v1/query/profile", {
      query: { user_id: userId },
      timeoutMs: 10_000,
      maxBytes: 64 * 1024,
    });
    const str = (v: unknown) => (typeof v === "string" && v.length <= 1024 ? v : null);
    return { displayname: str(body?.displayname), avatar_url: str(body?.avatar_url), deactivated: 0 };
  } catch (e) {
    if (e instanceof FederationError && e.status === 404) throw notFound("Profile not found");
    throw new MatrixError(502, "M_UNKNOWN", `Could not fetch the profile from ${serverName}`);
  }
}

async function loadProfile(c: Context<AppEnv>, userId: string): Promise<ProfileRow> {
  const parsed = parseUserId(userId, { historical: true });
  if (!parsed) throw new MatrixError(400, "M_INVALID_PARAM", "Invalid user ID");
  if (parsed.serverName !== c.var.config.serverName) return loadRemoteProfile(c, userId, parsed.serverName);
  const read = () => c.env.DB.prepare("SELECT displayname, avatar_url, deactivated FROM users WHERE user_id = ?").bind(userId).first<ProfileRow>();
  // Unknown user in an appservice's namespace: ask it (it may create the user), then look again.
  const row = (await read()) ?? ((await queryAppserviceUser(c.env, c.var.config, userId)) ? await read() : null);
  if (!row) throw notFound("Profile not found");
  return row;
}

const fields = { displayname: "displayname", avatar_url: "avatar_url" } as const;

profile.get("/profile/:userId", async (c) => {
  const row = await loadProfile(c, c.req.param("userId"));
  const out: Record<string, string> = {};
  if (row.displayname !== null) out.displayname = row.displayname;
  if (row.avatar_url !== null) out.avatar_url = row.avatar_url;
  return c.json(out);
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
