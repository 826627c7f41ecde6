// Pushers (spec: module "Push Notifications" → "Pushers"): D1 is the record (GET /pushers), each
// user's hub keeps a copy of its targets (so the push decision is made inside the hub's
// transaction, without a D1 read per event), and each pusher has its own delivery queue, a
// PusherDO addressed by (user, app_id, pushkey).
import { and, eq, inArray, ne } from "drizzle-orm";
import type { Env } from "../env";
import { db } from "../db";
import { pushers } from "../db/schema";
import { userStub } from "../rpc/stubs";
import type { PusherTarget } from "../core/push-gateway";
import type { JsonObject } from "../core/types";
import { pusherStub as addressPusher, type PusherStub, type Placement } from "../rpc/stubs";

export type PusherRow = typeof pushers.$inferSelect;

/** The spec's Pusher object (GET /pushers). */
export function pusherJson(p: PusherRow): JsonObject {
  const out: JsonObject = {
    app_display_name: p.appDisplayName,
    app_id: p.appId,
    data: JSON.parse(p.data) as JsonObject,
    device_display_name: p.deviceDisplayName,
    kind: p.kind,
    lang: p.lang,
    pushkey: p.pushkey,
  };
  if (p.profileTag !== null) out.profile_tag = p.profileTag;
  return out;
}

export function targetOf(p: PusherRow): PusherTarget {
  return { appId: p.appId, pushkey: p.pushkey, pushkeyTs: p.pushkeyTs, data: JSON.parse(p.data) as JsonObject };
}

export { type PusherStub } from "../rpc/stubs";

/** A pusher's queue. Every function here takes the caller's configuration (parsed once per
 *  request in the Worker, once per instance in the Durable Objects). */
export function pusherStub(env: Env, config: Placement, userId: string, appId: string, pushkey: string): PusherStub {
  return addressPusher(env, config, userId, appId, pushkey);
}

export async function listPushers(env: Env, userId: string): Promise<PusherRow[]> {
  return db(env).select().from(pushers).where(eq(pushers.userId, userId));
}

/** Give the user's hub the current list of push targets (after every change in D1). */
export async function refreshHubPushers(env: Env, config: Placement, userId: string): Promise<void> {
  const rows = await listPushers(env, userId);
  await userStub(env, userId, config).setPushers(userId, rows.map(targetOf));
}

/** Delete pushers (D1 rows matched by `where`), empty their queues and update the hubs. */
async function removeWhere(env: Env, config: Placement, rows: PusherRow[]): Promise<void> {
  if (!rows.length) return;
  const d = db(env);
  for (const r of rows) {
    await d.delete(pushers).where(and(eq(pushers.userId, r.userId), eq(pushers.appId, r.appId), eq(pushers.pushkey, r.pushkey)));
  }
  for (const u of new Set(rows.map((r) => r.userId))) await refreshHubPushers(env, config, u);
  await Promise.all(rows.map((r) => pusherStub(env, config, r.userId, r.appId, r.pushkey).drop().catch((e) => console.warn("pusher drop failed", e))));
}

export async function deletePusher(env: Env, config: Placement, userId: string, appId: string, pushkey: string): Promise<void> {
  const rows = await db(env)
    .select()
    .from(pushers)
    .where(and(eq(pushers.userId, userId), eq(pushers.appId, appId), eq(pushers.pushkey, pushkey)));
  await removeWhere(env, config, rows);
}

/** Create or replace a pusher. Without `append`, the same (app_id, pushkey) of other users is
 *  removed (pusher.yaml: "the homeserver must remove any other pushers with the same App ID and
 *  pushkey for different users"). */
export async function setPusher(env: Env, config: Placement, row: PusherRow, append: boolean): Promise<void> {
  const d = db(env);
  if (!append) {
    const others = await d
      .select()
      .from(pushers)
      .where(and(eq(pushers.appId, row.appId), eq(pushers.pushkey, row.pushkey), ne(pushers.userId, row.userId)));
    await removeWhere(env, config, others);
  }
  await d
    .insert(pushers)
    .values(row)
    .onConflictDoUpdate({
      target: [pushers.userId, pushers.appId, pushers.pushkey],
      set: {
        kind: row.kind,
        appDisplayName: row.appDisplayName,
        deviceDisplayName: row.deviceDisplayName,
        profileTag: row.profileTag,
        lang: row.lang,
        data: row.data,
        deviceId: row.deviceId,
        pushkeyTs: row.pushkeyTs,
      },
    });
  await refreshHubPushers(env, config, row.userId);
}

/** Pushers created by these devices go with them (device deleted, logged out). */
export async function deletePushersOfDevices(env: Env, config: Placement, userId: string, deviceIds: string[]): Promise<void> {
  if (!deviceIds.length) return;
  const rows = await db(env)
    .select()
    .from(pushers)
    .where(and(eq(pushers.userId, userId), inArray(pushers.deviceId, deviceIds)));
  await removeWhere(env, config, rows);
}

/** Deactivation: every pusher of the user goes, also those no device created (an appservice
 *  sets them without a device_id), as Synapse deletes all pushers of a deactivated user. */
export async function deleteAllPushers(env: Env, config: Placement, userId: string): Promise<void> {
  const rows = await db(env).select().from(pushers).where(eq(pushers.userId, userId));
  await removeWhere(env, config, rows);
}

/** On a password change every pusher except the current device's goes (Synapse does the same:
 *  someone who learnt the old password must not keep receiving the user's notifications). */
export async function deletePushersExceptDevice(env: Env, config: Placement, userId: string, deviceId: string): Promise<void> {
  const rows = await db(env)
    .select()
    .from(pushers)
    .where(and(eq(pushers.userId, userId), ne(pushers.deviceId, deviceId)));
  await removeWhere(env, config, rows);
}
