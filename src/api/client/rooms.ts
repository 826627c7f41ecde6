// Room creation and upgrades (spec: Client-Server API "Rooms" → "Creation"; module "Room Upgrades").
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, invalidParam } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import type { JsonObject } from "../../core/types";
import { DEFAULT_ROOM_VERSION, getRoomVersion, type RoomVersion } from "../../core/room-versions";
import { isValidRoomAlias, isValidUserId } from "../../core/ids";
import { stateKey } from "../../core/types";
import type { LocalEventSpec } from "../../rpc/room";
import { createRoomInDO, knownRoom, localProfile, roomStub, unwrap, isLocalUser } from "../../services/rooms";
import { checkAliasNotExclusive } from "../../services/appservices";
import { aliasFromLocalpart, createAlias, deleteAlias, isAliasAvailable, listAliases, validateCanonicalAlias } from "../../services/aliases";
import { inviteRemoteUser } from "../../services/federation/membership";

export const rooms = new Hono<AppEnv>();

const jsonObject = z.record(z.string(), z.any());

const createRoomSchema = z.object({
  visibility: z.enum(["public", "private"]).optional(),
  room_alias_name: z.string().optional(),
  name: z.string().optional(),
  topic: z.string().optional(),
  invite: z.array(z.string()).optional(),
  invite_3pid: z.array(jsonObject).optional(),
  room_version: z.string().optional(),
  creation_content: jsonObject.optional(),
  initial_state: z.array(z.object({ type: z.string(), state_key: z.string().optional(), content: jsonObject })).optional(),
  preset: z.enum(["private_chat", "public_chat", "trusted_private_chat"]).optional(),
  is_direct: z.boolean().optional(),
  power_level_content_override: jsonObject.optional(),
});

type Preset = "private_chat" | "public_chat" | "trusted_private_chat";

/** Version requested by a client: known and creatable here (every version 1–12), else
 *  400 M_UNSUPPORTED_ROOM_VERSION. */
export function creatableVersion(id: string | undefined): RoomVersion {
  const rv = getRoomVersion(id ?? DEFAULT_ROOM_VERSION);
  if (!rv || !rv.creatable) throw new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", `Room version ${id} is not supported`);
  return rv;
}

/** The default m.room.power_levels content (createRoom step 3). */
function defaultPowerLevels(rv: RoomVersion, creator: string, preset: Preset, invitees: string[]): JsonObject {
  const users: JsonObject = {};
  // v12: creators have infinite power and must not be listed in `users`.
  if (!rv.privilegedCreators) {
    users[creator] = 100;
    if (preset === "trusted_private_chat") for (const u of invitees) users[u] = 100;
  }
  return {
    users,
    users_default: 0,
    events: {
      "m.room.name": 50,
      "m.room.power_levels": 100,
      "m.room.history_visibility": 100,
      "m.room.canonical_alias": 50,
      "m.room.avatar": 50,
      // v12: "the power level for sending m.room.tombstone events MUST explicitly be higher
      // than state_default" — 150 so that only creators can upgrade by default.
      "m.room.tombstone": rv.privilegedCreators ? 150 : 100,
      "m.room.server_acl": 100,
      "m.room.encryption": 100,
    },
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: preset === "public_chat" ? 50 : 0,
  };
}

export interface RoomPlan {
  rv: RoomVersion;
  creator: string;
  createContent: JsonObject;
  events: Omit<LocalEventSpec, "sender">[];
  alias?: string;
  visibility: "public" | "private";
  /** Invitees on other servers: invited after the room exists, through their server (v2/invite). */
  remoteInvites: { userId: string; content: JsonObject }[];
}

