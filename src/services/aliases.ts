// Room aliases: the local alias → room ID mapping in D1 (spec: Client-Server API "Room aliases",
// Appendices "Room Aliases"). Plain functions over D1; the HTTP layer is src/api/client/directory.ts,
// and createRoom (room_alias_name) and the state-event PUT (m.room.canonical_alias) call in here.
import type { Env } from "../env";
import { queryAppserviceAlias } from "./appservice-queries";
import type { Config } from "../config";
import { MatrixError, invalidParam } from "../api/errors";
import { domainOf, isValidRoomAlias, isValidRoomId, isValidServerName } from "../core/ids";
import { FederationError, federationContext, federationRequest, type FederationContext } from "./federation/client";
import { roomStub } from "../rpc/stubs";
import type { JsonObject } from "../core/types";

export interface AliasRow {
  alias: string;
  roomId: string;
  creator: string;
  createdTs: number;
}

/** Server name of an alias (everything after the first ":"), or null if the alias is invalid.
 *  Grammar (Appendices "Room Aliases"): `#localpart:domain`, localpart any non-surrogate code
 *  points except ":" and NUL, at most 255 bytes in all. */
export function aliasServerName(alias: string): string | null {
  if (!isValidRoomAlias(alias)) return null;
  return domainOf(alias);
}

/** Throws 400 M_INVALID_PARAM unless `alias` is a valid alias on `serverName`. Spec: "it is likely
 *  that a homeserver will reject attempts to maintain aliases on other domain names" — we do. */
export function checkLocalAlias(alias: string, serverName: string): void {
  const server = aliasServerName(alias);
  if (server === null) throw invalidParam(`Room alias ${JSON.stringify(alias)} is invalid`);
  if (server !== serverName) throw invalidParam(`Room alias ${alias} is not on this server (${serverName})`);
}

/** The alias for createRoom's `room_alias_name`: `#<name>:<server>`. Spec (createRoom): the
 *  localpart only; a name containing ":" or making the alias invalid is M_INVALID_PARAM. */
export function aliasFromLocalpart(localpart: string, serverName: string): string {
  const alias = `#${localpart}:${serverName}`;
  if (localpart.includes(":") || aliasServerName(alias) !== serverName) {
    throw invalidParam(`room_alias_name ${JSON.stringify(localpart)} does not make a valid room alias`);
  }
  return alias;
}

/** True if nobody holds `alias` yet. createRoom checks this before creating the room so that a
 *  taken alias fails with M_ROOM_IN_USE without leaving a room behind. */
export async function isAliasAvailable(env: Env, alias: string): Promise<boolean> {
  return !(await env.DB.prepare("SELECT 1 FROM room_aliases WHERE alias = ?").bind(alias).first());
}

/**
 * Map `alias` → `roomId`. The caller has already checked the grammar, the domain
 * (checkLocalAlias) and that the creator may do this. An alias that is already taken — also
 * under a concurrent create — is 409 M_UNKNOWN (spec: PUT /directory/room/{roomAlias}, "409 A room
 * alias with that name already exists"); createRoom maps that to 400 M_ROOM_IN_USE.
 */
export async function createAlias(env: Env, alias: string, roomId: string, creatorUserId: string): Promise<void> {
  if (!isValidRoomAlias(alias)) throw invalidParam(`Room alias ${JSON.stringify(alias)} is invalid`);
  if (!isValidRoomId(roomId)) throw invalidParam(`Room ID ${JSON.stringify(roomId)} is invalid`);
  const r = await claimAliasStatement(env.DB, alias, roomId, creatorUserId).run();
  if (r.meta.changes !== 1) throw new MatrixError(409, "M_UNKNOWN", `Room alias ${alias} already exists`);
}

/** The insert of createAlias as a statement, for createRoom's D1 batch after the room is stored
 *  (durable-objects/room/local.ts): `meta.changes` is 1 when the alias was claimed, 0 when it
 *  was taken. */
export function claimAliasStatement(db: D1Database, alias: string, roomId: string, creatorUserId: string): D1PreparedStatement {
  return db.prepare("INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING").bind(alias, roomId, creatorUserId, Date.now());
}

