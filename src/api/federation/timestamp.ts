// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir= (spec: Server-Server API
// "Retrieving events", events.yaml, v1.6): the event closest to `ts` in direction `dir` that the
// requesting server may see (history visibility for servers, as /event), after the room's ACL.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { notFound } from "../errors";
import { parseValue } from "../validate";
import { isValidRoomId } from "../../core/ids";
import { requireServerAllowed } from "../../services/federation/inbound";
import { roomStub, unwrap } from "../../services/rooms";

export const federationTimestamp = new Hono<AppEnv>();

const query = z.object({
  ts: z.coerce.number().int(),
  dir: z.enum(["f", "b"]),
});

federationTimestamp.get("/v1/timestamp_to_event/:roomId", async (c) => {
  const roomId = c.req.param("roomId");
  if (!isValidRoomId(roomId)) throw notFound("Unknown room");
  const q = parseValue(c.req.query(), query);
  const known = await c.env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first();
  if (!known) throw notFound("Unknown room");
  await requireServerAllowed(c.env, c.var.config, roomId, c.var.origin);
  return c.json(unwrap(await roomStub(c.env, c.var.config, roomId).fedTimestampToEvent(c.var.origin, q.ts, q.dir)));
});
