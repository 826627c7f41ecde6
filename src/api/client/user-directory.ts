// POST /v3/user_directory/search (spec: Client-Server API "User directory").
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { searchUserDirectory } from "../../services/user-directory";
import { listAppservices } from "../../services/appservices";

export const userDirectory = new Hono<AppEnv>();

userDirectory.post("/user_directory/search", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ search_term: z.string().max(256), limit: z.number().int().min(0).optional() }).loose());
  // "limit: The maximum number of results to return. Defaults to 10."
  const limit = Math.min(body.limit ?? 10, 100);
  // Appservice users (senders, exclusive namespaces) are bridged contacts, not the server's own
  // users: found through shared and public rooms like remote users, never by USER_DIRECTORY=all
  // alone (Synapse leaves them out of the directory entirely).
  const services = c.var.config.userDirectory === "all" ? await listAppservices(c.env, c.var.config.serverName) : [];
  const isAppserviceUser = (u: string) => services.some((a) => a.senderUserId === u || a.exclusiveUser(u));
  return c.json(await searchUserDirectory(c.env, c.var.config, c.var.auth.userId, body.search_term, limit, services.length ? isAppserviceUser : undefined));
});
