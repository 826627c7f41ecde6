// Filters (spec: Client-Server API "Filtering"): POST /user/{userId}/filter,
// GET /user/{userId}/filter/{filterId}. Stored in the user's hub (UserDO).
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { forbidden, invalidParam, notFound, badJson } from "../errors";
import { requireAuth } from "../middleware/auth";
import { readJsonBody } from "../validate";
import { userStub } from "../../services/notifier";
import { parseFilter, type Filter } from "../../core/filters";
import type { JsonObject } from "../../core/types";

export const filters = new Hono<AppEnv>();

function ownUser(c: Context<AppEnv>): string {
  const userId = c.req.param("userId")!;
  if (userId !== c.var.auth.userId) throw forbidden("Cannot use filters of another user");
  return userId;
}

filters.post("/user/:userId/filter", requireAuth, async (c) => {
  const userId = ownUser(c);
  const raw = await readJsonBody(c);
  const r = parseFilter(raw);
  if (!r.ok) throw badJson(r.error);
  const filterId = await userStub(c.env, userId, c.var.config).createFilter(userId, raw as JsonObject);
  return c.json({ filter_id: filterId });
});

filters.get("/user/:userId/filter/:filterId", requireAuth, async (c) => {
  const userId = ownUser(c);
  const f = await userStub(c.env, userId, c.var.config).getFilter(c.req.param("filterId"));
  if (!f) throw notFound("Unknown filter");
  return c.body(f, 200, { "content-type": "application/json" });
});

const FILTER_CACHE = 1024;
const filterCache = new Map<string, Filter>();

/** The `filter` query parameter of /sync (and /messages): inline JSON when it starts with `{`,
 *  else the ID of a stored filter ("The server will detect whether it is an ID or a JSON object
 *  by whether the first character is a '{'"). Unknown IDs and invalid JSON → M_INVALID_PARAM. */
export async function resolveFilter(c: Context<AppEnv>, raw: string | undefined): Promise<Filter | undefined> {
  if (raw === undefined || raw === "") return undefined;
  let json: unknown;
  if (raw.trimStart().startsWith("{")) {
    try {
      json = JSON.parse(raw);
    } catch {
      throw invalidParam("filter is not valid JSON");
    }
  } else {
    // Stored filters never change, so an isolate-level cache saves a hub call on every /sync.
    const key = `${c.var.auth.userId}\n${raw}`;
    const cached = filterCache.get(key);
    if (cached) return cached;
    const stored = await userStub(c.env, c.var.auth.userId, c.var.config).getFilter(raw);
    if (!stored) throw invalidParam(`Unknown filter ID ${raw}`);
    const r = parseFilter(JSON.parse(stored));
    if (!r.ok) throw invalidParam(`Invalid filter: ${r.error}`);
    if (filterCache.size >= FILTER_CACHE) filterCache.delete(filterCache.keys().next().value!);
    filterCache.set(key, r.filter);
    return r.filter;
  }
  const r = parseFilter(json);
  if (!r.ok) throw invalidParam(`Invalid filter: ${r.error}`);
  return r.filter;
}
