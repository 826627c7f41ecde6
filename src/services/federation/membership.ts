// Federated rooms, joining side (spec: Server-Server API "Joining Rooms", "Inviting to a room",
// "Leaving Rooms (Rejecting Invites)", "Knocking upon a room", "Backfilling and retrieving
// missing events"). The RoomDO validates and stores; this module talks to the other servers.
//
//   joinRemoteRoom      make_join → sign → v2/send_join → RoomDO.seedFromJoin (state and auth
//                       chain validated there), trying each candidate server in turn
//   inviteRemoteUser    our signed invite → PUT v2/invite at the invitee's server → admit the
//                       co-signed event
//   leaveRemoteRoom     make_leave/v2/send_leave through a resident server (rejecting an invite
//                       or retracting a knock in a room we are not in)
//   knockRemoteRoom     make_knock/send_knock
//   admitFederatedPdu   a PDU from /send: admit; fetch missing auth events (/event_auth) and
//                       prev events (get_missing_events, then /state_ids at the gap) — bounded
//   backfillFromRemote  /backfill from a resident server when a client pages past our history
import type { Env } from "../../env";
import type { Config } from "../../config";
import type { AdmitOutcome } from "../../rpc/room";
import type { JsonObject, PDU } from "../../core/types";
import { ROOM_VERSIONS, getRoomVersion, type RoomVersion } from "../../core/room-versions";
import { computeEventId, hashAndSignEvent } from "../../core/event-hashes";
import { domainOf, parseServerName } from "../../core/ids";
import { MatrixError } from "../../api/errors";
import { getServerSigningKey } from "../server-key";
import { roomStub, unwrap, type RoomStub } from "../rooms";
import { federationContext, federationRequest, FederationError } from "./client";

/** Room versions we can take part in (make_join/make_knock `ver`). */
const SUPPORTED_VERSIONS = [...ROOM_VERSIONS.values()].filter((v) => v.eventIdFormat !== 1).map((v) => v.id);
const MAX_CANDIDATES = 5;
const JOIN_TIMEOUT_MS = 120_000;
const MAX_GAP_EVENTS = 20;
const MAX_STATE_FETCH = 200;
/** Missing prev events of one event whose states are fetched (a merge event cites up to ten;
 *  taking fewer would drop the branches of the others from the state before it). */
const MAX_GAP_PREVS = 20;

const enc = encodeURIComponent;

/** Candidate servers: the caller's list, then the room ID's domain (pre-v12 room IDs name their
 *  creator's server), without ourselves or duplicates. */
export function candidateServers(config: Config, roomId: string, servers: string[]): string[] {
  const out: string[] = [];
  for (const s of [...servers, domainOf(roomId)]) {
    if (!s || s === config.serverName || out.includes(s) || !parseServerName(s)) continue;
    out.push(s);
  }
  return out.slice(0, MAX_CANDIDATES);
}

interface Template {
  room_version: string;
  event: JsonObject;
}

/** A make_* template → our signed membership event. Only the fields a template may set are
 *  taken; content is ours (plus join_authorised_via_users_server for restricted joins). */
async function fillTemplate(env: Env, config: Config, t: Template, roomId: string, userId: string, membership: string, content: JsonObject): Promise<{ rv: RoomVersion; pdu: PDU; eventId: string }> {
  const rv = getRoomVersion(String(t.room_version ?? "1"));
  if (!rv || !SUPPORTED_VERSIONS.includes(rv.id)) throw new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", `Room version ${t.room_version} is not supported`);
  const e = t.event ?? {};
  if (e.type !== "m.room.member" || e.state_key !== userId || e.sender !== userId || e.room_id !== roomId || (e.content as JsonObject | undefined)?.membership !== membership) {
    throw new FederationError("the resident server returned a bad template");
  }
  if (!Array.isArray(e.prev_events) || !Array.isArray(e.auth_events) || typeof e.depth !== "number") throw new FederationError("template without prev/auth events");
  const c: JsonObject = { ...content, membership };
  const via = (e.content as JsonObject).join_authorised_via_users_server;
  if (typeof via === "string") c.join_authorised_via_users_server = via;
  const pdu = {
    room_id: roomId,
    sender: userId,
    type: "m.room.member",
    state_key: userId,
    content: c,
    origin_server_ts: Date.now(),
    depth: e.depth,
    prev_events: e.prev_events,
    auth_events: e.auth_events,
  } as unknown as PDU;
  const key = await getServerSigningKey(env, config);
  const signed = await hashAndSignEvent(pdu, rv, config.serverName, key);
  return { rv, ...signed };
}

