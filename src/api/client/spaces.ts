// Spaces (spec: Client-Server API "Discovering rooms within spaces"; space_hierarchy.yaml):
//   GET /_matrix/client/v1/rooms/{roomId}/hierarchy?from=&limit=&max_depth=&suggested_only=
// The walk lives in src/services/space-hierarchy.ts.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { invalidParam } from "../errors";
import { parseValue } from "../validate";
import { requireAuth } from "../middleware/auth";
import { isValidRoomId } from "../../core/ids";
import { decodeHierarchyToken } from "../../core/spaces";
import { HIERARCHY_DEFAULT_LIMIT, HIERARCHY_MAX_DEPTH, HIERARCHY_MAX_LIMIT, clientHierarchy } from "../../services/space-hierarchy";

export const spaces = new Hono<AppEnv>();

const bool = z.enum(["true", "false"]).transform((v) => v === "true");
const hierarchyQuery = z.object({
  from: z.string().max(1000).optional(),
  // "Must be an integer greater than zero."
  limit: z.coerce.number().int().min(1).optional(),
  // "Must be a non-negative integer."
  max_depth: z.coerce.number().int().min(0).optional(),
  suggested_only: bool.optional(),
});

spaces.get("/rooms/:roomId/hierarchy", requireAuth, async (c) => {
  const roomId = c.req.param("roomId");
  if (!isValidRoomId(roomId)) throw invalidParam("Invalid room ID");
  const q = parseValue(c.req.query(), hierarchyQuery);
  let suggestedOnly = q.suggested_only ?? false;
  let maxDepth = Math.min(q.max_depth ?? HIERARCHY_MAX_DEPTH, HIERARCHY_MAX_DEPTH);
  let offset = 0;
  if (q.from !== undefined) {
    const t = decodeHierarchyToken(q.from);
    if (!t || t.root !== roomId) throw invalidParam("Unknown pagination token");
    // "If specified, max_depth and suggested_only cannot be changed from the first request."
    // Omitted ones are taken from the token.
    if ((q.suggested_only !== undefined && q.suggested_only !== t.suggestedOnly) || (q.max_depth !== undefined && maxDepth !== t.maxDepth)) {
      throw invalidParam("suggested_only and max_depth cannot change on paginated requests");
    }
    suggestedOnly = t.suggestedOnly;
    maxDepth = t.maxDepth;
    offset = t.offset;
  }
  const limit = Math.min(q.limit ?? HIERARCHY_DEFAULT_LIMIT, HIERARCHY_MAX_LIMIT);
  return c.json(await clientHierarchy(c.env, c.var.config, { userId: c.var.auth.userId, roomId, suggestedOnly, maxDepth, limit, offset }));
});
