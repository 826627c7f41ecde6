// Application services: registrations in D1 (admin API), the as_token lookup, namespace checks
// shared by registration and aliases, and the URL rule for outbound calls.
import type { Env } from "../env";
import { MatrixError } from "../api/errors";
import { Appservice, type Registration, type StoredRegistration } from "../core/appservice-registration";
import { isBlockedHost } from "../core/url-guard";
import { sha256Hex } from "./crypto-util";
import { createUser } from "./accounts";

interface Row {
  id: string;
  as_token_hash: string;
  registration: string;
}

/** Registrations are read on every event (RoomDO fan-out) and every request with an unknown
 *  token, so each isolate keeps them briefly. Changes through the admin API clear this isolate's
 *  copy at once; other isolates see them within CACHE_MS. */
const CACHE_MS = 2_000;
let cache: { at: number; db: D1Database; serverName: string; list: { service: Appservice; asTokenHash: string }[] } | undefined;

export function forgetAppservices(): void {
  cache = undefined;
}

async function loadAll(env: Env, serverName: string): Promise<{ service: Appservice; asTokenHash: string }[]> {
  const now = Date.now();
  if (cache && cache.db === env.DB && cache.serverName === serverName && now - cache.at < CACHE_MS) return cache.list;
  const { results } = await env.DB.prepare("SELECT id, as_token_hash, registration FROM appservices ORDER BY id").all<Row>();
  const list = results.map((r) => ({ service: new Appservice(JSON.parse(r.registration), serverName), asTokenHash: r.as_token_hash }));
  cache = { at: now, db: env.DB, serverName, list };
  return list;
}

export async function listAppservices(env: Env, serverName: string): Promise<Appservice[]> {
  return (await loadAll(env, serverName)).map((x) => x.service);
}

export async function appserviceById(env: Env, serverName: string, id: string): Promise<Appservice | undefined> {
  return (await listAppservices(env, serverName)).find((a) => a.id === id);
}

/** The appservice a local user belongs to (Synapse's `appservice_id` in the admin API): its
 *  sender, or a user in its exclusive users namespace (only that appservice can register
 *  there). Users of non-exclusive namespaces are ordinary users. */
export async function appserviceOfUser(env: Env, serverName: string, userId: string): Promise<string | null> {
  const list = await listAppservices(env, serverName);
  return (list.find((a) => a.senderUserId === userId) ?? list.find((a) => a.exclusiveUser(userId)))?.id ?? null;
}

/** The appservice whose as_token this is, if any. */
export async function appserviceByToken(env: Env, serverName: string, token: string): Promise<Appservice | undefined> {
  const list = await loadAll(env, serverName);
  if (list.length === 0) return undefined;
  const hash = await sha256Hex(token);
  return list.find((x) => x.asTokenHash === hash)?.service;
}

/** M_EXCLUSIVE when `userId` is in another party's exclusive users namespace (spec: "normal
 *  users who attempt to create users or aliases inside an application service-defined namespace
 *  will receive the same M_EXCLUSIVE error code, but only if [...] exclusive"). `actor` is the
 *  appservice making the request, whose own namespace is allowed. */
export async function checkUserNotExclusive(env: Env, serverName: string, userId: string, actor?: Appservice): Promise<void> {
  for (const a of await listAppservices(env, serverName)) {
    if (a.id !== actor?.id && (a.exclusiveUser(userId) || a.senderUserId === userId)) {
      throw new MatrixError(400, "M_EXCLUSIVE", `${userId} is reserved by an application service`);
    }
  }
}

export async function checkAliasNotExclusive(env: Env, serverName: string, alias: string, actor?: Appservice): Promise<void> {
  for (const a of await listAppservices(env, serverName)) {
    if (a.id !== actor?.id && a.exclusiveAlias(alias)) throw new MatrixError(400, "M_EXCLUSIVE", `${alias} is reserved by an application service`);
  }
}