/** Try `fn` against each server until one succeeds; the last error otherwise. */
async function viaServers<T>(servers: string[], fn: (server: string) => Promise<T>): Promise<T> {
  if (servers.length === 0) throw new MatrixError(404, "M_NOT_FOUND", "No server to reach the room through");
  let last: unknown;
  for (const s of servers) {
    try {
      return await fn(s);
    } catch (e) {
      last = e;
      // The room refused us (403) on a server that answered: the others will agree.
      if (e instanceof MatrixError && e.status === 403) throw e;
      console.warn(`federation: ${s} failed: ${(e as Error).message}`);
    }
  }
  if (last instanceof MatrixError) throw last;
  if (last instanceof FederationError && last.status === 403) throw new MatrixError(403, "M_FORBIDDEN", last.message);
  if (last instanceof FederationError && last.status === 404) throw new MatrixError(404, "M_NOT_FOUND", last.message);
  throw new MatrixError(502, "M_UNKNOWN", `Could not reach the room: ${(last as Error)?.message ?? "unknown error"}`);
}

/** Join a room this server is not in. With PARTIAL_STATE_JOINS=on (default off) and no copy of the room here
 *  yet, send_join asks for `omit_members=true` (spec: PUT /v2/send_join, MSC3706); when the
 *  resident left the members out, the room is seeded with the rest of the state and marked
 *  partial (which sets the RoomDO's alarm that fetches the full state,
 *  durable-objects/room/partial-sync.ts), and the client is answered. */
export async function joinRemoteRoom(
  env: Env,
  config: Config,
  userId: string,
  roomId: string,
  servers: string[],
  content: JsonObject,
  /** The caller can serve a room whose members are still being fetched (a client's join). */
  partialAllowed = false,
): Promise<void> {
  const ctx = federationContext(env, config);
  const stub = roomStub(env, config, roomId);
  // Only a first copy of the room is seeded partially: a room we hold (another local member
  // joined, or we rejoin after leaving) merges the resident's full state into ours.
  const omitMembers = config.partialStateJoins && partialAllowed && (!(await stub.getRoomVersion()) || (await stub.getPartialInfo()).partial);
  await viaServers(candidateServers(config, roomId, servers), async (server) => {
    const t = await federationRequest<Template>(ctx, server, "GET", `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(userId)}`, { query: { ver: SUPPORTED_VERSIONS }, timeoutMs: 30_000 });
    const { rv, pdu, eventId } = await fillTemplate(env, config, t.body, roomId, userId, "join", content);
    // From send_join on, the room's servers may send us its events (the resident merges its
    // forward extremities right after our join): the room must be known here and its RoomDO
    // hold them until it is seeded (expectJoin), or they are refused and lost.
    const registered = await registerJoiningRoom(env, roomId, rv.id);
    await stub.expectJoin();
    try {
      // The answer's text goes to the RoomDO unparsed: it parses it once (tens of thousands of
      // events) and takes `state`, `auth_chain`, `members_omitted`, `servers_in_room` and a
      // co-signed `event` from it (RemoteRoom.seedFromJoin); parsing it here too cost the
      // joining server a second parse of the whole answer.
      const r = await federationRequest(ctx, server, "PUT", `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(eventId)}`, {
        body: pdu,
        timeoutMs: JOIN_TIMEOUT_MS,
        maxBytes: 256 * 1024 * 1024,
        textOnly: true,
        ...(omitMembers ? { query: { omit_members: "true" } } : {}),
      });
      unwrap(
        await stub.seedFromJoin({
          serverName: config.serverName,
          roomId,
          roomVersion: rv.id,
          origin: server,
          join: pdu,
          joinEventId: eventId,
          answerJson: r.text,
          askedOmitMembers: omitMembers,
        }),
      );
    } catch (e) {
      if (registered) await env.DB.prepare("DELETE FROM rooms WHERE room_id = ?").bind(roomId).run();
      throw e;
    } finally {
      await stub.joinSettled();
    }
  });
}

