// Device lists and E2EE keys over federation (spec: Server-Server API "Device Management" and
// "End-to-End Encryption"; OpenAPI server-server/user_devices.yaml, user_keys.yaml):
//   GET  /_matrix/federation/v1/user/devices/{userId}
//   POST /_matrix/federation/v1/user/keys/query
//   POST /_matrix/federation/v1/user/keys/claim
// Only local users are answered; the bodies are built in services/federation/device-lists.ts.
// Importing services/federation/edus registers the inbound EDU handlers.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { invalidParam, notFound } from "../errors";
import { parseBody } from "../validate";
import { parseUserId } from "../../core/ids";
import { claimLocalKeys, localKeysQuery, localUserDevices } from "../../services/federation/device-lists";
import "../../services/federation/edus";

export const federationE2ee = new Hono<AppEnv>();

/** At most this many users per query/claim (a peer asking for more is refused). */
const MAX_USERS = 1000;

const isLocal = (userId: string, serverName: string) => parseUserId(userId, { historical: true })?.serverName === serverName;

// GET /user/devices/{userId} — "Gets information on all of the user's devices." 404 for users
// that are not ours or do not exist.
federationE2ee.get("/v1/user/devices/:userId", async (c) => {
  const userId = c.req.param("userId");
  if (!isLocal(userId, c.var.config.serverName)) throw invalidParam("User is not on this server");
  const exists = await c.env.DB.prepare("SELECT 1 AS x FROM users WHERE user_id = ?").bind(userId).first();
  if (!exists) throw notFound("Unknown user");
  return c.json(await localUserDevices(c.env, userId));
});

const queryBody = z.object({ device_keys: z.record(z.string(), z.array(z.string()).max(1000)) });

// POST /user/keys/query — "Returns the current devices and identity keys for the given users."
// Users of other servers are left out (the requesting server asks them itself).
federationE2ee.post("/v1/user/keys/query", async (c) => {
  const body = await parseBody(c, queryBody);
  const entries = Object.entries(body.device_keys).filter(([u]) => isLocal(u, c.var.config.serverName));
  if (entries.length > MAX_USERS) throw invalidParam(`At most ${MAX_USERS} users per query`);
  return c.json(await localKeysQuery(c.env, Object.fromEntries(entries)));
});

const claimBody = z.object({ one_time_keys: z.record(z.string(), z.record(z.string(), z.string())) });

// POST /user/keys/claim — "Claims one-time keys for use in pre-key messages." Atomic per key,
// exactly as POST /keys/claim: two concurrent claims never get the same key; an exhausted
// device yields its fallback key.
federationE2ee.post("/v1/user/keys/claim", async (c) => {
  const body = await parseBody(c, claimBody);
  const entries = Object.entries(body.one_time_keys).filter(([u]) => isLocal(u, c.var.config.serverName));
  if (entries.length > MAX_USERS) throw invalidParam(`At most ${MAX_USERS} users per claim`);
  const claimed = await claimLocalKeys(c.env, c.var.config, Object.fromEntries(entries), (p) => c.executionCtx.waitUntil(p));
  return c.json({ one_time_keys: claimed });
});
