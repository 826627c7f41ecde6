// Ephemeral data units across servers (spec: Server-Server API "EDUs", "Typing Notifications",
// "Receipts", "Presence", "Send-to-device messaging", "Device Management").
//
// Inbound: handlers registered with inbound.ts (imported for its side effect by
// src/api/federation/index.ts). Every handler checks that the user an EDU speaks for belongs to
// the origin server (the spec requires it; the origin is verified by X-Matrix), ignores
// malformed content, and delivers to local users only.
// Outbound: sendTyping / sendReceipt / sendPresence / sendToDevice, called by the client API
// after the local fan-out.
import type { Env } from "../../env";
import type { Config } from "../../config";
import type { JsonObject } from "../../core/types";
import { registerEduHandler } from "./inbound";
import { enqueueEdu } from "./sender";
import { localJoinedMembers, localUsersSharingRoomWithRemote, remoteServersInRoom, remoteServersSharingRoomWith } from "./peers";
import { serverOf } from "../../core/ids";
import { onDeviceListUpdate, onSigningKeyUpdate } from "./device-lists";
import { fanOutReceipt, fanOutTyping, userStub } from "../notifier";
import { pushToDevice, pushTyping } from "../appservice-fanout";
import { knownRoom, roomStub } from "../rooms";
import { deliverToDevice } from "../e2ee/to-device";
import { type Json } from "../e2ee/common";
import { isValidRoomId } from "../../core/ids";
import { randomString } from "../crypto-util";

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);

/** Remote typing has no timeout on the wire; it lasts until the origin says stop, or this long
 *  (Synapse uses the same bound). */
const REMOTE_TYPING_MS = 30_000;
/** Remembered to-device message IDs are pruned after this long. */
const TO_DEVICE_ID_RETENTION_MS = 7 * 24 * 3600_000;

/** Whether `userId` (of the origin server) is joined to `roomId` here. The D1 registry first:
 *  a room ID from an EDU must not wake (and so create) a Durable Object for a room we lack. */
async function isJoined(env: Env, config: Config, roomId: string, userId: string): Promise<boolean> {
  if (!isValidRoomId(roomId) || !(await knownRoom(env, roomId).catch(() => undefined))) return false;
  return (await roomStub(env, config, roomId).getMembership(userId)) === "join";
}

// =============================================================================================
// Inbound.

/** m.typing: {room_id, user_id, typing}. The typer must be on the origin and joined. */
export async function onTyping(env: Env, config: Config, origin: string, content: JsonObject): Promise<void> {
  const { room_id: roomId, user_id: userId, typing } = content;
  if (typeof roomId !== "string" || typeof userId !== "string" || typeof typing !== "boolean") return;
  if (serverOf(userId) !== origin || !(await isJoined(env, config, roomId, userId))) return;
  const members = await localJoinedMembers(env, [roomId]);
  if (members.length) await fanOutTyping(env, config, roomId, userId, typing ? REMOTE_TYPING_MS : 0, members);
  await pushTyping(env, config.serverName, roomId, userId, typing ? REMOTE_TYPING_MS : 0);
}

/** m.receipt: {room_id: {receipt_type: {user_id: {event_ids, data: {ts, thread_id?}}}}}. Only
 *  public receipt types travel over federation; each reader must be on the origin and joined. */
export async function onReceipt(env: Env, config: Config, origin: string, content: JsonObject): Promise<void> {
  for (const [roomId, byType] of Object.entries(content)) {
    if (!isObject(byType) || !isValidRoomId(roomId)) continue;
    let members: string[] | undefined;
    for (const [type, byUser] of Object.entries(byType)) {
      if (type !== "m.read" || !isObject(byUser)) continue;
      for (const [userId, receipt] of Object.entries(byUser)) {
        if (serverOf(userId) !== origin || !isObject(receipt) || !Array.isArray(receipt.event_ids)) continue;
        const eventId = receipt.event_ids.find((e): e is string => typeof e === "string");
        if (!eventId) continue;
        const data = isObject(receipt.data) ? receipt.data : {};
        const ts = typeof data.ts === "number" && Number.isSafeInteger(data.ts) ? data.ts : Date.now();
        const threadId = typeof data.thread_id === "string" ? data.thread_id : "";
        if (!(await isJoined(env, config, roomId, userId))) continue;
        members ??= await localJoinedMembers(env, [roomId]);
        if (members.length === 0) continue;
        // fanOutReceipt adds the reader itself as a recipient; a remote reader has no hub here.
        await fanOutReceipt(env, config, { roomId, userId, type, eventId, threadId, ts }, members.filter((m) => m !== userId));
      }
    }
  }
}

