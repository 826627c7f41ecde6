// Signing JSON (spec: Appendices, "Signing JSON", "Signing Details", "Checking for a
// Signature"). Ed25519 through Web Crypto.
import { canonicalJsonBytes } from "./canonical-json";
import { decodeBase64, encodeBase64 } from "./base64";

export interface SigningKey {
  /** e.g. "ed25519:a_AbCd" */
  keyId: string;
  /** 32-byte seed, unpadded base64 (what operators store, Synapse's signing key format). */
  seed: string;
  /** Public key, unpadded base64. */
  publicKey: string;
  privateKey: CryptoKey;
}

const ED25519 = { name: "Ed25519" };
// PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410): SEQUENCE { version 0,
// AlgorithmIdentifier { 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }.
const PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

const KEY_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

function randomKeyVersion(length = 6): string {
  // Rejection sampling keeps the distribution uniform (62 does not divide 256).
  let out = "";
  while (out.length < length) {
    for (const b of crypto.getRandomValues(new Uint8Array(length * 2))) {
      if (b < 248 && out.length < length) out += KEY_ID_CHARS[b % 62];
    }
  }
  return out;
}

async function importSeed(keyId: string, seed: Uint8Array): Promise<SigningKey> {
  if (seed.length !== 32) throw new Error("an Ed25519 seed must be 32 bytes");
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32);
  pkcs8.set(PKCS8_PREFIX);
  pkcs8.set(seed, PKCS8_PREFIX.length);
  // Extractable only so the public key can be read from the JWK form (`x`).
  const privateKey = (await crypto.subtle.importKey("pkcs8", pkcs8, ED25519, true, ["sign"])) as CryptoKey;
  const jwk = (await crypto.subtle.exportKey("jwk", privateKey)) as JsonWebKey;
  if (!jwk.x) throw new Error("could not derive the Ed25519 public key");
  return {
    keyId,
    seed: encodeBase64(seed),
    publicKey: encodeBase64(decodeBase64(jwk.x)),
    privateKey,
  };
}

/** A fresh key; the ID defaults to "ed25519:" + 6 random alphanumerics. */
export async function generateSigningKey(keyId?: string): Promise<SigningKey> {
  const seed = crypto.getRandomValues(new Uint8Array(32));
  return importSeed(keyId ?? `ed25519:${randomKeyVersion()}`, seed);
}

/** Rebuild a key from its stored seed (unpadded, padded or URL-safe base64 all accepted). */
export async function signingKeyFromSeed(keyId: string, seedBase64: string): Promise<SigningKey> {
  return importSeed(keyId, decodeBase64(seedBase64));
}

/** Sign raw bytes; returns the unpadded base64 signature. */
export async function signBytes(key: SigningKey, bytes: Uint8Array): Promise<string> {
  const sig = await crypto.subtle.sign(ED25519, key.privateKey, bytes);
  return encodeBase64(new Uint8Array(sig));
}

/** Imported public keys by their base64 form: a room's state is signed by few servers, and
 *  importing the key again for each of 30,000 events cost a tenth of checking them. */
const verifyKeys = new Map<string, CryptoKey>();
const MAX_VERIFY_KEYS = 1_000;

async function importVerifyKey(publicKeyBase64: string, pub: Uint8Array): Promise<CryptoKey> {
  let key = verifyKeys.get(publicKeyBase64);
  if (!key) {
    key = await crypto.subtle.importKey("raw", pub, ED25519, false, ["verify"]);
    if (verifyKeys.size >= MAX_VERIFY_KEYS) verifyKeys.delete(verifyKeys.keys().next().value!);
    verifyKeys.set(publicKeyBase64, key);
  }
  return key;
}

/** Verify an Ed25519 signature over raw bytes. Any malformed input gives false, never throws. */
export async function verifyBytes(publicKeyBase64: string, signatureBase64: string, bytes: Uint8Array): Promise<boolean> {
  try {
    const pub = decodeBase64(publicKeyBase64);
    const sig = decodeBase64(signatureBase64);
    if (pub.length !== 32 || sig.length !== 64) return false;
    return await crypto.subtle.verify(ED25519, await importVerifyKey(publicKeyBase64, pub), sig, bytes);
  } catch {
    return false;
  }
}

