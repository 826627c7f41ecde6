// Helpers for the E2EE integration tests: build and sign device keys, one-time keys and
// cross-signing keys the way a client does (ed25519 via src/core/signing.ts).
import { generateSigningKey, signJson, type SigningKey } from "../../src/core/signing";
import { call, type TestUser } from "./helpers";

export interface TestDevice {
  ed: SigningKey;
  deviceKeys: Record<string, any>;
}

/** A device's signed `device_keys` (curve25519 is a random stand-in: the server never uses it). */
export async function makeDeviceKeys(userId: string, deviceId: string, signer?: SigningKey): Promise<TestDevice> {
  const ed = await generateSigningKey(`ed25519:${deviceId}`);
  const curve = (await generateSigningKey()).publicKey;
  const unsigned = {
    user_id: userId,
    device_id: deviceId,
    algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
    keys: { [`curve25519:${deviceId}`]: curve, [`ed25519:${deviceId}`]: ed.publicKey },
  };
  const deviceKeys = await signJson(unsigned, userId, signer ?? ed);
  return { ed, deviceKeys };
}

/** `n` signed curve25519 one-time keys, IDs prefixed so tests can tell batches apart. */
export async function makeOneTimeKeys(userId: string, ed: SigningKey, n: number, prefix = "AAAA"): Promise<Record<string, any>> {
  const out: Record<string, any> = {};
  for (let i = 0; i < n; i++) {
    const key = (await generateSigningKey()).publicKey;
    out[`signed_curve25519:${prefix}${i}`] = await signJson({ key }, userId, ed);
  }
  return out;
}

export async function uploadDeviceKeys(u: TestUser): Promise<TestDevice> {
  const dev = await makeDeviceKeys(u.userId, u.deviceId);
  const r = await call("POST", "/_matrix/client/v3/keys/upload", { token: u.accessToken, body: { device_keys: dev.deviceKeys } });
  if (r.status !== 200) throw new Error(`keys/upload: ${r.status} ${JSON.stringify(r.body)}`);
  return dev;
}

export interface CrossSigning {
  master: SigningKey;
  selfSigning: SigningKey;
  userSigning: SigningKey;
  body: { master_key: any; self_signing_key: any; user_signing_key: any };
}

export async function makeCrossSigning(userId: string): Promise<CrossSigning> {
  const gen = async () => {
    const k = await generateSigningKey();
    return generateSigningKeyWithId(k);
  };
  const master = await gen();
  const selfSigning = await gen();
  const userSigning = await gen();
  const obj = (usage: string, k: SigningKey) => ({ user_id: userId, usage: [usage], keys: { [k.keyId]: k.publicKey } });
  return {
    master,
    selfSigning,
    userSigning,
    body: {
      master_key: obj("master", master),
      self_signing_key: await signJson(obj("self_signing", selfSigning), userId, master),
      user_signing_key: await signJson(obj("user_signing", userSigning), userId, master),
    },
  };
}

/** Cross-signing key IDs are "ed25519:<public key>". */
function generateSigningKeyWithId(k: SigningKey): SigningKey {
  return { ...k, keyId: `ed25519:${k.publicKey}` };
}

export const password = (u: TestUser, session: string) => ({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: u.userId },
  password: u.password,
  session,
});