/** Enter a room we are joining in the room registry (D1) before its state is here, so that
 *  federation transactions hand its events to the RoomDO. Returns whether this call added it
 *  (to take it out again if the join fails); the creator is filled in by the seed. */
async function registerJoiningRoom(env: Env, roomId: string, roomVersion: string): Promise<boolean> {
  const r = await env.DB.prepare("INSERT OR IGNORE INTO rooms (room_id, room_version, creator, created_ts) VALUES (?, ?, '', ?)").bind(roomId, roomVersion, Date.now()).run();
  return (r.meta.changes ?? 0) > 0;
}

/** Knock on a room this server is not in. */
export async function knockRemoteRoom(env: Env, config: Config, userId: string, roomId: string, servers: string[], content: JsonObject): Promise<void> {
  const ctx = federationContext(env, config);
  const stub = roomStub(env, config, roomId);
  await viaServers(candidateServers(config, roomId, servers), async (server) => {
    const t = await federationRequest<Template>(ctx, server, "GET", `/_matrix/federation/v1/make_knock/${enc(roomId)}/${enc(userId)}`, { query: { ver: SUPPORTED_VERSIONS } });
    const { rv, pdu, eventId } = await fillTemplate(env, config, t.body, roomId, userId, "knock", content);
    const r = await federationRequest<{ knock_room_state?: JsonObject[] }>(ctx, server, "PUT", `/_matrix/federation/v1/send_knock/${enc(roomId)}/${enc(eventId)}`, { body: pdu });
    const stripped = Array.isArray(r.body.knock_room_state) ? r.body.knock_room_state.slice(0, 50) : [];
    unwrap(await stub.storeRemoteMembership({ serverName: config.serverName, roomId, roomVersion: rv.id, pdu, stripped }));
  });
}

/** Leave a room we are not in (reject an invite, retract a knock) through a resident server:
 *  the inviter's server first. */
export async function leaveRemoteRoom(env: Env, config: Config, userId: string, roomId: string, servers: string[], content: JsonObject): Promise<void> {
  const ctx = federationContext(env, config);
  const stub = roomStub(env, config, roomId);
  await viaServers(candidateServers(config, roomId, servers), async (server) => {
    const t = await federationRequest<Template>(ctx, server, "GET", `/_matrix/federation/v1/make_leave/${enc(roomId)}/${enc(userId)}`);
    const { rv, pdu, eventId } = await fillTemplate(env, config, t.body, roomId, userId, "leave", content);
    await federationRequest(ctx, server, "PUT", `/_matrix/federation/v2/send_leave/${enc(roomId)}/${enc(eventId)}`, { body: pdu });
    unwrap(await stub.storeRemoteMembership({ serverName: config.serverName, roomId, roomVersion: rv.id, pdu }));
  });
}

/** Reject an invite to a room we are not in when no resident server takes the rejection
 *  (unreachable, or refusing make_leave): a leave signed here, citing the invite as its prev and
 *  auth event, kept as the user's membership of the partial room, so their client sees the
 *  invite end (Synapse does the same: an "out-of-band" leave). The inviting server is not told. */
export async function rejectInviteLocally(env: Env, config: Config, userId: string, roomId: string, content: JsonObject): Promise<void> {
  const stub = roomStub(env, config, roomId);
  const info = await stub.getPartialInfo();
  const m = info.members[userId];
  const rv = info.roomVersion ? getRoomVersion(info.roomVersion) : undefined;
  if (!info.partial || !rv || m?.membership !== "invite") throw new MatrixError(403, "M_FORBIDDEN", "You are not invited to this room");
  const invite = await stub.getPdu(m.eventId);
  const pdu = {
    room_id: roomId,
    sender: userId,
    type: "m.room.member",
    state_key: userId,
    content: { ...content, membership: "leave" },
    origin_server_ts: Date.now(),
    depth: (invite?.pdu.depth ?? 0) + 1,
    prev_events: [m.eventId],
    auth_events: [m.eventId],
  } as unknown as PDU;
  const signed = await hashAndSignEvent(pdu, rv, config.serverName, await getServerSigningKey(env, config));
  unwrap(await stub.storeRemoteMembership({ serverName: config.serverName, roomId, roomVersion: rv.id, pdu: signed.pdu }));
}

