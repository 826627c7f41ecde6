// Shared pieces of the admin API: who may call it, and the parameters every endpoint parses.
import type { Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, invalidParam, notFound } from "../errors";
import { authenticate } from "../middleware/auth";
import { parseValue } from "../validate";
import { isValidUserId } from "../../core/ids";

/** The caller, if they are a server admin; otherwise 403 M_FORBIDDEN (Synapse's answer). */
export async function requireAdmin(c: Context<AppEnv>): Promise<string> {
  const auth = await authenticate(c);
  const row = await c.env.DB.prepare("SELECT admin FROM users WHERE user_id = ?").bind(auth.userId).first<{ admin: number }>();
  if (!row?.admin) throw forbidden("You are not a server admin");
  return auth.userId;
}

/** The `:userId` path parameter: a valid user ID of this server (400 otherwise, as Synapse:
 *  "Can only look up local users"). */
export function localUserParam(c: Context<AppEnv>, name = "userId"): string {
  const userId = c.req.param(name) ?? "";
  if (!isValidUserId(userId, { historical: true })) throw invalidParam("Invalid user ID");
  if (!userId.endsWith(`:${c.var.config.serverName}`)) throw new MatrixError(400, "M_INVALID_PARAM", "Can only look up local users");
  return userId;
}

export interface UserRow {
  user_id: string;
  password_hash: string | null;
  admin: number;
  is_guest: number;
  deactivated: number;
  displayname: string | null;
  avatar_url: string | null;
  created_ts: number;
  shadow_banned: number;
  locked: number;
  suspended: number;
  erased: number;
}

export async function getUserRow(c: Context<AppEnv>, userId: string): Promise<UserRow | null> {
  return c.env.DB.prepare("SELECT * FROM users WHERE user_id = ?").bind(userId).first<UserRow>();
}

export async function requireUserRow(c: Context<AppEnv>, userId: string): Promise<UserRow> {
  const row = await getUserRow(c, userId);
  if (!row) throw notFound("User not found");
  return row;
}

/** Paging parameters: `from` (offset) and `limit`, non-negative integers; huge limits are capped
 *  rather than refused (tools ask for limit=1000000 to mean "all"). */
export function paging(c: Context<AppEnv>, defaultLimit = 100, maxLimit = 1000): { from: number; limit: number } {
  const int = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
  const from = c.req.query("from") === undefined ? 0 : parseValue(c.req.query("from"), int);
  const limit = c.req.query("limit") === undefined ? defaultLimit : parseValue(c.req.query("limit"), int);
  return { from, limit: Math.min(limit, maxLimit) };
}

/** A boolean query parameter ("true"/"false"), or the default. */
export function boolQuery(c: Context<AppEnv>, name: string, dflt: boolean): boolean {
  const v = c.req.query(name);
  if (v === undefined) return dflt;
  if (v === "true") return true;
  if (v === "false") return false;
  throw invalidParam(`${name} must be true or false`);
}

export function dirQuery(c: Context<AppEnv>): "ASC" | "DESC" {
  const d = c.req.query("dir") ?? "f";
  if (d !== "f" && d !== "b") throw invalidParam("dir must be f or b");
  return d === "f" ? "ASC" : "DESC";
}
