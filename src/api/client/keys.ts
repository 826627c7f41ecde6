// Device and one-time keys (spec: Client-Server API "End-to-End Encryption" → "Key management
// API": POST /keys/upload, /keys/query, /keys/claim, GET /keys/changes).
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { invalidParam, MatrixError } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { parseUserId } from "../../core/ids";
import { changedDeviceLists, deviceListPositionFromToken } from "../../services/e2ee/device-list-stream";
import { checkDeviceKeys, oneTimeKeyCounts, pushKeyCounts, queryDeviceKeys, storeDeviceKeys, storeFallbackKeys, storeOneTimeKeys, type DeviceKeysInput } from "../../services/e2ee/device-keys";
import { queryCrossSigningKeys, withRequesterSignatures, type CrossSigningKey } from "../../services/e2ee/cross-signing";
import { type Json } from "../../services/e2ee/common";
import { markDeviceListChanged } from "../../services/e2ee/device-list-changes";
import type { Config } from "../../config";
import { userStub } from "../../services/notifier";
import { claimLocalKeys, claimRemoteKeys, federationTimeout, queryRemoteKeys } from "../../services/federation/device-lists";

export const keys = new Hono<AppEnv>();
keys.use("/keys/upload", requireAuth);
keys.use("/keys/query", requireAuth);
keys.use("/keys/claim", requireAuth);
keys.use("/keys/changes", requireAuth);

const signaturesSchema = z.record(z.string(), z.record(z.string(), z.string()));

export const deviceKeysSchema = z
  .object({
    user_id: z.string(),
    device_id: z.string(),
    algorithms: z.array(z.string()),
    keys: z.record(z.string(), z.string()),
    signatures: signaturesSchema,
  })
  .loose();

/** A one-time or fallback key: a bare curve25519 key, or a signed key object. */
const keyMapSchema = z.record(z.string(), z.union([z.string(), z.object({ key: z.string() }).loose()]));

export const uploadSchema = z.object({
  device_keys: deviceKeysSchema.optional(),
  one_time_keys: keyMapSchema.optional(),
  fallback_keys: keyMapSchema.optional(),
  // The MSC2732 name some clients still send.
  "org.matrix.msc2732.fallback_keys": keyMapSchema.optional(),
});

/** Upload keys for one device: identity keys, one-time keys, fallback keys. Shared by
 *  POST /keys/upload and the dehydrated-device PUT (MSC3814). */
export async function uploadKeysFor(
  env: AppEnv["Bindings"],
  config: Config,
  userId: string,
  deviceId: string,
  body: z.infer<typeof uploadSchema>,
): Promise<void> {
  if (body.device_keys) {
    const err = await checkDeviceKeys(body.device_keys as DeviceKeysInput, userId, deviceId);
    if (err) throw new MatrixError(400, "M_INVALID_PARAM", err);
    if (await storeDeviceKeys(env, userId, deviceId, body.device_keys)) await markDeviceListChanged(env, config, userId, { devices: [deviceId] });
  }
  if (body.one_time_keys) await storeOneTimeKeys(env, userId, deviceId, body.one_time_keys);
  const fallback = body.fallback_keys ?? body["org.matrix.msc2732.fallback_keys"];
  if (fallback) await storeFallbackKeys(env, userId, deviceId, fallback);
  if (body.one_time_keys || fallback) await pushKeyCounts(env, config, userId, deviceId);
}

// POST /keys/upload — "Publishes end-to-end encryption keys for the device."
keys.post("/keys/upload", async (c) => {
  const body = await parseBody(c, uploadSchema);
  const { userId, deviceId } = c.var.auth;
  await uploadKeysFor(c.env, c.var.config, userId, deviceId, body);
  return c.json({ one_time_key_counts: await oneTimeKeyCounts(c.env, userId, deviceId) });
});

/** Split requested users into local ones and the rest (asked over federation; invalid IDs
 *  are dropped). */
function partition<T>(requested: Record<string, T>, serverName: string): { local: string[]; remote: Record<string, T> } {
  const local: string[] = [];
  const remote: Record<string, T> = {};
  for (const [u, v] of Object.entries(requested)) {
    const parsed = parseUserId(u, { historical: true });
    if (!parsed) continue;
    if (parsed.serverName === serverName) local.push(u);
    else remote[u] = v;
  }
  return { local, remote };
}

