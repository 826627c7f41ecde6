// Synapse-compatible user administration (/_synapse/admin/v1|v2/users/..., docs/admin_api/user_admin_api.md
// in Synapse): list, query, create or modify, deactivate, reset password, admin flag, whois,
// devices, joined rooms, login as user, shadow-ban, rate-limit overrides. Shapes follow Synapse so
// synadm and synapse-admin work unchanged.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam, notFound } from "../errors";
import { parseBody } from "../validate";
import { authenticate } from "../middleware/auth";
import { boolQuery, dirQuery, getUserRow, localUserParam, paging, requireAdmin, requireUserRow, type UserRow } from "./common";
import { SERVER_VERSION } from "../federation/version";
import { db } from "../../db";
import { createUser, validateNewLocalpart } from "../../services/accounts";
import { hashPassword } from "../../services/passwords";
import { deleteAllDevices, deleteDevice, clientSession } from "../../services/sessions";
import { deactivateAccount } from "../../services/admin-accounts";
import { propagateProfile, roomsOfUser } from "../../services/rooms";
import { appserviceOfUser } from "../../services/appservices";

export const adminUsers = new Hono<AppEnv>();

adminUsers.get("/v1/server_version", async (c) => {
  await requireAdmin(c);
  return c.json({ server_version: `Lattice ${SERVER_VERSION}` });
});

async function lastSeen(c: Context<AppEnv>, userId: string): Promise<number | null> {
  const r = await c.env.DB.prepare("SELECT MAX(last_seen_ts) AS ts FROM devices WHERE user_id = ?").bind(userId).first<{ ts: number | null }>();
  return r?.ts ?? null;
}

/** A user in Synapse's list shape (flags as 0/1 where Synapse uses ints, booleans where it uses booleans). */
function listEntry(u: UserRow & { last_seen_ts?: number | null; appservice_id?: string | null }) {
  return {
    name: u.user_id,
    user_type: null,
    appservice_id: u.appservice_id ?? null,
    is_guest: u.is_guest ? 1 : 0,
    admin: u.admin ? 1 : 0,
    deactivated: u.deactivated ? 1 : 0,
    erased: !!u.erased,
    shadow_banned: !!u.shadow_banned,
    displayname: u.displayname,
    avatar_url: u.avatar_url,
    creation_ts: u.created_ts,
    approved: true,
    locked: !!u.locked,
    suspended: !!u.suspended,
    last_seen_ts: u.last_seen_ts ?? null,
  };
}

async function userDetails(c: Context<AppEnv>, u: UserRow) {
  return {
    ...listEntry({ ...u, last_seen_ts: await lastSeen(c, u.user_id), appservice_id: await appserviceOfUser(c.env, c.var.config.serverName, u.user_id) }),
    threepids: [],
    external_ids: [],
    consent_server_notice_sent: null,
    consent_version: null,
    consent_ts: null,
  };
}

// Columns order_by may name (Synapse's list), mapped to SQL; anything else is refused.
const USER_ORDER: Record<string, string> = {
  name: "u.user_id",
  is_guest: "u.is_guest",
  admin: "u.admin",
  user_type: "u.user_id",
  deactivated: "u.deactivated",
  shadow_banned: "u.shadow_banned",
  displayname: "u.displayname",
  avatar_url: "u.avatar_url",
  creation_ts: "u.created_ts",
  last_seen_ts: "last_seen_ts",
  locked: "u.locked",
};

