// Public room directory over federation (spec: Server-Server API "Public Room Directory";
// public_rooms.yaml):
//   GET  /_matrix/federation/v1/publicRooms?limit=&since=&include_all_networks=&third_party_instance_id=
//   POST /_matrix/federation/v1/publicRooms   {limit, since, filter, include_all_networks, third_party_instance_id}
// The same listing as the client's /publicRooms (src/services/room-directory.ts). Server ACLs do
// not apply: the directory is not a room.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { invalidParam } from "../errors";
import { parseBody, parseValue } from "../validate";
import { publicRoomsBody } from "../public-rooms-body";
import { localPublicRooms, type LocalListRequest } from "../../services/room-directory";

export const federationDirectory = new Hono<AppEnv>();

const getQuery = z.object({
  limit: z.coerce.number().int().min(0).optional(),
  since: z.string().max(1000).optional(),
  include_all_networks: z.enum(["true", "false"]).optional(),
  third_party_instance_id: z.string().optional(),
});

async function respond(c: Context<AppEnv>, req: LocalListRequest & { thirdParty?: string }) {
  // Rooms of third-party networks (application services): none are published yet.
  if (req.thirdParty !== undefined) return c.json({ chunk: [], total_room_count_estimate: 0 });
  return c.json(await localPublicRooms(c.env, c.var.config, req));
}

federationDirectory.get("/v1/publicRooms", async (c) => {
  const q = parseValue(c.req.query(), getQuery);
  if (q.include_all_networks === "true" && q.third_party_instance_id !== undefined) {
    throw invalidParam("third_party_instance_id cannot be combined with include_all_networks");
  }
  return respond(c, { limit: q.limit, since: q.since, thirdParty: q.third_party_instance_id });
});

federationDirectory.post("/v1/publicRooms", async (c) => {
  const b = await parseBody(c, publicRoomsBody);
  if (b.include_all_networks && b.third_party_instance_id !== undefined) {
    throw invalidParam("third_party_instance_id cannot be combined with include_all_networks");
  }
  return respond(c, { limit: b.limit, since: b.since, filter: b.filter, thirdParty: b.third_party_instance_id });
});
