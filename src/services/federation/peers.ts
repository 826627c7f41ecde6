// Who shares rooms with whom, across servers: the destinations of outbound EDUs (typing,
// receipts, presence, device-list updates) and the local recipients of inbound ones.
//
// The D1 membership mirror (room_memberships) holds local users only; remote members are known
// to each room's RoomDO. So "servers in a room" asks the RoomDO, and "local users sharing a room
// with a remote user" takes the rooms that have local members and asks those RoomDOs whether
// the remote user is in them (bounded; in parallel).
import type { Env } from "../../env";
import type { Config } from "../../config";
import { roomStub } from "../../rpc/stubs";
import { joinedRoomsUpTo, localJoinedMembers as localJoinedMembersInMirror, roomsWithLocalJoins } from "../../db/memberships";

/** At most this many rooms are asked about one remote user. */
const MAX_ROOMS_SCANNED = 2000;
/** RoomDO calls in flight at once. */
const CONCURRENCY = 32;

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Other servers with a joined member in `roomId` (where room-scoped EDUs go); while the room's
 *  state is partial, also the servers that were in it at our join (RoomDO.getRemoteServers). */
export async function remoteServersInRoom(env: Env, config: Config, roomId: string): Promise<string[]> {
  return (await roomStub(env, config, roomId).getRemoteServers()).filter((s) => s !== config.serverName);
}

/** Other servers sharing at least one room with local user `userId` (where presence and
 *  device-list EDUs about them go). */
export async function remoteServersSharingRoomWith(env: Env, config: Config, userId: string): Promise<string[]> {
  const rooms = await joinedRoomsUpTo(env.DB, userId, MAX_ROOMS_SCANNED);
  const perRoom = await mapLimit(rooms, CONCURRENCY, (roomId) => remoteServersInRoom(env, config, roomId).catch(() => [] as string[]));
  return [...new Set(perRoom.flat())].sort();
}

/** Rooms (among those with local joined members, or only `amongRoomsOf`'s rooms) in which the
 *  remote user `remoteUserId` is joined or invited. */
export async function roomsSharedWithRemote(env: Env, config: Config, remoteUserId: string, amongRoomsOf?: string): Promise<string[]> {
  const rooms = amongRoomsOf ? await joinedRoomsUpTo(env.DB, amongRoomsOf, MAX_ROOMS_SCANNED) : await roomsWithLocalJoins(env.DB, MAX_ROOMS_SCANNED);
  const hits = await mapLimit(rooms, CONCURRENCY, async (roomId) => {
    const m = await roomStub(env, config, roomId)
      .getMembership(remoteUserId)
      .catch(() => null);
    return m === "join" || m === "invite" ? roomId : null;
  });
  return hits.filter((r): r is string => r !== null);
}

/** Local users joined to a room with the remote user `remoteUserId` (who must hear of their
 *  device-list changes and presence). */
export async function localUsersSharingRoomWithRemote(env: Env, config: Config, remoteUserId: string): Promise<string[]> {
  const rooms = await roomsSharedWithRemote(env, config, remoteUserId);
  return localJoinedMembers(env, rooms);
}

/** Local users joined to any of `roomIds` (D1 mirror). */
export async function localJoinedMembers(env: Env, roomIds: string[]): Promise<string[]> {
  return localJoinedMembersInMirror(env.DB, roomIds);
}