/** m.presence: {push: [{user_id, presence, status_msg?, last_active_ago, currently_active?}]}
 *  to local users sharing a room with each user. Ignored when PRESENCE is off. */
export async function onPresence(env: Env, config: Config, origin: string, content: JsonObject): Promise<void> {
  if (env.PRESENCE === "off" || !Array.isArray(content.push)) return;
  for (const p of content.push.slice(0, 100)) {
    if (!isObject(p) || typeof p.user_id !== "string" || serverOf(p.user_id) !== origin) continue;
    if (p.presence !== "online" && p.presence !== "offline" && p.presence !== "unavailable") continue;
    const ago = typeof p.last_active_ago === "number" && p.last_active_ago >= 0 ? p.last_active_ago : 0;
    const statusMsg = typeof p.status_msg === "string" ? p.status_msg.slice(0, 1024) : null;
    const userId = p.user_id;
    const presence = p.presence;
    const users = await localUsersSharingRoomWithRemote(env, config, userId);
    await Promise.allSettled(users.map((u) => userStub(env, u, config).presenceOf(u, { userId, presence, statusMsg, lastActiveTs: Date.now() - ago })));
  }
}

/** m.direct_to_device: {sender, type, message_id, messages: {user_id: {device_id | "*": content}}}.
 *  The sender must be on the origin; only local recipients are served; a message_id already
 *  delivered from this origin is not delivered again. */
export async function onDirectToDevice(env: Env, config: Config, origin: string, content: JsonObject): Promise<void> {
  const { sender, type, message_id: messageId, messages } = content;
  if (typeof sender !== "string" || serverOf(sender) !== origin) return;
  if (typeof type !== "string" || type === "" || typeof messageId !== "string" || messageId === "" || messageId.length > 255 || !isObject(messages)) return;
  const now = Date.now();
  const fresh = await env.DB.prepare(
    "INSERT INTO federation_inbound_to_device (origin, message_id, received_ts) VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING message_id",
  )
    .bind(origin, messageId, now)
    .first();
  if (!fresh) return;
  try {
    for (const [userId, perDevice] of Object.entries(messages)) {
      if (serverOf(userId) !== config.serverName || !isObject(perDevice)) continue;
      const valid: Record<string, Json> = {};
      for (const [deviceId, body] of Object.entries(perDevice)) if (isObject(body)) valid[deviceId] = body;
      await deliverToDevice(env, config, sender, type, userId, valid);
      // Appservice users' messages also go to their appservice (MSC2409), as local sends do.
      await pushToDevice(env, config.serverName, sender, type, userId, valid);
    }
  } catch (e) {
    // Let a retransmission deliver it.
    await env.DB.prepare("DELETE FROM federation_inbound_to_device WHERE origin = ? AND message_id = ?").bind(origin, messageId).run();
    throw e;
  }
  if (Math.random() < 0.01) {
    await env.DB.prepare("DELETE FROM federation_inbound_to_device WHERE received_ts < ?").bind(now - TO_DEVICE_ID_RETENTION_MS).run();
  }
}

registerEduHandler("m.typing", onTyping);
registerEduHandler("m.receipt", onReceipt);
registerEduHandler("m.presence", onPresence);
registerEduHandler("m.direct_to_device", onDirectToDevice);
registerEduHandler("m.device_list_update", onDeviceListUpdate);
registerEduHandler("m.signing_key_update", onSigningKeyUpdate);

// =============================================================================================
// Outbound. Failures are logged, never surfaced to the client: the local effect has happened.

