// Room membership (spec: Client-Server API "Room membership": joining, knocking, invites,
// leaving, forgetting, kicking, banning; GET /joined_rooms).
//
// Whether a change is allowed is decided once, by the room's auth rules inside the RoomDO; the
// handlers only add the checks the spec puts on the endpoint itself (e.g. kick needs a member).
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, invalidParam } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import type { JsonObject } from "../../core/types";
import { isValidUserId } from "../../core/ids";
import { domainOf, isValidRoomAlias } from "../../core/ids";
import { knownRoom, localProfile, roomStub, roomsOfUser, unwrap, isLocalUser } from "../../services/rooms";
import { resolveAnyAlias } from "../../services/aliases";
import { userStub } from "../../services/notifier";
import { inviteRemoteUser, joinRemoteRoom, knockRemoteRoom, leaveRemoteRoom, rejectInviteLocally } from "../../services/federation/membership";
import { sendPresenceOnJoin } from "../../services/federation/edus";
import { awaitFullState } from "../../services/federation/partial-state";
import { sharePresenceOnJoin } from "../../services/presence-sharing";
import { isJoinedMirror, markForgotten, mirroredMembership } from "../../db/memberships";
import { isRoomBlocked } from "../../services/admin-rooms";
import { senderOverrides } from "../middleware/rate-limit";

export const membership = new Hono<AppEnv>();

const reasonSchema = z.object({ reason: z.string().max(4096).optional() }).loose();
const targetSchema = z.object({ user_id: z.string(), reason: z.string().max(4096).optional() }).loose();

async function roomFor(c: Context<AppEnv>, roomId: string) {
  await knownRoom(c.env, roomId);
  return roomStub(c.env, c.var.config, roomId);
}

/** Send a membership event for `target` as the caller. Auth rules refuse with M_FORBIDDEN. */
async function sendMembership(c: Context<AppEnv>, roomId: string, target: string, content: JsonObject): Promise<string> {
  const stub = await roomFor(c, roomId);
  // A room whose members are still being fetched (partial-state join) does not know the
  // target's membership yet, nor every server the change must reach: wait for them (bounded).
  await awaitFullState(c.env, c.var.config, roomId);
  const r = await stub.createLocalEvent({ type: "m.room.member", state_key: target, sender: c.var.auth.userId, content });
  return unwrap(r).eventId;
}

function withReason(content: JsonObject, reason: string | undefined): JsonObject {
  if (reason !== undefined) content.reason = reason;
  return content;
}

/** Whether this server holds the room (created here or joined over federation). Rooms known
 *  only through an invite or knock are "partial" and not in the D1 registry. */
async function roomHere(c: Context<AppEnv>, roomId: string): Promise<boolean> {
  return !!(await c.env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first());
}

/** `!room:id` or `#alias:server` (local or remote alias) → room ID and servers to join via. */
async function resolveTarget(c: Context<AppEnv>, idOrAlias: string): Promise<{ roomId: string; servers: string[] }> {
  if (idOrAlias.startsWith("#")) {
    if (!isValidRoomAlias(idOrAlias)) throw invalidParam("Invalid room alias");
    const r = await resolveAnyAlias(c.env, c.var.config, idOrAlias);
    if (!r) throw new MatrixError(404, "M_NOT_FOUND", "Room alias not found");
    return { roomId: r.room_id, servers: r.servers };
  }
  if (!idOrAlias.startsWith("!")) throw invalidParam("Expected a room ID or alias");
  return { roomId: idOrAlias, servers: [] };
}

/** Servers named by `via` (and the deprecated `server_name`) query parameters. */
function viaParams(c: Context<AppEnv>): string[] {
  return [...(c.req.queries("via") ?? []), ...(c.req.queries("server_name") ?? [])];
}

