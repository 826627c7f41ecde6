// Cross-signing (spec: Client-Server API "End-to-End Encryption" → "Cross-signing":
// POST /keys/device_signing/upload, POST /keys/signatures/upload).
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { authDictSchema, requireUia } from "./uia";
import { isOAuthDevice } from "../../services/oauth/cross-signing-reset";
import { crossSigningResetUia } from "./oauth/account";
import { canonicalJson } from "../../core/canonical-json";
import { verifyJsonSignature } from "../../core/signing";
import { sha256Hex } from "../../services/crypto-util";
import { parseUserId } from "../../core/ids";
import { CROSS_SIGNING_TYPES, crossSigningPublicKey, getCrossSigningKeys, storeCrossSigningKeys, storeSignature, type CrossSigningKey, type CrossSigningType } from "../../services/e2ee/cross-signing";
import { deviceExists, getDeviceKeys } from "../../services/e2ee/device-keys";
import { markDeviceListChanged } from "../../services/e2ee/device-list-changes";
import { signedContent, type Json, type Signatures } from "../../services/e2ee/common";
import { db } from "../../db";
import { userStub } from "../../services/notifier";
import { getRemoteDeviceList } from "../../services/federation/device-lists";

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
    // A session from the OAuth 2.0 API has no password to give: m.oauth (approval on the account page).
    const oauth = await isOAuthDevice(c.env, userId, c.var.auth.deviceId);
    await requireUia(c, body.auth, {
      purpose: `device_signing_upload:${userId}:${digest}`,
      flows: oauth ? [["m.oauth"]] : [["m.login.password"]],
      userId,
      ...(oauth ? crossSigningResetUia(c, userId) : {}),
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
  if (await storeCrossSigningKeys(c.env, userId, uploaded)) await markDeviceListChanged(c.env, c.var.config, userId, { signingKeys: true });
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
  return otherUsersMaster(env, signer, targetUser, keyId, obj, mySigs, theirMaster ? { key: theirs.master!, publicKey: theirMaster.publicKey } : null);
}

/** Another user's master key (local, or remote and known from the remote device-list cache),
 *  signed by the requester's user-signing key (spec: "Cross-signing": a user's user-signing key
 *  signs other users' master keys). Stored, and shown only to the requester (queryCrossSigningKeys,
 *  and POST /keys/query for remote users). */
async function otherUsersMaster(
  env: AppEnv["Bindings"],
  signer: string,
  targetUser: string,
  keyId: string,
  obj: Json,
  mySigs: Record<string, string>,
  master: { key: CrossSigningKey; publicKey: string } | null,
): Promise<Failure | null> {
  if (!master || keyId !== master.publicKey) {
    return { errcode: "M_NOT_FOUND", error: "Unknown key; only another user's (known) master key can be signed" };
  }
  if (!same(signedContent(master.key), signedContent(obj))) return { errcode: "M_INVALID_SIGNATURE", error: "Object does not match the stored master key" };
  const mine = await getCrossSigningKeys(env, signer);
  const usk = mine.user_signing ? crossSigningPublicKey(mine.user_signing) : null;
  if (!usk) return { errcode: "M_NOT_FOUND", error: "No user-signing key uploaded" };
  if (typeof mySigs[usk.keyId] !== "string") return { errcode: "M_INVALID_SIGNATURE", error: `No signature by the user-signing key ${usk.keyId}` };
  if (!(await verifyJsonSignature(obj, signer, usk.keyId, usk.publicKey))) return { errcode: "M_INVALID_SIGNATURE", error: "Invalid user-signing signature" };
  await storeSignature(env, { signerUserId: signer, signerKeyId: usk.keyId, targetUserId: targetUser, targetKeyId: keyId, signature: mySigs[usk.keyId] });
  return null;
}

/** A remote user's master key as the remote device-list cache knows it, or null. */
async function cachedRemoteMaster(env: AppEnv["Bindings"], userId: string): Promise<{ key: CrossSigningKey; publicKey: string } | null> {
  const list = await getRemoteDeviceList(env, userId);
  const pub = list?.master ? crossSigningPublicKey(list.master) : null;
  return pub ? { key: list!.master!, publicKey: pub.publicKey } : null;
}

// POST /keys/signatures/upload — "Publishes cross-signing signatures for the user." Every
// signature is checked; the ones that fail are reported in `failures`, the rest are stored.
crossSigning.post("/keys/signatures/upload", async (c) => {
  const body = await parseBody(c, z.record(z.string(), z.record(z.string(), z.record(z.string(), z.unknown()))));
  const signer = c.var.auth.userId;
  const failures: Record<string, Record<string, Failure>> = {};
  // The signer's own keys that gained a signature (devices, or the master key).
  const ownSigned = new Set<string>();
  // Other users whose master key the signer's user-signing key signed.
  const othersSigned = new Set<string>();
  for (const [targetUser, objects] of Object.entries(body)) {
    const server = parseUserId(targetUser, { historical: true })?.serverName;
    const local = server === c.var.config.serverName;
    for (const [keyId, obj] of Object.entries(objects)) {
      let failure: Failure | null;
      if (local) failure = await acceptSignatures(c.env, signer, targetUser, keyId, obj);
      else if (!server) failure = { errcode: "M_INVALID_PARAM", error: "Invalid user ID" };
      else {
        const mySigs = ((obj.signatures as Signatures | undefined) ?? {})[signer];
        failure =
          obj.user_id !== targetUser
            ? { errcode: "M_INVALID_PARAM", error: "user_id does not match" }
            : !mySigs || typeof mySigs !== "object"
              ? { errcode: "M_INVALID_SIGNATURE", error: `No signature by ${signer}` }
              : await otherUsersMaster(c.env, signer, targetUser, keyId, obj, mySigs, await cachedRemoteMaster(c.env, targetUser));
      }
      if (failure) (failures[targetUser] ??= {})[keyId] = failure;
      else if (targetUser === signer) ownSigned.add(keyId);
      else othersSigned.add(targetUser);
    }
  }
  // Signatures on own keys change the signer's device list: federated as device-list updates
  // of the signed devices and a signing-key update (only keys that are devices produce the
  // former; see publishDeviceListChange).
  if (ownSigned.size) await markDeviceListChanged(c.env, c.var.config, signer, { devices: [...ownSigned], signingKeys: true });
  // A signature on another user's master key is visible to the signer only (and not federated),
  // so only the signer's own devices must hear of it: their next /sync lists the signed user in
  // `device_lists.changed`, they query that user's keys again and see the new signature (this is
  // how a user's other devices learn that the user verified someone).
  for (const u of othersSigned) {
    try {
      await userStub(c.env, signer, c.var.config).deviceListChanged(signer, u);
    } catch (e) {
      console.error(`telling ${signer}'s devices that ${u} was signed failed`, e);
    }
  }
  return c.json({ failures });
});