// GET /_synapse/admin/v2/users: filters user_id/name (substring), guests (default true), admins,
// deactivated and locked (default false: left out); pages with from/limit; `next_token` while
// more remain; `total` matches.
adminUsers.get("/v2/users", async (c) => {
  await requireAdmin(c);
  const { from, limit } = paging(c);
  const where: string[] = [];
  const binds: unknown[] = [];
  const userIdSub = c.req.query("user_id");
  if (userIdSub) {
    where.push("instr(lower(u.user_id), lower(?)) > 0");
    binds.push(userIdSub);
  }
  const name = c.req.query("name");
  if (name) {
    where.push("(instr(lower(u.user_id), lower(?)) > 0 OR instr(lower(coalesce(u.displayname, '')), lower(?)) > 0)");
    binds.push(name, name);
  }
  if (!boolQuery(c, "guests", true)) where.push("u.is_guest = 0");
  if (!boolQuery(c, "deactivated", false)) where.push("u.deactivated = 0");
  const admins = c.req.query("admins") === undefined ? undefined : boolQuery(c, "admins", false);
  if (admins !== undefined) where.push(`u.admin = ${admins ? 1 : 0}`);
  // Synapse: locked accounts are left out unless locked=true.
  if (!boolQuery(c, "locked", false)) where.push("u.locked = 0");
  const orderBy = c.req.query("order_by") ?? "name";
  const col = USER_ORDER[orderBy];
  if (!col) throw invalidParam(`Unknown value for order_by: ${orderBy}`);
  const dir = dirQuery(c);
  const cond = where.length ? `WHERE ${where.join(" AND ")}` : "";
  const total = await c.env.DB.prepare(`SELECT COUNT(*) AS n FROM users u ${cond}`)
    .bind(...binds)
    .first<{ n: number }>();
  const { results } = await c.env.DB.prepare(
    `SELECT u.*, (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) AS last_seen_ts
     FROM users u ${cond} ORDER BY ${col} ${dir}, u.user_id ${dir} LIMIT ? OFFSET ?`,
  )
    .bind(...binds, limit, from)
    .all<UserRow & { last_seen_ts: number | null }>();
  const n = total?.n ?? 0;
  const withAppservice = await Promise.all(results.map(async (u) => ({ ...u, appservice_id: await appserviceOfUser(c.env, c.var.config.serverName, u.user_id) })));
  const body: Record<string, unknown> = { users: withAppservice.map(listEntry), total: n };
  if (results.length > 0 && from + results.length < n) body.next_token = String(from + results.length);
  return c.json(body);
});

adminUsers.get("/v2/users/:userId", async (c) => {
  await requireAdmin(c);
  const u = await requireUserRow(c, localUserParam(c));
  return c.json(await userDetails(c, u));
});

const putUserSchema = z.object({
  password: z.string().min(1).max(512).optional(),
  logout_devices: z.boolean().optional(),
  displayname: z.string().max(256).nullable().optional(),
  avatar_url: z.string().max(1024).nullable().optional(),
  admin: z.boolean().optional(),
  deactivated: z.boolean().optional(),
  locked: z.boolean().optional(),
  user_type: z.null().optional(),
  threepids: z.array(z.unknown()).max(0, "third-party IDs are not supported").optional(),
  external_ids: z.array(z.unknown()).max(0, "external IDs are not supported").optional(),
});

// PUT /_synapse/admin/v2/users/{userId}: create (201) or modify (200); answers the user's details.
adminUsers.put("/v2/users/:userId", async (c) => {
  const adminId = await requireAdmin(c);
  const userId = localUserParam(c);
  const body = await parseBody(c, putUserSchema);
  let u = await getUserRow(c, userId);
  const created = !u;
  if (!u) {
    const localpart = userId.slice(1, userId.indexOf(":"));
    validateNewLocalpart(localpart, c.var.config.serverName);
    await createUser(c.env, { userId, localpart, password: body.password, admin: body.admin === true, displayname: body.displayname ?? localpart });
  } else {
    if (body.admin === false && userId === adminId) throw new MatrixError(400, "M_UNKNOWN", "You may not demote yourself.");
    if (body.password !== undefined) {
      await c.env.DB.prepare("UPDATE users SET password_hash = ? WHERE user_id = ?").bind(await hashPassword(body.password), userId).run();
      if (body.logout_devices !== false) await deleteAllDevices(db(c.env), userId, undefined, c.env, c.var.config);
    }
    if (body.admin !== undefined) await c.env.DB.prepare("UPDATE users SET admin = ? WHERE user_id = ?").bind(body.admin ? 1 : 0, userId).run();
    if (body.displayname !== undefined) await c.env.DB.prepare("UPDATE users SET displayname = ? WHERE user_id = ?").bind(body.displayname, userId).run();
  }
  if (body.avatar_url !== undefined) await c.env.DB.prepare("UPDATE users SET avatar_url = ? WHERE user_id = ?").bind(body.avatar_url, userId).run();
  if (!created && (body.displayname !== undefined || body.avatar_url !== undefined)) await propagateProfile(c.env, c.var.config, userId);
  if (body.locked !== undefined) await c.env.DB.prepare("UPDATE users SET locked = ? WHERE user_id = ?").bind(body.locked ? 1 : 0, userId).run();
  if (body.deactivated === true && !u?.deactivated) await deactivateAccount(c.env, c.var.config, userId, false);
  if (body.deactivated === false && u?.deactivated) {
    // Reactivation needs a password (Synapse: the account must be able to log in again).
    if (body.password === undefined) throw new MatrixError(400, "M_MISSING_PARAM", "Must provide a password to re-activate an account.");
    await c.env.DB.prepare("UPDATE users SET deactivated = 0, erased = 0, password_hash = ? WHERE user_id = ?").bind(await hashPassword(body.password), userId).run();
  }
  u = await requireUserRow(c, userId);
  return c.json(await userDetails(c, u), created ? 201 : 200);
});

