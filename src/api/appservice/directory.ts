// PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId} (spec: Application
// Service API "Room directory"): an appservice publishes a room in the directory under one of its
// third-party networks. Listed by /publicRooms with `third_party_instance_id`.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import type { Env } from "../../env";
import { forbidden, invalidParam } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { isValidRoomId } from "../../core/ids";
import { knownRoom } from "../../services/rooms";
import { publicRoomChunk, roomState } from "../../services/room-directory";
import type { PublicRoomChunk } from "../../core/types";
import type { Config } from "../../config";

export const appserviceDirectory = new Hono<AppEnv>();

const body = z.object({ visibility: z.enum(["public", "private"]) });

appserviceDirectory.put("/directory/list/appservice/:networkId/:roomId", requireAuth, async (c) => {
  const service = c.var.auth.appservice;
  if (!service) throw forbidden("Only application services may publish rooms under a network");
  const networkId = c.req.param("networkId");
  const roomId = c.req.param("roomId");
  if (networkId.length === 0 || networkId.length > 255) throw invalidParam("networkId must be 1 to 255 characters");
  if (!isValidRoomId(roomId)) throw invalidParam(`Room ID ${JSON.stringify(roomId)} is invalid`);
  const { visibility } = await parseBody(c, body);
  await knownRoom(c.env, roomId);
  if (visibility === "public") {
    await c.env.DB.prepare("INSERT INTO appservice_room_directory (appservice_id, network_id, room_id, published_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
      .bind(service.id, networkId, roomId, Date.now())
      .run();
  } else {
    await c.env.DB.prepare("DELETE FROM appservice_room_directory WHERE appservice_id = ? AND network_id = ? AND room_id = ?").bind(service.id, networkId, roomId).run();
  }
  return c.json({});
});

/** The rooms published under a third-party instance: `networkId`, or `appserviceId|networkId`
 *  (the form Synapse hands out as instance_id). First `limit` (at most 100), oldest first. */
export async function networkPublicRooms(env: Env, config: Config, instanceId: string, limit: number | undefined): Promise<{ chunk: PublicRoomChunk[]; total_room_count_estimate: number }> {
  const bar = instanceId.indexOf("|");
  const [where, binds] = bar >= 0 ? ["appservice_id = ? AND network_id = ?", [instanceId.slice(0, bar), instanceId.slice(bar + 1)]] : ["network_id = ?", [instanceId]];
  const n = Math.min(limit || 100, 100);
  const { results } = await env.DB.prepare(`SELECT DISTINCT room_id FROM appservice_room_directory WHERE ${where} ORDER BY published_ts LIMIT ?`)
    .bind(...binds, n)
    .all<{ room_id: string }>();
  const chunks = await Promise.all(results.map((r) => publicRoomChunk(r.room_id, roomState(env, config, r.room_id))));
  const chunk = chunks.filter((x): x is PublicRoomChunk => x !== null);
  return { chunk, total_room_count_estimate: chunk.length };
}