export async function getAlias(env: Env, alias: string): Promise<AliasRow | null> {
  const row = await env.DB.prepare("SELECT alias, room_id, creator, created_ts FROM room_aliases WHERE alias = ?")
    .bind(alias)
    .first<{ alias: string; room_id: string; creator: string; created_ts: number }>();
  return row && { alias: row.alias, roomId: row.room_id, creator: row.creator, createdTs: row.created_ts };
}

/**
 * Resolve a *local* alias: `{room_id, servers}` or null. `servers` (spec: "A list of servers that
 * are aware of this room alias") is the alias's own server, which is this one; once the RoomDO can
 * tell us which servers have joined members, callers may add those (joining via them works too).
 * Only our own table is consulted: remote aliases resolve to null here; resolveAnyAlias /
 * resolveRemoteAlias ask their server over federation.
 */
export async function resolveAlias(env: Env, alias: string): Promise<{ room_id: string; servers: string[] } | null> {
  const server = aliasServerName(alias);
  if (server === null) return null;
  const row = await getAlias(env, alias);
  return row && { room_id: row.roomId, servers: [server] };
}

/**
 * Resolve an alias on another server over federation (spec: Server-Server API "Querying for
 * information", GET /_matrix/federation/v1/query/directory): `{room_id, servers}`, or null when
 * that server says it does not know the alias (404). An unreachable server or a malformed answer
 * is 502 M_UNKNOWN, so a client can tell "no such alias" from "could not ask".
 */
export async function resolveRemoteAlias(
  env: Env,
  config: Config,
  alias: string,
  ctx: FederationContext = federationContext(env, config),
): Promise<{ room_id: string; servers: string[] } | null> {
  const server = aliasServerName(alias);
  if (server === null) throw invalidParam(`Room alias ${JSON.stringify(alias)} is invalid`);
  let body: unknown;
  try {
    body = (await federationRequest(ctx, server, "GET", "/_matrix/federation/v1/query/directory", { query: { room_alias: alias }, timeoutMs: 15_000 })).body;
  } catch (e) {
    if (e instanceof FederationError && e.status === 404) return null;
    const why = e instanceof Error ? e.message : String(e);
    throw new MatrixError(502, "M_UNKNOWN", `Could not resolve ${alias} on ${server}: ${why}`);
  }
  const o = (body ?? {}) as { room_id?: unknown; servers?: unknown };
  if (typeof o.room_id !== "string" || !isValidRoomId(o.room_id)) {
    throw new MatrixError(502, "M_UNKNOWN", `${server} answered the alias query without a valid room_id`);
  }
  const servers = Array.isArray(o.servers) ? o.servers.filter((s): s is string => typeof s === "string" && isValidServerName(s)) : [];
  // The alias's own server knows the room (it just told us), so joining via it is worth a try.
  if (!servers.includes(server)) servers.unshift(server);
  return { room_id: o.room_id, servers };
}

/** Resolve any alias: local from D1, remote over federation (spec: "homeservers MUST handle GET
 *  requests to resolve aliases on other servers; they should do this using the federation API"). */
export async function resolveAnyAlias(env: Env, config: Config, alias: string): Promise<{ room_id: string; servers: string[] } | null> {
  const server = aliasServerName(alias);
  if (server === null) throw invalidParam(`Room alias ${JSON.stringify(alias)} is invalid`);
  return server === config.serverName ? resolveLocalAlias(env, config, alias) : resolveRemoteAlias(env, config, alias);
}

/** A local alias; when unknown and in an application service's aliases namespace, that
 *  appservice is asked (it may create it) and the alias looked up again. */
export async function resolveLocalAlias(env: Env, config: Config, alias: string): Promise<{ room_id: string; servers: string[] } | null> {
  const r = await resolveAlias(env, alias);
  if (r || !(await queryAppserviceAlias(env, config, alias))) return r;
  return resolveAlias(env, alias);
}

/** Remove `alias`. Returns false if there was no such alias. Permission checks are the caller's. */
export async function deleteAlias(env: Env, alias: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM room_aliases WHERE alias = ?").bind(alias).run();
  return r.meta.changes > 0;
}

