// Dehydrated devices (MSC3814).
import type { Env } from "../../env";
import { type DB } from "../../db";
import { devices } from "../../db/schema";
import { type Json } from "./common";

// ---------------------------------------------------------------------------------------------
// Dehydrated devices (MSC3814, `org.matrix.msc3814.v1`): a device whose private keys are kept
// encrypted on the server, so messages sent while the user has no client online can be
// decrypted later. At most one per user; the device itself is an ordinary row of `devices`
// (without access tokens), so it shows in /keys/query and receives to-device messages.

export async function getDehydratedDevice(env: Env, userId: string): Promise<{ deviceId: string; deviceData: Json } | null> {
  const row = await env.DB.prepare("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = ?")
    .bind(userId)
    .first<{ device_id: string; device_data: string }>();
  return row ? { deviceId: row.device_id, deviceData: JSON.parse(row.device_data) } : null;
}

/** Record the dehydrated device (creating its device row); returns the previous one's device
 *  ID, which the caller deletes. */
export async function putDehydratedDevice(
  env: Env,
  userId: string,
  deviceId: string,
  deviceData: Json,
  displayName: string | undefined,
): Promise<string | null> {
  const old = await getDehydratedDevice(env, userId);
  const now = Date.now();
  await env.DB.batch([
    env.DB.prepare(
      "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET display_name = excluded.display_name",
    ).bind(userId, deviceId, displayName ?? null, now),
    env.DB.prepare(
      `INSERT INTO dehydrated_devices (user_id, device_id, device_data, created_ts) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data, created_ts = excluded.created_ts`,
    ).bind(userId, deviceId, JSON.stringify(deviceData), now),
  ]);
  return old && old.deviceId !== deviceId ? old.deviceId : null;
}

export async function forgetDehydratedDevice(env: Env, userId: string): Promise<void> {
  await env.DB.prepare("DELETE FROM dehydrated_devices WHERE user_id = ?").bind(userId).run();
}