/** Turn a createRoom request into the ordered event list (spec createRoom steps 1–8). */
export async function planRoom(
  env: AppEnv["Bindings"],
  config: AppEnv["Variables"]["config"],
  creator: string,
  body: z.infer<typeof createRoomSchema>,
  extra?: {
    predecessor?: JsonObject;
    copiedState?: { type: string; state_key: string; content: JsonObject }[];
    /** The creator's profile when the caller has it already (createRoom: read with the token). */
    creatorProfile?: { displayname?: string; avatar_url?: string };
  },
): Promise<RoomPlan> {
  const rv = creatableVersion(body.room_version);
  const visibility = body.visibility ?? "private";
  const preset: Preset = body.preset ?? (visibility === "public" ? "public_chat" : "private_chat");
  const invitees = [...new Set(body.invite ?? [])].filter((u) => u !== creator);
  for (const u of invitees) if (!isValidUserId(u, { historical: true })) throw invalidParam(`Invalid user ID in invite: ${u}`);

  // 1. m.room.create. The server overwrites `creator` (v1–v10) and `room_version`.
  const createContent: JsonObject = { ...(body.creation_content ?? {}) };
  delete createContent.creator;
  if (!rv.implicitCreator) createContent.creator = creator;
  createContent.room_version = rv.id;
  if (extra?.predecessor) createContent.predecessor = extra.predecessor;
  if (rv.privilegedCreators) {
    const extraCreators = createContent.additional_creators;
    if (extraCreators !== undefined && (!Array.isArray(extraCreators) || extraCreators.some((u) => typeof u !== "string" || !isValidUserId(u, { historical: true })))) {
      throw invalidParam("additional_creators must be a list of user IDs");
    }
    const all = new Set<string>((extraCreators as string[] | undefined) ?? []);
    // "For trusted_private_chat, the users specified in the invite parameter SHOULD also be
    // appended to additional_creators".
    if (preset === "trusted_private_chat") for (const u of invitees) all.add(u);
    all.delete(creator);
    if (all.size) createContent.additional_creators = [...all];
    else delete createContent.additional_creators;
  } else {
    delete createContent.additional_creators;
  }

  const events: Omit<LocalEventSpec, "sender">[] = [];
  // 2. The creator joins.
  events.push({ type: "m.room.member", state_key: creator, content: { membership: "join", ...(extra?.creatorProfile ?? (await localProfile(env, creator))) } });

  // 3. Power levels (override merged over the defaults, key by key).
  const pl = { ...defaultPowerLevels(rv, creator, preset, invitees), ...(body.power_level_content_override ?? {}) } as JsonObject;
  if (rv.privilegedCreators && pl.users && typeof pl.users === "object" && !Array.isArray(pl.users)) {
    const users = { ...(pl.users as JsonObject) };
    delete users[creator];
    for (const u of (createContent.additional_creators as string[] | undefined) ?? []) delete users[u];
    pl.users = users;
  }
  events.push({ type: "m.room.power_levels", state_key: "", content: pl });

  // 4. Canonical alias.
  let alias: string | undefined;
  if (body.room_alias_name !== undefined) {
    alias = aliasFromLocalpart(body.room_alias_name, config.serverName);
    if (!(await isAliasAvailable(env, alias))) throw new MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken");
    events.push({ type: "m.room.canonical_alias", state_key: "", content: { alias } });
  }

  // 5. Preset events, unless initial_state sets the same state; 6. initial_state; 7. name, topic.
  const initial = (body.initial_state ?? []).map((e) => ({ type: e.type, state_key: e.state_key ?? "", content: e.content as JsonObject }));
  for (const e of initial) {
    if (e.type === "m.room.create" || e.type === "m.room.member") throw invalidParam(`initial_state may not contain ${e.type}`);
    // As the state endpoint checks it: the room does not exist yet, so the only alias that can
    // point to it is the one this request claims (room_alias_name). No room ID resolves as "".
    if (e.type === "m.room.canonical_alias" && e.state_key === "") await validateCanonicalAlias(env, "", e.content, null, alias ? [alias] : []);
  }
  const later = new Set<string>();
  if (body.name !== undefined) later.add(stateKey("m.room.name", ""));
  if (body.topic !== undefined) later.add(stateKey("m.room.topic", ""));
  const initialKeys = new Set([...initial, ...(extra?.copiedState ?? [])].map((e) => stateKey(e.type, e.state_key)));
  const presetEvents: { type: string; state_key: string; content: JsonObject }[] = [
    { type: "m.room.join_rules", state_key: "", content: { join_rule: preset === "public_chat" ? "public" : "invite" } },
    { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "shared" } },
    { type: "m.room.guest_access", state_key: "", content: { guest_access: preset === "public_chat" ? "forbidden" : "can_join" } },
  ];
  for (const e of presetEvents) if (!initialKeys.has(stateKey(e.type, e.state_key))) events.push(e);
  for (const e of extra?.copiedState ?? []) events.push(e);
  for (const e of initial) if (!later.has(stateKey(e.type, e.state_key))) events.push(e);
  if (body.name !== undefined) events.push({ type: "m.room.name", state_key: "", content: { name: body.name } });
  if (body.topic !== undefined) {
    events.push({ type: "m.room.topic", state_key: "", content: { topic: body.topic, "m.topic": [{ mimetype: "text/plain", body: body.topic }] } });
  }

  // 8. Invites. (invite_3pid needs an identity server: not supported, ignored.) A remote
  // invitee's server must co-sign its invite (Server-Server API "Inviting to a room") and learns
  // of it only that way: those go the way of POST /invite once the room exists (executePlan).
  const remoteInvites: RoomPlan["remoteInvites"] = [];
  for (const u of invitees) {
    const content: JsonObject = { membership: "invite" };
    if (body.is_direct) content.is_direct = true;
    if (!isLocalUser(config, u)) {
      remoteInvites.push({ userId: u, content });
      continue;
    }
    Object.assign(content, await localProfile(env, u));
    events.push({ type: "m.room.member", state_key: u, content });
  }
  return { rv, creator, createContent, events, alias, visibility, remoteInvites };
}

