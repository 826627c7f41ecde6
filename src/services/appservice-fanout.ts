// Which application services an event goes to, and handing it to their queues
// (durable-objects/appservice-sender.ts). Spec: Application Service API "Namespaces": an
// appservice receives the events of rooms where a user of its users namespace (or its sender) is
// a member, of rooms in its rooms namespace or with an alias in its aliases namespace, and the
// events sent by or about (member state key) its users.
import type { Env } from "../env";
import type { Appservice } from "../core/appservice-registration";
import { listAppservices } from "./appservices";
import { joinedCoMembers, localJoinedMembers } from "../db/memberships";
import { deviceListItemsForMembership, localSharers } from "./appservice-e2ee";

export interface AppserviceEvent {
  event_id: string;
  room_id: string;
  type: string;
  sender: string;
  content: Record<string, unknown>;
  origin_server_ts: number;
  state_key?: string;
  [k: string]: unknown;
}

/** The client-format event an appservice receives (spec: ClientEvent). */
export function appserviceEvent(ev: { event_id: string; type: string; sender: string; content: Record<string, unknown>; origin_server_ts: number; state_key?: string; redacts?: string }, roomId: string): AppserviceEvent {
  const out: AppserviceEvent = { event_id: ev.event_id, room_id: roomId, type: ev.type, sender: ev.sender, content: ev.content, origin_server_ts: ev.origin_server_ts, unsigned: {} };
  if (ev.state_key !== undefined) out.state_key = ev.state_key;
  if (ev.redacts !== undefined) out.redacts = ev.redacts;
  return out;
}

/** RoomDO storage key of the appservice hand-over watermark. */
export const APPSERVICE_DONE_KEY = "appservice_done";

export function appserviceQueue(env: Env, id: string) {
  return env.APPSERVICE_SENDER.get(env.APPSERVICE_SENDER.idFromName(id));
}

export async function wakeAppserviceQueue(env: Env, id: string): Promise<void> {
  await appserviceQueue(env, id).wake();
}

/** Is `service` interested in this event, given the room's joined members and aliases? */
export function interestedIn(service: Appservice, ev: AppserviceEvent, members: Iterable<string>, aliases: readonly string[]): boolean {
  if (service.isInterestedInUser(ev.sender)) return true;
  if (ev.type === "m.room.member" && ev.state_key !== undefined && service.isInterestedInUser(ev.state_key)) return true;
  if (service.isInterestedInRoom(ev.room_id)) return true;
  if (aliases.some((a) => service.isInterestedInAlias(a))) return true;
  for (const m of members) if (service.isInterestedInUser(m)) return true;
  return false;
}

/** Per RoomDO: events go to the appservice queues in the order `push` is called (one chain), so
 *  each appservice sees the room's events in stream order.
 *
 *  With `storage`, a watermark (APPSERVICE_DONE_KEY: every event at or below it reached its
 *  queues) survives restarts. It is written when the chain runs idle and nothing is missing. A
 *  new instance reads it before its first hand-over: events between it and the first event this
 *  instance sees were committed by an instance that stopped before handing them over, and
 *  `behind()` (the RoomDO's alarm) names them for redelivery; so does a failed hand-over.
 *  Redelivery is at least once (a failed hand-over's successors are sent again). */
export class AppserviceFanOut {
  private chain: Promise<void> = Promise.resolve();
  private aliasCache?: { at: number; aliases: string[] };
  private pending = 0;
  private loaded = false;
  /** Highest stream handed over (while nothing failed), and the last value written. */
  private done = 0;
  private written = -1;
  private failed = false;
  /** Some event went to an appservice: keep the watermark (rooms no appservice cares about never
   *  write one, and without one nothing is replayed). */
  private active = false;
  /** Streams (after, upTo] not handed over by this instance, to redeliver. */
  private gap: { after: number; upTo: number } | null = null;

  constructor(
    private env: Env,
    private serverName: string,
    private storage?: DurableObjectStorage,
  ) {}

