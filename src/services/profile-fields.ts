// Extended profile fields (spec 1.16, "Profiles": PUT/GET/DELETE /profile/{userId}/{keyName}):
// m.tz and custom namespaced keys, stored as JSON in D1 `profile_fields`. displayname and
// avatar_url stay in `users` (they also drive member events and the user directory).
import type { Env } from "../env";
import { MatrixError } from "../api/errors";

/** keyName grammar (profile.yaml): avatar_url, displayname, m.tz, or a Common Namespaced
 *  Identifier. */
export const PROFILE_KEY = /^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$/;
export const MAX_KEY_BYTES = 255;
/** "the total profile MUST be under 64 KiB". */
export const MAX_PROFILE_BYTES = 64 * 1024;
const utf8 = new TextEncoder();

export function validProfileKey(key: string): boolean {
  return PROFILE_KEY.test(key) && utf8.encode(key).length <= MAX_KEY_BYTES;
}

/** The extra fields of a user (not displayname/avatar_url), parsed. */
export async function extraProfileFields(env: Env, userId: string): Promise<Record<string, unknown>> {
  const { results } = await env.DB.prepare("SELECT key, value_json FROM profile_fields WHERE user_id = ? ORDER BY key").bind(userId).all<{ key: string; value_json: string }>();
  const out: Record<string, unknown> = {};
  for (const r of results) out[r.key] = JSON.parse(r.value_json);
  return out;
}

/** Set one extra field, refusing with M_PROFILE_TOO_LARGE when the whole profile (as JSON)
 *  would reach 64 KiB. */
export async function setProfileField(env: Env, userId: string, key: string, value: unknown, base: Record<string, unknown>): Promise<void> {
  const fields = { ...base, ...(await extraProfileFields(env, userId)), [key]: value };
  if (utf8.encode(JSON.stringify(fields)).length >= MAX_PROFILE_BYTES) throw new MatrixError(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB");
  await env.DB.prepare("INSERT INTO profile_fields (user_id, key, value_json) VALUES (?, ?, ?) ON CONFLICT(user_id, key) DO UPDATE SET value_json = excluded.value_json")
    .bind(userId, key, JSON.stringify(value))
    .run();
}

export async function deleteProfileField(env: Env, userId: string, key: string): Promise<void> {
  await env.DB.prepare("DELETE FROM profile_fields WHERE user_id = ? AND key = ?").bind(userId, key).run();
}
