// Room administration behind the admin API: summaries in Synapse's shape, blocking, and deletion
// (evict every local member through the room's normal write door, optionally move them to a new
// room, then remove the room from the D1 registry, directory, aliases and membership mirror and
// purge the RoomDO's storage).
import type { Env } from "../env";
import type { Config } from "../config";
import type { JsonObject } from "../core/types";
import { planRoom, executePlan } from "../api/client/rooms";
import { roomStub, isLocalUser } from "./rooms";

export interface RoomSummaryRow {
  room_id: string;
  name: string | null;
  canonical_alias: string | null;
  joined_members: number;
  joined_local_members: number;
  version: string;
  creator: string;
  encryption: string | null;
  federatable: boolean;
  public: boolean;
  join_rules: string | null;
  guest_access: string | null;
  history_visibility: string | null;
  state_events: number;
  room_type: string | null;
}

const str = (v: unknown): string | null => (typeof v === "string" ? v : null);

/** Synapse's room list entry, from the room's current state (one RoomDO call) and D1. */
export async function roomSummary(env: Env, config: Config, row: { room_id: string; room_version: string; creator: string }): Promise<RoomSummaryRow & { topic: string | null; avatar: string | null }> {
  const state = (await roomStub(env, config, row.room_id).getCurrentState()) as JsonObject[];
  const content = (type: string): JsonObject | undefined => state.find((e) => e.type === type && e.state_key === "")?.content as JsonObject | undefined;
  const joined = state.filter((e) => e.type === "m.room.member" && (e.content as JsonObject)?.membership === "join").map((e) => e.state_key as string);
  const dir = await env.DB.prepare("SELECT visibility FROM room_directory WHERE room_id = ?").bind(row.room_id).first<{ visibility: string }>();
  const create = content("m.room.create");
  return {
    room_id: row.room_id,
    name: str(content("m.room.name")?.name),
    canonical_alias: str(content("m.room.canonical_alias")?.alias),
    joined_members: joined.length,
    joined_local_members: joined.filter((u) => isLocalUser(config, u)).length,
    version: row.room_version,
    creator: row.creator,
    encryption: str(content("m.room.encryption")?.algorithm),
    federatable: create?.["m.federate"] !== false,
    public: dir?.visibility === "public",
    join_rules: str(content("m.room.join_rules")?.join_rule),
    guest_access: str(content("m.room.guest_access")?.guest_access),
    history_visibility: str(content("m.room.history_visibility")?.history_visibility),
    state_events: state.length,
    room_type: str(create?.type),
    topic: str(content("m.room.topic")?.topic),
    avatar: str(content("m.room.avatar")?.url),
  };
}

export async function isRoomBlocked(env: Env, roomId: string): Promise<boolean> {
  return !!(await env.DB.prepare("SELECT 1 FROM blocked_rooms WHERE room_id = ?").bind(roomId).first());
}

export interface DeleteRoomOptions {
  requester: string;
  newRoomUserId?: string;
  roomName?: string;
  message?: string;
  block: boolean;
  purge: boolean;
}

export interface ShutdownResult {
  kicked_users: string[];
  failed_to_kick_users: string[];
  local_aliases: string[];
  new_room_id: string | null;
}

async function send(env: Env, config: Config, roomId: string, spec: { type: string; state_key?: string; sender: string; content: JsonObject }): Promise<boolean> {
  const r = await roomStub(env, config, roomId).createLocalEvent(spec).catch(() => ({ ok: false as const }));
  return r.ok;
}

/** Shut a room down (Synapse's delete room v1/v2 semantics). */
export async function shutdownRoom(env: Env, config: Config, roomId: string, opts: DeleteRoomOptions): Promise<ShutdownResult> {
  if (opts.block) {
    await env.DB.prepare("INSERT INTO blocked_rooms (room_id, user_id, created_ts) VALUES (?, ?, ?) ON CONFLICT DO NOTHING").bind(roomId, opts.requester, Date.now()).run();
  }
  const known = await env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(roomId).first();
  const result: ShutdownResult = { kicked_users: [], failed_to_kick_users: [], local_aliases: [], new_room_id: null };
  if (known) {
    if (opts.newRoomUserId) {
      // A public room the evicted users are moved into, where only its creator may speak.
      const plan = await planRoom(env, config, opts.newRoomUserId, {
        preset: "public_chat",
        name: opts.roomName ?? "Content Violation Notification",
        power_level_content_override: { users_default: -10 },
      });
      result.new_room_id = await executePlan(env, config, plan);
      const message = opts.message ?? "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";
      await send(env, config, result.new_room_id, { type: "m.room.message", sender: opts.newRoomUserId, content: { msgtype: "m.text", body: message } });
    }
    const { results } = await env.DB.prepare("SELECT user_id, membership FROM room_memberships WHERE room_id = ? AND membership IN ('join', 'invite', 'knock') ORDER BY user_id")
      .bind(roomId)
      .all<{ user_id: string; membership: string }>();
    for (const { user_id, membership } of results) {
      // Each member leaves (or rejects the invite / withdraws the knock) themselves.
      const ok = await send(env, config, roomId, { type: "m.room.member", state_key: user_id, sender: user_id, content: { membership: "leave" } });
      if (membership !== "join") continue;
      (ok ? result.kicked_users : result.failed_to_kick_users).push(user_id);
      if (ok && result.new_room_id && user_id !== opts.newRoomUserId) {
        await send(env, config, result.new_room_id, { type: "m.room.member", state_key: user_id, sender: user_id, content: { membership: "join" } });
      }
    }
  }
  const aliases = await env.DB.prepare("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias").bind(roomId).all<{ alias: string }>();
  result.local_aliases = aliases.results.map((a) => a.alias);
  await env.DB.batch([
    env.DB.prepare("DELETE FROM room_aliases WHERE room_id = ?").bind(roomId),
    env.DB.prepare("DELETE FROM room_directory WHERE room_id = ?").bind(roomId),
  ]);
  if (opts.purge && known) {
    await roomStub(env, config, roomId).purge();
    await env.DB.batch([
      env.DB.prepare("DELETE FROM room_memberships WHERE room_id = ?").bind(roomId),
      env.DB.prepare("DELETE FROM rooms WHERE room_id = ?").bind(roomId),
    ]);
  }
  return result;
}
