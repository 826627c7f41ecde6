// Authorization rules for every room version (spec: room version pages, "Authorization rules").
// OWNER: auth-rules helper.
//
// Pure functions over plain data: no I/O, no JSON re-parsing, O(1) state lookups. Rule numbers in
// comments follow the room version 11 page unless stated otherwise (v1–v5 have the extra
// m.room.aliases rule 4, so their later rules are numbered one higher; v12 inserts rule 2).
//
// What the caller does (it cannot be decided from the event and a state map alone):
//  - signature checks, including "the event is not validly signed by the homeserver of the user
//    ID denoted by join_authorised_via_users_server" (v8+ rule 4.2);
//  - "auth events which were themselves rejected" (rule 2.3);
//  - v12 rule 2 "room_id is the event ID of an *accepted* create event" (we check the shape: the
//    room ID must be the create event's ID with `!`, and the create PDU must carry no room_id);
//  - third-party invite signatures (rule 4.4.1.7): ed25519 verification is asynchronous in
//    workerd, so the caller verifies `signed` with `thirdPartyInviteToVerify` and records success
//    with `markThirdPartyInviteVerified`; without that record the invite is rejected.
import type { RoomEvent, StateMap, StateKey } from "./types";
import { stateKey } from "./types";
import type { RoomVersion } from "./room-versions";
import { getRoomVersion, versionAtLeast } from "./room-versions";
import { domainOf } from "./ids";

export type AuthResult = { allowed: true } | { allowed: false; reason: string };

const ALLOW: AuthResult = Object.freeze({ allowed: true }) as AuthResult;
function deny(reason: string): AuthResult {
  return { allowed: false, reason };
}

export const CREATE_KEY: StateKey = stateKey("m.room.create", "");
export const POWER_LEVELS_KEY: StateKey = stateKey("m.room.power_levels", "");
export const JOIN_RULES_KEY: StateKey = stateKey("m.room.join_rules", "");
export function memberKey(userId: string): StateKey {
  return stateKey("m.room.member", userId);
}

// ---------------------------------------------------------------------------------------------
// Small safe accessors (content comes from the network: never trust its shape).

type Obj = Record<string, unknown>;

function asObject(v: unknown): Obj | undefined {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Obj) : undefined;
}
/** Own property only: `users["constructor"]` must not find Object.prototype.constructor. */
function own(o: Obj | undefined, key: string): unknown {
  return o !== undefined && Object.hasOwn(o, key) ? o[key] : undefined;
}
/** The domain of a user, room or (v1/v2) event ID; undefined when `id` is not a string or has no
 *  `:` (so that two malformed IDs never count as the same server). */
function domainOfAny(id: unknown): string | undefined {
  return typeof id === "string" && id.includes(":") ? domainOf(id) : undefined;
}

const SERVER_NAME = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::\d{1,5})?$/;
const utf8 = new TextEncoder();
/** User ID check used by the auth rules (PL `users` keys, v12 `additional_creators`): `@`, a
 *  non-empty localpart (historical grammar accepted), `:`, a server name; at most 255 bytes. */
export function isAuthValidUserId(id: unknown): boolean {
  if (typeof id !== "string" || id.length < 4 || id[0] !== "@") return false;
  const colon = id.indexOf(":");
  if (colon < 2 || !SERVER_NAME.test(id.slice(colon + 1))) return false;
  return id.length <= 64 || utf8.encode(id).length <= 255;
}

// ---------------------------------------------------------------------------------------------
// Power level values.

const INTEGER_STRING = /^\s*[+-]?\d+\s*$/;

/** Parse one power level value as the room version allows it; undefined if not a valid value.
 *  v1–v9 accept integer strings ("stringy" power levels, e.g. " +050 "); v1–v5 accept floats,
 *  truncated ("floaty" power levels); v10+ accept integers only. */