/** Create the planned room. The room ID is only known after signing the create event (v12), so
 *  the alias (checked free by planRoom) is claimed and the room listed in the directory once the
 *  DO has stored the room: in the same D1 batch as its registry row (a round trip each before). */
export async function executePlan(env: AppEnv["Bindings"], config: AppEnv["Variables"]["config"], plan: RoomPlan): Promise<string> {
  if (plan.alias !== undefined && !isValidRoomAlias(plan.alias)) throw invalidParam(`Room alias ${JSON.stringify(plan.alias)} is invalid`);
  const { roomId, aliasClaimed } = await createRoomInDO(env, config, {
    creator: plan.creator,
    roomVersion: plan.rv,
    createContent: plan.createContent,
    events: plan.events,
    alias: plan.alias,
    publish: plan.visibility === "public",
  });
  // Lost a race for the alias: the room exists (unlisted); its canonical_alias points nowhere.
  if (plan.alias !== undefined && !aliasClaimed) throw new MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken");
  // Remote invites, each through the invitee's server. The room exists whatever they answer; a
  // refusal fails the request (createRoom: 403, M_INVITE_BLOCKED when the invitee's server
  // blocks invites; 400 M_UNSUPPORTED_ROOM_VERSION when it cannot take part in the version),
  // after every invitee has been tried.
  let refused: unknown;
  for (const inv of plan.remoteInvites) {
    try {
      await inviteRemoteUser(env, config, roomStub(env, config, roomId), roomId, plan.creator, inv.userId, inv.content);
    } catch (e) {
      refused ??= e;
    }
  }
  if (refused) throw refused;
  return roomId;
}

rooms.post("/createRoom", requireAuth, async (c) => {
  const body = await parseBody(c, createRoomSchema);
  if (body.room_alias_name !== undefined) {
    await checkAliasNotExclusive(c.env, c.var.config.serverName, aliasFromLocalpart(body.room_alias_name, c.var.config.serverName), c.var.auth.appservice);
  }
  const plan = await planRoom(c.env, c.var.config, c.var.auth.userId, body, { creatorProfile: c.var.auth.profile });
  const roomId = await executePlan(c.env, c.var.config, plan);
  return c.json({ room_id: roomId });
});

