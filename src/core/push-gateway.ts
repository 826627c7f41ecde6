// Push Gateway API request building (spec: "Push Gateway API", POST /_matrix/push/v1/notify) and
// the rule for pusher URLs. Pure: no I/O.
import { isBlockedHost } from "./url-guard";
import type { JsonObject, JsonValue } from "./types";

export const NOTIFY_PATH = "/_matrix/push/v1/notify";

/** What a pusher needs to be pushed to (the hub's copy of a D1 `pushers` row). */
export interface PusherTarget {
  appId: string;
  pushkey: string;
  /** ms since epoch; sent as seconds. */
  pushkeyTs: number;
  /** The pusher's data: `url` is where to send, the rest is forwarded. */
  data: JsonObject;
}

export interface PushCounts {
  unread: number;
  missed_calls?: number;
}

/** One queued notification, before the pusher-specific parts (devices) are added. */
export interface PendingPush {
  /** Absent for a badge update (counts only). */
  event?: { event_id: string; room_id: string; type: string; sender: string; content: JsonObject; state_key?: string };
  senderDisplayName?: string;
  roomName?: string;
  userIsTarget?: boolean;
  counts: PushCounts;
  /** Tweaks from the push rule actions (set_tweak). */
  tweaks: JsonObject;
  prio: "high" | "low";
}

/** Pusher URL rule (pusher.yaml: "MUST be an HTTPS URL with a path of /_matrix/push/v1/notify")
 *  plus the outbound address guard of URL previews (src/core/url-guard.ts): no private or
 *  internal hosts. `loopback` (PUSH_HTTP_LOOPBACK=true, tests only) also admits
 *  http(s)://127.0.0.1|[::1]|localhost. Returns a reason when refused. */
export function checkPusherUrl(raw: unknown, loopback: boolean): string | undefined {
  if (typeof raw !== "string") return "data.url is required for http pushers";
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "data.url is not a valid URL";
  }
  if (url.pathname !== NOTIFY_PATH) return `data.url must have the path ${NOTIFY_PATH}`;
  if (url.username || url.password) return "data.url must not contain credentials";
  const isLoopback = ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname);
  if (loopback && isLoopback && (url.protocol === "http:" || url.protocol === "https:")) return undefined;
  if (url.protocol !== "https:") return "data.url must be an https URL";
  const blocked = isBlockedHost(url.hostname);
  if (blocked) return `data.url is not allowed: ${blocked}`;
  return undefined;
}

/** Tweaks a push rule's actions set (module "Push Rules": `set_tweak`; a highlight tweak without
 *  a value means true). */
export function tweaksOf(actions: JsonValue[]): JsonObject {
  const out: JsonObject = {};
  for (const a of actions) {
    if (a && typeof a === "object" && !Array.isArray(a) && typeof a.set_tweak === "string") {
      out[a.set_tweak] = a.value === undefined ? (a.set_tweak === "highlight" ? true : null) : a.value;
    }
  }
  return out;
}

/** Priority: "high" for what a person waits for (messages, encrypted events, invites to me, and
 *  anything with a sound or highlight tweak), "low" otherwise. */
export function prioOf(ev: { type: string; state_key?: string; content: JsonObject }, me: string, tweaks: JsonObject): "high" | "low" {
  if (ev.type === "m.room.message" || ev.type === "m.room.encrypted") return "high";
  if (ev.type === "m.room.member" && ev.state_key === me && ev.content.membership === "invite") return "high";
  if (tweaks.sound || tweaks.highlight === true) return "high";
  return "low";
}

/** The body of POST /_matrix/push/v1/notify for one pusher. `event_id_only` (data.format) sends
 *  only the event and room IDs with the counts; the full format adds the event's fields. The
 *  pusher's data goes to the gateway without `url` (pusher.yaml: "forward the entire content
 *  including format and any custom keys but excluding url"). */
export function notifyBody(p: PendingPush, pusher: PusherTarget): JsonObject {
  const { url: _url, ...data } = pusher.data;
  const device: JsonObject = { app_id: pusher.appId, pushkey: pusher.pushkey, pushkey_ts: Math.floor(pusher.pushkeyTs / 1000), data };
  const counts: JsonObject = { unread: p.counts.unread };
  if (p.counts.missed_calls !== undefined) counts.missed_calls = p.counts.missed_calls;
  const n: JsonObject = { counts, devices: [device] };
  if (!p.event) return { notification: n }; // badge update: counts only
  device.tweaks = p.tweaks;
  n.event_id = p.event.event_id;
  n.room_id = p.event.room_id;
  n.prio = p.prio;
  if (pusher.data.format !== "event_id_only") {
    n.type = p.event.type;
    n.sender = p.event.sender;
    n.content = p.event.content;
    if (p.senderDisplayName) n.sender_display_name = p.senderDisplayName;
    if (p.roomName) n.room_name = p.roomName;
    if (p.event.type === "m.room.member") n.user_is_target = p.userIsTarget === true;
  }
  return { notification: n };
}

/** What a room event means for `counts.missed_calls` (Push Gateway API: "The number of
 *  unacknowledged missed calls a user has across all rooms of which they are a member"; Synapse
 *  never sends it). Module "Voice over IP": an `m.call.invite` from someone else, meant for me
 *  (no `invitee`, or me), rings until its `lifetime` runs out; an `m.call.answer`, `m.call.reject`
 *  or `m.call.hangup` from me takes it (on any of my devices: I saw it); someone else's hangup
 *  or reject ends it. A call that ended or expired unanswered is missed until my read mark passes
 *  it. Encrypted calls are invisible to the server and are not counted. */
export type CallNote =
  | { kind: "invite"; callId: string; expiresTs: number }
  | { kind: "taken"; callId: string }
  | { kind: "ended"; callId: string }
  | null;

export function callNoteOf(ev: { type: string; sender: string; content: JsonObject; origin_server_ts?: number }, me: string, now: number): CallNote {
  if (!ev.type.startsWith("m.call.")) return null;
  const callId = ev.content.call_id;
  if (typeof callId !== "string" || callId === "") return null;
  if (ev.type === "m.call.invite") {
    if (ev.sender === me) return null;
    const invitee = ev.content.invitee;
    if (typeof invitee === "string" && invitee !== me) return null;
    // lifetime is required; the spec recommends at least 90 s, used when it is missing.
    const lifetime = typeof ev.content.lifetime === "number" && ev.content.lifetime >= 0 ? ev.content.lifetime : 90_000;
    return { kind: "invite", callId, expiresTs: (ev.origin_server_ts ?? now) + lifetime };
  }
  if (ev.sender === me && (ev.type === "m.call.answer" || ev.type === "m.call.reject" || ev.type === "m.call.hangup")) return { kind: "taken", callId };
  if (ev.type === "m.call.hangup" || ev.type === "m.call.reject") return { kind: "ended", callId };
  return null;
}
