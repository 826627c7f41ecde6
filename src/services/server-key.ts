// The server's ed25519 signing key: from the SIGNING_KEY secret ("ed25519 <id> <seed>", Synapse's
// format) or generated once on first use and kept in D1, so it survives restarts.
import type { Env } from "../env";
import type { Config } from "../config";
import { generateSigningKey, signingKeyFromSeed, type SigningKey } from "../core/signing";

let cached: Promise<SigningKey> | undefined;
let cachedFor: string | undefined;

export function getServerSigningKey(env: Env, config: Config): Promise<SigningKey> {
  const cacheKey = config.signingKey ?? "d1";
  if (!cached || cachedFor !== cacheKey) {
    cachedFor = cacheKey;
    cached = loadKey(env, config).catch((e) => {
      cached = undefined;
      throw e;
    });
  }
  return cached;
}

async function loadKey(env: Env, config: Config): Promise<SigningKey> {
  if (config.signingKey) {
    const [, id, seed] = config.signingKey.split(" ");
    return signingKeyFromSeed(`ed25519:${id}`, seed);
  }
  const existing = await currentRow(env);
  if (existing) return signingKeyFromSeed(existing.key_id, existing.seed);
  const fresh = await generateSigningKey();
  // Atomic "insert unless a key exists": concurrent first requests agree on one key.
  await env.DB.prepare(
    `INSERT INTO server_signing_keys (key_id, seed, public_key, created_ts)
     SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM server_signing_keys WHERE expired_ts IS NULL)`,
  )
    .bind(fresh.keyId, fresh.seed, fresh.publicKey, Date.now())
    .run();
  const row = await currentRow(env);
  if (!row) throw new Error("server signing key could not be stored");
  return row.key_id === fresh.keyId ? fresh : signingKeyFromSeed(row.key_id, row.seed);
}

function currentRow(env: Env) {
  return env.DB.prepare(
    "SELECT key_id, seed FROM server_signing_keys WHERE expired_ts IS NULL ORDER BY created_ts, key_id LIMIT 1",
  ).first<{ key_id: string; seed: string }>();
}