// ---------------------------------------------------------------------------------------------
// Room upgrades (spec: module "Room Upgrades", "Server behaviour").

const TRANSFERABLE = [
  "m.room.server_acl",
  "m.room.encryption",
  "m.room.name",
  "m.room.avatar",
  "m.room.topic",
  "m.room.guest_access",
  "m.room.history_visibility",
  "m.room.join_rules",
];

rooms.post("/rooms/:roomId/upgrade", requireAuth, async (c) => {
  const { userId } = c.var.auth;
  const config = c.var.config;
  const oldRoomId = c.req.param("roomId");
  const body = await parseBody(c, z.object({ new_version: z.string(), additional_creators: z.array(z.string()).optional() }));
  // The room first: an unknown room is 404 and a room the user is not in 403, whatever
  // new_version says; only then is the version checked.
  await knownRoom(c.env, oldRoomId);
  const old = roomStub(c.env, config, oldRoomId);
  if ((await old.getMembership(userId)) !== "join") throw forbidden("You are not joined to this room");
  const newRv = creatableVersion(body.new_version);
  // 1. Permission to send m.room.tombstone.
  if (!(await old.canSend(userId, "m.room.tombstone", true))) throw forbidden("You may not upgrade this room");

  const oldCreate = await old.getCurrentStateEvent("m.room.create", "");
  const copied: { type: string; state_key: string; content: JsonObject }[] = [];
  for (const t of TRANSFERABLE) {
    const ev = await old.getCurrentStateEvent(t, "");
    if (ev) copied.push({ type: t, state_key: "", content: ev.content as JsonObject });
  }
  const oldPl = await old.getCurrentStateEvent("m.room.power_levels", "");
  // 2. New room: predecessor, same `type`, the upgrader as creator.
  const creationContent: JsonObject = {};
  const oldType = (oldCreate?.content as JsonObject | undefined)?.type;
  if (oldType !== undefined) creationContent.type = oldType;
  if (body.additional_creators) creationContent.additional_creators = body.additional_creators;
  // Power levels: the old ones, with the upgrader able to act (v12 creators are implicit).
  let plOverride: JsonObject | undefined;
  if (oldPl) {
    plOverride = { ...(oldPl.content as JsonObject) };
    const users = { ...((plOverride.users as JsonObject | undefined) ?? {}) };
    if (!newRv.privilegedCreators) users[userId] = Math.max(100, Number(users[userId] ?? 0));
    plOverride.users = users;
  }
  const predecessor: JsonObject = { room_id: oldRoomId };
  if (!newRv.roomIdFromCreate) predecessor.event_id = ((await old.getCurrentStateEvent("m.room.create", ""))?.event_id as string) ?? "";
  const plan = await planRoom(
    c.env,
    config,
    userId,
    { room_version: newRv.id, creation_content: creationContent, power_level_content_override: plOverride, preset: "private_chat" },
    { predecessor, copiedState: copied },
  );
  const newRoomId = await executePlan(c.env, config, plan);

  // 4. Move local aliases. 5. Tombstone. 6. Restrict the old room.
  for (const alias of await listAliases(c.env, oldRoomId)) {
    await deleteAlias(c.env, alias);
    await createAlias(c.env, alias, newRoomId, userId).catch(() => undefined);
  }
  unwrap(
    await old.createLocalEvent({
      type: "m.room.tombstone",
      state_key: "",
      sender: userId,
      content: { body: "This room has been replaced", replacement_room: newRoomId },
    }),
  );
  if (oldPl) {
    const content = { ...(oldPl.content as JsonObject) };
    const usersDefault = typeof content.users_default === "number" ? content.users_default : 0;
    const restricted = Math.max(50, usersDefault + 1);
    content.events_default = restricted;
    content.invite = restricted;
    const r = await old.createLocalEvent({ type: "m.room.power_levels", state_key: "", sender: userId, content });
    if (!r.ok) console.warn(`could not restrict old room ${oldRoomId}: ${r.error}`);
  }
  return c.json({ replacement_room: newRoomId });
});