/** Invite a remote user: their server co-signs the invite (PUT v2/invite with stripped state),
 *  then the co-signed event enters the room through admit (and goes to the room's servers). */
export async function inviteRemoteUser(env: Env, config: Config, stub: RoomStub, roomId: string, inviter: string, invitee: string, content: JsonObject): Promise<void> {
  const rvId = await stub.getRoomVersion();
  const rv = rvId ? getRoomVersion(rvId) : undefined;
  if (!rv) throw new MatrixError(404, "M_NOT_FOUND", "Unknown room");
  const { pdu, eventId } = unwrap(await stub.prepareLocalEvent({ type: "m.room.member", state_key: invitee, sender: inviter, content }));
  const stripped = await stub.getStrippedState();
  // The inviter's member event belongs in the stripped state too.
  const me = await stub.getCurrentStateEvent("m.room.member", inviter);
  if (me) stripped.push({ type: "m.room.member", state_key: inviter, sender: inviter, content: me.content as JsonObject });
  const ctx = federationContext(env, config);
  let r;
  try {
    r = await federationRequest<{ event?: PDU }>(ctx, domainOf(invitee), "PUT", `/_matrix/federation/v2/invite/${enc(roomId)}/${enc(eventId)}`, {
      body: { room_version: rv.id, event: pdu, invite_room_state: stripped },
    });
  } catch (e) {
    if (e instanceof FederationError && e.status !== undefined && e.status < 500) {
      // The invitee's server cannot take part in this room version (spec: createRoom 400).
      if (e.errcode === "M_INCOMPATIBLE_ROOM_VERSION") throw new MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", `The invitee's server does not support room version ${rv.id}`);
      throw new MatrixError(403, e.errcode === "M_INVITE_BLOCKED" ? "M_INVITE_BLOCKED" : "M_FORBIDDEN", `The invitee's server refused the invite: ${e.message}`);
    }
    throw new MatrixError(502, "M_UNKNOWN", `Could not reach the invitee's server: ${(e as Error).message}`);
  }
  const signed = r.body.event;
  if (!signed || (await computeEventId(signed, rv).catch(() => "")) !== eventId) throw new MatrixError(502, "M_UNKNOWN", "The invitee's server returned another event");
  const out = await stub.admit(signed, config.serverName);
  if (out.status !== "accepted" && out.status !== "duplicate") throw new MatrixError(403, "M_FORBIDDEN", `Invite refused: ${out.reason ?? out.status}`);
}

// ---------------------------------------------------------------------------------------------
// Receiving events with gaps.

async function fetchEvent(env: Env, config: Config, server: string, roomId: string, eventId: string): Promise<PDU | undefined> {
  try {
    const r = await federationRequest<{ pdus?: PDU[] }>(federationContext(env, config), server, "GET", `/_matrix/federation/v1/event/${enc(eventId)}`, { query: { room_id: roomId }, timeoutMs: 15_000 });
    return r.body.pdus?.[0];
  } catch {
    return undefined;
  }
}

async function fetchAuthChain(env: Env, config: Config, stub: RoomStub, origin: string, roomId: string, eventId: string): Promise<void> {
  try {
    const r = await federationRequest<{ auth_chain?: PDU[] }>(federationContext(env, config), origin, "GET", `/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc(eventId)}`, { timeoutMs: 30_000 });
    if (Array.isArray(r.body.auth_chain)) await stub.admitOutliers(r.body.auth_chain.slice(0, 5000), origin);
  } catch (e) {
    console.warn(`event_auth from ${origin} failed: ${(e as Error).message}`);
  }
}

/** State after event `prevId` as `origin` sees it: /state_ids (the state before it), the events
 *  we lack fetched and stored as outliers, plus the event itself when it is a state event. */
