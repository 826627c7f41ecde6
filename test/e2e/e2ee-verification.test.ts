// The full E2EE life cycle with the client stack Element uses (matrix-js-sdk + Rust crypto,
// @matrix-org/matrix-sdk-crypto-wasm) against a real Lattice (`npm start`):
//  - two users with two devices each; each first device bootstraps cross-signing and secret
//    storage (4S) with a new key backup;
//  - alice's second device takes the cross-signing keys from 4S; bob's second device is verified
//    by bob's first with interactive SAS (to-device) and then receives the keys by secret sharing;
//  - alice and bob verify each other with interactive SAS in their encrypted DM (in-room
//    verification, as Element does for users); every device sees every other one as
//    cross-signing verified;
//  - all four devices decrypt every message; a new device of alice's restores history from the
//    key backup with the backup key read from 4S;
//  - a deleted device of bob's is dropped and no room key is sent to it afterwards.
// Fails if any message fails to decrypt.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { EventShieldColour } from "matrix-js-sdk/lib/crypto-api/index.js";
import { startServer, type RunningServer } from "./harness";
import { rustCryptoClient, sdkLogin, sdkRegister, startSynced, until } from "./client";
import { nextRequest, sas } from "./verification";

let server: RunningServer;
const clients: sdk.MatrixClient[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  for (const c of clients) c.stopClient();
  await server?.stop();
});

const PASSWORD = "e2ee-verify-pass-word";

/** Each user's secret storage key, as the user would type their recovery key on every device. */
const recoveryKeys = new Map<string, { keyId: string; key: Uint8Array<ArrayBuffer> }>();

/** The Olm-encrypted to-device messages (room keys among them) each client sent: one entry per
 *  recipient device. */
const toDeviceSent = new Map<sdk.MatrixClient, { userId: string; deviceId: string; at: number }[]>();

/** Log in a new device of `username` with Rust crypto and wait for its first sync. */
async function device(username: string): Promise<sdk.MatrixClient> {
  const login = await sdkLogin(server.baseUrl, username, PASSWORD);
  const sent: { userId: string; deviceId: string; at: number }[] = [];
  const userId = login.user_id;
  const client = await rustCryptoClient(server.baseUrl, login, {
    cryptoCallbacks: {
      // The recovery key the user "enters": only when 4S asks for that very key.
      getSecretStorageKey: async ({ keys }) => {
        const k = recoveryKeys.get(userId);
        return k && keys[k.keyId] ? [k.keyId, k.key] : null;
      },
      cacheSecretStorageKey: (keyId, _info, key) => {
        recoveryKeys.set(userId, { keyId, key });
      },
    },
    // Watch the to-device room keys this client sends (PUT /sendToDevice/m.room.encrypted/{txn}).
    fetchFn: async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = String(input instanceof Request ? input.url : input);
      if (init?.method === "PUT" && url.includes("/sendToDevice/m.room.encrypted/") && typeof init.body === "string") {
        const messages = (JSON.parse(init.body) as { messages: Record<string, Record<string, unknown>> }).messages;
        for (const [u, devs] of Object.entries(messages)) for (const d of Object.keys(devs)) sent.push({ userId: u, deviceId: d, at: Date.now() });
      }
      return fetch(input, init);
    },
  });
  toDeviceSent.set(client, sent);
  await startSynced(client);
  clients.push(client);
  return client;
}

const crypto = (c: sdk.MatrixClient) => c.getCrypto()!;
const who = (c: sdk.MatrixClient) => `${c.getUserId()}/${c.getDeviceId()}`;

/** UIA with the account password (cross-signing upload after the first, device deletion). */
function passwordAuth(username: string, session?: string) {
  return { type: "m.login.password", identifier: { type: "m.id.user", user: username }, password: PASSWORD, session } as never;
}

/** `viewer` sees `target`'s device as verified through cross-signing (its owner's self-signing
 *  key signed it, and `viewer` trusts that owner's master key). */