/** The inviter's (or knock target's) server of a partial room, to reach it through. */
async function partialServers(c: Context<AppEnv>, roomId: string, userId: string): Promise<string[]> {
  const info = await roomStub(c.env, c.var.config, roomId).getPartialInfo();
  const m = info.members[userId];
  return m ? [domainOf(m.sender)] : [];
}

/** Join a room. Rooms this server is not in are joined over federation (make_join/send_join
 *  via the given servers, the inviter's server, the room ID's server). Restricted rooms (v8+):
 *  a local member able to invite vouches with join_authorised_via_users_server when the user is
 *  joined to one of the rooms the join rule allows. */
async function join(c: Context<AppEnv>, roomId: string, reason: string | undefined, servers: string[] = []): Promise<void> {
  const userId = c.var.auth.userId;
  if (await isRoomBlocked(c.env, roomId)) throw forbidden("This room has been blocked on this server");
  const here = await roomHere(c, roomId);
  const stub = roomStub(c.env, c.var.config, roomId);
  if (c.var.auth.isGuest) await checkGuestMayJoin(stub, here);
  // A room this server left (no local member joined) is rejoined through a server still in it:
  // our copy stopped at the leave, so a join built on it would cite stale events.
  const residency = here ? await stub.getResidency() : undefined;
  if (!here || (residency!.localJoined === 0 && residency!.servers.length > 0)) {
    const content = withReason({ ...(await localProfile(c.env, userId)) }, reason);
    // A client's join may be partial-state (PARTIAL_STATE_JOINS): answered before the room's
    // members are here; the RoomDO's alarm fetches them (durable-objects/room/partial-sync.ts).
    await joinRemoteRoom(c.env, c.var.config, userId, roomId, [...servers, ...(await partialServers(c, roomId, userId)), ...(residency?.servers ?? [])], content, true);
    return;
  }
  const rv = await knownRoom(c.env, roomId);
  // Another local user's partial-state join is still fetching the members (see sendMembership).
  await awaitFullState(c.env, c.var.config, roomId);
  const current = await stub.getMembership(userId);
  if (current === "join") return; // already joined: nothing to change
  const content: JsonObject = withReason({ membership: "join", ...(await localProfile(c.env, userId)) }, reason);
  // Marks the join as a guest's for other servers, which cannot know (as Synapse does).
  if (c.var.auth.isGuest) content.kind = "guest";

  if (rv.restrictedJoins && current !== "invite") {
    const rules = (await stub.getCurrentStateEvent("m.room.join_rules", ""))?.content as JsonObject | undefined;
    const rule = rules?.join_rule;
    if (rule === "restricted" || rule === "knock_restricted") {
      const allow = Array.isArray(rules?.allow) ? (rules!.allow as JsonObject[]) : [];
      let allowed = false;
      for (const a of allow) {
        if (a?.type !== "m.room_membership" || typeof a.room_id !== "string") continue;
        if (await isJoinedMirror(c.env.DB, a.room_id, userId)) {
          allowed = true;
          break;
        }
      }
      if (!allowed) throw forbidden("You are not allowed to join this room");
      let via: string | undefined;
      for (const m of await stub.getJoinedUserIds()) {
        if (!isLocalUser(c.var.config, m)) continue;
        const p = await stub.getPowerInfo(m);
        if (p.level >= p.invite) {
          via = m;
          break;
        }
      }
      if (!via) throw forbidden("No local member can authorise this join");
      content.join_authorised_via_users_server = via;
    }
  }
  unwrap(await stub.createLocalEvent({ type: "m.room.member", state_key: userId, sender: userId, content }));
}

/** After a join: the joiner's presence to the room's other servers (sendPresenceOnJoin) and
 *  between the joiner and the room's local members (sharePresenceOnJoin). */
function shareJoinerPresence(c: Context<AppEnv>, roomId: string): void {
  const userId = c.var.auth.userId;
  c.executionCtx.waitUntil(sendPresenceOnJoin(c.env, c.var.config, roomId, { localUser: userId }).catch((e) => console.error("presence on join", e)));
  c.executionCtx.waitUntil(sharePresenceOnJoin(c.env, c.var.config, roomId, userId).catch((e) => console.error("presence on join", e)));
}

