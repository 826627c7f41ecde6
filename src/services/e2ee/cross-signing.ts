// Cross-signing keys and signatures (spec: "Cross-signing", POST /keys/device_signing/upload,
// /keys/signatures/upload, the cross-signing part of /keys/query). Storing keys does not announce
// the change: the caller does (device-list-changes.ts).
import { and, eq, inArray } from "drizzle-orm";
import type { Env } from "../../env";
import { db } from "../../db";
import { crossSigningKeys, crossSigningSignatures } from "../../db/schema";
import { type Json, type Signatures, mergeSignatures } from "./common";

// ---------------------------------------------------------------------------------------------
// Cross-signing (spec: "Cross-signing").

export type CrossSigningType = "master" | "self_signing" | "user_signing";
export const CROSS_SIGNING_TYPES: CrossSigningType[] = ["master", "self_signing", "user_signing"];

export interface CrossSigningKey extends Json {
  user_id: string;
  usage: string[];
  keys: Record<string, string>;
  signatures?: Signatures;
}

/** The single ed25519 key of a cross-signing key object: its key ID and public key. */
export function crossSigningPublicKey(key: CrossSigningKey): { keyId: string; publicKey: string } | null {
  const entries = Object.entries(key.keys ?? {});
  if (entries.length !== 1) return null;
  const [keyId, publicKey] = entries[0];
  if (!keyId.startsWith("ed25519:") || typeof publicKey !== "string" || keyId !== `ed25519:${publicKey}`) return null;
  return { keyId, publicKey };
}

export async function getCrossSigningKeys(env: Env, userId: string): Promise<Partial<Record<CrossSigningType, CrossSigningKey>>> {
  const rows = await db(env).select().from(crossSigningKeys).where(eq(crossSigningKeys.userId, userId));
  const out: Partial<Record<CrossSigningType, CrossSigningKey>> = {};
  for (const r of rows) out[r.keyType as CrossSigningType] = JSON.parse(r.keyJson);
  return out;
}

/** Store uploaded cross-signing keys. Returns true when any was stored: the caller then
 *  announces the change (markDeviceListChanged with signingKeys). */
export async function storeCrossSigningKeys(env: Env, userId: string, keys: Partial<Record<CrossSigningType, CrossSigningKey>>): Promise<boolean> {
  const d = db(env);
  let changed = false;
  for (const type of CROSS_SIGNING_TYPES) {
    const key = keys[type];
    if (!key) continue;
    const pub = crossSigningPublicKey(key)!;
    const row = { publicKey: pub.publicKey, keyJson: JSON.stringify(key), updatedTs: Date.now() };
    await d
      .insert(crossSigningKeys)
      .values({ userId, keyType: type, ...row })
      .onConflictDoUpdate({ target: [crossSigningKeys.userId, crossSigningKeys.keyType], set: row });
    changed = true;
  }
  return changed;
}

/** Store one signature from POST /keys/signatures/upload. */
export async function storeSignature(
  env: Env,
  s: { signerUserId: string; signerKeyId: string; targetUserId: string; targetKeyId: string; signature: string },
): Promise<void> {
  await db(env)
    .insert(crossSigningSignatures)
    .values(s)
    .onConflictDoUpdate({
      target: [crossSigningSignatures.signerUserId, crossSigningSignatures.signerKeyId, crossSigningSignatures.targetUserId, crossSigningSignatures.targetKeyId],
      set: { signature: s.signature },
    });
}

export async function signaturesOn(env: Env, targetUserId: string, targetKeyIds: string[]) {
  if (targetKeyIds.length === 0) return [];
  const out = [];
  for (let i = 0; i < targetKeyIds.length; i += 80) {
    out.push(
      ...(await db(env)
        .select()
        .from(crossSigningSignatures)
        .where(and(eq(crossSigningSignatures.targetUserId, targetUserId), inArray(crossSigningSignatures.targetKeyId, targetKeyIds.slice(i, i + 80))))),
    );
  }
  return out;
}

/** Cross-signing keys of `userId` as `requester` may see them: the user-signing key only for
 *  its owner (spec: POST /keys/query `user_signing_keys`), and signatures on the master key
 *  made by other users' user-signing keys only for the user who made them. */
export async function queryCrossSigningKeys(
  env: Env,
  requester: string,
  userId: string,
): Promise<Partial<Record<CrossSigningType, CrossSigningKey>>> {
  const keys = await getCrossSigningKeys(env, userId);
  if (requester !== userId) delete keys.user_signing;
  if (keys.master) {
    const pub = crossSigningPublicKey(keys.master);
    if (pub) {
      const sigs = (await signaturesOn(env, userId, [pub.publicKey])).filter((s) => s.signerUserId === userId || s.signerUserId === requester);
      keys.master = mergeSignatures(keys.master, sigs) as CrossSigningKey;
    }
  }
  return keys;
}

/** A remote user's master key (from the cache or their server) with the signatures `requester`
 *  made on it with their user-signing key added (POST /keys/signatures/upload keeps them here;
 *  they are never federated, so the remote copy cannot carry them). */
export async function withRequesterSignatures(env: Env, requester: string, userId: string, master: CrossSigningKey): Promise<CrossSigningKey> {
  const pub = crossSigningPublicKey(master);
  if (!pub) return master;
  const sigs = (await signaturesOn(env, userId, [pub.publicKey])).filter((s) => s.signerUserId === requester);
  return mergeSignatures(master, sigs) as CrossSigningKey;
}