export function parsePowerLevelValue(v: unknown, rv: RoomVersion): number | undefined {
  if (typeof v === "number") {
    if (Number.isInteger(v)) return !rv.strictCanonicalJson || Number.isSafeInteger(v) ? v : undefined;
    if (!rv.strictCanonicalJson && Number.isFinite(v)) return Math.trunc(v);
    return undefined;
  }
  if (typeof v === "string" && !rv.integerPowerLevels && INTEGER_STRING.test(v)) {
    const n = Number(v.trim()); // Number() accepts "+5" and leading zeros, base 10
    return Number.isFinite(n) ? n + 0 : undefined; // `+ 0` turns -0 into 0
  }
  return undefined;
}

function isStrictInteger(v: unknown): boolean {
  return typeof v === "number" && Number.isSafeInteger(v);
}

// ---------------------------------------------------------------------------------------------
// Creators.

/** The room ID a (non-create) event of this room must carry. v12: the create event's ID with
 *  `!` instead of `$` (rule 2); earlier versions: the create event's room_id. */
export function roomIdOfCreate(create: RoomEvent, rv: RoomVersion): string {
  return rv.roomIdFromCreate ? `!${create.event_id.slice(1)}` : create.room_id;
}

/** The creator named by rule "the state_key is the creator": v1–v10 `content.creator`,
 *  v11+ the create event's sender. */
function primaryCreator(create: RoomEvent, rv: RoomVersion): string | undefined {
  if (rv.implicitCreator) return create.sender;
  const c = own(asObject(create.content), "creator");
  return typeof c === "string" ? c : undefined;
}

/** Room creators: v12 the create sender plus `content.additional_creators`; before v12 the single
 *  creator (who gets power level 100 while the room has no m.room.power_levels event). */
export function creatorsOf(create: RoomEvent, rv: RoomVersion): string[] {
  const first = primaryCreator(create, rv);
  const out = first === undefined ? [] : [first];
  if (rv.privilegedCreators) {
    const extra = own(asObject(create.content), "additional_creators");
    if (Array.isArray(extra)) for (const u of extra) if (typeof u === "string" && u !== first) out.push(u);
  }
  return out;
}

export function isCreator(userId: string, authState: StateMap, rv: RoomVersion): boolean {
  const create = authState.get(CREATE_KEY);
  return create !== undefined && creatorsOf(create, rv).includes(userId);
}

// ---------------------------------------------------------------------------------------------
// Power levels as seen from a state map.

/** A user's power level. v12 creators: Infinity. No m.room.power_levels event: creator 100
 *  (v1–v11), everybody else 0. Otherwise `users[userId]`, else `users_default`, else 0. */
export function powerLevelOf(userId: string, authState: StateMap, rv: RoomVersion): number {
  const create = authState.get(CREATE_KEY);
  if (rv.privilegedCreators && create && creatorsOf(create, rv).includes(userId)) return Infinity;
  const pl = authState.get(POWER_LEVELS_KEY);
  if (!pl) return create && !rv.privilegedCreators && primaryCreator(create, rv) === userId ? 100 : 0;
  const content = asObject(pl.content);
  const own_ = parsePowerLevelValue(own(asObject(own(content, "users")), userId), rv);
  if (own_ !== undefined) return own_;
  return parsePowerLevelValue(own(content, "users_default"), rv) ?? 0;
}

export type NamedLevel = "invite" | "kick" | "ban" | "redact";
const NAMED_DEFAULTS: Record<NamedLevel, number> = { invite: 0, kick: 50, ban: 50, redact: 50 };

/** The *invite*, *kick*, *ban* or *redact level* (defaults 0, 50, 50, 50). */
export function namedPowerLevel(name: NamedLevel, authState: StateMap, rv: RoomVersion): number {
  const content = asObject(authState.get(POWER_LEVELS_KEY)?.content);
  return parsePowerLevelValue(own(content, name), rv) ?? NAMED_DEFAULTS[name];
}

/** The event type's *required power level*: `events[type]`, else `state_default` (50) for state
 *  events or `events_default` (0) for others — the same defaults when there is no PL event. */
export function requiredPowerLevel(type: string, isState: boolean, authState: StateMap, rv: RoomVersion): number {
  const content = asObject(authState.get(POWER_LEVELS_KEY)?.content);
  const specific = parsePowerLevelValue(own(asObject(own(content, "events")), type), rv);
  if (specific !== undefined) return specific;
  return isState
    ? (parsePowerLevelValue(own(content, "state_default"), rv) ?? 50)
    : (parsePowerLevelValue(own(content, "events_default"), rv) ?? 0);
}

