// Cross-signing (spec: Client-Server API "End-to-End Encryption" → "Cross-signing":
// POST /keys/device_signing/upload, POST /keys/signatures/upload).
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { authDictSchema, requireUia } from "./uia";
import { canonicalJson } from "../../core/canonical-json";
import { verifyJsonSignature } from "../../core/signing";
import { sha256Hex } from "../../services/crypto-util";
import { parseUserId } from "../../core/ids";
import {
  CROSS_SIGNING_TYPES,
  crossSigningPublicKey,
  deviceExists,
  getCrossSigningKeys,
  getDeviceKeys,
  markDeviceListChanged,
  signedContent,
  storeCrossSigningKeys,
  storeSignature,
  type CrossSigningKey,
  type CrossSigningType,
  type Json,
  type Signatures,
} from "../../services/e2ee";
import { db } from "../../db";

export const crossSigning = new Hono<AppEnv>();
crossSigning.use("/keys/device_signing/upload", requireAuth);
crossSigning.use("/keys/signatures/upload", requireAuth);

const crossSigningKeySchema = z
  .object({
    user_id: z.string(),
    usage: z.array(z.string()).min(1),
    keys: z.record(z.string(), z.string()),
    signatures: z.record(z.string(), z.record(z.string(), z.string())).optional(),
  })
  .loose();

const bodyField: Record<CrossSigningType, "master_key" | "self_signing_key" | "user_signing_key"> = {
  master: "master_key",
  self_signing: "self_signing_key",
  user_signing: "user_signing_key",
};

const invalidSignature = (msg: string) => new MatrixError(400, "M_INVALID_SIGNATURE", msg);
const same = (a: unknown, b: unknown) => canonicalJson(a) === canonicalJson(b);

// POST /keys/device_signing/upload — "Publishes cross-signing keys for the user."
crossSigning.post("/keys/device_signing/upload", async (c) => {
  const body = await parseBody(
    c,
    z.object({
      master_key: crossSigningKeySchema.optional(),
      self_signing_key: crossSigningKeySchema.optional(),
      user_signing_key: crossSigningKeySchema.optional(),
      auth: authDictSchema.optional(),
    }),
  );
  const { userId } = c.var.auth;
  const uploaded: Partial<Record<CrossSigningType, CrossSigningKey>> = {};
  for (const type of CROSS_SIGNING_TYPES) {
    const key = body[bodyField[type]] as CrossSigningKey | undefined;
    if (!key) continue;
    if (key.user_id !== userId) throw new MatrixError(400, "M_INVALID_PARAM", `${bodyField[type]}.user_id must be ${userId}`);
    if (!key.usage.includes(type)) throw new MatrixError(400, "M_INVALID_PARAM", `${bodyField[type]}.usage must include "${type}"`);
    if (!crossSigningPublicKey(key)) {
      throw new MatrixError(400, "M_INVALID_PARAM", `${bodyField[type]}.keys must hold exactly one key, "ed25519:<public key>"`);
    }
    uploaded[type] = key;
  }
  const existing = await getCrossSigningKeys(c.env, userId);
  const provided = Object.keys(uploaded) as CrossSigningType[];
  const nothingNew = provided.length > 0 && provided.every((t) => existing[t] && same(existing[t], uploaded[t]));

  // UIA is required except (spec, 1.11): when no master key exists yet, or when the request
  // holds only keys identical to the stored ones (a retried upload).
  if (existing.master && !(uploaded.master && nothingNew)) {
    const digest = await sha256Hex(canonicalJson(uploaded));
    await requireUia(c, body.auth, {
      purpose: `device_signing_upload:${userId}:${digest}`,
      flows: [["m.login.password"]],
      userId,
    });
  }
  if (nothingNew) return c.json({});

  const master = uploaded.master ?? existing.master;
  if (!master) throw new MatrixError(400, "M_MISSING_PARAM", "No master signing key is available");
  const masterPub = crossSigningPublicKey(master)!;
  // The self-signing and user-signing keys must be signed by the master key.
  for (const type of ["self_signing", "user_signing"] as const) {
    const key = uploaded[type];
    if (key && !(await verifyJsonSignature(key, userId, masterPub.keyId, masterPub.publicKey))) {
      throw invalidSignature(`${bodyField[type]} is not signed by the master key`);
    }
  }
  // 403 when a public key equals one of the user's device IDs (they share a key-ID namespace).
  for (const type of provided) {
    if (await deviceExists(c.env, userId, crossSigningPublicKey(uploaded[type]!)!.publicKey)) throw forbidden("Key ID in use");
  }
  await storeCrossSigningKeys(c.env, userId, uploaded);
  return c.json({});
});

type Failure = { errcode: string; error: string };

/** Validate and store the signatures the requester made on one object. Returns a failure, or
 *  null when at least one signature was stored. */
