// Publishing our signing key (spec: Server-Server API "Publishing Keys", GET /_matrix/key/v2/server).
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { getServerSigningKey } from "../../services/server-key";
import { signJson } from "../../core/signing";

/** How long peers may cache our key response. */
const KEY_VALIDITY_MS = 24 * 3600_000;

export const serverKeys = new Hono<AppEnv>();

serverKeys.get("/server", async (c) => {
  const config = c.var.config;
  const key = await getServerSigningKey(c.env, config);
  const oldKeys = await c.env.DB.prepare("SELECT key_id, public_key, expired_ts FROM server_signing_keys WHERE expired_ts IS NOT NULL")
    .all<{ key_id: string; public_key: string; expired_ts: number }>();
  const old_verify_keys: Record<string, { key: string; expired_ts: number }> = {};
  for (const k of oldKeys.results) old_verify_keys[k.key_id] = { key: k.public_key, expired_ts: k.expired_ts };
  const body = {
    server_name: config.serverName,
    verify_keys: { [key.keyId]: { key: key.publicKey } },
    old_verify_keys,
    valid_until_ts: Date.now() + KEY_VALIDITY_MS,
  };
  return c.json(await signJson(body, config.serverName, key));
});
