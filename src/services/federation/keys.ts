// Remote server keys (spec: Server-Server API "Retrieving server keys"): a D1-backed cache of
// other servers' signing keys, filled by GET /_matrix/key/v2/server on the server itself and,
// when that fails, by POST /_matrix/key/v2/query on the configured notaries
// (TRUSTED_KEY_SERVERS); for the events another server sent us, that server as a notary too
// (vouchedKey). Also builds our own key response and the notary answers we serve.
//
// Entry points for other code:
//   getVerifyKey(ctx, server, keyId, { purpose: "request" })          → current key or undefined
//   getVerifyKey(ctx, server, keyId, { purpose: "event", ts })         → key valid for an event at ts
//   storeKeyResponse(env, response, fromServer, now) (tests seed keys with it or plain SQL)
import type { Env } from "../../env";
import type { Config } from "../../config";
import { signJson, verifyJsonSignature } from "../../core/signing";
import { isValidServerName } from "../../core/ids";
import { getServerSigningKey } from "../server-key";
import { federationRequest, FederationError, type FederationContext } from "./client";

/** A server's key response (spec definitions/keys.yaml). */
export interface ServerKeys {
  server_name: string;
  verify_keys: Record<string, { key: string }>;
  old_verify_keys?: Record<string, { key: string; expired_ts: number }>;
  valid_until_ts: number;
  signatures: Record<string, Record<string, string>>;
}

export interface VerifyKey {
  serverName: string;
  keyId: string;
  publicKey: string;
  /** Capped at fetch time + 7 days (spec: "the lesser of this field and 7 days into the future"). */
  validUntilTs: number;
  /** Set when the key was listed under old_verify_keys. */
  expiredTs?: number;
}

export type KeyPurpose =
  /** Verifying an X-Matrix request now: only a current (verify_keys) key that is still valid. */
  | { purpose: "request" }
  /** Verifying an event signature. `ts` is the event's origin_server_ts when the room version
   *  enforces key validity (v5+), else omit it: any key we know will do. */
  | { purpose: "event"; ts?: number };

/** How long peers may cache our own key response. (Spec: avoid answers that expire in < 1 h.) */
export const OWN_KEY_VALIDITY_MS = 24 * 3600_000;
const MAX_VALIDITY_MS = 7 * 24 * 3600_000;
const KEY_FETCH_TIMEOUT_MS = 10_000;
const KEY_RESPONSE_MAX_BYTES = 256 * 1024;
/** Don't refetch one server's keys more often than this after a miss ("Requesting servers
 *  should limit how frequently they query for certificates"). */
export const REFETCH_BACKOFF_MS = 30_000;
const MAX_KEYS_PER_RESPONSE = 50;

const lastFetch = new Map<string, number>();
const inflight = new Map<string, Promise<void>>();

/** Forget fetch throttling state (tests). */
export function resetKeyFetchThrottle(): void {
  lastFetch.clear();
  vouched.clear();
}

// ---------------------------------------------------------------------------------------------
// Our own keys

/** Our signed key response (GET /_matrix/key/v2/server). Old keys: expired rows in D1
 *  (generated keys that were retired) and OLD_VERIFY_KEYS from the configuration. */
export async function ownKeyResponse(env: Env, config: Config, now = Date.now()): Promise<ServerKeys> {
  const key = await getServerSigningKey(env, config);
  const rows = await env.DB.prepare("SELECT key_id, public_key, expired_ts FROM server_signing_keys WHERE expired_ts IS NOT NULL")
    .all<{ key_id: string; public_key: string; expired_ts: number }>();
  const old_verify_keys: Record<string, { key: string; expired_ts: number }> = {};
  for (const r of rows.results) if (r.key_id !== key.keyId) old_verify_keys[r.key_id] = { key: r.public_key, expired_ts: r.expired_ts };
  for (const k of config.oldVerifyKeys) if (k.keyId !== key.keyId) old_verify_keys[k.keyId] = { key: k.publicKey, expired_ts: k.expiredTs };
  const body = {
    server_name: config.serverName,
    verify_keys: { [key.keyId]: { key: key.publicKey } },
    old_verify_keys,
    valid_until_ts: now + OWN_KEY_VALIDITY_MS,
  };
  return signJson(body, config.serverName, key);
}