/** What is signed: the object without `signatures` and `unsigned`. */
function signedPart(obj: object): Record<string, unknown> {
  const { signatures: _s, unsigned: _u, ...rest } = obj as Record<string, unknown>;
  return rest;
}

/** Returns a copy of `obj` with a signature added under signatures[entity][keyId]
 *  (`signatures` and `unsigned` are excluded from what is signed, and `unsigned` is kept).
 *  Existing signatures are kept. `strict` (default true) applies strict canonical JSON; pass
 *  false only to sign events of room versions 1–5. Throws CanonicalJsonError on unencodable input. */
export async function signJson<T extends object>(
  obj: T,
  entity: string,
  key: SigningKey,
  opts?: { strict?: boolean },
): Promise<T & { signatures: Record<string, Record<string, string>> }> {
  const bytes = canonicalJsonBytes(signedPart(obj), { strict: opts?.strict ?? true });
  const signature = await signBytes(key, bytes);

  const existing = (obj as { signatures?: unknown }).signatures;
  const signatures: Record<string, Record<string, string>> = {};
  if (existing && typeof existing === "object") {
    for (const [name, sigs] of Object.entries(existing as Record<string, Record<string, string>>)) {
      signatures[name] = { ...sigs };
    }
  }
  signatures[entity] = { ...signatures[entity], [key.keyId]: signature };
  return { ...obj, signatures };
}

/** Whether `obj` carries a valid signature by `entity` with key `keyId`. Never throws: a
 *  missing entry, undecodable base64 or unencodable JSON all count as "not signed".
 *  Canonical JSON is not strict here by default (validity of the signature is a question of
 *  bytes; strictness for room v6+ is checked separately by the caller); pass strict: true to
 *  also demand strict canonical JSON. */
export async function verifyJsonSignature(
  obj: object,
  entity: string,
  keyId: string,
  publicKeyBase64: string,
  opts?: { strict?: boolean },
): Promise<boolean> {
  if (signatureOf(obj, entity, keyId) === undefined) return false;
  let bytes: Uint8Array;
  try {
    bytes = canonicalJsonBytes(signedPart(obj), { strict: opts?.strict ?? false });
  } catch {
    return false;
  }
  return verifySignedBytes(obj, entity, keyId, publicKeyBase64, bytes);
}

/** The ed25519 signature `obj` carries by `entity` with `keyId`, if any. */
function signatureOf(obj: object, entity: string, keyId: string): string | undefined {
  // Only ed25519 is understood (spec: "Removes any signing key identifiers ... with
  // algorithms it doesn't understand").
  if (!keyId.startsWith("ed25519:")) return undefined;
  const signatures = (obj as { signatures?: unknown }).signatures;
  if (!signatures || typeof signatures !== "object") return undefined;
  const forEntity = (signatures as Record<string, unknown>)[entity];
  if (!forEntity || typeof forEntity !== "object") return undefined;
  if (!Object.prototype.hasOwnProperty.call(forEntity, keyId)) return undefined;
  const sig = (forEntity as Record<string, unknown>)[keyId];
  return typeof sig === "string" ? sig : undefined;
}

/** verifyJsonSignature when the caller already holds `signed`, the canonical JSON of `obj`
 *  without `signatures` and `unsigned` (PduDigest.signed: an event's checks share one
 *  encoding). Never throws. */
export async function verifySignedBytes(obj: object, entity: string, keyId: string, publicKeyBase64: string, signed: Uint8Array): Promise<boolean> {
  const sig = signatureOf(obj, entity, keyId);
  return sig === undefined ? false : verifyBytes(publicKeyBase64, sig, signed);
}

/** The key ID's version part must be [a-zA-Z0-9_] (spec: server keys, "Key IDs"). */
export function isValidKeyId(keyId: string): boolean {
  return /^ed25519:[A-Za-z0-9_]+$/.test(keyId);
}