  /** Call synchronously in commit order; `members` is read now (the membership at this event). */
  push(ev: AppserviceEvent, members: Iterable<string>, stream?: number): Promise<void> {
    const snapshot = [...members];
    this.pending++;
    const next = this.chain
      .then(async () => {
        try {
          if (stream !== undefined) await this.load(stream);
          if ((await this.deliver(ev, snapshot)) > 0) this.active = true;
          if (stream !== undefined && !this.failed) this.done = Math.max(this.done, stream);
        } catch (e) {
          this.failed = true; // the watermark stays below this event until redelivery
          console.error("appservice fan-out failed", e);
        } finally {
          this.pending--;
        }
        if (this.pending === 0 && this.storage && (this.active || this.written >= 0) && !this.failed && !this.gap && this.done !== this.written) {
          this.written = this.done;
          await this.storage.put(APPSERVICE_DONE_KEY, this.done);
        }
      })
      .catch((e) => console.error("appservice fan-out failed", e));
    this.chain = next;
    return next;
  }

  /** First hand-over of this instance: what did the previous one leave undone? */
  private async load(firstStream: number): Promise<void> {
    if (this.loaded || !this.storage) return;
    this.loaded = true;
    const stored = await this.storage.get<number>(APPSERVICE_DONE_KEY);
    if (stored === undefined) return; // a room new to this (history is not replayed)
    this.done = this.written = stored;
    if (stored < firstStream - 1) this.gap = { after: stored, upTo: firstStream - 1 };
  }

  /** For the RoomDO's alarm: the streams to hand over again, or null (nothing missing, or
   *  hand-overs still running). Their pushes must follow at once. */
  async behind(currentStream: number): Promise<{ after: number; upTo: number } | null> {
    if (!this.storage || this.pending > 0) return null;
    if (!this.loaded) await this.load(currentStream + 1);
    if (this.failed) {
      this.failed = false;
      this.gap = { after: Math.min(this.done, this.gap?.after ?? Infinity), upTo: currentStream };
    }
    const g = this.gap;
    this.gap = null;
    return g;
  }

  /** Enqueue for the interested appservices; how many there were. */
  private async deliver(ev: AppserviceEvent, members: string[]): Promise<number> {
    const services = (await listAppservices(this.env, this.serverName)).filter((s) => s.url);
    if (services.length === 0) return 0;
    const aliases = services.some((s) => s.hasAliasNamespace) ? await this.roomAliases(ev.room_id) : [];
    const interested = services.filter((s) => interestedIn(s, ev, members, aliases));
    await Promise.all(interested.map((s) => appserviceQueue(this.env, s.id).enqueue(s.id, this.serverName, [{ kind: "event", body: ev }])));
    // MSC3202: who the appservice's users now share (or no longer share) a room with. Worked
    // out beside the chain, not in it: a remote user's "still shares a room" asks other rooms,
    // and the room's next events should not wait for that (device-list items are folded per
    // transaction, so their order among the events does not matter).
    if (ev.type === "m.room.member") {
      for (const s of interested.filter((x) => x.msc3202)) {
        void deviceListItemsForMembership(s, ev, members, localSharers(this.env, this.serverName))
          .then((items) => (items.length ? appserviceQueue(this.env, s.id).enqueue(s.id, this.serverName, items.map((body) => ({ kind: "device_list" as const, body }))) : undefined))
          .catch((e) => console.error("appservice device-list items failed", e));
      }
    }
    return interested.length;
  }

  /** The room's local aliases (D1), cached briefly. */
  private async roomAliases(roomId: string): Promise<string[]> {
    const now = Date.now();
    if (this.aliasCache && now - this.aliasCache.at < 2_000) return this.aliasCache.aliases;
    const { results } = await this.env.DB.prepare("SELECT alias FROM room_aliases WHERE room_id = ?").bind(roomId).all<{ alias: string }>();
    this.aliasCache = { at: now, aliases: results.map((r) => r.alias) };
    return this.aliasCache.aliases;
  }
}

