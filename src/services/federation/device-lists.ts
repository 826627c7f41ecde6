// Device lists and E2EE keys across servers (spec: Server-Server API "Device Management" and
// "End-to-End Encryption"; Client-Server API "Tracking the device list for a user").
//
// Remote side (what other servers tell us):
//   - a cache of remote users' device lists and cross-signing keys (D1 remote_device_lists,
//     remote_devices, remote_cross_signing_keys), filled by GET /user/devices and
//     POST /user/keys/query and kept current by m.device_list_update / m.signing_key_update EDUs;
//   - an update whose `prev_id` we have not seen means we missed one: resync through
//     GET /_matrix/federation/v1/user/devices/{userId}.
// Local side (what we tell other servers):
//   - publishDeviceListChange: m.device_list_update (with stream_id / prev_id) when a local
//     device or its keys change, m.signing_key_update when cross-signing keys change, to every
//     server sharing a room with the user;
//   - the bodies of GET /user/devices, POST /user/keys/query and /user/keys/claim.
// Client side: queryRemoteKeys / claimRemoteKeys for POST /keys/query and /keys/claim.
import type { Env } from "../../env";
import type { Config } from "../../config";
import { db } from "../../db";
import { federationContext, federationRequest, FederationError } from "./client";
import { enqueueEdu } from "./sender";
import { localUsersSharingRoomWithRemote, remoteServersSharingRoomWith, roomsSharedWithRemote } from "./peers";
import { serverOf } from "../../core/ids";
import { userStub } from "../../rpc/stubs";
import { checkDeviceKeys, claimKey, pushKeyCounts, queryDeviceKeys, type DeviceKeysInput } from "../e2ee/device-keys";
import { crossSigningPublicKey, queryCrossSigningKeys, type CrossSigningKey } from "../e2ee/cross-signing";
import { appendDeviceListChange } from "../e2ee/device-list-stream";
import type { Json } from "../e2ee/common";
import { pushDeviceListChanged } from "../appservice-e2ee";

type KeyMap = Record<string, Json>;

const isObject = (v: unknown): v is Json => !!v && typeof v === "object" && !Array.isArray(v);

// =============================================================================================
// Validation of what remote servers send.

/** A remote device's `device_keys` object is acceptable when it names the user and device it is
 *  filed under and carries the device's own ed25519 self-signature (the same rule as
 *  POST /keys/upload; clients check it again). */
export async function validRemoteDeviceKeys(keys: unknown, userId: string, deviceId: string): Promise<boolean> {
  if (!isObject(keys) || !isObject(keys.keys) || !isObject(keys.signatures) || !Array.isArray(keys.algorithms)) return false;
  try {
    return (await checkDeviceKeys(keys as DeviceKeysInput, userId, deviceId)) === null;
  } catch {
    return false;
  }
}

/** A cross-signing key (master or self-signing) of `userId` with `usage` including `type`. */
export function validCrossSigningKey(key: unknown, userId: string, type: "master" | "self_signing"): key is CrossSigningKey {
  if (!isObject(key) || key.user_id !== userId || !Array.isArray(key.usage) || !key.usage.includes(type) || !isObject(key.keys)) return false;
  return crossSigningPublicKey(key as CrossSigningKey) !== null;
}

// =============================================================================================
// The remote device-list cache.

export interface RemoteDeviceList {
  streamId: number | null;
  stale: boolean;
  devices: { deviceId: string; keys: Json | null; displayName: string | null }[];
  master?: CrossSigningKey;
  selfSigning?: CrossSigningKey;
}

export async function getRemoteDeviceList(env: Env, userId: string): Promise<RemoteDeviceList | null> {
  const head = await env.DB.prepare("SELECT stream_id, stale FROM remote_device_lists WHERE user_id = ?")
    .bind(userId)
    .first<{ stream_id: number | null; stale: number }>();
  if (!head) return null;
  const [devs, cs] = await Promise.all([
    env.DB.prepare("SELECT device_id, key_json, display_name FROM remote_devices WHERE user_id = ? ORDER BY device_id")
      .bind(userId)
      .all<{ device_id: string; key_json: string | null; display_name: string | null }>(),
    env.DB.prepare("SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = ?").bind(userId).all<{ key_type: string; key_json: string }>(),
  ]);
  const out: RemoteDeviceList = {
    streamId: head.stream_id,
    stale: !!head.stale,
    devices: devs.results.map((d) => ({ deviceId: d.device_id, keys: d.key_json ? JSON.parse(d.key_json) : null, displayName: d.display_name })),
  };
  for (const r of cs.results) {
    if (r.key_type === "master") out.master = JSON.parse(r.key_json);
    if (r.key_type === "self_signing") out.selfSigning = JSON.parse(r.key_json);
  }
  return out;
}

