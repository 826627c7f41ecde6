// MSC3202 (encrypted appservices): for appservices whose registration says
// `org.matrix.msc3202: true`, the transaction body carries what /sync would tell each of their
// users about encryption:
//   org.matrix.msc3202.device_lists                     {changed: [...], left: [...]}
//   org.matrix.msc3202.device_one_time_keys_count       {user: {device: {algorithm: n}}}
//   org.matrix.msc3202.device_unused_fallback_key_types {user: {device: [algorithm]}}
// (Synapse's names; it also sends the older spelling `device_one_time_key_counts`, which
// matrix-bot-sdk before Synapse 1.73 read, so we do too.)
//
// Device-list changes and "left" are queued as items (kind "device_list") when they happen, so
// none is lost while the appservice is down; key counts are read when a transaction is built
// (kind "keys" items only name whose counts changed), so they are current, not historical.
import type { Env } from "../env";
import type { Appservice } from "../core/appservice-registration";
import { listAppservices } from "./appservices";
import { joinedUsersSharingRoomWith } from "../db/memberships";
import { parseConfig } from "../config";
import { localUsersSharingRoomWithRemote } from "./federation/peers";

/** The parts of a pushed event read here (AppserviceEvent in appservice-fanout.ts). */
interface PushedEvent {
  type: string;
  sender: string;
  state_key?: string;
  content: Record<string, unknown>;
}

function appserviceQueue(env: Env, id: string) {
  return env.APPSERVICE_SENDER.get(env.APPSERVICE_SENDER.idFromName(id));
}

/** The appservices with a URL that opted into MSC3202. */
export async function msc3202Services(env: Env, serverName: string): Promise<Appservice[]> {
  return (await listAppservices(env, serverName)).filter((s) => s.url && s.msc3202);
}

export interface DeviceListItem {
  user_id: string;
  left: boolean;
}

/** `userId`'s devices or cross-signing keys changed. `sharing`: the local users sharing a room
 *  with them (as the sync hubs are told). An appservice hears of it when the user or one of
 *  those is in its users namespace (MSC3202: "any user the appservice would be considered
 *  interested in"). */
export async function pushDeviceListChanged(env: Env, serverName: string, userId: string, sharing: readonly string[]): Promise<void> {
  const services = await msc3202Services(env, serverName);
  const interested = services.filter((s) => s.isInterestedInUser(userId) || sharing.some((u) => s.isInterestedInUser(u)));
  const body: DeviceListItem = { user_id: userId, left: false };
  await Promise.all(interested.map((s) => appserviceQueue(env, s.id).enqueue(s.id, serverName, [{ kind: "device_list", body }])));
}

/** The one-time or fallback keys of a device of `userId` changed (upload, claim): appservices
 *  whose namespace holds the user send the new counts (in a transaction of their own if nothing
 *  else is queued, so a bridge learns promptly that it should upload more keys). */
export async function pushKeyCountsChanged(env: Env, serverName: string, userId: string): Promise<void> {
  const services = (await msc3202Services(env, serverName)).filter((s) => s.isInterestedInUser(userId));
  await Promise.all(services.map((s) => appserviceQueue(env, s.id).enqueue(s.id, serverName, [{ kind: "keys", body: { user_id: userId } }])));
}

/** At most this many local members are checked when one of the appservice's users leaves a
 *  room; past it no `left` is sent (conservative: the appservice keeps tracking them). */
const MAX_LEFT_CHECKS = 100;

/** Device-list items a membership event means for `service` (the /sync rules of "Tracking the
 *  device list for a user", seen from all of the appservice's users at once): a user who joins
 *  a room with one of its users is `changed`; a user who no longer shares any room with one of
 *  its users is `left`. `members`: the room's joined members at the event. `localSharers(u)`:
 *  the local users still sharing a room with `u` after the event. */
export async function deviceListItemsForMembership(
  service: Appservice,
  ev: PushedEvent,
  members: readonly string[],
  localSharers: (userId: string) => Promise<string[]>,
): Promise<DeviceListItem[]> {
  if (ev.type !== "m.room.member" || ev.state_key === undefined) return [];
  const target = ev.state_key;
  const membership = ev.content.membership;
  const ours = service.isInterestedInUser(target);
  const others = members.filter((m) => m !== target);
  if (membership === "join") {
    // One of ours joined: everyone in the room is now shared with; else the newcomer is.
    if (ours) return others.map((u) => ({ user_id: u, left: false }));
    return others.some((m) => service.isInterestedInUser(m)) ? [{ user_id: target, left: false }] : [];
  }
  if (membership !== "leave" && membership !== "ban") return [];
  const stillShared = async (u: string) => (await localSharers(u).catch(() => [target])).some((x) => x !== u && service.isInterestedInUser(x));
  if (!ours) return (await stillShared(target)) ? [] : [{ user_id: target, left: true }];
  // One of ours left: of the other members, the local ones (D1, cheap) it no longer shares a
  // room with through any of its users. Remote members would each need a scan of the rooms
  // (peers.ts), so they are kept (conservative: no `left`), as are rooms past MAX_LEFT_CHECKS.
  const local = others.filter((u) => u.endsWith(`:${service.serverName}`) && !service.isInterestedInUser(u));
  if (local.length > MAX_LEFT_CHECKS) return [];
  const out: DeviceListItem[] = [];
  for (const u of local) if (!(await stillShared(u))) out.push({ user_id: u, left: true });
  return out;
}