async function seesCrossSigned(viewer: sdk.MatrixClient, target: sdk.MatrixClient): Promise<void> {
  await until(`${who(viewer)} to see ${who(target)} as cross-signing verified`, async () => {
    const status = await crypto(viewer).getDeviceVerificationStatus(target.getUserId()!, target.getDeviceId()!);
    return status?.crossSigningVerified;
  }, 30_000);
}

/** Wait until `client` has decrypted the message with `body` in its live timeline; a decryption
 *  failure is retried until the time-out, then reported. */
async function decrypts(client: sdk.MatrixClient, roomId: string, body: string, ms = 30_000): Promise<sdk.MatrixEvent> {
  let lastFailure = "";
  return until(`${who(client)} to decrypt "${body}"`, async () => {
    const room = client.getRoom(roomId);
    if (!room) return undefined;
    for (const ev of room.getLiveTimeline().getEvents()) {
      if (ev.getWireType() !== "m.room.encrypted") continue;
      await client.decryptEventIfNeeded(ev);
      if (ev.isDecryptionFailure()) {
        lastFailure = `${ev.getId()}: ${ev.decryptionFailureReason}`;
        continue;
      }
      if (ev.getContent().body === body) return ev;
    }
    return undefined;
  }, ms).catch((e: Error) => {
    throw new Error(`${e.message}${lastFailure ? ` (last failure ${lastFailure})` : ""}`);
  });
}

