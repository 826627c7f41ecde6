// Room aliases and the published room directory (spec: Client-Server API "Room aliases",
// "Published room directory"; OpenAPI directory.yaml and list_public_rooms.yaml).
// Thin handlers: parse, authorise, call src/services/aliases.ts and src/services/room-directory.ts.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv, Auth } from "../types";
import { MatrixError, forbidden, invalidParam, notFound } from "../errors";
import { parseBody, parseValue } from "../validate";
import { publicRoomsBody } from "../public-rooms-body";
import { authenticate, extractAccessToken } from "../middleware/auth";
import { isValidRoomId, isValidServerName } from "../../core/ids";
import { knownRoom } from "../../services/rooms";
import { federationContext } from "../../services/federation/client";
import { checkAliasNotExclusive } from "../../services/appservices";
import { resolveLocalAlias } from "../../services/aliases";
import { networkPublicRooms } from "../appservice/directory";
import { aliasServerName, checkLocalAlias, createAlias, deleteAlias, dropFromCanonicalAlias, getAlias, listAliases, resolveAlias, resolveRemoteAlias } from "../../services/aliases";
import {
  canEditRoomDirectory,
  getRoomVisibility,
  isJoined,
  isServerAdmin,
  isWorldReadable,
  localPublicRooms,
  fetchRemotePublicRooms,
  roomState,
  setRoomVisibility,
} from "../../services/room-directory";

export const directory = new Hono<AppEnv>();

/** Writes to the directory are not among the endpoints guests may use (spec: "Guest Access"). */
async function authenticateMember(c: Context<AppEnv>): Promise<Auth> {
  const auth = await authenticate(c);
  if (auth.isGuest) throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot change the room directory");
  return auth;
}

function roomIdParam(c: Context<AppEnv>): string {
  const roomId = c.req.param("roomId") ?? "";
  if (!isValidRoomId(roomId)) throw invalidParam(`Room ID ${JSON.stringify(roomId)} is invalid`);
  return roomId;
}

// ---------------------------------------------------------------------------------------------
// PUT /directory/room/{roomAlias}: "Create a new mapping from room alias to room ID."
// 400 M_INVALID_PARAM for an invalid alias (or one on another server: we only host our own);
// 409 M_UNKNOWN if the alias exists. Our additional rule (as Synapse's default): only a joined
// member of the room may point an alias at it, so nobody can squat names on rooms they are not in.

const putAliasBody = z.object({ room_id: z.string() });

directory.put("/directory/room/:roomAlias", async (c) => {
  const auth = await authenticateMember(c);
  const alias = c.req.param("roomAlias");
  checkLocalAlias(alias, c.var.config.serverName);
  await checkAliasNotExclusive(c.env, c.var.config.serverName, alias, auth.appservice);
  const { room_id: roomId } = await parseBody(c, putAliasBody);
  if (!isValidRoomId(roomId)) throw invalidParam(`room_id ${JSON.stringify(roomId)} is not a valid room ID`);
  await knownRoom(c.env, roomId);
  const room = roomState(c.env, c.var.config, roomId);
  if (!(await isJoined(room, auth.userId)) && !(await isServerAdmin(c.env, auth.userId))) {
    throw forbidden("You must be joined to the room to create an alias for it");
  }
  await createAlias(c.env, alias, roomId, auth.userId);
  return c.json({});
});

// GET /directory/room/{roomAlias}: resolve. No authentication (the spec lists no security here).
directory.get("/directory/room/:roomAlias", async (c) => {
  const alias = c.req.param("roomAlias");
  const server = aliasServerName(alias);
  if (server === null) throw invalidParam(`Room alias ${JSON.stringify(alias)} is invalid`);
  // "homeservers MUST handle GET requests to resolve aliases on other servers; they should do
  // this using the federation API" (unreachable server: 502).
  const resolved = server === c.var.config.serverName ? await resolveLocalAlias(c.env, c.var.config, alias) : await resolveRemoteAlias(c.env, c.var.config, alias);
  if (!resolved) throw notFound(`Room alias ${alias} not found`);
  return c.json(resolved);
});

// DELETE /directory/room/{roomAlias}. "Servers may choose to implement additional access control
// checks here, for instance that room aliases can only be deleted by their creator or a server
// administrator." Ours: the alias's creator, a server admin, or a member who may change the
// room's directory entry (power to send m.room.canonical_alias). The room's
// m.room.canonical_alias then stops advertising the alias (dropFromCanonicalAlias).
directory.delete("/directory/room/:roomAlias", async (c) => {
  const auth = await authenticateMember(c);
  const alias = c.req.param("roomAlias");
  checkLocalAlias(alias, c.var.config.serverName);
  const row = await getAlias(c.env, alias);
  if (!row) throw notFound(`Room alias ${alias} not found`);
  if (row.creator !== auth.userId && !(await canEditRoomDirectory(c.env, roomState(c.env, c.var.config, row.roomId), row.roomId, auth.userId))) {
    throw forbidden("You may not delete this alias: you did not create it and lack the power to change the room's aliases");
  }
  if (!(await deleteAlias(c.env, alias))) throw notFound(`Room alias ${alias} not found`);
  await dropFromCanonicalAlias(c.env, c.var.config, row.roomId, alias, auth.userId);
  return c.json({});
});

