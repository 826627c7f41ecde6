// Spaces over federation (spec: Server-Server API "Spaces"; space_hierarchy.yaml):
//   GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=
// Not paginated: the room and all its children the requesting server could peek/join.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { notFound } from "../errors";
import { parseValue } from "../validate";
import { isValidRoomId } from "../../core/ids";
import { requireServerAllowed } from "../../services/federation/inbound";
import { federationHierarchy } from "../../services/space-hierarchy";

export const federationSpaces = new Hono<AppEnv>();

const query = z.object({ suggested_only: z.enum(["true", "false"]).optional() });

federationSpaces.get("/v1/hierarchy/:roomId", async (c) => {
  const roomId = c.req.param("roomId");
  if (!isValidRoomId(roomId)) throw notFound("Unknown room");
  const q = parseValue(c.req.query(), query);
  // A server the room's ACL denies learns nothing about it.
  await requireServerAllowed(c.env, c.var.config, roomId, c.var.origin);
  return c.json(await federationHierarchy(c.env, c.var.config, c.var.origin, roomId, q.suggested_only === "true"));
});