// POST /_synapse/admin/v1/deactivate/{userId} {erase}.
adminUsers.post("/v1/deactivate/:userId", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  const body = await parseBody(c, z.object({ erase: z.boolean().optional() }));
  await requireUserRow(c, userId);
  await deactivateAccount(c.env, c.var.config, userId, body.erase === true, true);
  return c.json({ id_server_unbind_result: "success" });
});

// POST /_synapse/admin/v1/reset_password/{userId} {new_password, logout_devices}.
adminUsers.post("/v1/reset_password/:userId", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  const body = await parseBody(c, z.object({ new_password: z.string().min(1).max(512), logout_devices: z.boolean().optional() }));
  const u = await requireUserRow(c, userId);
  if (u.deactivated) throw new MatrixError(400, "M_UNKNOWN", "The user is deactivated");
  await c.env.DB.prepare("UPDATE users SET password_hash = ? WHERE user_id = ?").bind(await hashPassword(body.new_password), userId).run();
  await c.env.DB.prepare("DELETE FROM openid_tokens WHERE user_id = ?").bind(userId).run();
  if (body.logout_devices !== false) await deleteAllDevices(db(c.env), userId, undefined, c.env, c.var.config);
  return c.json({});
});

adminUsers.get("/v1/users/:userId/admin", async (c) => {
  await requireAdmin(c);
  const u = await requireUserRow(c, localUserParam(c));
  return c.json({ admin: !!u.admin });
});

adminUsers.put("/v1/users/:userId/admin", async (c) => {
  const adminId = await requireAdmin(c);
  const userId = localUserParam(c);
  const body = await parseBody(c, z.object({ admin: z.boolean() }));
  await requireUserRow(c, userId);
  if (userId === adminId && !body.admin) throw new MatrixError(400, "M_UNKNOWN", "You may not demote yourself.");
  await c.env.DB.prepare("UPDATE users SET admin = ? WHERE user_id = ?").bind(body.admin ? 1 : 0, userId).run();
  return c.json({});
});

/** whois (spec: GET /admin/whois/{userId}): the user's devices with their last connection.
 *  Allowed to admins and to the user about themselves (the spec allows either restriction). */
export async function whois(c: Context<AppEnv>, userId: string): Promise<Response> {
  const auth = await authenticate(c);
  if (auth.userId !== userId) await requireAdmin(c);
  if (!(await getUserRow(c, userId))) throw notFound("User not found");
  const { results } = await c.env.DB.prepare("SELECT device_id, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices WHERE user_id = ? ORDER BY device_id LIMIT 1000")
    .bind(userId)
    .all<{ device_id: string; last_seen_ts: number | null; last_seen_ip: string | null; last_seen_user_agent: string | null }>();
  const devices: Record<string, unknown> = {};
  for (const d of results) {
    const connections = d.last_seen_ts === null ? [] : [{ ip: d.last_seen_ip ?? "", last_seen: d.last_seen_ts, user_agent: d.last_seen_user_agent ?? "" }];
    devices[d.device_id] = { sessions: [{ connections }] };
  }
  return c.json({ user_id: userId, devices });
}

adminUsers.get("/v1/whois/:userId", (c) => whois(c, localUserParam(c)));

type DeviceRow = { device_id: string; display_name: string | null; last_seen_ts: number | null; last_seen_ip: string | null; last_seen_user_agent: string | null };
const DEVICE_COLUMNS = "device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent";

function deviceEntry(userId: string, d: DeviceRow) {
  return { device_id: d.device_id, display_name: d.display_name, last_seen_ip: d.last_seen_ip, last_seen_ts: d.last_seen_ts, last_seen_user_agent: d.last_seen_user_agent, user_id: userId };
}