/** Why the homeserver may not call this appservice URL, or null. Plain http only to loopback
 *  addresses with APPSERVICE_HTTP_LOOPBACK=true (tests, a bridge beside `npm start`); otherwise
 *  https to a public host, judged by the same address guard as URL previews. */
export function appserviceUrlProblem(raw: string, allowLoopback: boolean): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "url is not a valid URL";
  }
  if (url.username || url.password) return "url must not contain credentials";
  if (url.search || url.hash) return "url must not have a query or fragment";
  const loopback = url.hostname === "127.0.0.1" || url.hostname === "localhost" || url.hostname === "[::1]";
  if (allowLoopback && loopback && (url.protocol === "http:" || url.protocol === "https:")) return null;
  if (url.protocol !== "https:") return "url must be https (plain http only to loopback with APPSERVICE_HTTP_LOOPBACK=true)";
  const blocked = isBlockedHost(url.hostname);
  return blocked ? `url host is not allowed: ${blocked}` : null;
}

/** Store a validated registration; M_INVALID_PARAM naming the clash when id, a token or the
 *  sender is taken. Creates the sender_localpart user (spec: the appservice acts as it when no
 *  user_id is given). */
export async function addAppservice(env: Env, serverName: string, reg: Registration, allowLoopback: boolean): Promise<Appservice> {
  if (reg.url) {
    const problem = appserviceUrlProblem(reg.url, allowLoopback);
    if (problem) throw new MatrixError(400, "M_INVALID_PARAM", problem);
  }
  const { as_token, ...rest } = reg;
  const stored = rest as StoredRegistration;
  const asTokenHash = await sha256Hex(as_token);
  const clash = await env.DB.prepare(
    `SELECT CASE WHEN id = ?1 THEN 'id' WHEN as_token_hash = ?2 THEN 'as_token' WHEN hs_token = ?3 THEN 'hs_token' ELSE 'sender_localpart' END AS what
     FROM appservices WHERE id = ?1 OR as_token_hash = ?2 OR hs_token = ?3 OR sender_localpart = ?4 OR as_token_hash = ?5 OR hs_token = ?6 LIMIT 1`,
  )
    .bind(reg.id, asTokenHash, reg.hs_token, reg.sender_localpart, await sha256Hex(reg.hs_token), as_token)
    .first<{ what: string }>();
  if (clash) throw new MatrixError(400, "M_INVALID_PARAM", `another registration already uses this ${clash.what}`);
  const tokenInUse = await env.DB.prepare("SELECT 1 FROM access_tokens WHERE token_hash = ?").bind(asTokenHash).first();
  if (tokenInUse) throw new MatrixError(400, "M_INVALID_PARAM", "as_token is already in use");
  const senderId = `@${reg.sender_localpart}:${serverName}`;
  const owner = await env.DB.prepare("SELECT password_hash FROM users WHERE user_id = ?").bind(senderId).first<{ password_hash: string | null }>();
  if (owner && owner.password_hash !== null) throw new MatrixError(400, "M_INVALID_PARAM", `sender_localpart names an existing user with a password (${senderId})`);
  const r = await env.DB.prepare(
    `INSERT INTO appservices (id, url, as_token_hash, hs_token, sender_localpart, registration, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
  )
    .bind(reg.id, reg.url ?? null, asTokenHash, reg.hs_token, reg.sender_localpart, JSON.stringify(stored), Date.now())
    .run();
  if (r.meta.changes !== 1) throw new MatrixError(400, "M_INVALID_PARAM", "another registration already uses this id or token");
  if (!owner) await createUser(env, { userId: senderId, localpart: reg.sender_localpart }).catch(() => undefined);
  forgetAppservices();
  return new Appservice(stored, serverName);
}

export async function removeAppservice(env: Env, id: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM appservices WHERE id = ?").bind(id).run();
  forgetAppservices();
  return r.meta.changes === 1;
}