async function acceptSignatures(
  env: AppEnv["Bindings"],
  signer: string,
  targetUser: string,
  keyId: string,
  obj: Json,
): Promise<Failure | null> {
  const notFound = (error: string): Failure => ({ errcode: "M_NOT_FOUND", error });
  const invalid = (error: string): Failure => ({ errcode: "M_INVALID_SIGNATURE", error });
  if (obj.user_id !== targetUser) return { errcode: "M_INVALID_PARAM", error: "user_id does not match" };
  const mySigs = ((obj.signatures as Signatures | undefined) ?? {})[signer];
  if (!mySigs || typeof mySigs !== "object" || Object.keys(mySigs).length === 0) return invalid(`No signature by ${signer}`);

  const theirs = await getCrossSigningKeys(env, targetUser);
  const theirMaster = theirs.master ? crossSigningPublicKey(theirs.master) : null;
  const store = async (signerKeyId: string) =>
    storeSignature(env, { signerUserId: signer, signerKeyId, targetUserId: targetUser, targetKeyId: keyId, signature: mySigs[signerKeyId] });

  if (signer === targetUser) {
    if (theirMaster && keyId === theirMaster.publicKey) {
      // Own master key, signed by own device(s).
      if (!same(signedContent(theirs.master!), signedContent(obj))) return invalid("Object does not match the stored master key");
      let stored = 0;
      for (const sigKeyId of Object.keys(mySigs)) {
        if (!sigKeyId.startsWith("ed25519:") || sigKeyId === theirMaster.keyId) continue;
        const dev = await getDeviceKeys(env, signer, sigKeyId.slice("ed25519:".length));
        const devKey = (dev?.keys as Record<string, string> | undefined)?.[sigKeyId];
        if (!devKey) continue;
        if (!(await verifyJsonSignature(obj, signer, sigKeyId, devKey))) return invalid(`Invalid signature ${sigKeyId}`);
        await store(sigKeyId);
        stored++;
      }
      return stored ? null : invalid("No signature by one of your devices");
    }
    // Own device, signed by own self-signing key.
    const dev = await getDeviceKeys(env, signer, keyId);
    if (!dev) return notFound("Unknown device or key");
    if (!same(signedContent(dev), signedContent(obj))) return invalid("Object does not match the stored device keys");
    const ssk = theirs.self_signing ? crossSigningPublicKey(theirs.self_signing) : null;
    if (!ssk) return notFound("No self-signing key uploaded");
    if (!(await verifyJsonSignature(obj, signer, ssk.keyId, ssk.publicKey))) return invalid("Invalid self-signing signature");
    await store(ssk.keyId);
    return null;
  }
  // Another user's master key, signed by the requester's user-signing key.
  if (!theirMaster || keyId !== theirMaster.publicKey) return notFound("Unknown key; only another user's master key can be signed");
  if (!same(signedContent(theirs.master!), signedContent(obj))) return invalid("Object does not match the stored master key");
  const mine = await getCrossSigningKeys(env, signer);
  const usk = mine.user_signing ? crossSigningPublicKey(mine.user_signing) : null;
  if (!usk) return notFound("No user-signing key uploaded");
  if (!(await verifyJsonSignature(obj, signer, usk.keyId, usk.publicKey))) return invalid("Invalid user-signing signature");
  await store(usk.keyId);
  return null;
}

// POST /keys/signatures/upload — "Publishes cross-signing signatures for the user." Every
// signature is checked; the ones that fail are reported in `failures`, the rest are stored.
crossSigning.post("/keys/signatures/upload", async (c) => {
  const body = await parseBody(c, z.record(z.string(), z.record(z.string(), z.record(z.string(), z.unknown()))));
  const signer = c.var.auth.userId;
  const failures: Record<string, Record<string, Failure>> = {};
  // Signer → the signer's own keys that gained a signature (devices, or the master key).
  const changed = new Map<string, Set<string>>();
  for (const [targetUser, objects] of Object.entries(body)) {
    const local = parseUserId(targetUser, { historical: true })?.serverName === c.var.config.serverName;
    for (const [keyId, obj] of Object.entries(objects)) {
      const failure = local
        ? await acceptSignatures(c.env, signer, targetUser, keyId, obj)
        : { errcode: "M_UNRECOGNIZED", error: "Signing keys of remote users is not supported yet" };
      if (failure) (failures[targetUser] ??= {})[keyId] = failure;
      // Signatures on own keys change the owner's list; a user-signing signature on someone
      // else's master key is only visible to its maker, so it is again the signer's list.
      else {
        const mine = changed.get(signer) ?? changed.set(signer, new Set()).get(signer)!;
        if (targetUser === signer) mine.add(keyId);
      }
    }
  }
  // Federated as device-list updates of the signed devices and a signing-key update (only keys
  // that are devices produce the former; see publishDeviceListChange).
  for (const [u, ids] of changed) await markDeviceListChanged(db(c.env), u, c.env, { devices: [...ids], signingKeys: ids.size > 0 });
  return c.json({ failures });
});