adminUsers.get("/v2/users/:userId/devices", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  const { results } = await c.env.DB.prepare(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id LIMIT 10000`)
    .bind(userId)
    .all<DeviceRow>();
  return c.json({ devices: results.map((d) => deviceEntry(userId, d)), total: results.length });
});

adminUsers.get("/v2/users/:userId/devices/:deviceId", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  const d = await c.env.DB.prepare(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?`)
    .bind(userId, c.req.param("deviceId"))
    .first<DeviceRow>();
  if (!d) throw notFound("No such device");
  return c.json(deviceEntry(userId, d));
});

// Deleting a device that does not exist succeeds (as Synapse: the end state is the same).
adminUsers.delete("/v2/users/:userId/devices/:deviceId", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  await deleteDevice(db(c.env), userId, c.req.param("deviceId"), c.env, c.var.config);
  return c.json({});
});

adminUsers.post("/v2/users/:userId/delete_devices", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  const body = await parseBody(c, z.object({ devices: z.array(z.string().max(255)).max(1000) }));
  await requireUserRow(c, userId);
  for (const deviceId of body.devices) await deleteDevice(db(c.env), userId, deviceId, c.env, c.var.config);
  return c.json({});
});

adminUsers.get("/v1/users/:userId/joined_rooms", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  const joined = await roomsOfUser(c.env, userId, "join");
  return c.json({ joined_rooms: joined, total: joined.length });
});

// POST /_synapse/admin/v1/users/{userId}/login {valid_until_ms}: an access token for the user on a
// new device, expiring at valid_until_ms (default: the configured access-token lifetime).
adminUsers.post("/v1/users/:userId/login", async (c) => {
  const adminId = await requireAdmin(c);
  const userId = localUserParam(c);
  const body = await parseBody(c, z.object({ valid_until_ms: z.number().int().min(0).nullable().optional() }));
  const u = await requireUserRow(c, userId);
  if (userId === adminId) throw new MatrixError(400, "M_UNKNOWN", "Cannot use admin API to login as self");
  if (u.deactivated) throw new MatrixError(400, "M_UNKNOWN", "The user is deactivated");
  const now = Date.now();
  const until = body.valid_until_ms ?? now + c.var.config.accessTokenLifetimeMs;
  if (until <= now) throw invalidParam("valid_until_ms must be in the future");
  const session = await clientSession(db(c.env), { userId, serverName: c.var.config.serverName, lifetimeMs: c.var.config.accessTokenLifetimeMs, displayName: "admin login" });
  await c.env.DB.prepare("UPDATE access_tokens SET expires_ts = ? WHERE user_id = ? AND device_id = ?").bind(until, userId, session.device_id).run();
  return c.json({ access_token: session.access_token });
});

async function setFlag(c: Context<AppEnv>, column: "shadow_banned", value: boolean): Promise<Response> {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  await c.env.DB.prepare(`UPDATE users SET ${column} = ? WHERE user_id = ?`).bind(value ? 1 : 0, userId).run();
  return c.json({});
}
adminUsers.post("/v1/users/:userId/shadow_ban", (c) => setFlag(c, "shadow_banned", true));
adminUsers.delete("/v1/users/:userId/shadow_ban", (c) => setFlag(c, "shadow_banned", false));

adminUsers.get("/v1/users/:userId/override_ratelimit", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  const r = await c.env.DB.prepare("SELECT messages_per_second, burst_count FROM ratelimit_overrides WHERE user_id = ?").bind(userId).first();
  return c.json(r ?? {});
});

adminUsers.post("/v1/users/:userId/override_ratelimit", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  const n = z.number().int().min(0).max(1_000_000).optional();
  const body = await parseBody(c, z.object({ messages_per_second: n, burst_count: n }));
  await requireUserRow(c, userId);
  const out = { messages_per_second: body.messages_per_second ?? 0, burst_count: body.burst_count ?? 0 };
  await c.env.DB.prepare("INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count) VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET messages_per_second = excluded.messages_per_second, burst_count = excluded.burst_count")
    .bind(userId, out.messages_per_second, out.burst_count)
    .run();
  return c.json(out);
});

adminUsers.delete("/v1/users/:userId/override_ratelimit", async (c) => {
  await requireAdmin(c);
  const userId = localUserParam(c);
  await requireUserRow(c, userId);
  await c.env.DB.prepare("DELETE FROM ratelimit_overrides WHERE user_id = ?").bind(userId).run();
  return c.json({});
});