async function stateAfter(env: Env, config: Config, stub: RoomStub, origin: string, roomId: string, prevId: string): Promise<Record<string, string> | undefined> {
  const ctx = federationContext(env, config);
  let ids: { pdu_ids?: string[]; auth_chain_ids?: string[] };
  try {
    ids = (await federationRequest<typeof ids>(ctx, origin, "GET", `/_matrix/federation/v1/state_ids/${enc(roomId)}`, { query: { event_id: prevId }, timeoutMs: 30_000 })).body;
  } catch {
    return undefined;
  }
  const pduIds = (ids.pdu_ids ?? []).filter((id) => typeof id === "string");
  const wanted = [...new Set([...(ids.auth_chain_ids ?? []).filter((id) => typeof id === "string"), ...pduIds, prevId])];
  const held = new Set((await stub.heldAmong(wanted)).held);
  const lacking = wanted.filter((id) => !held.has(id));
  if (lacking.length > MAX_STATE_FETCH) return undefined;
  const fetched = (await Promise.all(lacking.map((id) => fetchEvent(env, config, origin, roomId, id)))).filter((p): p is PDU => !!p);
  if (fetched.length) await stub.admitOutliers(fetched, origin);
  const state: Record<string, string> = {};
  // Stored events are keyed by the ID computed from their content, so a held ID is that event.
  // The state before prevId, then prevId itself on top when it is a state event.
  const entries = (await stub.heldAmong([...pduIds, prevId])).state;
  for (const e of entries) if (e.event_id !== prevId) state[`${e.type}\u0000${e.state_key}`] = e.event_id;
  for (const e of entries) if (e.event_id === prevId) state[`${e.type}\u0000${e.state_key}`] = e.event_id;
  return state;
}

/** Admit a PDU that arrived over federation, filling gaps (spec "Backfilling and retrieving
 *  missing events": get_missing_events first; when the gap is wider, the state at the missing
 *  prev events from /state_ids). Every loop is bounded. */