/** A user's current membership (`join`, `invite`, `leave`, `ban`, `knock`, ...), or undefined. */
export function membershipOf(userId: string, authState: StateMap): string | undefined {
  const m = own(asObject(authState.get(memberKey(userId))?.content), "membership");
  return typeof m === "string" ? m : undefined;
}

/** The current join rule. Like Synapse, `invite` when there is no m.room.join_rules event or it
 *  has no `join_rule`; undefined when `join_rule` is not a string (matches no rule). */
export function joinRuleOf(authState: StateMap): string | undefined {
  const ev = authState.get(JOIN_RULES_KEY);
  if (!ev) return "invite";
  const content = asObject(ev.content);
  if (!content || !Object.hasOwn(content, "join_rule")) return "invite";
  const r = content.join_rule;
  return typeof r === "string" ? r : undefined;
}

/** Build a state map from a list of (auth) events, keyed by (type, state_key). */
export function buildAuthState(events: Iterable<RoomEvent>): StateMap {
  const m: StateMap = new Map();
  for (const e of events) if (typeof e.state_key === "string") m.set(stateKey(e.type, e.state_key), e);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Auth events selection (server-server API "Auth events selection").

/** The (type, state_key) pairs an event of this shape needs in its auth_events
 *  ("Auth events selection"). For v12 the create event is not included. */
export function authEventKeys(
  rv: RoomVersion,
  ev: Pick<RoomEvent, "type" | "sender" | "state_key" | "content">,
): StateKey[] {
  if (ev.type === "m.room.create") return [];
  const keys = new Set<StateKey>();
  if (!rv.roomIdFromCreate) keys.add(CREATE_KEY);
  keys.add(POWER_LEVELS_KEY);
  keys.add(memberKey(ev.sender));
  if (ev.type === "m.room.member" && typeof ev.state_key === "string") {
    const content = asObject(ev.content);
    const membership = own(content, "membership");
    keys.add(memberKey(ev.state_key));
    if (membership === "join" || membership === "invite" || membership === "knock") keys.add(JOIN_RULES_KEY);
    if (membership === "invite") {
      const token = own(asObject(own(asObject(own(content, "third_party_invite")), "signed")), "token");
      if (typeof token === "string") keys.add(stateKey("m.room.third_party_invite", token));
    }
    if (membership === "join" && rv.restrictedJoins) {
      const via = own(content, "join_authorised_via_users_server");
      if (typeof via === "string") keys.add(memberKey(via));
    }
  }
  return [...keys];
}

/** Rule 2 ("Considering the event's auth_events"), the parts decidable from the events alone:
 *  duplicates (2.1), entries outside the auth events selection (2.2; in v12 that includes the
 *  create event), no create event (2.4, v1–v11), auth events from another room (2.5).
 *  Rejected auth events (2.3) are the caller's to check. The create event itself is exempt
 *  (rule 1 decides it before rule 2 is reached). */
export function checkAuthEventsShape(event: RoomEvent, authEvents: RoomEvent[], rv: RoomVersion): AuthResult {
  if (event.type === "m.room.create") return ALLOW;
  let expected: Set<StateKey>;
  try {
    expected = new Set(authEventKeys(rv, event));
  } catch {
    return deny("malformed event: cannot compute the auth events selection");
  }
  const seen = new Set<StateKey>();
  let hasCreate = false;
  for (const ae of authEvents) {
    if (typeof ae.state_key !== "string") return deny(`auth event ${ae.event_id} is not a state event`);
    const k = stateKey(ae.type, ae.state_key);
    if (seen.has(k)) return deny(`rule 2.1: duplicate auth events for (${ae.type}, ${ae.state_key})`);
    seen.add(k);
    if (!expected.has(k)) {
      return deny(`rule 2.2: auth event (${ae.type}, ${ae.state_key}) is not in the auth events selection`);
    }
    if (ae.type === "m.room.create") hasCreate = true;
    if (ae.room_id !== event.room_id) return deny(`rule 2.5: auth event ${ae.event_id} is from another room`);
  }
  if (!rv.roomIdFromCreate && !hasCreate) return deny("rule 2.4: no m.room.create event among the auth events");
  return ALLOW;
}

// ---------------------------------------------------------------------------------------------
// Third-party invites (rule 4.4.1): the signature step is done by the caller.

const verifiedThirdPartyInvites = new WeakMap<RoomEvent, Set<string>>();

/** What the caller must verify for a third-party invite checked against `authState`: a signature
 *  in `signed` (canonical JSON of `signed` minus `signatures`) matching one of `publicKeys`
 *  (unpadded base64 ed25519). Null when the event has no well-formed third-party invite or the
 *  matching m.room.third_party_invite event is missing. */
export function thirdPartyInviteToVerify(
  event: RoomEvent,
  authState: StateMap,
): { signed: Obj; publicKeys: string[]; thirdPartyInviteEventId: string } | null {
  const signed = asObject(own(asObject(own(asObject(event.content), "third_party_invite")), "signed"));
  const token = own(signed, "token");
  if (!signed || typeof token !== "string") return null;
  const tpi = authState.get(stateKey("m.room.third_party_invite", token));
  if (!tpi) return null;
  const c = asObject(tpi.content);
  const publicKeys: string[] = [];
  const single = own(c, "public_key");
  if (typeof single === "string") publicKeys.push(single);
  const list = own(c, "public_keys");
  if (Array.isArray(list)) {
    for (const entry of list) {
      const k = own(asObject(entry), "public_key");
      if (typeof k === "string") publicKeys.push(k);
    }
  }
  return { signed, publicKeys, thirdPartyInviteEventId: tpi.event_id };
}

/** Record that `event`'s `signed` block carries a valid signature from a key in the
 *  m.room.third_party_invite event `thirdPartyInviteEventId`. Keyed by the event object. */
export function markThirdPartyInviteVerified(event: RoomEvent, thirdPartyInviteEventId: string): void {
  let s = verifiedThirdPartyInvites.get(event);
  if (!s) verifiedThirdPartyInvites.set(event, (s = new Set()));
  s.add(thirdPartyInviteEventId);
}

// ---------------------------------------------------------------------------------------------
// The rules.

/** Check the event against `authState` (either the state built from its auth_events, or the
 *  state before it). `authState` includes the create event even in v12. Never throws. */
export function checkEventAuth(event: RoomEvent, authState: StateMap, rv: RoomVersion): AuthResult {
  try {
    return checkRules(event, authState, rv);
  } catch (e) {
    return deny(`malformed event: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function checkRules(event: RoomEvent, authState: StateMap, rv: RoomVersion): AuthResult {
  const content = asObject(event.content);
  if (!content) return deny("event content is not an object");
  if (typeof event.type !== "string" || typeof event.sender !== "string") return deny("malformed event");

  // Rule 1.
  if (event.type === "m.room.create") return checkCreate(event, content, rv);

  const create = authState.get(CREATE_KEY);
  if (!create) return deny("rule 2.4: no m.room.create event in the auth state");
  // Rule 2.5 "auth events with another room_id" (checked here via the create event) and, in v12,
  // rule 2 "room_id is the create event's ID with sigil !".
  if (event.room_id !== roomIdOfCreate(create, rv)) {
    return deny(`the event's room_id ${event.room_id} does not match the room of the m.room.create event`);
  }
  // Rule 3: m.federate.
  if (own(asObject(create.content), "m.federate") === false && domainOfAny(event.sender) !== domainOfAny(create.sender)) {
    return deny("rule 3: the room is not federated (m.federate is false) and the sender is from another server");
  }
  // v1–v5 rule 4: m.room.aliases.
  if (rv.specialCaseAliases && event.type === "m.room.aliases") return checkAliases(event);
  // Rule 4 (v1–v5: 5): m.room.member.
  if (event.type === "m.room.member") return checkMember(event, content, authState, rv);

  // Rule 5: "If the sender's current membership state is not join, reject."
  if (membershipOf(event.sender, authState) !== "join") return deny("rule 5: the sender is not joined to the room");

  const senderLevel = powerLevelOf(event.sender, authState, rv);
  // Rule 6: m.room.third_party_invite.
  if (event.type === "m.room.third_party_invite") {
    return senderLevel >= namedPowerLevel("invite", authState, rv)
      ? ALLOW
      : deny("rule 6: m.room.third_party_invite requires the invite level");
  }
  // Rule 7: required power level.
  const isState = typeof event.state_key === "string";
  const required = requiredPowerLevel(event.type, isState, authState, rv);
  if (required > senderLevel) {
    return deny(`rule 7: ${event.type} requires power level ${required}, the sender has ${senderLevel}`);
  }
  // Rule 8: "If the event has a state_key that starts with an @ and does not match the sender, reject."
  if (isState && event.state_key!.startsWith("@") && event.state_key !== event.sender) {
    return deny("rule 8: a state_key starting with @ must be the sender's own user ID");
  }
  // Rule 9: m.room.power_levels.
  if (event.type === "m.room.power_levels") return checkPowerLevels(event, content, authState, rv, senderLevel);
  // v1–v2 rule 11: m.room.redaction. From v3 redactions are authorised like any other event and
  // the redaction itself is only applied after the checks of "Handling redactions".
  if (!versionAtLeast(rv, 3) && event.type === "m.room.redaction") return checkRedactionV1(event, authState, rv, senderLevel);
  return ALLOW;
}

/** Rule 1: m.room.create. */
function checkCreate(event: RoomEvent, content: Obj, rv: RoomVersion): AuthResult {
  if (!Array.isArray(event.prev_events) || event.prev_events.length > 0) {
    return deny("rule 1.1: the m.room.create event has prev_events");
  }
  if (rv.roomIdFromCreate) {
    // v12 rule 1.2: the room ID is derived from the create event, which must not carry one.
    if (event.pdu?.room_id !== undefined) return deny("rule 1.2: a v12 m.room.create event must not have a room_id");
  } else {
    const roomDomain = domainOfAny(event.room_id);
    if (roomDomain === undefined || roomDomain !== domainOfAny(event.sender)) {
      return deny("rule 1.2: the domain of the room_id does not match the domain of the sender");
    }
  }
  if (Object.hasOwn(content, "room_version")) {
    const v = content.room_version;
    if (typeof v !== "string" || getRoomVersion(v) === undefined) {
      return deny("rule 1.3: content.room_version is not a recognised room version");
    }
  }
  if (!rv.implicitCreator && !Object.hasOwn(content, "creator")) {
    return deny("rule 1.4: content has no creator property");
  }
  if (rv.privilegedCreators && Object.hasOwn(content, "additional_creators")) {
    const extra = content.additional_creators;
    if (!Array.isArray(extra) || !extra.every((u) => isAuthValidUserId(u))) {
      return deny("rule 1.4: additional_creators must be an array of valid user IDs");
    }
  }
  return ALLOW;
}

/** v1–v5 rule 4: m.room.aliases (not subject to the membership or power level rules). */
function checkAliases(event: RoomEvent): AuthResult {
  if (typeof event.state_key !== "string") return deny("rule 4.1: m.room.aliases has no state_key");
  if (domainOfAny(event.sender) !== event.state_key) {
    return deny("rule 4.2: the sender's domain does not match the m.room.aliases state_key");
  }
  return ALLOW;
}

/** Rule 4: m.room.member. */
function checkMember(event: RoomEvent, content: Obj, authState: StateMap, rv: RoomVersion): AuthResult {
  const target = event.state_key;
  const membership = own(content, "membership");
  if (typeof target !== "string" || typeof membership !== "string") {
    return deny("rule 4.1: m.room.member needs a state_key and a content.membership string");
  }
  // Rule 4.2 (v8+, join_authorised_via_users_server signature) is a signature check: caller-side.
  switch (membership) {
    case "join":
      return checkJoin(event, content, target, authState, rv);
    case "invite":
      return checkInvite(event, content, target, authState, rv);
    case "leave":
      return checkLeave(event, target, authState, rv);
    case "ban":
      return checkBan(event, target, authState, rv);
    case "knock":
      if (rv.knocking) return checkKnock(event, target, authState, rv);
      return deny(`knock membership is not supported in room version ${rv.id}`);
    default:
      return deny(`rule 4.8: unknown membership ${JSON.stringify(membership).slice(0, 40)}`);
  }
}

/** Rule 4.3: membership join. */
function checkJoin(event: RoomEvent, content: Obj, target: string, authState: StateMap, rv: RoomVersion): AuthResult {
  const create = authState.get(CREATE_KEY)!;
  // 4.3.1 "If the only previous event is an m.room.create and the state_key is the creator, allow."
  const prev = event.prev_events;
  if (Array.isArray(prev) && prev.length === 1 && prev[0] === create.event_id && primaryCreator(create, rv) === target) {
    return ALLOW;
  }
  if (event.sender !== target) return deny("rule 4.3.2: the sender of a join must be the joining user");
  const current = membershipOf(target, authState);
  if (current === "ban") return deny("rule 4.3.3: the sender is banned");
  const joinRule = joinRuleOf(authState);
  const invitedOrJoined = current === "invite" || current === "join";
  // 4.3.4 "If the join_rule is invite or knock then allow if membership state is invite or join."
  if (joinRule === "invite" || (rv.knocking && joinRule === "knock")) {
    return invitedOrJoined ? ALLOW : deny(`rule 4.3.4: join_rule is ${joinRule} and the user is not invited`);
  }
  // 4.3.5 (v8+) restricted, (v10+) knock_restricted.
  if ((rv.restrictedJoins && joinRule === "restricted") || (rv.knockRestricted && joinRule === "knock_restricted")) {
    if (invitedOrJoined) return ALLOW;
    const via = own(content, "join_authorised_via_users_server");
    if (typeof via !== "string") {
      return deny(`rule 4.3.5.2: join_rule is ${joinRule} and there is no join_authorised_via_users_server`);
    }
    if (membershipOf(via, authState) !== "join") {
      return deny("rule 4.3.5.2: the join_authorised_via_users_server user is not joined to the room");
    }
    if (powerLevelOf(via, authState, rv) < namedPowerLevel("invite", authState, rv)) {
      return deny("rule 4.3.5.2: the join_authorised_via_users_server user cannot invite");
    }
    return ALLOW;
  }
  if (joinRule === "public") return ALLOW;
  return deny(`rule 4.3.7: join_rule ${String(joinRule)} does not allow this join`);
}

/** Rule 4.4: membership invite. */
function checkInvite(event: RoomEvent, content: Obj, target: string, authState: StateMap, rv: RoomVersion): AuthResult {
  if (Object.hasOwn(content, "third_party_invite")) return checkThirdPartyInvite(event, content, target, authState);
  if (membershipOf(event.sender, authState) !== "join") return deny("rule 4.4.2: the inviter is not joined");
  const current = membershipOf(target, authState);
  if (current === "join" || current === "ban") return deny(`rule 4.4.3: the invitee's membership is ${current}`);
  if (powerLevelOf(event.sender, authState, rv) >= namedPowerLevel("invite", authState, rv)) return ALLOW;
  return deny("rule 4.4.5: the sender's power level is below the invite level");
}

/** Rule 4.4.1: invite with content.third_party_invite. */
function checkThirdPartyInvite(event: RoomEvent, content: Obj, target: string, authState: StateMap): AuthResult {
  if (membershipOf(target, authState) === "ban") return deny("rule 4.4.1.1: the target user is banned");
  const signed = asObject(own(asObject(content.third_party_invite), "signed"));
  if (!signed) return deny("rule 4.4.1.2: third_party_invite has no signed property");
  const mxid = own(signed, "mxid");
  const token = own(signed, "token");
  if (typeof mxid !== "string" || typeof token !== "string") return deny("rule 4.4.1.3: signed needs mxid and token");
  if (mxid !== target) return deny("rule 4.4.1.4: signed.mxid does not match the state_key");
  const tpi = authState.get(stateKey("m.room.third_party_invite", token));
  if (!tpi) return deny("rule 4.4.1.5: no m.room.third_party_invite event for this token");
  if (tpi.sender !== event.sender) return deny("rule 4.4.1.6: the sender did not send the m.room.third_party_invite");
  // 4.4.1.7 "If any signature in signed matches any public key ... allow": verified by the caller.
  if (verifiedThirdPartyInvites.get(event)?.has(tpi.event_id)) return ALLOW;
  return deny("rule 4.4.1.7: the third-party invite signature has not been verified");
}

/** Rule 4.5: membership leave (leaving, rejecting an invite, rescinding a knock, kick, unban). */
function checkLeave(event: RoomEvent, target: string, authState: StateMap, rv: RoomVersion): AuthResult {
  const targetMembership = membershipOf(target, authState);
  if (event.sender === target) {
    // 4.5.1 "allow if and only if that user's current membership state is invite, join, or knock"
    const ok = targetMembership === "invite" || targetMembership === "join" || (rv.knocking && targetMembership === "knock");
    return ok ? ALLOW : deny(`rule 4.5.1: cannot leave with membership ${String(targetMembership)}`);
  }
  if (membershipOf(event.sender, authState) !== "join") return deny("rule 4.5.2: the sender is not joined");
  const senderLevel = powerLevelOf(event.sender, authState, rv);
  if (targetMembership === "ban" && senderLevel < namedPowerLevel("ban", authState, rv)) {
    return deny("rule 4.5.3: unbanning requires the ban level");
  }
  if (senderLevel >= namedPowerLevel("kick", authState, rv) && powerLevelOf(target, authState, rv) < senderLevel) {
    return ALLOW;
  }
  return deny("rule 4.5.4: kicking requires the kick level and a power level above the target's");
}

/** Rule 4.6: membership ban. */
function checkBan(event: RoomEvent, target: string, authState: StateMap, rv: RoomVersion): AuthResult {
  if (membershipOf(event.sender, authState) !== "join") return deny("rule 4.6.1: the sender is not joined");
  const senderLevel = powerLevelOf(event.sender, authState, rv);
  if (senderLevel >= namedPowerLevel("ban", authState, rv) && powerLevelOf(target, authState, rv) < senderLevel) {
    return ALLOW;
  }
  return deny("rule 4.6.2: banning requires the ban level and a power level above the target's");
}

/** Rule 4.7 (v7+): membership knock. */
function checkKnock(event: RoomEvent, target: string, authState: StateMap, rv: RoomVersion): AuthResult {
  const joinRule = joinRuleOf(authState);
  if (!(joinRule === "knock" || (rv.knockRestricted && joinRule === "knock_restricted"))) {
    return deny(`rule 4.7.1: join_rule ${String(joinRule)} does not allow knocking`);
  }
  if (event.sender !== target) return deny("rule 4.7.2: the sender of a knock must be the knocking user");
  const current = membershipOf(target, authState);
  if (current === "ban" || current === "invite" || current === "join") {
    return deny(`rule 4.7.4: cannot knock with membership ${current}`);
  }
  return ALLOW;
}

const PL_NAMED_KEYS = ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"];

/** Rule 9: m.room.power_levels (v1–v5: 10). */
function checkPowerLevels(
  event: RoomEvent,
  content: Obj,
  authState: StateMap,
  rv: RoomVersion,
  senderLevel: number,
): AuthResult {
  // 9.1, 9.2 (v10+): every value must be an integer.
  if (rv.integerPowerLevels) {
    for (const k of PL_NAMED_KEYS) {
      if (Object.hasOwn(content, k) && !isStrictInteger(content[k])) return deny(`rule 9.1: ${k} is not an integer`);
    }
    for (const k of ["events", "notifications"]) {
      if (!Object.hasOwn(content, k)) continue;
      const m = asObject(content[k]);
      if (!m || !Object.values(m).every(isStrictInteger)) {
        return deny(`rule 9.2: ${k} is not an object of integers`);
      }
    }
  }
  // 9.3 "If the users property in content is not an object with keys that are valid user IDs with
  // values that are integers (or, before v10, a string that is an integer), reject." Absent is {}.
  const newUsers = Object.hasOwn(content, "users") ? asObject(content.users) : {};
  if (!newUsers) return deny("rule 9.3: users is not an object");
  for (const [user, level] of Object.entries(newUsers)) {
    if (!isAuthValidUserId(user)) return deny(`rule 9.3: users key ${user.slice(0, 80)} is not a valid user ID`);
    if (parsePowerLevelValue(level, rv) === undefined) return deny(`rule 9.3: the power level of ${user} is not an integer`);
  }
  // v12 rule 10.4: creators cannot be listed in users.
  if (rv.privilegedCreators) {
    const create = authState.get(CREATE_KEY)!;
    for (const c of creatorsOf(create, rv)) {
      if (Object.hasOwn(newUsers, c)) return deny(`v12 rule 10.4: users must not contain the room creator ${c}`);
    }
  }
  // 9.4 "If there is no previous m.room.power_levels event in the room, allow."
  const previous = authState.get(POWER_LEVELS_KEY);
  if (!previous) return ALLOW;
  const old = asObject(previous.content) ?? {};

  // 9.5: users_default ... invite, added, changed or removed.
  for (const k of PL_NAMED_KEYS) {
    const r = checkLevelChange("9.5", k, parsePowerLevelValue(own(old, k), rv), parsePowerLevelValue(own(content, k), rv), senderLevel);
    if (r) return r;
  }
  // 9.6, 9.7: events (and, v6+, notifications) entries.
  const maps = rv.limitNotificationsPowerLevels ? ["events", "notifications"] : ["events"];
  for (const m of maps) {
    const r = checkMapChanges(m, asObject(own(old, m)) ?? {}, asObject(own(content, m)) ?? {}, rv, senderLevel);
    if (r) return r;
  }
  // 9.8, 9.9: users entries.
  const oldUsers = asObject(own(old, "users")) ?? {};
  for (const user of unionKeys(oldUsers, newUsers)) {
    const before = parsePowerLevelValue(own(oldUsers, user), rv);
    const after = parsePowerLevelValue(own(newUsers, user), rv);
    if (before === after) continue;
    // 9.8 changed or removed, other than the sender's own entry: current value >= sender's → reject.
    if (user !== event.sender && before !== undefined && before >= senderLevel) {
      return deny(`rule 9.8: cannot change the power level of ${user}, who has at least the sender's level`);
    }
    // 9.9 added or changed: new value > sender's → reject.
    if (after !== undefined && after > senderLevel) {
      return deny(`rule 9.9: cannot give ${user} a power level above the sender's`);
    }
  }
  return ALLOW;
}

/** A changed value must be at most the sender's level both before and after (rules 9.5–9.7). */
function checkLevelChange(
  rule: string,
  what: string,
  before: number | undefined,
  after: number | undefined,
  senderLevel: number,
): AuthResult | null {
  if (before === after) return null;
  if (before !== undefined && before > senderLevel) {
    return deny(`rule ${rule}: cannot change ${what}, currently above the sender's level`);
  }
  if (after !== undefined && after > senderLevel) return deny(`rule ${rule}: cannot set ${what} above the sender's level`);
  return null;
}

function checkMapChanges(name: string, before: Obj, after: Obj, rv: RoomVersion, senderLevel: number): AuthResult | null {
  for (const k of unionKeys(before, after)) {
    const r = checkLevelChange(
      "9.6/9.7",
      `${name}[${k.slice(0, 80)}]`,
      parsePowerLevelValue(own(before, k), rv),
      parsePowerLevelValue(own(after, k), rv),
      senderLevel,
    );
    if (r) return r;
  }
  return null;
}

function unionKeys(a: Obj, b: Obj): Set<string> {
  const s = new Set(Object.keys(a));
  for (const k of Object.keys(b)) s.add(k);
  return s;
}

/** v1–v2 rule 11: m.room.redaction needs the redact level, or the same domain as the redacted
 *  event's ID (event IDs carry a domain in these versions). */
function checkRedactionV1(event: RoomEvent, authState: StateMap, rv: RoomVersion, senderLevel: number): AuthResult {
  if (senderLevel >= namedPowerLevel("redact", authState, rv)) return ALLOW;
  const redacts = event.redacts ?? event.pdu?.redacts;
  const d = domainOfAny(redacts);
  if (d !== undefined && d === domainOfAny(event.event_id)) return ALLOW;
  return deny("rule 11: redacting another server's event requires the redact level");
}
