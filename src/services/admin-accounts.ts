// Operations on whole accounts: deactivation with or without erasure (for the client API, the
// account page and the admin API), leaving every room, logging in as a user.
import type { Env } from "../env";
import type { Config } from "../config";
import { db } from "../db";
import { deleteAllDevices } from "./sessions";
import { deleteMedia } from "./media";
import { deleteAllPushers } from "./pushers";
import { propagateProfile, roomStub } from "./rooms";
import { refreshLocalUser } from "./user-directory";
import { roomsEverJoined } from "../db/memberships";
import { userStub } from "../rpc/stubs";

/** Every room where the user is joined, invited or knocking: they leave through the room's normal
 *  write door (their own leave event, as Synapse parts deactivated users). Returns the rooms the
 *  leave failed in (e.g. a room that only exists remotely). */
export async function leaveAllRooms(env: Env, config: Config, userId: string): Promise<{ left: string[]; failed: string[] }> {
  const { results } = await env.DB.prepare("SELECT room_id FROM room_memberships WHERE user_id = ? AND membership IN ('join', 'invite', 'knock')")
    .bind(userId)
    .all<{ room_id: string }>();
  const left: string[] = [];
  const failed: string[] = [];
  for (const { room_id } of results) {
    const r = await roomStub(env, config, room_id)
      .createLocalEvent({ type: "m.room.member", state_key: userId, sender: userId, content: { membership: "leave" } })
      .catch((e: unknown) => ({ ok: false as const, error: String(e) }));
    (r.ok ? left : failed).push(room_id);
  }
  return { left, failed };
}

/** Deactivate (spec: the user ID stays reserved forever; the password and every session go), for
 *  POST /account/deactivate, the account page and the admin API alike. The user leaves every room
 *  and declines every invite (as Synapse parts deactivated users) and leaves the user directory;
 *  every pusher, the key backup, and in the hub the account data, push rules and thread
 *  subscriptions go too (as Synapse; docs/conformance.md "Deactivation").
 *  `erase` also removes the profile (propagated into the rooms first, so member events no longer
 *  carry the name and avatar) and has every room the user was ever in serve their events redacted
 *  to whoever was not joined when they were sent (RoomDO.eraseSender). The admin API's erase
 *  (`byAdmin`) also deletes every piece of media the user uploaded; the user's own request keeps
 *  it, since those who saw the events before still see them unredacted (spec, `erase`). */
export async function deactivateAccount(env: Env, config: Config, userId: string, erase: boolean, byAdmin = false): Promise<void> {
  if (erase) {
    // The whole profile goes: displayname, avatar and the extended fields (m.tz, custom keys).
    await env.DB.batch([
      env.DB.prepare("UPDATE users SET displayname = NULL, avatar_url = NULL WHERE user_id = ?").bind(userId),
      env.DB.prepare("DELETE FROM profile_fields WHERE user_id = ?").bind(userId),
    ]);
    await propagateProfile(env, config, userId);
    if (byAdmin) {
      const { results } = await env.DB.prepare("SELECT server_name, media_id FROM media WHERE uploader = ?").bind(userId).all<{ server_name: string; media_id: string }>();
      for (const m of results) await deleteMedia(env, m.server_name, m.media_id);
    }
    const rooms = await roomsEverJoined(env.DB, userId);
    for (let i = 0; i < rooms.length; i += 20) {
      await Promise.all(rooms.slice(i, i + 20).map((roomId) => roomStub(env, config, roomId).eraseSender(userId)));
    }
  }
  await env.DB.prepare(`UPDATE users SET deactivated = 1, password_hash = NULL${erase ? ", erased = 1" : ""} WHERE user_id = ?`).bind(userId).run();
  await deleteAllDevices(db(env), userId, undefined, env, config);
  await deleteAllPushers(env, config, userId);
  await env.DB.batch([
    env.DB.prepare("DELETE FROM openid_tokens WHERE user_id = ?").bind(userId),
    // Sign-ins and approvals not tied to a device: OAuth page sessions, pending codes and device
    // grants, unused m.login.token tokens, a cross-signing reset approval. Refused while the
    // account is deactivated anyway, they must not come back if an admin re-activates it.
    ...["oauth_browser_sessions", "oauth_grants", "oauth_device_grants", "login_tokens", "oauth_cross_signing_resets"].map((t) =>
      env.DB.prepare(`DELETE FROM ${t} WHERE user_id = ?`).bind(userId),
    ),
    // The server-side key backup goes, as Synapse deletes it; its versions are marked deleted
    // like DELETE /room_keys/version does, so their numbers are never reused.
    env.DB.prepare("DELETE FROM key_backup_keys WHERE user_id = ?").bind(userId),
    env.DB.prepare("UPDATE key_backup_versions SET deleted = 1 WHERE user_id = ?").bind(userId),
  ]);
  await leaveAllRooms(env, config, userId);
  await refreshLocalUser(env, userId);
  // (The account is deactivated by now: a failing hub is logged, not answered with a 500.)
  await userStub(env, userId, config)
    .accountDeactivated(userId)
    .catch((e: unknown) => console.error(`hub accountDeactivated for ${userId} failed`, e));
}