/** The appservices that asked for ephemeral data (receive_ephemeral, MSC2409) and are
 *  interested in the room: rooms namespace, or a joined local member in their users namespace
 *  (D1 membership mirror; namespaced users are local). */
async function ephemeralServicesFor(env: Env, serverName: string, roomId: string): Promise<Appservice[]> {
  const services = (await listAppservices(env, serverName)).filter((s) => s.url && s.receiveEphemeral);
  if (services.length === 0) return [];
  const members = await localJoinedMembers(env.DB, [roomId]);
  return services.filter((s) => s.isInterestedInRoom(roomId) || members.some((m) => s.isInterestedInUser(m)));
}

/** Ephemeral data of a room (m.receipt) for the interested appservices. */
export async function pushRoomEphemeral(env: Env, serverName: string, roomId: string, edu: { type: string; content: unknown }): Promise<void> {
  const services = await ephemeralServicesFor(env, serverName, roomId);
  await Promise.all(services.map((s) => appserviceQueue(env, s.id).enqueue(s.id, serverName, [{ kind: "ephemeral", body: { ...edu, room_id: roomId } }])));
}

/** A typing change (timeoutMs 0: stopped); each queue turns it into m.typing with all typers. */
export async function pushTyping(env: Env, serverName: string, roomId: string, userId: string, timeoutMs: number): Promise<void> {
  const services = await ephemeralServicesFor(env, serverName, roomId);
  await Promise.all(services.map((s) => appserviceQueue(env, s.id).typing(s.id, serverName, roomId, userId, timeoutMs)));
}

/** m.presence of a local user, to the appservices interested in that user or sharing a room
 *  with one of their users. */
export async function pushPresence(env: Env, serverName: string, userId: string, p: { presence: string; statusMsg: string | null; lastActiveTs: number }): Promise<void> {
  const services = (await listAppservices(env, serverName)).filter((s) => s.url && s.receiveEphemeral);
  if (services.length === 0) return;
  // (userId itself is checked on its own below.)
  const sharers = await joinedCoMembers(env.DB, userId);
  const content: Record<string, unknown> = { presence: p.presence, last_active_ago: Math.max(0, Date.now() - p.lastActiveTs), currently_active: p.presence === "online" };
  if (p.statusMsg !== null) content.status_msg = p.statusMsg;
  await Promise.all(
    services
      .filter((s) => s.isInterestedInUser(userId) || sharers.some((u) => s.isInterestedInUser(u)))
      .map((s) => appserviceQueue(env, s.id).enqueue(s.id, serverName, [{ kind: "ephemeral", body: { type: "m.presence", sender: userId, content } }])),
  );
}

/** To-device messages for users in an appservice's namespace, to appservices that receive
 *  ephemeral data (MSC2409 `de.sorunome.msc2409.to_device`): one entry per target device, "*"
 *  expanded to the user's devices. */
export async function pushToDevice(env: Env, serverName: string, sender: string, type: string, userId: string, messages: Record<string, unknown>): Promise<void> {
  const services = (await listAppservices(env, serverName)).filter((s) => s.url && s.receiveEphemeral && s.isInterestedInUser(userId));
  if (services.length === 0) return;
  const { results } = await env.DB.prepare("SELECT device_id FROM devices WHERE user_id = ?").bind(userId).all<{ device_id: string }>();
  const perDevice = new Map<string, unknown>();
  if (messages["*"] !== undefined) for (const r of results) perDevice.set(r.device_id, messages["*"]);
  for (const [d, content] of Object.entries(messages)) if (d !== "*" && results.some((r) => r.device_id === d)) perDevice.set(d, content);
  if (perDevice.size === 0) return;
  const items = [...perDevice].map(([deviceId, content]) => ({ kind: "to_device" as const, body: { type, sender, content, to_user_id: userId, to_device_id: deviceId } }));
  await Promise.all(services.map((s) => appserviceQueue(env, s.id).enqueue(s.id, serverName, items)));
}