/** "Servers MUST only allow guest users to join rooms if the m.room.guest_access state event is
 *  present on the room, and has the guest_access value can_join" (module "Guest Access"). A room
 *  this server does not hold has no state to check: guests cannot join it. */
async function checkGuestMayJoin(stub: ReturnType<typeof roomStub>, here: boolean): Promise<void> {
  const ev = here ? await stub.getCurrentStateEvent("m.room.guest_access", "") : null;
  if ((ev?.content as JsonObject | undefined)?.guest_access !== "can_join") {
    throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests may not join this room");
  }
}

membership.post("/join/:roomIdOrAlias", requireAuth, async (c) => {
  const body = await parseBody(c, reasonSchema);
  const { roomId, servers } = await resolveTarget(c, c.req.param("roomIdOrAlias"));
  await join(c, roomId, body.reason, [...viaParams(c), ...servers]);
  shareJoinerPresence(c, roomId);
  return c.json({ room_id: roomId });
});

membership.post("/rooms/:roomId/join", requireAuth, async (c) => {
  const body = await parseBody(c, reasonSchema);
  const roomId = c.req.param("roomId");
  await join(c, roomId, body.reason, viaParams(c));
  shareJoinerPresence(c, roomId);
  return c.json({ room_id: roomId });
});

membership.post("/knock/:roomIdOrAlias", requireAuth, async (c) => {
  const body = await parseBody(c, reasonSchema);
  const { roomId, servers } = await resolveTarget(c, c.req.param("roomIdOrAlias"));
  const userId = c.var.auth.userId;
  if (!(await roomHere(c, roomId))) {
    const content = withReason({ ...(await localProfile(c.env, userId)) }, body.reason);
    await knockRemoteRoom(c.env, c.var.config, userId, roomId, [...viaParams(c), ...servers], content);
    return c.json({ room_id: roomId });
  }
  const stub = await roomFor(c, roomId);
  const current = await stub.getMembership(userId);
  if (current === "join") throw forbidden("You are already joined to this room");
  const content = withReason({ membership: "knock", ...(await localProfile(c.env, userId)) }, body.reason);
  unwrap(await stub.createLocalEvent({ type: "m.room.member", state_key: userId, sender: userId, content }));
  return c.json({ room_id: roomId });
});

membership.post("/rooms/:roomId/invite", requireAuth, async (c) => {
  const body = await parseBody(c, targetSchema);
  if (!isValidUserId(body.user_id, { historical: true })) throw invalidParam("Invalid user_id");
  const roomId = c.req.param("roomId");
  const stub = await roomFor(c, roomId);
  const current = await stub.getMembership(body.user_id);
  if (current === "join") throw forbidden(`${body.user_id} is already in the room`);
  if (current === "ban") throw forbidden(`${body.user_id} is banned from the room`);
  // Shadow-banned (admin API): the invite is dropped, the inviter sees success.
  if ((await senderOverrides(c, c.var.auth.userId)).shadowBanned) return c.json({});
  const content: JsonObject = { membership: "invite" };
  if (!isLocalUser(c.var.config, body.user_id)) {
    // The invitee's server co-signs first (Server-Server API "Inviting to a room").
    await inviteRemoteUser(c.env, c.var.config, stub, roomId, c.var.auth.userId, body.user_id, withReason(content, body.reason));
    return c.json({});
  }
  Object.assign(content, await localProfile(c.env, body.user_id));
  await sendMembership(c, roomId, body.user_id, withReason(content, body.reason));
  return c.json({});
});