/** Replace the whole cached list of `userId` (after GET /user/devices or a full key query). */
export async function storeRemoteDeviceList(
  env: Env,
  userId: string,
  list: { streamId: number | null; devices: { deviceId: string; keys: Json | null; displayName?: string | null }[]; master?: Json; selfSigning?: Json },
): Promise<void> {
  const stmts = [
    env.DB.prepare(
      `INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES (?, ?, 0, ?)
       ON CONFLICT(user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = 0, updated_ts = excluded.updated_ts`,
    ).bind(userId, list.streamId, Date.now()),
    env.DB.prepare("DELETE FROM remote_devices WHERE user_id = ?").bind(userId),
    ...list.devices.map((d) =>
      env.DB.prepare("INSERT OR REPLACE INTO remote_devices (user_id, device_id, key_json, display_name) VALUES (?, ?, ?, ?)").bind(
        userId,
        d.deviceId,
        d.keys ? JSON.stringify(d.keys) : null,
        d.displayName ?? null,
      ),
    ),
  ];
  for (const [type, key] of [["master", list.master], ["self_signing", list.selfSigning]] as const) {
    if (key) stmts.push(env.DB.prepare("INSERT OR REPLACE INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES (?, ?, ?)").bind(userId, type, JSON.stringify(key)));
  }
  await env.DB.batch(stmts);
}

async function markStale(env: Env, userId: string): Promise<void> {
  await env.DB.prepare("UPDATE remote_device_lists SET stale = 1, updated_ts = ? WHERE user_id = ?").bind(Date.now(), userId).run();
}

/** Forget a remote user's cached list (e.g. when nobody here shares a room with them any more,
 *  so no updates would reach us). */
export async function forgetRemoteDeviceList(env: Env, userId: string): Promise<void> {
  await env.DB.batch([
    env.DB.prepare("DELETE FROM remote_device_lists WHERE user_id = ?").bind(userId),
    env.DB.prepare("DELETE FROM remote_devices WHERE user_id = ?").bind(userId),
    env.DB.prepare("DELETE FROM remote_cross_signing_keys WHERE user_id = ?").bind(userId),
  ]);
}

/** Resync a remote user's device list from their server (GET /user/devices/{userId}). Returns
 *  true on success; on failure the cache is left marked stale (queries then go to the server). */
export async function resyncRemoteDeviceList(env: Env, config: Config, userId: string, timeoutMs = 10_000): Promise<boolean> {
  const server = serverOf(userId);
  if (!server || server === config.serverName) return false;
  try {
    const { body } = await federationRequest<Json>(federationContext(env, config), server, "GET", `/_matrix/federation/v1/user/devices/${encodeURIComponent(userId)}`, {
      timeoutMs,
      maxBytes: 2 * 1024 * 1024,
    });
    if (!isObject(body) || body.user_id !== userId || !Array.isArray(body.devices)) throw new Error("malformed /user/devices answer");
    const devices: { deviceId: string; keys: Json | null; displayName: string | null }[] = [];
    for (const d of body.devices.slice(0, 1000)) {
      if (!isObject(d) || typeof d.device_id !== "string") continue;
      const keys = (await validRemoteDeviceKeys(d.keys, userId, d.device_id)) ? (d.keys as Json) : null;
      devices.push({ deviceId: d.device_id, keys, displayName: typeof d.device_display_name === "string" ? d.device_display_name : null });
    }
    await storeRemoteDeviceList(env, userId, {
      streamId: typeof body.stream_id === "number" && Number.isSafeInteger(body.stream_id) ? body.stream_id : null,
      devices,
      master: validCrossSigningKey(body.master_key, userId, "master") ? body.master_key : undefined,
      selfSigning: validCrossSigningKey(body.self_signing_key, userId, "self_signing") ? body.self_signing_key : undefined,
    });
    return true;
  } catch (e) {
    console.warn(`device-list resync of ${userId} failed: ${(e as Error).message}`);
    await markStale(env, userId);
    return false;
  }
}

