// Send-to-device messaging (spec: module "Send-to-Device messaging").
import type { Env } from "../../env";
import type { Config } from "../../config";
import { type DB } from "../../db";
import { devices } from "../../db/schema";
import { canonicalJson } from "../../core/canonical-json";
import { userStub } from "../../rpc/stubs";
import { type Json } from "./common";

// ---------------------------------------------------------------------------------------------
// Send-to-device messaging (spec: module "Send-to-Device messaging"). Messages go into the
// recipient's sync hub (UserDO), which delivers each exactly once and deletes it when the
// device syncs past it.

export interface ToDeviceMessage {
  sender: string;
  type: string;
  content: Json;
}

/** Claim a transaction ID of PUT /sendToDevice for one device. False if it was already used
 *  (the request is a retry and must not deliver again). */
export async function claimToDeviceTxn(env: Env, userId: string, deviceId: string, txnId: string): Promise<boolean> {
  const row = await env.DB.prepare(
    "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING txn_id",
  )
    .bind(userId, deviceId, txnId, Date.now())
    .first();
  return !!row;
}

export async function releaseToDeviceTxn(env: Env, userId: string, deviceId: string, txnId: string): Promise<void> {
  await env.DB.prepare("DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ? AND txn_id = ?").bind(userId, deviceId, txnId).run();
}

/** Queue messages for a local user's devices: `messages` maps device ID (or "*" for all of
 *  the user's devices) to content. Unknown device IDs are dropped. */
export async function deliverToDevice(env: Env, config: Config, sender: string, type: string, userId: string, messages: Record<string, Json>): Promise<void> {
  const { results } = await env.DB.prepare("SELECT device_id FROM devices WHERE user_id = ?").bind(userId).all<{ device_id: string }>();
  const known = new Set(results.map((r) => r.device_id));
  const perDevice = new Map<string, Json>();
  // A message for "*" goes to every device; an explicit entry for a device wins over it.
  if (messages["*"]) for (const d of known) perDevice.set(d, messages["*"]);
  for (const [deviceId, content] of Object.entries(messages)) if (deviceId !== "*" && known.has(deviceId)) perDevice.set(deviceId, content);
  if (perDevice.size === 0) return;
  const stub = userStub(env, userId, config);
  // Group devices that receive identical content into one hub call.
  const groups = new Map<string, { content: Json; devices: string[] }>();
  for (const [d, content] of perDevice) {
    const key = canonicalJson(content);
    const g = groups.get(key) ?? { content, devices: [] };
    g.devices.push(d);
    groups.set(key, g);
  }
  for (const g of groups.values()) await stub.pushToDevice(userId, g.devices, [{ sender, type, content: g.content as never }]);
}