/** All local aliases of a room, in creation order (spec: GET /rooms/{roomId}/aliases). */
export async function listAliases(env: Env, roomId: string): Promise<string[]> {
  const { results } = await env.DB.prepare("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY created_ts, alias")
    .bind(roomId)
    .all<{ alias: string }>();
  return results.map((r) => r.alias);
}

/**
 * Validate the content of an `m.room.canonical_alias` event about to be sent to `roomId`
 * (spec: PUT /rooms/{roomId}/state/{eventType}/{stateKey}, 400 responses):
 *  - "M_INVALID_PARAM: One or more aliases within the m.room.canonical_alias event have invalid
 *    syntax" — also when `alias` is not a string or `alt_aliases` is not a list of strings;
 *  - "M_BAD_ALIAS: One or more aliases within the m.room.canonical_alias event do not point to
 *    the room ID for which the state event is to be sent to."
 * `alias` null, empty or absent means "no canonical alias" (event schema) and is fine.
 * Like Synapse, only `alt_aliases` entries that are new compared with `previous` (the current
 * event's content) are checked, so an alias that drifted away does not block other edits.
 * Aliases on other servers are not looked up over federation here (a state PUT should not hang on
 * a remote server): they are refused with M_BAD_ALIAS rather than accepted unchecked.
 * `claimed`: aliases that will point to the room but are not written yet (createRoom's
 * room_alias_name, claimed right after the room exists).
 */
export async function validateCanonicalAlias(
  env: Env,
  roomId: string,
  content: Record<string, unknown>,
  previous?: Record<string, unknown> | null,
  claimed: string[] = [],
): Promise<void> {
  const toCheck: string[] = [];
  const alias = content.alias;
  if (alias !== undefined && alias !== null && alias !== "") {
    if (typeof alias !== "string" || !isValidRoomAlias(alias)) throw invalidParam("m.room.canonical_alias: alias is not a valid room alias");
    toCheck.push(alias);
  }
  if (content.alt_aliases !== undefined) {
    const alt = content.alt_aliases;
    if (!Array.isArray(alt)) throw invalidParam("m.room.canonical_alias: alt_aliases must be a list");
    const before = new Set(Array.isArray(previous?.alt_aliases) ? (previous.alt_aliases as unknown[]) : []);
    for (const a of alt) {
      if (typeof a !== "string" || !isValidRoomAlias(a)) throw invalidParam(`m.room.canonical_alias: alt_aliases contains an invalid room alias`);
      if (!before.has(a) && !toCheck.includes(a)) toCheck.push(a);
    }
  }
  for (const a of toCheck) {
    if (claimed.includes(a)) continue;
    const resolved = await resolveAlias(env, a);
    if (resolved?.room_id !== roomId) {
      throw new MatrixError(400, "M_BAD_ALIAS", `The alias ${a} does not point to this room`);
    }
  }
}

/** After `alias` was deleted from the directory: the room's m.room.canonical_alias must not go
 *  on advertising it, so a new event drops it from `alias` and `alt_aliases` (what Synapse does
 *  on DELETE /directory/room/{alias}). Sent as the user who deleted the alias; when they may not
 *  send it (e.g. they created the alias but lack the power), the event stays and this is logged:
 *  the deletion itself stands. */
export async function dropFromCanonicalAlias(env: Env, config: Config, roomId: string, alias: string, userId: string): Promise<void> {
  const stub = roomStub(env, config, roomId);
  const ev = await stub.getCurrentStateEvent("m.room.canonical_alias", "");
  const content = (ev?.content ?? {}) as { alias?: unknown; alt_aliases?: unknown };
  const alt = Array.isArray(content.alt_aliases) ? content.alt_aliases : [];
  if (content.alias !== alias && !alt.includes(alias)) return;
  const next: Record<string, unknown> = { ...content };
  if (content.alias === alias) delete next.alias;
  if (Array.isArray(content.alt_aliases)) {
    const kept = alt.filter((a) => a !== alias);
    if (kept.length) next.alt_aliases = kept;
    else delete next.alt_aliases;
  }
  const r = await stub.createLocalEvent({ type: "m.room.canonical_alias", state_key: "", sender: userId, content: next as JsonObject });
  if (!r.ok) console.warn(`alias ${alias} deleted, but ${roomId}'s m.room.canonical_alias still lists it: ${r.error}`);
}