export async function admitFederatedPdu(env: Env, config: Config, origin: string, roomId: string, pdu: PDU, depth = 0): Promise<AdmitOutcome> {
  const stub = roomStub(env, config, roomId);
  let out = await stub.admit(pdu, origin);
  if (out.status !== "missing" || depth > 1) return out;
  const rvId = await stub.getRoomVersion();
  const rv = rvId ? getRoomVersion(rvId) : undefined;
  if (!rv || !out.eventId) return out;
  if (out.reason === "unknown auth_events") {
    await fetchAuthChain(env, config, stub, origin, roomId, out.eventId);
    out = await stub.admit(pdu, origin);
    if (out.status !== "missing") return out;
  }
  if (out.reason === "unknown prev_events") {
    try {
      const r = await federationRequest<{ events?: PDU[] }>(federationContext(env, config), origin, "POST", `/_matrix/federation/v1/get_missing_events/${enc(roomId)}`, {
        body: { earliest_events: await stub.getForwardExtremities(), latest_events: [out.eventId], limit: MAX_GAP_EVENTS, min_depth: 0 },
        timeoutMs: 30_000,
      });
      const events = (r.body.events ?? []).slice(0, MAX_GAP_EVENTS).sort((a, b) => (a.depth ?? 0) - (b.depth ?? 0));
      for (const e of events) {
        if (e?.room_id !== roomId) continue;
        await admitFederatedPdu(env, config, origin, roomId, e, depth + 1);
      }
    } catch (e) {
      console.warn(`get_missing_events from ${origin} failed: ${(e as Error).message}`);
    }
    out = await stub.admit(pdu, origin);
  }
  if (out.status === "missing" && out.reason === "unknown auth_events") {
    await fetchAuthChain(env, config, stub, origin, roomId, out.eventId!);
    out = await stub.admit(pdu, origin);
  }
  if (out.status === "missing" && out.reason === "unknown prev_events") {
    // Still a gap: take the state at each missing prev event from the origin.
    const states: Record<string, string>[] = [];
    for (const prevId of (out.missing ?? []).slice(0, MAX_GAP_PREVS)) {
      const s = await stateAfter(env, config, stub, origin, roomId, prevId);
      if (!s) return { status: "invalid", eventId: out.eventId, reason: `could not fetch the state at ${prevId}` };
      states.push(s);
    }
    out = await stub.admitWithStates(pdu, origin, states);
    if (out.status === "missing" && out.reason === "unknown auth_events") {
      await fetchAuthChain(env, config, stub, origin, roomId, out.eventId!);
      out = await stub.admitWithStates(pdu, origin, states);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Backfill.

/** Fetch up to `limit` events of history before what we hold from a resident server. Returns
 *  how many were stored (0: nothing more to get). */
export async function backfillFromRemote(env: Env, config: Config, roomId: string, limit: number): Promise<number> {
  const stub = roomStub(env, config, roomId);
  const points = await stub.getBackfillPoints();
  if (points.complete || points.missing.length === 0) return 0;
  const servers = new Set<string>();
  for (const u of await stub.getJoinedUserIds()) servers.add(domainOf(u));
  servers.delete(config.serverName);
  const ctx = federationContext(env, config);
  for (const server of [...servers].slice(0, MAX_CANDIDATES)) {
    try {
      const r = await federationRequest<{ pdus?: PDU[] }>(ctx, server, "GET", `/_matrix/federation/v1/backfill/${enc(roomId)}`, {
        query: { v: points.missing, limit: Math.min(100, limit) },
        timeoutMs: 30_000,
      });
      const pdus = (r.body.pdus ?? []).filter((p) => p?.room_id === roomId || p?.type === "m.room.create").slice(0, 100);
      if (pdus.length === 0) continue;
      let res = await stub.admitBackfill(pdus, server);
      if (res.missingAuth.length) {
        const fetched = (await Promise.all(res.missingAuth.slice(0, 50).map((id) => fetchEvent(env, config, server, roomId, id)))).filter((p): p is PDU => !!p);
        await stub.admitOutliers(fetched, server);
        res = await stub.admitBackfill(pdus, server);
      }
      return res.admitted;
    } catch (e) {
      console.warn(`backfill from ${server} failed: ${(e as Error).message}`);
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Jump to date.

/** Events of history we backfill at most to reach another server's timestamp_to_event answer. */
const MAX_TIMESTAMP_BACKFILL = 1_000;

/** Client timestamp_to_event when the answer may lie in history we do not hold (Client-Server API
 *  "timestamp_to_event": a server without all of the room's history and without an event
 *  suitably close "can" ask other servers). Our history is contiguous from our oldest event to
 *  now, so only an answer at that edge is in doubt: we found none, or found our oldest event.
 *  Then the room's other servers are asked (GET /v1/timestamp_to_event); when one names a closer
 *  event we backfill towards it (at most MAX_TIMESTAMP_BACKFILL events). Returns whether history
 *  was added: the caller asks the RoomDO again, which applies the user's history visibility. */
export async function pullTimestampFromRemote(
  env: Env,
  config: Config,
  roomId: string,
  ts: number,
  dir: "f" | "b",
  local: { event_id: string; origin_server_ts: number } | null,
): Promise<boolean> {
  const stub = roomStub(env, config, roomId);
  const points = await stub.getBackfillPoints();
  if (points.complete) return false;
  if (local && (await stub.getPdu(local.event_id))?.stream !== points.oldestStream) return false;
  const servers = new Set<string>();
  for (const u of await stub.getJoinedUserIds()) servers.add(domainOf(u));
  servers.delete(config.serverName);
  const ctx = federationContext(env, config);
  for (const server of [...servers].slice(0, MAX_CANDIDATES)) {
    let remote: { event_id?: unknown; origin_server_ts?: unknown };
    try {
      remote = (
        await federationRequest<typeof remote>(ctx, server, "GET", `/_matrix/federation/v1/timestamp_to_event/${enc(roomId)}`, {
          query: { ts, dir },
          timeoutMs: 10_000,
        })
      ).body;
    } catch (e) {
      if (e instanceof FederationError && e.status === 404) return false; // nothing there either
      console.warn(`timestamp_to_event at ${server} failed: ${(e as Error).message}`);
      continue;
    }
    if (typeof remote.event_id !== "string" || typeof remote.origin_server_ts !== "number") continue;
    const closer = dir === "f" ? remote.origin_server_ts >= ts && (!local || remote.origin_server_ts < local.origin_server_ts) : remote.origin_server_ts <= ts && (!local || remote.origin_server_ts > local.origin_server_ts);
    if (!closer) return false;
    let added = 0;
    while (added < MAX_TIMESTAMP_BACKFILL && (await stub.getPdu(remote.event_id))?.stream == null) {
      const got = await backfillFromRemote(env, config, roomId, 100);
      if (got === 0) break;
      added += got;
    }
    return added > 0;
  }
  return false;
}
