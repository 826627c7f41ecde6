// Presence of people a user newly shares a room with (module "Presence": presence "is sent to
// interested parties where users share a room membership"). Presence is otherwise pushed only
// when it changes, so someone who was online before two users shared a room read as offline
// to the other until their next change. When a local user joins a room, fan-out on write: the
// joiner's presence goes to the hubs of the room's local members, and theirs to the joiner's
// hub — whose /sync then carries it (the next incremental sync; every initial sync, which sends
// all of the hub's presence). Remote members' presence comes from their servers
// (sendPresenceOnJoin in federation/edus.ts).
import type { Env } from "../env";
import type { Config } from "../config";
import { localJoinedMembers } from "./federation/peers";
import { userStub } from "./notifier";

/** Local room-mates whose presence is exchanged per join at most (a join into a huge room is
 *  not held up by thousands of hubs; their presence still arrives with its next change). */
const MAX_MEMBERS = 200;
const CONCURRENCY = 16;

export async function sharePresenceOnJoin(env: Env, config: Config, roomId: string, joiner: string): Promise<void> {
  if (env.PRESENCE === "off") return;
  const members = (await localJoinedMembers(env, [roomId])).filter((u) => u !== joiner).slice(0, MAX_MEMBERS);
  if (members.length === 0) return;
  const hub = userStub(env, joiner, config);
  const mine = await hub.getPresence(joiner);
  await eachLimit(members, CONCURRENCY, async (m) => {
    const other = userStub(env, m, config);
    if (mine) await other.presenceOf(m, { userId: joiner, ...mine });
    const theirs = await other.getPresence(m);
    if (theirs) await hub.presenceOf(joiner, { userId: m, ...theirs });
  });
}

async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      await fn(item).catch((e) => console.error("presence on join", e));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