/** Tell local users who share a room with remote `userId` that their device list changed
 *  (/sync device_lists.changed), and record the change in the device-list stream. */
async function announceRemoteChange(env: Env, config: Config, userId: string): Promise<void> {
  await appendDeviceListChange(db(env), userId);
  const users = await localUsersSharingRoomWithRemote(env, config, userId);
  const results = await Promise.allSettled(users.map((u) => userStub(env, u, config).deviceListChanged(u, userId)));
  for (const [i, r] of results.entries()) if (r.status === "rejected") console.error(`device-list fan-out to ${users[i]} failed`, r.reason);
  await pushDeviceListChanged(env, config.serverName, userId, users).catch((e) => console.error("device-list push to appservices failed", e));
}

// ---------------------------------------------------------------------------------------------
// Inbound EDUs.

/** m.device_list_update (spec: "Device Management"): {user_id, device_id, stream_id, prev_id,
 *  deleted?, device_display_name?, keys?}. Applied to the cache when we hold one and know every
 *  `prev_id`; otherwise (a gap) the list is resynced. Updates for users we do not cache only
 *  notify local users (their clients then query, which fills the cache). */
export async function onDeviceListUpdate(env: Env, config: Config, origin: string, content: Json): Promise<void> {
  const userId = content.user_id;
  const deviceId = content.device_id;
  const streamId = content.stream_id;
  // "the user ID ... must belong to the origin server" — anything else is ignored.
  if (typeof userId !== "string" || serverOf(userId) !== origin || origin === config.serverName) return;
  if (typeof deviceId !== "string" || deviceId === "" || typeof streamId !== "number" || !Number.isSafeInteger(streamId)) return;
  const prevIds = content.prev_id === undefined ? [] : content.prev_id;
  if (!Array.isArray(prevIds) || !prevIds.every((p) => typeof p === "number")) return;

  const cached = await env.DB.prepare("SELECT stream_id, stale FROM remote_device_lists WHERE user_id = ?")
    .bind(userId)
    .first<{ stream_id: number | null; stale: number }>();
  if (cached) {
    if (cached.stream_id !== null && streamId <= cached.stream_id && !cached.stale) return; // already seen
    const known = new Set(cached.stream_id === null ? [] : [cached.stream_id]);
    const gap = cached.stale || !prevIds.every((p) => known.has(p as number));
    if (gap) {
      await resyncRemoteDeviceList(env, config, userId);
    } else if (content.deleted === true) {
      await env.DB.batch([
        env.DB.prepare("DELETE FROM remote_devices WHERE user_id = ? AND device_id = ?").bind(userId, deviceId),
        env.DB.prepare("UPDATE remote_device_lists SET stream_id = ?, updated_ts = ? WHERE user_id = ?").bind(streamId, Date.now(), userId),
      ]);
    } else {
      const keys = content.keys === undefined ? null : content.keys;
      if (keys !== null && !(await validRemoteDeviceKeys(keys, userId, deviceId))) return;
      const name = typeof content.device_display_name === "string" ? content.device_display_name : null;
      await env.DB.batch([
        env.DB.prepare(
          `INSERT INTO remote_devices (user_id, device_id, key_json, display_name) VALUES (?1, ?2, ?3, ?4)
           ON CONFLICT(user_id, device_id) DO UPDATE SET key_json = COALESCE(?3, remote_devices.key_json), display_name = ?4`,
        ).bind(userId, deviceId, keys ? JSON.stringify(keys) : null, name),
        env.DB.prepare("UPDATE remote_device_lists SET stream_id = ?, updated_ts = ? WHERE user_id = ?").bind(streamId, Date.now(), userId),
      ]);
    }
  }
  await announceRemoteChange(env, config, userId);
}

/** m.signing_key_update (spec: "End-to-End Encryption"): {user_id, master_key?,
 *  self_signing_key?}. Cached, and local users sharing a room are told. */
