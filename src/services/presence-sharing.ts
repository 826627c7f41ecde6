// Presence of people the syncing user newly shares a room with (module "Presence": presence "is
// sent to interested parties where users share a room membership"). Presence is otherwise only
// pushed when it changes, so someone who was online before we shared a room would read as
// offline until their next change. /sync therefore adds the current presence of every user who
// joined a room with the syncing user in this batch — the members of a room new to the client
// (all of them on an initial sync), and the users whose join the batch carries — unless the
// batch already has theirs.
import type { Env } from "../env";
import type { Config } from "../config";
import type { JsonObject } from "../core/types";
import type { SyncDelta } from "../../durable-objects/user";
import { presenceEvent } from "../../durable-objects/user";
import { roomStub } from "./rooms";
import { userStub } from "./notifier";

/** Users looked up per sync at most (an initial sync of many large rooms is capped here). */
const MAX_USERS = 500;
const CONCURRENCY = 16;

/** m.presence events for the users newly sharing a room with `userId` in this sync response
 *  (`body.rooms.join` as built from `delta`), leaving out those `body.presence` already has. */
export async function newlySharedPresence(env: Env, config: Config, userId: string, delta: SyncDelta, body: JsonObject): Promise<JsonObject[]> {
  const join = ((body.rooms as JsonObject).join ?? {}) as Record<string, JsonObject>;
  const have = new Set(((body.presence as { events: JsonObject[] }).events ?? []).map((e) => e.sender as string));
  const users = new Set<string>();
  const newRooms: string[] = [];
  for (const r of delta.rooms) {
    const room = join[r.roomId];
    if (!room) continue;
    if (r.since === null) {
      newRooms.push(r.roomId);
      continue;
    }
    for (const k of ["timeline", "state", "state_after"]) {
      for (const e of ((room[k] as { events?: JsonObject[] } | undefined)?.events ?? []) as JsonObject[]) {
        if (e.type === "m.room.member" && typeof e.state_key === "string" && (e.content as JsonObject | undefined)?.membership === "join") users.add(e.state_key);
      }
    }
  }
  await eachLimit(newRooms, CONCURRENCY, async (roomId) => {
    for (const u of await roomStub(env, config, roomId).getJoinedUserIds()) users.add(u);
  });
  users.delete(userId);
  for (const u of have) users.delete(u);
  const wanted = [...users].slice(0, MAX_USERS);
  if (wanted.length === 0) return [];

  // Local users: their own hub. Remote users: what their servers sent, kept in my hub.
  const suffix = `:${config.serverName}`;
  const local = wanted.filter((u) => u.endsWith(suffix));
  const remote = wanted.filter((u) => !u.endsWith(suffix));
  const out: JsonObject[] = [];
  const add = (u: string, p: { presence: string; statusMsg: string | null; lastActiveTs: number } | null) => {
    if (p) out.push(presenceEvent(u, p.presence, p.statusMsg, p.lastActiveTs));
  };
  const mine = userStub(env, userId, config);
  await Promise.all([
    eachLimit(local, CONCURRENCY, async (u) => add(u, await userStub(env, u, config).getPresence(u))),
    eachLimit(remote, CONCURRENCY, async (u) => add(u, await mine.getPresence(u))),
  ]);
  return out;
}

async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      await fn(item).catch((e) => console.error("presence of a newly shared user", e));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