membership.post("/rooms/:roomId/leave", requireAuth, async (c) => {
  const body = await parseBody(c, reasonSchema);
  const roomId = c.req.param("roomId");
  if (!(await roomHere(c, roomId))) {
    // Rejecting an invite (or retracting a knock) in a room we are not in: through the
    // inviting server (Server-Server API "Leaving Rooms (Rejecting Invites)").
    const servers = await partialServers(c, roomId, c.var.auth.userId);
    if (servers.length === 0) throw forbidden("You are not in this room");
    const content = withReason({}, body.reason);
    try {
      await leaveRemoteRoom(c.env, c.var.config, c.var.auth.userId, roomId, servers, content);
    } catch (e) {
      // An invite is rejected here when the room's servers do not take the rejection; a knock
      // stays until they do.
      const mine = (await roomStub(c.env, c.var.config, roomId).getPartialInfo()).members[c.var.auth.userId];
      if (mine?.membership !== "invite") throw e;
      console.warn(`rejecting the invite to ${roomId} through ${servers.join(", ")} failed (${(e as Error).message}): rejected locally`);
      await rejectInviteLocally(c.env, c.var.config, c.var.auth.userId, roomId, content);
    }
    return c.json({});
  }
  const stub = await roomFor(c, roomId);
  const current = await stub.getMembership(c.var.auth.userId);
  if (current === null || current === "leave" || current === "ban") throw forbidden("You are not in this room");
  await sendMembership(c, roomId, c.var.auth.userId, withReason({ membership: "leave" }, body.reason));
  return c.json({});
});

membership.post("/rooms/:roomId/forget", requireAuth, async (c) => {
  const roomId = c.req.param("roomId");
  const userId = c.var.auth.userId;
  const mirrored = await mirroredMembership(c.env.DB, roomId, userId);
  if (mirrored === null) {
    await knownRoom(c.env, roomId);
    return c.json({});
  }
  // Spec: 400 M_UNKNOWN "The user has not left the room".
  if (mirrored === "join" || mirrored === "invite" || mirrored === "knock") {
    throw new MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it");
  }
  // The RoomDO (the authority on membership) refuses too if the user is still in the room, and
  // from now on serves them no history; the hub drops the room from their syncs; D1 keeps the
  // flag for a hub that is rebuilt (bootstrap skips forgotten rooms).
  unwrap(await roomStub(c.env, c.var.config, roomId).forget(userId));
  await userStub(c.env, userId, c.var.config).forgetRoom(userId, roomId);
  await markForgotten(c.env.DB, roomId, userId);
  return c.json({});
});

membership.post("/rooms/:roomId/kick", requireAuth, async (c) => {
  const body = await parseBody(c, targetSchema);
  const roomId = c.req.param("roomId");
  const stub = await roomFor(c, roomId);
  const current = await stub.getMembership(body.user_id);
  if (current !== "join" && current !== "invite" && current !== "knock") throw forbidden(`${body.user_id} is not in the room`);
  await sendMembership(c, roomId, body.user_id, withReason({ membership: "leave" }, body.reason));
  return c.json({});
});

membership.post("/rooms/:roomId/ban", requireAuth, async (c) => {
  const body = await parseBody(c, targetSchema);
  if (!isValidUserId(body.user_id, { historical: true })) throw invalidParam("Invalid user_id");
  await sendMembership(c, c.req.param("roomId"), body.user_id, withReason({ membership: "ban" }, body.reason));
  return c.json({});
});

membership.post("/rooms/:roomId/unban", requireAuth, async (c) => {
  const body = await parseBody(c, targetSchema);
  const roomId = c.req.param("roomId");
  const stub = await roomFor(c, roomId);
  if ((await stub.getMembership(body.user_id)) !== "ban") throw forbidden(`${body.user_id} is not banned`);
  await sendMembership(c, roomId, body.user_id, withReason({ membership: "leave" }, body.reason));
  return c.json({});
});

membership.get("/joined_rooms", requireAuth, async (c) => {
  return c.json({ joined_rooms: await roomsOfUser(c.env, c.var.auth.userId, "join") });
});