export async function onSigningKeyUpdate(env: Env, config: Config, origin: string, content: Json): Promise<void> {
  const userId = content.user_id;
  if (typeof userId !== "string" || serverOf(userId) !== origin || origin === config.serverName) return;
  const master = content.master_key;
  const ssk = content.self_signing_key;
  if (master !== undefined && !validCrossSigningKey(master, userId, "master")) return;
  if (ssk !== undefined && !validCrossSigningKey(ssk, userId, "self_signing")) return;
  if (master === undefined && ssk === undefined) return;
  const cached = await env.DB.prepare("SELECT 1 AS x FROM remote_device_lists WHERE user_id = ?").bind(userId).first();
  if (cached) {
    const stmts = [];
    if (master) stmts.push(env.DB.prepare("INSERT OR REPLACE INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES (?, 'master', ?)").bind(userId, JSON.stringify(master)));
    if (ssk) stmts.push(env.DB.prepare("INSERT OR REPLACE INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES (?, 'self_signing', ?)").bind(userId, JSON.stringify(ssk)));
    await env.DB.batch(stmts);
  }
  await announceRemoteChange(env, config, userId);
}

// =============================================================================================
// Outbound: telling other servers about local changes.

export interface DeviceListChange {
  /** Devices whose keys changed or that were deleted (a device no longer in `devices` is sent
   *  as `deleted`). */
  devices?: string[];
  /** The user's cross-signing keys (or signatures on them) changed. */
  signingKeys?: boolean;
}

/** After a local device-list change at stream position `streamId`: queue m.device_list_update
 *  per device and m.signing_key_update to every server sharing a room with `userId`. Best
 *  effort (failures are logged): a peer that missed an update sees a gap in `prev_id` at the
 *  next one and resyncs. */
export async function publishDeviceListChange(env: Env, config: Config, userId: string, streamId: number, change: DeviceListChange): Promise<void> {
  if (serverOf(userId) !== config.serverName) return;
  try {
    const servers = await remoteServersSharingRoomWith(env, config, userId);
    if (servers.length === 0) return;
    const edus: { edu_type: string; content: Record<string, unknown> }[] = [];
    if (change.devices?.length) {
      // prev_id: the user's previous position in the stream, so a peer can detect a gap.
      const prev = await env.DB.prepare("SELECT MAX(stream_id) AS p FROM device_list_stream WHERE user_id = ? AND stream_id < ?")
        .bind(userId, streamId)
        .first<{ p: number | null }>();
      const keys = await queryDeviceKeys(env, userId, change.devices);
      for (const deviceId of change.devices) {
        const exists = await env.DB.prepare("SELECT 1 AS x FROM devices WHERE user_id = ? AND device_id = ?").bind(userId, deviceId).first();
        const content: Record<string, unknown> = { user_id: userId, device_id: deviceId, stream_id: streamId, prev_id: prev?.p ? [prev.p] : [] };
        if (!exists) content.deleted = true;
        else if (keys[deviceId]) content.keys = federatedDeviceKeys(keys[deviceId]);
        else continue; // e.g. a signature on something that is not a device
        edus.push({ edu_type: "m.device_list_update", content });
      }
    }
    if (change.signingKeys) {
      const cs = await queryCrossSigningKeys(env, userId, userId);
      const content: Record<string, unknown> = { user_id: userId };
      if (cs.master) content.master_key = cs.master;
      if (cs.self_signing) content.self_signing_key = cs.self_signing;
      if (cs.master || cs.self_signing) edus.push({ edu_type: "m.signing_key_update", content });
    }
    await Promise.all(servers.flatMap((s) => edus.map((e) => enqueueEdu(env, config, s, e))));
  } catch (e) {
    console.error(`publishing the device-list change of ${userId} failed`, e);
  }
}

/** Device keys as shared over federation: without `unsigned` (device display names are not
 *  shared with other servers, as Synapse does by default, for privacy). */
function federatedDeviceKeys(keys: Json): Json {
  const { unsigned: _u, ...rest } = keys;
  return rest;
}

// =============================================================================================
// Serving: GET /user/devices/{userId}, POST /user/keys/query, POST /user/keys/claim.

/** The body of GET /_matrix/federation/v1/user/devices/{userId} for a local user. */
export async function localUserDevices(env: Env, userId: string): Promise<Json> {
  const [devs, cs, pos] = await Promise.all([
    queryDeviceKeys(env, userId, []),
    // As another server sees them: no user-signing key, no other users' signatures.
    queryCrossSigningKeys(env, "", userId),
    env.DB.prepare("SELECT MAX(stream_id) AS p FROM device_list_stream WHERE user_id = ?").bind(userId).first<{ p: number | null }>(),
  ]);
  const out: Json = {
    user_id: userId,
    stream_id: pos?.p ?? 0,
    devices: Object.entries(devs).map(([deviceId, keys]) => ({ device_id: deviceId, keys: federatedDeviceKeys(keys) })),
  };
  if (cs.master) out.master_key = cs.master;
  if (cs.self_signing) out.self_signing_key = cs.self_signing;
  return out;
}