function ownKeysAsVerifyKeys(r: ServerKeys): VerifyKey[] {
  const out: VerifyKey[] = [];
  for (const [keyId, v] of Object.entries(r.verify_keys)) out.push({ serverName: r.server_name, keyId, publicKey: v.key, validUntilTs: r.valid_until_ts });
  for (const [keyId, v] of Object.entries(r.old_verify_keys ?? {})) {
    out.push({ serverName: r.server_name, keyId, publicKey: v.key, validUntilTs: v.expired_ts, expiredTs: v.expired_ts });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Validating key responses

/** Check a key response claimed to be `serverName`'s: shape, server_name, and a valid
 *  self-signature by at least one of its verify_keys (every signature by a listed verify key
 *  must verify). Returns an error message or undefined. */
export async function validateKeyResponse(r: unknown, serverName: string): Promise<string | undefined> {
  if (!r || typeof r !== "object" || Array.isArray(r)) return "not an object";
  const k = r as Partial<ServerKeys>;
  if (k.server_name !== serverName) return "server_name does not match";
  if (typeof k.valid_until_ts !== "number" || !Number.isSafeInteger(k.valid_until_ts)) return "valid_until_ts missing";
  if (!k.verify_keys || typeof k.verify_keys !== "object") return "verify_keys missing";
  const all = { ...(k.old_verify_keys ?? {}), ...k.verify_keys };
  if (Object.keys(all).length > MAX_KEYS_PER_RESPONSE) return "too many keys";
  for (const [id, v] of Object.entries(all)) {
    if (!/^[A-Za-z0-9_-]+:[A-Za-z0-9_]+$/.test(id) || !v || typeof (v as { key?: unknown }).key !== "string") return `bad key ${id}`;
  }
  for (const [id, v] of Object.entries(k.old_verify_keys ?? {})) {
    if (typeof v.expired_ts !== "number") return `old key ${id} has no expired_ts`;
  }
  const sigs = k.signatures?.[serverName];
  if (!sigs || typeof sigs !== "object") return "not signed by the server";
  let verified = 0;
  for (const keyId of Object.keys(sigs)) {
    const vk = k.verify_keys[keyId];
    if (!vk) continue; // signatures by keys not in verify_keys prove nothing
    if (!(await verifyJsonSignature(k, serverName, keyId, vk.key))) return `bad signature by ${keyId}`;
    verified++;
  }
  return verified > 0 ? undefined : "not signed by any of its verify_keys";
}

/** Store the keys of a validated response (upsert; a newer response replaces an older one). */
export async function storeKeyResponse(env: Env, r: ServerKeys, fromServer: string, now = Date.now()): Promise<VerifyKey[]> {
  const json = JSON.stringify(r);
  const keys = keysOf(r, now);
  if (keys.length === 0) return keys;
  // A later fetch replaces an earlier one (a key can move from verify_keys to old_verify_keys).
  const stmt = env.DB.prepare(
    `INSERT INTO remote_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts, from_server, key_json)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = ?3, valid_until_ts = ?4, expired_ts = ?5,
       fetched_ts = ?6, from_server = ?7, key_json = ?8
     WHERE excluded.fetched_ts >= remote_server_keys.fetched_ts`,
  );
  await env.DB.batch(keys.map((k) => stmt.bind(k.serverName, k.keyId, k.publicKey, k.validUntilTs, k.expiredTs ?? null, now, fromServer, json)));
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Lookup

interface KeyRow {
  public_key: string;
  valid_until_ts: number;
  expired_ts: number | null;
}

function usable(k: VerifyKey, p: KeyPurpose, now: number): boolean {
  if (p.purpose === "request") return k.expiredTs === undefined && k.validUntilTs >= now;
  if (p.ts === undefined) return true;
  // Room v5+: "Keys used beyond this timestamp MUST be considered invalid"; an old key is
  // valid for events before it expired.
  return k.validUntilTs >= p.ts && (k.expiredTs === undefined || k.expiredTs > p.ts);
}

async function cachedKey(env: Env, server: string, keyId: string): Promise<VerifyKey | undefined> {
  const row = await env.DB.prepare("SELECT public_key, valid_until_ts, expired_ts FROM remote_server_keys WHERE server_name = ? AND key_id = ?")
    .bind(server, keyId)
    .first<KeyRow>();
  if (!row) return undefined;
  return { serverName: server, keyId, publicKey: row.public_key, validUntilTs: row.valid_until_ts, expiredTs: row.expired_ts ?? undefined };
}

/** The public key `server` signs with under `keyId`, fit for `purpose`; fetches (directly,
 *  then through notaries) when the cache has nothing usable. Undefined when no usable key can
 *  be found. Never throws for network problems. */
export async function getVerifyKey(ctx: FederationContext, server: string, keyId: string, p: KeyPurpose): Promise<VerifyKey | undefined> {
  const now = Date.now();
  if (server === ctx.config.serverName) {
    const own = ownKeysAsVerifyKeys(await ownKeyResponse(ctx.env, ctx.config, now)).find((k) => k.keyId === keyId);
    return own && usable(own, p, now) ? own : undefined;
  }
  if (!isValidServerName(server)) return undefined;
  const cached = await cachedKey(ctx.env, server, keyId);
  if (cached && usable(cached, p, now)) return cached;
  // Throttle refetches of the same server — but a fetch still running is joined, not refused
  // (a new peer's first few requests arrive together; all of them wait for its one key fetch).
  const last = lastFetch.get(server);
  if (!inflight.has(server) && last !== undefined && now - last < REFETCH_BACKOFF_MS) return undefined;
  const minValid = p.purpose === "request" ? now : (p.ts ?? 0);
  await fetchKeys(ctx, server, [keyId], minValid);
  const fresh = await cachedKey(ctx.env, server, keyId);
  return fresh && usable(fresh, p, Date.now()) ? fresh : undefined;
}

/** Fetch `server`'s keys into the cache: directly first, then via each trusted notary until the
 *  wanted keys are known and valid until `minValid`. Concurrent calls for one server share one
 *  fetch. */
export function fetchKeys(ctx: FederationContext, server: string, keyIds: string[], minValid: number): Promise<void> {
  const running = inflight.get(server);
  if (running) return running;
  lastFetch.set(server, Date.now());
  const p = (async () => {
    const satisfied = (keys: VerifyKey[]) => keyIds.every((id) => keys.some((k) => k.keyId === id && k.validUntilTs >= minValid));
    const direct = await fetchDirect(ctx, server).catch((e: unknown) => {
      console.warn(`key fetch from ${server} failed: ${(e as Error).message}`);
      return [] as VerifyKey[];
    });
    if (satisfied(direct)) return;
    for (const notary of ctx.config.trustedKeyServers) {
      if (notary === server || notary === ctx.config.serverName) continue;
      const got = await fetchViaNotary(ctx, notary, server, keyIds, minValid).catch((e: unknown) => {
        console.warn(`key query for ${server} via ${notary} failed: ${(e as Error).message}`);
        return [] as VerifyKey[];
      });
      if (satisfied(got)) return;
    }
  })().finally(() => inflight.delete(server));
  inflight.set(server, p);
  return p;
}

/** GET /_matrix/key/v2/server on the server itself (unsigned request). */
export async function fetchDirect(ctx: FederationContext, server: string): Promise<VerifyKey[]> {
  const { body } = await federationRequest<unknown>(ctx, server, "GET", "/_matrix/key/v2/server", {
    signed: false,
    timeoutMs: KEY_FETCH_TIMEOUT_MS,
    maxBytes: KEY_RESPONSE_MAX_BYTES,
  });
  const err = await validateKeyResponse(body, server);
  if (err) throw new FederationError(`invalid key response from ${server}: ${err}`);
  return storeKeyResponse(ctx.env, body as ServerKeys, server);
}

/** POST /_matrix/key/v2/query on a notary. Each returned response must carry the server's own
 *  valid signature and the notary's (checked with the notary's key, itself fetched directly). */
export async function fetchViaNotary(ctx: FederationContext, notary: string, server: string, keyIds: string[], minValid: number): Promise<VerifyKey[]> {
  const out: VerifyKey[] = [];
  for (const r of await queryNotary(ctx, notary, server, keyIds, minValid)) out.push(...(await storeKeyResponse(ctx.env, r, notary)));
  return out;
}

/** The key responses for `server` a notary answers, each checked as fetchViaNotary says. */
async function queryNotary(ctx: FederationContext, notary: string, server: string, keyIds: string[], minValid: number): Promise<ServerKeys[]> {
  const criteria: Record<string, { minimum_valid_until_ts: number }> = {};
  for (const id of keyIds) criteria[id] = { minimum_valid_until_ts: minValid };
  const { body } = await federationRequest<{ server_keys?: unknown }>(ctx, notary, "POST", "/_matrix/key/v2/query", {
    body: { server_keys: { [server]: criteria } },
    timeoutMs: KEY_FETCH_TIMEOUT_MS,
    maxBytes: KEY_RESPONSE_MAX_BYTES,
  });
  if (!Array.isArray(body.server_keys)) throw new FederationError(`notary ${notary} answered without server_keys`);
  const out: ServerKeys[] = [];
  for (const r of body.server_keys.slice(0, 20)) {
    if ((r as { server_name?: unknown })?.server_name !== server) continue;
    const err = await validateKeyResponse(r, server);
    if (err) {
      console.warn(`notary ${notary} returned a bad key response for ${server}: ${err}`);
      continue;
    }
    if (!(await signedByNotary(ctx, r as ServerKeys, notary))) {
      console.warn(`notary ${notary}'s response for ${server} lacks a valid notary signature`);
      continue;
    }
    out.push(r as ServerKeys);
  }
  return out;
}

/** Keys vouched for by a server we did not choose as a notary, by `${via}\0${server}`: what it
 *  answered (kept for REFETCH_BACKOFF_MS, a miss too) and a query still running. */
const vouched = new Map<string, { at: number; keys: VerifyKey[] }>();
const vouching = new Map<string, Promise<VerifyKey[]>>();

/** A key of `server` for checking the signature of an event that `via` sent us, when the key
 *  ring has none (getVerifyKey: `server` itself and TRUSTED_KEY_SERVERS could not give it): `via`
 *  asked as a notary (POST /_matrix/key/v2/query; spec "Querying Keys Through Another Server":
 *  "Notary servers can return keys for servers that are offline ... by using cached
 *  responses"). For a join this is the resident server, which checked those events when it
 *  accepted them; Synapse gets the same from its trusted_key_servers (matrix.org by default).
 *  The answer must carry `server`'s self-signature and `via`'s own valid signature. It is not
 *  stored in the key ring: `via` is no notary of our choosing, so what it vouches for serves
 *  only the events it sent (never a request of `server`'s, nor events from anyone else).
 *  Trusting `via` for an offline server's key is a trade-off (it lets a room outlive its
 *  creator's server); SENDER_AS_NOTARY=off turns it off. */
export async function vouchedKey(ctx: FederationContext, via: string, server: string, keyId: string, p: KeyPurpose & { purpose: "event" }): Promise<VerifyKey | undefined> {
  if (!ctx.config.senderAsNotary) return undefined; // SENDER_AS_NOTARY=off
  if (via === server || via === ctx.config.serverName || !isValidServerName(via) || !isValidServerName(server)) return undefined;
  const memo = `${via}\u0000${server}`;
  const now = Date.now();
  let hit = vouched.get(memo);
  if (!hit || (now - hit.at >= REFETCH_BACKOFF_MS && !hit.keys.some((k) => k.keyId === keyId && usable(k, p, now)))) {
    let running = vouching.get(memo);
    if (!running) {
      running = queryNotary(ctx, via, server, [keyId], p.ts ?? 0)
        .then((rs) => rs.flatMap((r) => keysOf(r, now)))
        .catch((e: unknown) => {
          console.warn(`key query for ${server} via ${via} (the events' origin) failed: ${(e as Error).message}`);
          return [];
        })
        .finally(() => vouching.delete(memo));
      vouching.set(memo, running);
    }
    hit = { at: now, keys: await running };
    if (vouched.size >= 1024) vouched.clear();
    vouched.set(memo, hit);
  }
  return hit.keys.find((k) => k.keyId === keyId && usable(k, p, now));
}

/** The keys of a key response as storeKeyResponse records them (validity capped at 7 days). */
function keysOf(r: ServerKeys, now: number): VerifyKey[] {
  const validUntil = Math.min(r.valid_until_ts, now + MAX_VALIDITY_MS);
  const keys: VerifyKey[] = [];
  for (const [keyId, v] of Object.entries(r.verify_keys)) keys.push({ serverName: r.server_name, keyId, publicKey: v.key, validUntilTs: validUntil });
  for (const [keyId, v] of Object.entries(r.old_verify_keys ?? {})) {
    if (r.verify_keys[keyId]) continue;
    keys.push({ serverName: r.server_name, keyId, publicKey: v.key, validUntilTs: Math.min(validUntil, v.expired_ts), expiredTs: v.expired_ts });
  }
  return keys;
}

async function signedByNotary(ctx: FederationContext, r: ServerKeys, notary: string): Promise<boolean> {
  const sigs = r.signatures?.[notary];
  if (!sigs || typeof sigs !== "object") return false;
  for (const keyId of Object.keys(sigs)) {
    // The notary's own key: from cache or fetched directly from the notary (never via notaries).
    let key = await cachedKey(ctx.env, notary, keyId);
    if (!key || !usable(key, { purpose: "request" }, Date.now())) {
      await fetchDirect(ctx, notary).catch(() => []);
      key = await cachedKey(ctx.env, notary, keyId);
    }
    if (key && (await verifyJsonSignature(r, notary, keyId, key.publicKey))) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Serving as a notary (POST /_matrix/key/v2/query, GET /_matrix/key/v2/query/{serverName})

/** Key responses for `server` valid until `minValid` (spec: "If not supplied, the notary server
 *  MUST use the current time"), each re-signed with our key. Fetches directly when the cache
 *  has nothing fresh enough; falls back to whatever is cached when the server is unreachable
 *  ("notary servers should continue to return the last response they received"). */
export async function notaryKeyResponses(ctx: FederationContext, server: string, minValid: number | undefined): Promise<ServerKeys[]> {
  const now = Date.now();
  const want = minValid ?? now;
  if (server === ctx.config.serverName) return [await ownKeyResponse(ctx.env, ctx.config, now)];
  if (!isValidServerName(server)) return [];
  let rows = await cachedResponses(ctx.env, server);
  if (!rows.some((r) => r.valid_until_ts >= want)) {
    const last = lastFetch.get(server);
    if (last === undefined || now - last >= REFETCH_BACKOFF_MS) {
      lastFetch.set(server, now);
      await fetchDirect(ctx, server).catch((e: unknown) => console.warn(`notary fetch for ${server} failed: ${(e as Error).message}`));
      rows = await cachedResponses(ctx.env, server);
    }
  }
  const key = await getServerSigningKey(ctx.env, ctx.config);
  const out: ServerKeys[] = [];
  for (const r of rows) {
    // Serve the response as the server signed it, plus our signature (keep only the origin's
    // own signatures: another notary's signature is not ours to vouch for).
    const { signatures, ...rest } = r.json;
    const own = signatures?.[server];
    out.push(await signJson({ ...rest, signatures: own ? { [server]: own } : {} } as ServerKeys, ctx.config.serverName, key));
  }
  return out;
}

async function cachedResponses(env: Env, server: string): Promise<{ valid_until_ts: number; json: ServerKeys }[]> {
  const rows = await env.DB.prepare("SELECT key_json, valid_until_ts FROM remote_server_keys WHERE server_name = ? ORDER BY fetched_ts DESC LIMIT 20")
    .bind(server)
    .all<{ key_json: string; valid_until_ts: number }>();
  const seen = new Set<string>();
  const out: { valid_until_ts: number; json: ServerKeys }[] = [];
  for (const r of rows.results) {
    if (seen.has(r.key_json)) continue;
    seen.add(r.key_json);
    try {
      const json = JSON.parse(r.key_json) as ServerKeys;
      out.push({ valid_until_ts: json.valid_until_ts, json });
    } catch {
      /* a row we cannot parse is skipped */
    }
  }
  return out;
}

/** For the RoomDO's signature checks (server-server API "Validating hashes and signatures on
 *  received events"): the public key `server` signed an event with, or undefined. Pass the
 *  event's origin_server_ts as `ts` when the room version enforces key validity (v5+). */
export async function verifyKeyForEvent(env: Env, config: Config, server: string, keyId: string, ts?: number): Promise<string | undefined> {
  const k = await getVerifyKey({ env, config }, server, keyId, { purpose: "event", ts });
  return k?.publicKey;
}