describe("E2EE verification with matrix-js-sdk + Rust crypto: 4S, SAS, every device decrypts", () => {
  const stamp = Date.now().toString(36);
  const aliceName = `alicev${stamp}`;
  const bobName = `bobv${stamp}`;
  let alice1: sdk.MatrixClient, alice2: sdk.MatrixClient, bob1: sdk.MatrixClient, bob2: sdk.MatrixClient;
  let roomId: string;

  it("each user's first device bootstraps cross-signing and secret storage with a new key backup", async () => {
    await sdkRegister(server.baseUrl, aliceName, PASSWORD);
    await sdkRegister(server.baseUrl, bobName, PASSWORD);
    [alice1, bob1] = await Promise.all([device(aliceName), device(bobName)]);
    for (const [c, name] of [[alice1, aliceName], [bob1, bobName]] as const) {
      await crypto(c).bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(passwordAuth(name)).then(() => {}) });
      await crypto(c).bootstrapSecretStorage({
        createSecretStorageKey: () => crypto(c).createRecoveryKeyFromPassphrase(),
        setupNewKeyBackup: true,
      });
      expect(recoveryKeys.has(c.getUserId()!)).toBe(true);
      expect(await crypto(c).isSecretStorageReady()).toBe(true);
      const status = await crypto(c).getCrossSigningStatus();
      expect(status).toMatchObject({ publicKeysOnDevice: true, privateKeysInSecretStorage: true });
      expect(status.privateKeysCachedLocally).toEqual({ masterKey: true, selfSigningKey: true, userSigningKey: true });
      expect(await crypto(c).getActiveSessionBackupVersion()).toBeTruthy();
      await seesCrossSigned(c, c);
    }
  });

  it("alice's second device takes the cross-signing keys from secret storage", async () => {
    alice2 = await device(aliceName);
    expect((await crypto(alice2).getDeviceVerificationStatus(alice2.getUserId()!, alice2.getDeviceId()!))?.crossSigningVerified).not.toBe(true);
    // A new session first learns its user's public cross-signing keys (the import below checks
    // the private keys against them), as a client does before offering "verify this device".
    await until("alice2 to know alice's cross-signing keys", async () => (await crypto(alice2).userHasCrossSigningKeys()) || undefined);
    // No new keys and no UIA: bootstrap finds the private keys in 4S, imports them and signs
    // this device with the self-signing key.
    await crypto(alice2).bootstrapCrossSigning({});
    const status = await crypto(alice2).getCrossSigningStatus();
    expect(status.privateKeysCachedLocally).toEqual({ masterKey: true, selfSigningKey: true, userSigningKey: true });
    await crypto(alice2).loadSessionBackupPrivateKeyFromSecretStorage();
    await crypto(alice2).checkKeyBackupAndEnable();
    expect(await crypto(alice2).getActiveSessionBackupVersion()).toBe(await crypto(alice1).getActiveSessionBackupVersion());
    await seesCrossSigned(alice2, alice2);
    await seesCrossSigned(alice1, alice2);
    await seesCrossSigned(alice2, alice1);
  });

  it("bob's second device is verified by his first with interactive SAS", async () => {
    bob2 = await device(bobName);
    const incoming = nextRequest(bob1, bob1.getUserId()!);
    const outgoing = await crypto(bob2).requestOwnUserVerification();
    const request = await incoming;
    expect(request.isSelfVerification).toBe(true);
    expect(request.otherDeviceId).toBe(bob2.getDeviceId());
    await sas(outgoing, request);
    // bob1 signed bob2 with the self-signing key; bob2 trusts bob's identity through the SAS.
    await seesCrossSigned(bob1, bob2);
    await seesCrossSigned(bob2, bob1);
    await seesCrossSigned(bob2, bob2);
    // Once verified, bob2 asks bob's other devices for the cross-signing private keys
    // (m.secret.request) and bob1 sends them (m.secret.send), both as encrypted to-device messages.
    await until("bob2 to receive the cross-signing private keys from bob1", async () => {
      const cached = (await crypto(bob2).getCrossSigningStatus()).privateKeysCachedLocally;
      return (cached.masterKey && cached.selfSigningKey && cached.userSigningKey) || undefined;
    });
  });

  it("alice and bob verify each other with interactive SAS in their encrypted DM", async () => {
    ({ room_id: roomId } = await alice1.createRoom({
      preset: sdk.Preset.TrustedPrivateChat,
      is_direct: true,
      invite: [bob1.getUserId()!],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    }));
    await until("bob to see the invite", async () => bob1.getRoom(roomId)?.getMyMembership() === "invite");
    await bob1.joinRoom(roomId);
    for (const c of [alice1, alice2, bob1, bob2]) {
      await until(`${who(c)} to see both joined`, async () => {
        const room = c.getRoom(roomId);
        return room?.getMember(alice1.getUserId()!)?.membership === "join" && room.getMember(bob1.getUserId()!)?.membership === "join";
      });
    }
    // Before verification nobody trusts the other user.
    expect((await crypto(alice1).getUserVerificationStatus(bob1.getUserId()!)).isCrossSigningVerified()).toBe(false);

    const incoming = nextRequest(bob1, alice1.getUserId()!);
    const outgoing = await crypto(alice1).requestVerificationDM(bob1.getUserId()!, roomId);
    const request = await incoming;
    expect(request.roomId).toBe(roomId);
    expect(request.isSelfVerification).toBe(false);
    await sas(outgoing, request);

    // Each side signed the other's master key with its user-signing key; every device of each
    // user now trusts the other user, and through the other's self-signing key all their devices.
    for (const c of [alice1, alice2]) {
      await until(`${who(c)} to trust bob`, async () => (await crypto(c).getUserVerificationStatus(bob1.getUserId()!)).isCrossSigningVerified() || undefined, 30_000);
    }
    for (const c of [bob1, bob2]) {
      await until(`${who(c)} to trust alice`, async () => (await crypto(c).getUserVerificationStatus(alice1.getUserId()!)).isCrossSigningVerified() || undefined, 30_000);
    }
    for (const viewer of [alice1, alice2]) for (const target of [bob1, bob2]) await seesCrossSigned(viewer, target);
    for (const viewer of [bob1, bob2]) for (const target of [alice1, alice2]) await seesCrossSigned(viewer, target);
  });

  /** The megolm sessions of the four messages (the new device must get each from the backup). */
  const sessions = new Set<string>();

  it("every one of the four devices decrypts every message", async () => {
    const all = [alice1, alice2, bob1, bob2];
    for (const [i, sender] of all.entries()) {
      const body = `message ${i} from ${who(sender)}`;
      await sender.sendTextMessage(roomId, body);
      for (const c of all) {
        const ev = await decrypts(c, roomId, body);
        sessions.add(ev.getWireContent().session_id as string);
        // Sent by a device its user cross-signed, of a user this device's user verified (or
        // its own user): no warning shield.
        expect(await crypto(c).getEncryptionInfoForEvent(ev), `${who(c)} on "${body}"`).toEqual({ shieldColour: EventShieldColour.NONE, shieldReason: null });
      }
    }
    // The server only ever saw ciphertext.
    const raw = await fetch(`${server.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, {
      headers: { authorization: `Bearer ${alice1.getAccessToken()}` },
    });
    const chunk = ((await raw.json()) as { chunk: { type: string }[] }).chunk;
    expect(chunk.filter((e) => e.type === "m.room.encrypted").length).toBeGreaterThanOrEqual(4);
    expect(JSON.stringify(chunk)).not.toContain("message 0 from");
  });

  it("a new device of alice's restores history from the key backup with the key from secret storage", async () => {
    // The room keys of all four messages reach the server-side backup (alice's devices upload
    // the sessions they hold in the background, after a random delay).
    expect(sessions.size).toBe(4);
    const version = await crypto(alice1).getActiveSessionBackupVersion();
    await until("the backup to hold the room keys of the four messages", async () => {
      const r = await fetch(`${server.baseUrl}/_matrix/client/v3/room_keys/keys?version=${version}`, { headers: { authorization: `Bearer ${alice1.getAccessToken()}` } });
      const body = (await r.json()) as { rooms?: Record<string, { sessions: Record<string, unknown> }> };
      const held = body.rooms?.[roomId]?.sessions ?? {};
      return [...sessions].every((id) => id in held) || undefined;
    }, 30_000);
    const alice3 = await device(aliceName);
    await crypto(alice3).loadSessionBackupPrivateKeyFromSecretStorage();
    const check = await crypto(alice3).checkKeyBackupAndEnable();
    expect(check?.backupInfo.version).toBe(version);
    // This device has not verified alice's identity (only the recovery key was entered), so the
    // backup's signatures do not make it trusted; the key from 4S matching it is what counts.
    expect(check?.trustInfo.matchesDecryptionKey).toBe(true);
    const restored = await crypto(alice3).restoreKeyBackup();
    expect(restored.imported).toBeGreaterThanOrEqual(4);
    for (const [i, sender] of [alice1, alice2, bob1, bob2].entries()) await decrypts(alice3, roomId, `message ${i} from ${who(sender)}`);
  });

  it("a deleted device of bob's is dropped by the others and gets no more room keys", async () => {
    const deleted = bob2.getDeviceId()!;
    const bobId = bob1.getUserId()!;
    const remaining = clients.filter((c) => c !== bob2);
    bob2.stopClient();
    let session: string | undefined;
    try {
      await bob1.deleteDevice(deleted);
    } catch (e: any) {
      session = e.data.session;
    }
    await bob1.deleteDevice(deleted, passwordAuth(bobName, session));
    const since = Date.now();
    for (const c of remaining) {
      await until(`${who(c)} to drop ${deleted}`, async () => {
        const devs = await crypto(c).getUserDeviceInfo([bobId], true);
        return (devs.get(bobId) && !devs.get(bobId)!.has(deleted)) || undefined;
      });
    }
    await alice1.sendTextMessage(roomId, "after the deletion");
    for (const c of remaining) await decrypts(c, roomId, "after the deletion");
    // alice1 shared a fresh room key (the old session went to a device that is gone) with
    // bob's remaining device, and none with the deleted one.
    const after = toDeviceSent.get(alice1)!.filter((m) => m.at >= since);
    expect(after.some((m) => m.userId === bobId && m.deviceId === bob1.getDeviceId())).toBe(true);
    expect(after.filter((m) => m.deviceId === deleted)).toEqual([]);
  });
});