/** The body of POST /_matrix/federation/v1/user/keys/query for local users. */
export async function localKeysQuery(env: Env, requested: Record<string, string[]>): Promise<Json> {
  const out = { device_keys: {} as KeyMap, master_keys: {} as KeyMap, self_signing_keys: {} as KeyMap };
  await Promise.all(
    Object.entries(requested).map(async ([u, deviceIds]) => {
      const [devs, cs] = await Promise.all([queryDeviceKeys(env, u, deviceIds), queryCrossSigningKeys(env, "", u)]);
      const shared: KeyMap = {};
      for (const [d, k] of Object.entries(devs)) shared[d] = federatedDeviceKeys(k);
      out.device_keys[u] = shared;
      if (cs.master) out.master_keys[u] = cs.master;
      if (cs.self_signing) out.self_signing_keys[u] = cs.self_signing;
    }),
  );
  return out;
}

/** Claim one key per (local user, device, algorithm); atomic per key (services/e2ee/device-keys.ts
 *  claimKey). Shared by POST /keys/claim and POST /user/keys/claim. */
export async function claimLocalKeys(
  env: Env,
  config: Config,
  requested: Record<string, Record<string, string>>,
  waitUntil: (p: Promise<unknown>) => void,
): Promise<Record<string, Record<string, Record<string, unknown>>>> {
  const claimed: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const [u, perDevice] of Object.entries(requested)) {
    for (const [deviceId, algorithm] of Object.entries(perDevice)) {
      const k = await claimKey(env, u, deviceId, algorithm);
      if (!k) continue;
      ((claimed[u] ??= {})[deviceId] ??= {})[k.keyId] = k.key;
      // The owner's next /sync shows the lower count, so the device uploads more.
      waitUntil(pushKeyCounts(env, config, u, deviceId));
    }
  }
  return claimed;
}

// =============================================================================================
// Client side: /keys/query and /keys/claim for remote users.

export type Failures = Record<string, Json>;

function failure(e: unknown): Json {
  if (e instanceof FederationError && e.status !== undefined) return { status: e.status, errcode: e.errcode, message: e.message };
  return { status: 503, message: (e as Error)?.message ?? "Unreachable" };
}

/** Group user IDs by server (invalid IDs dropped). */
export function byServer<T>(map: Record<string, T>): Map<string, Record<string, T>> {
  const out = new Map<string, Record<string, T>>();
  for (const [u, v] of Object.entries(map)) {
    const s = serverOf(u);
    if (!s) continue;
    const group = out.get(s) ?? {};
    group[u] = v;
    out.set(s, group);
  }
  return out;
}

/** The client's `timeout` (ms) bounded to something sane; spec default 10 s. */
export function federationTimeout(timeout: number | undefined): number {
  return Math.max(1000, Math.min(timeout ?? 10_000, 30_000));
}

export interface RemoteKeysResult {
  device_keys: KeyMap;
  master_keys: KeyMap;
  self_signing_keys: KeyMap;
  failures: Failures;
}

function fromCache(list: RemoteDeviceList, deviceIds: string[]): Json {
  const out: Json = {};
  for (const d of list.devices) {
    if (!d.keys || (deviceIds.length && !deviceIds.includes(d.deviceId))) continue;
    out[d.deviceId] = d.displayName ? { ...d.keys, unsigned: { device_display_name: d.displayName } } : d.keys;
  }
  return out;
}

/** Keys of remote users for POST /keys/query: answered from the cache for users whose list we
 *  track (a non-stale cache of a user who shares a room with `requester`, so their server keeps
 *  us updated); otherwise one POST /user/keys/query per server, in parallel, each bounded by
 *  `timeoutMs`. Unreachable servers go to `failures`. Full-list answers for users sharing a room
 *  with the requester fill the cache. */