// POST /keys/query — "Returns the current devices and identity keys for the given users."
// Remote users: from the device-list cache when we track them, else one request per server
// (POST /_matrix/federation/v1/user/keys/query); unreachable servers are listed in `failures`.
keys.post("/keys/query", async (c) => {
  const body = await parseBody(
    c,
    z.object({ device_keys: z.record(z.string(), z.array(z.string())), timeout: z.number().optional(), token: z.string().optional() }),
  );
  const requester = c.var.auth.userId;
  const { local, remote } = partition(body.device_keys, c.var.config.serverName);
  const fed = Object.keys(remote).length
    ? queryRemoteKeys(c.env, c.var.config, requester, remote, federationTimeout(body.timeout))
    : Promise.resolve({ device_keys: {}, master_keys: {}, self_signing_keys: {}, failures: {} });
  const out = {
    device_keys: {} as Record<string, Json>,
    master_keys: {} as Record<string, Json>,
    self_signing_keys: {} as Record<string, Json>,
    user_signing_keys: {} as Record<string, Json>,
    failures: {} as Record<string, Json>,
  };
  await Promise.all(
    local.map(async (u) => {
      const [devs, cs] = await Promise.all([queryDeviceKeys(c.env, u, body.device_keys[u]), queryCrossSigningKeys(c.env, requester, u)]);
      out.device_keys[u] = devs;
      if (cs.master) out.master_keys[u] = cs.master;
      if (cs.self_signing) out.self_signing_keys[u] = cs.self_signing;
      if (cs.user_signing) out.user_signing_keys[u] = cs.user_signing;
    }),
  );
  const r = await fed;
  Object.assign(out.device_keys, r.device_keys);
  // Remote master keys carry the requester's own user-signing signatures, kept here.
  for (const [u, mk] of Object.entries(r.master_keys)) out.master_keys[u] = await withRequesterSignatures(c.env, requester, u, mk as CrossSigningKey);
  Object.assign(out.self_signing_keys, r.self_signing_keys);
  out.failures = r.failures;
  return c.json(out);
});

// POST /keys/claim — "Claims one-time keys for use in pre-key messages." Each claim takes a key
// atomically (services/e2ee/device-keys.ts claimKey); an exhausted device yields its fallback key. Remote
// users: one POST /_matrix/federation/v1/user/keys/claim per server.
keys.post("/keys/claim", async (c) => {
  const body = await parseBody(
    c,
    z.object({ one_time_keys: z.record(z.string(), z.record(z.string(), z.string())), timeout: z.number().optional() }),
  );
  const { local, remote } = partition(body.one_time_keys, c.var.config.serverName);
  const fed = Object.keys(remote).length
    ? claimRemoteKeys(c.env, c.var.config, remote, federationTimeout(body.timeout))
    : Promise.resolve({ one_time_keys: {}, failures: {} });
  const claimed = await claimLocalKeys(c.env, c.var.config, Object.fromEntries(local.map((u) => [u, body.one_time_keys[u]])), (p) => c.executionCtx.waitUntil(p));
  const r = await fed;
  return c.json({ one_time_keys: { ...claimed, ...r.one_time_keys }, failures: r.failures });
});

/** A /sync `next_batch` issued by the UserDO ("s<pos>_<epoch>"). */
const SYNC_TOKEN = /^s[0-9]{1,15}_[0-9a-z]+$/;

// GET /keys/changes?from=&to= (module "End-to-End Encryption", "Tracking the device list for a
// user": a client back from being offline asks which users' device lists changed since its last
// stored next_batch). Between two /sync tokens the caller's sync hub answers exactly: the users
// the `device_lists` of the /sync responses in between named as changed, and those it named as
// left (UserDO.deviceListChanges). A token from another user or a reset hub is an error, as in
// /sync. Legacy device-list positions (a bare number or a "dl<N>" segment) are answered from
// the D1 device-list stream (changes of users sharing a room now; no `left`).
keys.get("/keys/changes", async (c) => {
  const from = c.req.query("from");
  const to = c.req.query("to");
  if (!from) throw new MatrixError(400, "M_MISSING_PARAM", "from is required");
  if (!to) throw new MatrixError(400, "M_MISSING_PARAM", "to is required");
  const userId = c.var.auth.userId;
  if (SYNC_TOKEN.test(from) && SYNC_TOKEN.test(to)) {
    const r = await userStub(c.env, userId, c.var.config).deviceListChanges(userId, from, to);
    if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
    return c.json(r.value);
  }
  const f = SYNC_TOKEN.test(from) ? null : deviceListPositionFromToken(from);
  const t = SYNC_TOKEN.test(to) ? null : deviceListPositionFromToken(to);
  if (f === null || t === null) throw invalidParam("from and to must both be /sync next_batch tokens (or both device-list positions)");
  const changed = await changedDeviceLists(c.env, userId, f, t);
  return c.json({ changed, left: [] });
});