/** Local users joined to a room where `userId` is joined or invited: from the D1 mirror for a
 *  local user, by asking the rooms with local members for a remote one. */
export function localSharers(env: Env, serverName: string): (userId: string) => Promise<string[]> {
  return (userId) =>
    userId.endsWith(`:${serverName}`) ? joinedUsersSharingRoomWith(env.DB, userId) : localUsersSharingRoomWithRemote(env, { ...parseConfig(env), serverName }, userId);
}

type Counts = Record<string, Record<string, Record<string, number>>>;
type Fallback = Record<string, Record<string, string[]>>;

/** One-time key counts and unused fallback key types of every device of `userIds`
 *  (`signed_curve25519` always present, as in /sync). */
export async function keyCountsFor(env: Env, userIds: string[]): Promise<{ counts: Counts; fallback: Fallback }> {
  const counts: Counts = {};
  const fallback: Fallback = {};
  for (let i = 0; i < userIds.length; i += 90) {
    const chunk = userIds.slice(i, i + 90);
    const marks = chunk.map(() => "?").join(",");
    const [devices, otks, fbs] = await env.DB.batch([
      env.DB.prepare(`SELECT user_id, device_id FROM devices WHERE user_id IN (${marks})`).bind(...chunk),
      env.DB.prepare(`SELECT user_id, device_id, algorithm, COUNT(*) AS n FROM one_time_keys WHERE user_id IN (${marks}) GROUP BY user_id, device_id, algorithm`).bind(...chunk),
      env.DB.prepare(`SELECT user_id, device_id, algorithm FROM fallback_keys WHERE used = 0 AND user_id IN (${marks}) ORDER BY algorithm`).bind(...chunk),
    ]);
    for (const d of devices.results as { user_id: string; device_id: string }[]) {
      (counts[d.user_id] ??= {})[d.device_id] = { signed_curve25519: 0 };
      (fallback[d.user_id] ??= {})[d.device_id] = [];
    }
    for (const r of otks.results as { user_id: string; device_id: string; algorithm: string; n: number }[]) {
      const perDevice = counts[r.user_id]?.[r.device_id];
      if (perDevice) perDevice[r.algorithm] = r.n;
    }
    for (const r of fbs.results as { user_id: string; device_id: string; algorithm: string }[]) fallback[r.user_id]?.[r.device_id]?.push(r.algorithm);
  }
  return { counts, fallback };
}

/** The MSC3202 fields of a transaction: device-list items folded (a user's last item decides
 *  between changed and left) and the key counts of the appservice's users it concerns (its
 *  sender, users named by "keys" items, to-device recipients, and its users among the events'
 *  senders and member targets). Fields with nothing to say are left out. */
export async function msc3202Fields(
  env: Env,
  service: Appservice,
  items: { deviceLists: DeviceListItem[]; keyUsers: string[]; toDevice: { to_user_id?: string }[]; events: PushedEvent[] },
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const last = new Map<string, boolean>();
  for (const d of items.deviceLists) last.set(d.user_id, d.left);
  if (last.size) {
    const changed = [...last].filter(([, l]) => !l).map(([u]) => u);
    const left = [...last].filter(([, l]) => l).map(([u]) => u);
    out["org.matrix.msc3202.device_lists"] = { changed, left };
  }
  const users = new Set<string>([service.senderUserId, ...items.keyUsers]);
  for (const t of items.toDevice) if (t.to_user_id) users.add(t.to_user_id);
  for (const e of items.events) {
    if (service.isInterestedInUser(e.sender) && e.sender.endsWith(`:${service.serverName}`)) users.add(e.sender);
    if (e.type === "m.room.member" && e.state_key !== undefined && service.isInterestedInUser(e.state_key) && e.state_key.endsWith(`:${service.serverName}`)) users.add(e.state_key);
  }
  const { counts, fallback } = await keyCountsFor(env, [...users].filter((u) => service.isInterestedInUser(u)));
  if (Object.keys(counts).length) {
    out["org.matrix.msc3202.device_one_time_keys_count"] = counts;
    out["org.matrix.msc3202.device_one_time_key_counts"] = counts;
    out["org.matrix.msc3202.device_unused_fallback_key_types"] = fallback;
  }
  return out;
}
