// Creating accounts (shared by /register and the shared-secret admin endpoint).
import { refreshLocalUser } from "./user-directory";
import type { Env } from "../env";
import { MatrixError } from "../api/errors";
import { isValidLocalpart } from "../core/ids";
import { hashPassword } from "./passwords";

export function validateNewLocalpart(localpart: string, serverName: string): string {
  const userId = `@${localpart}:${serverName}`;
  if (!isValidLocalpart(localpart) || new TextEncoder().encode(userId).length > 255) {
    throw new MatrixError(400, "M_INVALID_USERNAME", "User ID may only contain a-z, 0-9, and ._=-/+ and be at most 255 bytes");
  }
  return userId;
}

export async function userExists(env: Env, userId: string): Promise<boolean> {
  return !!(await env.DB.prepare("SELECT 1 FROM users WHERE user_id = ?").bind(userId).first());
}

/** Insert the user; M_USER_IN_USE if the ID is taken (also under a concurrent registration). */
export async function createUser(env: Env, opts: { userId: string; localpart: string; password?: string; admin?: boolean; guest?: boolean; displayname?: string }): Promise<void> {
  const passwordHash = opts.password !== undefined ? await hashPassword(opts.password) : null;
  const r = await env.DB.prepare(
    `INSERT INTO users (user_id, localpart, password_hash, admin, is_guest, deactivated, displayname, created_ts)
     VALUES (?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT DO NOTHING`,
  )
    .bind(opts.userId, opts.localpart, passwordHash, opts.admin ? 1 : 0, opts.guest ? 1 : 0, opts.displayname ?? opts.localpart, Date.now())
    .run();
  if (r.meta.changes !== 1) throw new MatrixError(400, "M_USER_IN_USE", "User ID already taken");
  await refreshLocalUser(env, opts.userId);
}
