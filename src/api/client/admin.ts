// The spec's client admin endpoints (Client-Server API "Server administration" and "Account
// moderation"): whois, and suspending or locking an account.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { notFound } from "../errors";
import { parseBody } from "../validate";
import { localUserParam, requireAdmin } from "../admin/common";
import { whois } from "../admin/users";

/** GET /_matrix/client/v3/admin/whois/{userId} */
export const clientAdminWhois = new Hono<AppEnv>();
clientAdminWhois.get("/admin/whois/:userId", (c) => whois(c, c.req.param("userId")));

/** /_matrix/client/v1/admin/{suspend,lock}/{userId} */
export const clientAdminModeration = new Hono<AppEnv>();

/** The target of a moderation request: local (400 M_INVALID_PARAM), existing and not deactivated
 *  (404 M_NOT_FOUND), as the spec's responses say. */
async function target(c: Context<AppEnv>): Promise<string> {
  await requireAdmin(c);
  const userId = localUserParam(c);
  const row = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(userId).first<{ deactivated: number }>();
  if (!row || row.deactivated) throw notFound("User not found");
  return userId;
}

for (const flag of ["suspended", "locked"] as const) {
  const path = `/admin/${flag === "suspended" ? "suspend" : "lock"}/:userId`;
  clientAdminModeration.get(path, async (c) => {
    const userId = await target(c);
    const row = await c.env.DB.prepare(`SELECT ${flag} AS v FROM users WHERE user_id = ?`).bind(userId).first<{ v: number }>();
    return c.json({ [flag]: !!row?.v });
  });
  clientAdminModeration.put(path, async (c) => {
    const userId = await target(c);
    const body = await parseBody(c, z.object({ [flag]: z.boolean() }));
    const value = body[flag] as boolean;
    await c.env.DB.prepare(`UPDATE users SET ${flag} = ? WHERE user_id = ?`).bind(value ? 1 : 0, userId).run();
    return c.json({ [flag]: value });
  });
}
