// Signing JSON (spec: Appendices, "Signing JSON"). Web Crypto Ed25519. OWNER: core-crypto helper.
export interface SigningKey {
  /** e.g. "ed25519:a_AbCd" */
  keyId: string;
  /** 32-byte seed, unpadded base64 (what operators store, Synapse's signing key format). */
  seed: string;
  /** Public key, unpadded base64. */
  publicKey: string;
  privateKey: CryptoKey;
}
export async function generateSigningKey(keyId?: string): Promise<SigningKey> { throw new Error("not implemented"); }
export async function signingKeyFromSeed(keyId: string, seedBase64: string): Promise<SigningKey> { throw new Error("not implemented"); }
/** Returns a copy of `obj` with a signature added under signatures[entity][keyId]
 *  (`signatures` and `unsigned` are excluded from what is signed, and `unsigned` is kept). */
export async function signJson<T extends object>(obj: T, entity: string, key: SigningKey): Promise<T> { throw new Error("not implemented"); }
export async function verifyJsonSignature(obj: object, entity: string, keyId: string, publicKeyBase64: string): Promise<boolean> { throw new Error("not implemented"); }