// GET /rooms/{roomId}/aliases: "This endpoint can be called by users who are in the room
// (external users receive an M_FORBIDDEN error response). If the room's m.room.history_visibility
// maps to world_readable, any user can call this endpoint." Server admins may too (allowed).
// An unknown room gets the same 403 as a room the user is not in, so existence does not leak.
directory.get("/rooms/:roomId/aliases", async (c) => {
  const auth = await authenticate(c);
  const roomId = roomIdParam(c);
  const room = roomState(c.env, c.var.config, roomId);
  const allowed = (await isJoined(room, auth.userId)) || (await isWorldReadable(room)) || (await isServerAdmin(c.env, auth.userId));
  if (!allowed) throw forbidden("You are not a member of the room");
  return c.json({ aliases: await listAliases(c.env, roomId) });
});

// ---------------------------------------------------------------------------------------------
// GET /directory/list/room/{roomId}: visibility; 404 M_NOT_FOUND if "The room is not known to the
// server". No authentication.
directory.get("/directory/list/room/:roomId", async (c) => {
  const roomId = roomIdParam(c);
  await knownRoom(c.env, roomId);
  return c.json({ visibility: await getRoomVisibility(c.env, roomId) });
});

// PUT /directory/list/room/{roomId}: "Servers MAY implement additional access control checks".
// Ours: a server admin, or a joined member with the power to send m.room.canonical_alias (a room's
// public listing is the same kind of decision as its advertised aliases). visibility defaults to
// "public".
const putVisibilityBody = z.object({ visibility: z.enum(["public", "private"]).default("public") });

directory.put("/directory/list/room/:roomId", async (c) => {
  const auth = await authenticateMember(c);
  const roomId = roomIdParam(c);
  const { visibility } = await parseBody(c, putVisibilityBody);
  await knownRoom(c.env, roomId);
  const room = roomState(c.env, c.var.config, roomId);
  if (!(await canEditRoomDirectory(c.env, room, roomId, auth.userId))) {
    throw forbidden("You need the power to send m.room.canonical_alias to change the room's directory visibility");
  }
  await setRoomVisibility(c.env, roomId, visibility);
  return c.json({});
});

// ---------------------------------------------------------------------------------------------
// GET/POST /publicRooms: one page of the published room directory.

/** `server`: "The server to fetch the published room directory from. Defaults to the local
 *  server." Returns the remote server's name, or undefined for ours. */
function remoteServerParam(c: Context<AppEnv>): string | undefined {
  const server = c.req.query("server");
  if (server === undefined || server === "" || server === c.var.config.serverName) return undefined;
  if (!isValidServerName(server)) throw invalidParam(`server ${JSON.stringify(server)} is not a valid server name`);
  return server;
}

const limitQuery = z
  .string()
  .regex(/^[0-9]+$/, "limit must be a non-negative integer")
  .transform(Number)
  .optional();

// GET lists no security requirement in the spec, so anyone may read the directory; a token that
// is sent must still be valid.
directory.get("/publicRooms", async (c) => {
  if (extractAccessToken(c)) await authenticate(c);
  const remote = remoteServerParam(c);
  const limit = parseValue(c.req.query("limit"), limitQuery);
  const since = c.req.query("since");
  if (remote) {
    // Another server's directory over federation; its tokens are its own, passed through as-is.
    // Like Synapse, only for authenticated users (an open proxy to any server is not on offer).
    if (!extractAccessToken(c)) throw new MatrixError(401, "M_MISSING_TOKEN", "Listing another server's directory requires an access token");
    return c.json(await fetchRemotePublicRooms(federationContext(c.env, c.var.config), remote, { limit: limit || undefined, since: since || undefined }));
  }
  return c.json(await localPublicRooms(c.env, c.var.config, { limit, since }));
});

directory.post("/publicRooms", async (c) => {
  await authenticate(c);
  const remote = remoteServerParam(c);
  const body = await parseBody(c, publicRoomsBody);
  // third_party_instance_id: "Can only be used if include_all_networks is false."
  if (body.include_all_networks && body.third_party_instance_id !== undefined) {
    throw invalidParam("third_party_instance_id cannot be combined with include_all_networks");
  }
  if (remote) return c.json(await fetchRemotePublicRooms(federationContext(c.env, c.var.config), remote, body));
  // Rooms published by application services under a third-party network (PUT
  // /directory/list/appservice); include_all_networks adds nothing to the local listing yet.
  if (body.third_party_instance_id !== undefined) return c.json(await networkPublicRooms(c.env, c.var.config, body.third_party_instance_id, body.limit));
  return c.json(await localPublicRooms(c.env, c.var.config, body));
});