export async function queryRemoteKeys(env: Env, config: Config, requester: string, requested: Record<string, string[]>, timeoutMs: number): Promise<RemoteKeysResult> {
  const out: RemoteKeysResult = { device_keys: {}, master_keys: {}, self_signing_keys: {}, failures: {} };
  const ctx = federationContext(env, config);
  await Promise.all(
    [...byServer(requested)].map(async ([server, users]) => {
      if (server === config.serverName) return;
      const ask: Record<string, string[]> = {};
      const shares = new Map<string, boolean>();
      for (const [u, deviceIds] of Object.entries(users)) {
        const list = await getRemoteDeviceList(env, u);
        const shared = (await roomsSharedWithRemote(env, config, u, requester)).length > 0;
        shares.set(u, shared);
        if (list && !list.stale && shared) {
          out.device_keys[u] = fromCache(list, deviceIds);
          if (list.master) out.master_keys[u] = list.master;
          if (list.selfSigning) out.self_signing_keys[u] = list.selfSigning;
        } else {
          ask[u] = deviceIds;
        }
      }
      if (Object.keys(ask).length === 0) return;
      let body: Json;
      try {
        body = (await federationRequest<Json>(ctx, server, "POST", "/_matrix/federation/v1/user/keys/query", { body: { device_keys: ask }, timeoutMs })).body;
      } catch (e) {
        out.failures[server] = failure(e);
        return;
      }
      const dk = isObject(body.device_keys) ? body.device_keys : {};
      const mk = isObject(body.master_keys) ? body.master_keys : {};
      const sk = isObject(body.self_signing_keys) ? body.self_signing_keys : {};
      for (const [u, deviceIds] of Object.entries(ask)) {
        // Only what we asked for, about users of that server, with consistent IDs.
        const devices: KeyMap = {};
        const theirs = dk[u];
        if (isObject(theirs)) {
          for (const [d, k] of Object.entries(theirs)) {
            if (deviceIds.length && !deviceIds.includes(d)) continue;
            if (await validRemoteDeviceKeys(k, u, d)) devices[d] = k as Json;
          }
        }
        out.device_keys[u] = devices;
        const master = validCrossSigningKey(mk[u], u, "master") ? (mk[u] as CrossSigningKey) : undefined;
        const ssk = validCrossSigningKey(sk[u], u, "self_signing") ? (sk[u] as CrossSigningKey) : undefined;
        if (master) out.master_keys[u] = master;
        if (ssk) out.self_signing_keys[u] = ssk;
        if (deviceIds.length === 0 && shares.get(u)) {
          // The full list of a user we share a room with: their server sends us updates from
          // now on. No stream position yet: the first update with a prev_id resyncs.
          await storeRemoteDeviceList(env, u, {
            streamId: null,
            devices: Object.entries(devices).map(([deviceId, k]) => {
              const { unsigned, ...keys } = k;
              const name = isObject(unsigned) && typeof unsigned.device_display_name === "string" ? unsigned.device_display_name : null;
              return { deviceId, keys, displayName: name };
            }),
            master,
            selfSigning: ssk,
          }).catch((e) => console.error(`caching the device list of ${u} failed`, e));
        }
      }
    }),
  );
  return out;
}

/** One-time keys of remote users for POST /keys/claim: one POST /user/keys/claim per server. */
export async function claimRemoteKeys(
  env: Env,
  config: Config,
  requested: Record<string, Record<string, string>>,
  timeoutMs: number,
): Promise<{ one_time_keys: Record<string, Record<string, Json>>; failures: Failures }> {
  const out = { one_time_keys: {} as Record<string, Record<string, Json>>, failures: {} as Failures };
  const ctx = federationContext(env, config);
  await Promise.all(
    [...byServer(requested)].map(async ([server, users]) => {
      if (server === config.serverName) return;
      let body: Json;
      try {
        body = (await federationRequest<Json>(ctx, server, "POST", "/_matrix/federation/v1/user/keys/claim", { body: { one_time_keys: users }, timeoutMs })).body;
      } catch (e) {
        out.failures[server] = failure(e);
        return;
      }
      const otks = isObject(body.one_time_keys) ? body.one_time_keys : {};
      for (const [u, perDevice] of Object.entries(users)) {
        const theirs = otks[u];
        if (!isObject(theirs)) continue;
        for (const deviceId of Object.keys(perDevice)) {
          const keys = theirs[deviceId];
          if (isObject(keys) && Object.keys(keys).length > 0) (out.one_time_keys[u] ??= {})[deviceId] = keys;
        }
      }
    }),
  );
  return out;
}