async function toAll(env: Env, config: Config, servers: string[], edu: { edu_type: string; content: Record<string, unknown> }): Promise<void> {
  const results = await Promise.allSettled(servers.map((s) => enqueueEdu(env, config, s, edu)));
  for (const [i, r] of results.entries()) if (r.status === "rejected") console.error(`${edu.edu_type} to ${servers[i]} failed`, r.reason);
}

/** A local user's typing state, to every other server in the room. */
export async function sendTyping(env: Env, config: Config, roomId: string, userId: string, typing: boolean): Promise<void> {
  const servers = await remoteServersInRoom(env, config, roomId);
  await toAll(env, config, servers, { edu_type: "m.typing", content: { room_id: roomId, user_id: userId, typing } });
}

/** A local user's public read receipt, to every other server in the room. */
export async function sendReceipt(env: Env, config: Config, r: { roomId: string; userId: string; type: string; eventId: string; threadId: string; ts: number }): Promise<void> {
  if (r.type !== "m.read") return; // private receipts and read markers stay here
  const data: Record<string, unknown> = { ts: r.ts };
  if (r.threadId) data.thread_id = r.threadId;
  const servers = await remoteServersInRoom(env, config, r.roomId);
  await toAll(env, config, servers, { edu_type: "m.receipt", content: { [r.roomId]: { "m.read": { [r.userId]: { event_ids: [r.eventId], data } } } } });
}

type PresenceState = { presence: string; statusMsg: string | null; lastActiveTs: number };

function presenceEntry(userId: string, p: PresenceState): Record<string, unknown> {
  const entry: Record<string, unknown> = {
    user_id: userId,
    presence: p.presence,
    last_active_ago: Math.max(0, Date.now() - p.lastActiveTs),
    currently_active: p.presence === "online",
  };
  if (p.statusMsg !== null) entry.status_msg = p.statusMsg;
  return entry;
}

/** A local user's presence, to every server sharing a room with them. */
export async function sendPresence(env: Env, config: Config, userId: string, p: PresenceState): Promise<void> {
  if (env.PRESENCE === "off") return;
  const servers = await remoteServersSharingRoomWith(env, config, userId);
  await toAll(env, config, servers, { edu_type: "m.presence", content: { push: [presenceEntry(userId, p)] } });
}

/** Local users' current presence to servers that just started sharing a room with them (as
 *  Synapse does on joins): a local user joined a room (→ its other servers), or a server's user
 *  joined a room of ours (→ that server, the presence of our members). Presence is otherwise
 *  sent only when it changes, so the new room-mates would see them offline until then. */
export async function sendPresenceOnJoin(env: Env, config: Config, roomId: string, joiner: { localUser: string } | { server: string }): Promise<void> {
  if (env.PRESENCE === "off") return;
  const servers = "server" in joiner ? [joiner.server] : await remoteServersInRoom(env, config, roomId);
  if (servers.length === 0) return;
  const users = "localUser" in joiner ? [joiner.localUser] : (await localJoinedMembers(env, [roomId])).slice(0, 100);
  const push: Record<string, unknown>[] = [];
  for (const u of users) {
    const p = await userStub(env, u, config).getPresence(u);
    if (p && p.presence !== "offline") push.push(presenceEntry(u, p));
  }
  if (push.length) await toAll(env, config, servers, { edu_type: "m.presence", content: { push } });
}

/** To-device messages for users of other servers: one m.direct_to_device EDU per server, with a
 *  fresh message_id (the caller's txnId claim makes the whole request happen once). */
export async function sendToDevice(env: Env, config: Config, sender: string, type: string, messages: Record<string, Record<string, Json>>): Promise<void> {
  const byServer = new Map<string, Record<string, Record<string, Json>>>();
  for (const [userId, perDevice] of Object.entries(messages)) {
    const s = serverOf(userId);
    if (!s || s === config.serverName) continue;
    (byServer.get(s) ?? byServer.set(s, {}).get(s)!)[userId] = perDevice;
  }
  await Promise.all(
    [...byServer].map(([server, msgs]) =>
      enqueueEdu(env, config, server, { edu_type: "m.direct_to_device", content: { sender, type, message_id: randomString(24), messages: msgs } }),
    ),
  );
}
