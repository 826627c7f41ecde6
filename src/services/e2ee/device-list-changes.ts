// Announcing a local user's device-list change (spec: "Tracking the device list for a user"):
// append it to the stream, tell other servers sharing a room (m.device_list_update /
// m.signing_key_update), and wake the sync hubs of local users sharing a room. The storage
// modules (device-keys.ts, cross-signing.ts) do not call this themselves; their callers do,
// which keeps services/federation/device-lists.ts (which reads keys) free of an import cycle.
import type { Env } from "../../env";
import type { Config } from "../../config";
import { db } from "../../db";
import { userStub } from "../../rpc/stubs";
import { publishDeviceListChange, type DeviceListChange } from "../federation/device-lists";
import { appendDeviceListChange, usersSharingRoomWith } from "./device-list-stream";
import { pushDeviceListChanged } from "../appservice-e2ee";

/** Record that `userId`'s device list changed; returns the new device-list stream position.
 *  The sync hubs (UserDO) of every local user sharing a room with `userId`, and of `userId`
 *  themself, are told, so their next /sync carries `device_lists.changed`. Hub failures are
 *  logged: the change is durable in D1 and /keys/changes still reports it. With `federate`,
 *  servers sharing a room are told too. */
export async function markDeviceListChanged(env: Env, config: Config, userId: string, federate?: DeviceListChange): Promise<number> {
  const id = await appendDeviceListChange(db(env), userId);
  if (federate) await publishDeviceListChange(env, config, userId, id, federate);
  const users = await usersSharingRoomWith(env, userId);
  const results = await Promise.allSettled(users.map((u) => userStub(env, u, config).deviceListChanged(u, userId)));
  for (const [i, r] of results.entries()) if (r.status === "rejected") console.error(`device-list fan-out to ${users[i]} failed`, r.reason);
  await pushDeviceListChanged(env, config.serverName, userId, users).catch((e) => console.error("device-list push to appservices failed", e));
  return id;
}
