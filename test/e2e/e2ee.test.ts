// End-to-end encryption with the real client stack Element uses: matrix-js-sdk + Rust crypto
// (@matrix-org/matrix-sdk-crypto-wasm) against a real Lattice (`npm start`). Fails if any
// message fails to decrypt.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, type RunningServer } from "./harness";
import { decrypted, rustCryptoClient, sdkLogin, sdkRegister, startSynced, until as pollUntil } from "./client";

let server: RunningServer;
const clients: sdk.MatrixClient[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  for (const c of clients) c.stopClient();
  await server?.stop();
});

const PASSWORD = "e2ee-pass-word";

async function register(username: string): Promise<void> {
  await sdkRegister(server.baseUrl, username, PASSWORD);
}

/** Log in a new device, start Rust crypto and sync, and wait until the first sync is done. */
async function device(username: string): Promise<sdk.MatrixClient> {
  const client = await rustCryptoClient(server.baseUrl, await sdkLogin(server.baseUrl, username, PASSWORD));
  await startSynced(client);
  clients.push(client);
  return client;
}

/** client.ts `until`, with 30 s for what crypto set-up may take on a busy machine. */
const until = <T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>) => pollUntil(what, fn, 30_000);

describe("E2EE with matrix-js-sdk + Rust crypto", () => {
  it("two users exchange encrypted messages that every device decrypts", async () => {
    const stamp = Date.now().toString(36);
    await register(`alice${stamp}`);
    await register(`bob${stamp}`);
    const alice = await device(`alice${stamp}`);
    const bob = await device(`bob${stamp}`);
    const bob2 = await device(`bob${stamp}`);

    const { room_id: roomId } = await alice.createRoom({
      preset: sdk.Preset.PrivateChat,
      invite: [bob.getUserId()!],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await until("bob to see the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
    await bob.joinRoom(roomId);
    await until("alice to see bob joined", () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.membership === "join");
    await until("bob2 to see the room", () => bob2.getRoom(roomId)?.getMyMembership() === "join");

    await alice.sendTextMessage(roomId, "hello bob, secretly");
    expect(await decrypted(bob, roomId, "hello bob, secretly")).toBe("hello bob, secretly");
    expect(await decrypted(bob2, roomId, "hello bob, secretly")).toBe("hello bob, secretly");

    await bob.sendTextMessage(roomId, "hi alice");
    expect(await decrypted(alice, roomId, "hi alice")).toBe("hi alice");
    expect(await decrypted(bob2, roomId, "hi alice")).toBe("hi alice");

    // The server only ever saw ciphertext.
    const raw = await fetch(`${server.baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, {
      headers: { authorization: `Bearer ${alice.getAccessToken()}` },
    });
    const chunk = ((await raw.json()) as { chunk: { type: string; content: Record<string, unknown> }[] }).chunk;
    expect(chunk.some((e) => e.type === "m.room.encrypted")).toBe(true);
    expect(JSON.stringify(chunk)).not.toContain("secretly");
  });

  it("cross-signing, key backup restore on a new device, and a deleted device is dropped", async () => {
    const stamp = Date.now().toString(36) + "b";
    const name = `carol${stamp}`;
    await register(name);
    await register(`dave${stamp}`);
    const carol = await device(name);
    const dave = await device(`dave${stamp}`);
    const carolCrypto = carol.getCrypto()!;

    // Cross-signing: the first upload needs no UIA; the SDK would answer a challenge with our callback.
    await carolCrypto.bootstrapCrossSigning({
      authUploadDeviceSigningKeys: async (makeRequest) => {
        await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: name }, password: PASSWORD } as never);
      },
    });
    expect((await carolCrypto.getCrossSigningStatus()).publicKeysOnDevice).toBe(true);
    // The device signature uploaded by bootstrap comes back through /keys/query.
    await until("carol's device to be cross-signed", async () =>
      (await carolCrypto.getDeviceVerificationStatus(carol.getUserId()!, carol.getDeviceId()!))?.crossSigningVerified || undefined,
    );

    // Key backup.
    await carolCrypto.resetKeyBackup();
    const version = await until("an active backup", () => carolCrypto.getActiveSessionBackupVersion());

    const { room_id: roomId } = await carol.createRoom({
      preset: sdk.Preset.PrivateChat,
      invite: [dave.getUserId()!],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await until("dave to see the invite", () => dave.getRoom(roomId)?.getMyMembership() === "invite");
    await dave.joinRoom(roomId);
    await until("carol to see dave joined", () => carol.getRoom(roomId)?.getMember(dave.getUserId()!)?.membership === "join");
    await carol.sendTextMessage(roomId, "history one");
    expect(await decrypted(dave, roomId, "history one")).toBe("history one");

    // The room key reaches the server-side backup.
    await until("the backup to hold the room key", async () => {
      const r = await fetch(`${server.baseUrl}/_matrix/client/v3/room_keys/version`, { headers: { authorization: `Bearer ${carol.getAccessToken()}` } });
      const body = (await r.json()) as { count?: number; version?: string };
      return body.version === version && (body.count ?? 0) > 0 ? true : undefined;
    });

    // A new device of carol's restores the room key from the backup and decrypts history.
    const carol2 = await device(name);
    const backupKey = await carolCrypto.getSessionBackupPrivateKey();
    expect(backupKey).toBeTruthy();
    await carol2.getCrypto()!.storeSessionBackupPrivateKey(backupKey!, version);
    const restored = await carol2.getCrypto()!.restoreKeyBackup();
    expect(restored.imported).toBeGreaterThan(0);
    await carol2.scrollback(carol2.getRoom(roomId)!, 30);
    expect(await decrypted(carol2, roomId, "history one")).toBe("history one");

    // Delete carol2: dave's client stops encrypting to it.
    await until("dave to know carol2", async () => {
      const devs = await dave.getCrypto()!.getUserDeviceInfo([carol.getUserId()!], true);
      return devs.get(carol.getUserId()!)?.has(carol2.getDeviceId()!) || undefined;
    });
    carol2.stopClient();
    let session: string | undefined;
    try {
      await carol.deleteDevice(carol2.getDeviceId()!);
    } catch (e: any) {
      session = e.data.session;
    }
    await carol.deleteDevice(carol2.getDeviceId()!, { type: "m.login.password", identifier: { type: "m.id.user", user: name }, password: PASSWORD, session } as never);
    await until("dave to drop carol2", async () => {
      const devs = await dave.getCrypto()!.getUserDeviceInfo([carol.getUserId()!], true);
      return devs.get(carol.getUserId()!)?.has(carol2.getDeviceId()!) === false || undefined;
    });
    await dave.sendTextMessage(roomId, "after deletion");
    expect(await decrypted(carol, roomId, "after deletion")).toBe("after deletion");
  });
});
