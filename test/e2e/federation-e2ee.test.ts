// EDUs and E2EE keys across two real Lattice servers on loopback (FEDERATION_HTTP_LOOPBACK):
// alice on A and bob on B share a room. Alice's typing and read receipt reach bob's /sync; bob's
// /keys/query for alice returns her device keys (GET over POST /user/keys/query); bob claims one
// of her one-time keys (POST /user/keys/claim); a to-device message from bob reaches alice's
// device exactly once (m.direct_to_device). Then matrix-js-sdk with Rust crypto (the stack
// Element uses) exchanges encrypted messages across the two servers, and two users of different
// servers verify each other with interactive SAS (each server must accept its user's signature
// on the other's master key, or the clients never trust each other). Every wait is bounded.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, freePort, type RunningServer } from "./harness";
import { decrypted, ok, registerUser, rustCryptoClient, startSynced, type Json, type User, until } from "./client";
import { CrossSigningKey, EventShieldColour } from "matrix-js-sdk/lib/crypto-api/index.js";
import { generateSigningKey, signJson } from "../../src/core/signing";
import { nextRequest, sas } from "./verification";

let a: RunningServer;
let b: RunningServer;

let alice: User;
let bob: User;
let room: string;
const enc = encodeURIComponent;

const register = (server: RunningServer, username: string) => registerUser(server, username, "pw-fed-e2ee");


/** A sync cursor: each call returns what arrived since the previous one. */
function syncer(u: User) {
  let since: string | undefined;
  return async (): Promise<Json> => {
    const r = await ok(u, "GET", `/sync?timeout=0${since ? `&since=${enc(since)}` : ""}`);
    since = r.next_batch;
    return r;
  };
}

let aliceDevice: Json;
let aliceOtks: Json;

beforeAll(async () => {
  const [pa, pb] = [await freePort(), await freePort()];
  [a, b] = await Promise.all([startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pa }), startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pb })]);
  [alice, bob] = await Promise.all([register(a, "alice"), register(b, "bob")]);
  room = (await ok(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
  await ok(bob, "POST", `/join/${enc(room)}?server_name=${enc(a.serverName)}`, {});

  // Alice's device keys and one-time keys, signed as a client would.
  const ed = await generateSigningKey(`ed25519:${alice.deviceId}`);
  const curve = (await generateSigningKey()).publicKey;
  aliceDevice = await signJson(
    {
      user_id: alice.userId,
      device_id: alice.deviceId,
      algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
      keys: { [`curve25519:${alice.deviceId}`]: curve, [`ed25519:${alice.deviceId}`]: ed.publicKey },
    },
    alice.userId,
    ed,
  );
  aliceOtks = {};
  for (let i = 0; i < 2; i++) aliceOtks[`signed_curve25519:OTK${i}`] = await signJson({ key: (await generateSigningKey()).publicKey }, alice.userId, ed);
  await ok(alice, "POST", "/keys/upload", { device_keys: aliceDevice, one_time_keys: aliceOtks });
}, 120_000);

const sdkClients: sdk.MatrixClient[] = [];

afterAll(async () => {
  for (const c of sdkClients) c.stopClient();
  await Promise.all([a?.stop(), b?.stop()]);
});

describe("EDUs and E2EE across two servers", () => {
  it("alice's typing and read receipt show up in bob's /sync", async () => {
    const bobSync = syncer(bob);
    await until("bob sees the room", async () => (await bobSync()).rooms?.join?.[room]);
    const msg = (await ok(alice, "PUT", `/rooms/${enc(room)}/send/m.room.message/m1`, { msgtype: "m.text", body: "hello" })).event_id;
    await ok(alice, "PUT", `/rooms/${enc(room)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 20000 });
    await ok(alice, "POST", `/rooms/${enc(room)}/receipt/m.read/${enc(msg)}`, {});
    let typing = false;
    let receipt = false;
    await until("typing and receipt on B", async () => {
      const s = await bobSync();
      for (const e of s.rooms?.join?.[room]?.ephemeral?.events ?? []) {
        if (e.type === "m.typing" && e.content.user_ids.includes(alice.userId)) typing = true;
        if (e.type === "m.receipt" && e.content[msg]?.["m.read"]?.[alice.userId]) receipt = true;
      }
      return typing && receipt;
    });
  });

  it("bob's /keys/query for alice returns her device keys; bob claims one of her one-time keys", async () => {
    const q = await ok(bob, "POST", "/keys/query", { device_keys: { [alice.userId]: [] } });
    expect(q.failures).toEqual({});
    expect(q.device_keys[alice.userId][alice.deviceId]).toEqual(aliceDevice);
    const c = await ok(bob, "POST", "/keys/claim", { one_time_keys: { [alice.userId]: { [alice.deviceId]: "signed_curve25519" } } });
    expect(c.failures).toEqual({});
    const claimed = c.one_time_keys[alice.userId][alice.deviceId];
    const [keyId] = Object.keys(claimed);
    expect(claimed[keyId]).toEqual(aliceOtks[keyId]);
    // Alice's count went down on A.
    const counts = (await ok(alice, "POST", "/keys/upload", {})).one_time_key_counts;
    expect(counts.signed_curve25519).toBe(1);
  });

  it("a new device of alice reaches bob's device_lists.changed and his next /keys/query", async () => {
    const bobSync = syncer(bob);
    await bobSync();
    const login = await fetch(`${a.baseUrl}/_matrix/client/v3/login`, {
      method: "POST",
      body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "alice" }, password: "pw-fed-e2ee" }),
    });
    const second = (await login.json()) as Json;
    const alice2: User = { server: a, userId: alice.userId, deviceId: second.device_id, token: second.access_token };
    const ed = await generateSigningKey(`ed25519:${alice2.deviceId}`);
    const keys2 = await signJson(
      { user_id: alice.userId, device_id: alice2.deviceId, algorithms: ["m.olm.v1.curve25519-aes-sha2"], keys: { [`ed25519:${alice2.deviceId}`]: ed.publicKey } },
      alice.userId,
      ed,
    );
    await ok(alice2, "POST", "/keys/upload", { device_keys: keys2 });
    await until("device_lists.changed on B", async () => (await bobSync()).device_lists?.changed?.includes(alice.userId));
    const q = await until("the new device in bob's query", async () => {
      const r = await ok(bob, "POST", "/keys/query", { device_keys: { [alice.userId]: [] } });
      return r.device_keys[alice.userId]?.[alice2.deviceId] ? r : undefined;
    });
    expect(q.device_keys[alice.userId][alice2.deviceId]).toEqual(keys2);
    expect(q.device_keys[alice.userId][alice.deviceId]).toEqual(aliceDevice);
  });

  it("a to-device message from bob reaches alice's device exactly once", async () => {
    const aliceSync = syncer(alice);
    await aliceSync();
    const body = { messages: { [alice.userId]: { [alice.deviceId]: { secret: "olm-ish" } } } };
    await ok(bob, "PUT", "/sendToDevice/m.e2e.test/t1", body);
    await ok(bob, "PUT", "/sendToDevice/m.e2e.test/t1", body); // a client retry: same txnId
    const got: Json[] = [];
    await until("to-device on A", async () => {
      got.push(...((await aliceSync()).to_device?.events ?? []).filter((e: Json) => e.type === "m.e2e.test"));
      return got.length > 0;
    });
    // Give a duplicate the chance to show up, then check there was none.
    await new Promise((r) => setTimeout(r, 1500));
    got.push(...((await aliceSync()).to_device?.events ?? []).filter((e: Json) => e.type === "m.e2e.test"));
    expect(got).toEqual([{ type: "m.e2e.test", sender: bob.userId, content: { secret: "olm-ish" } }]);
  });
});

/** Register `username` on `server`, log a device in, start Rust crypto and sync. */
async function sdkDevice(server: RunningServer, username: string): Promise<sdk.MatrixClient> {
  const u = await register(server, username);
  const client = await rustCryptoClient(server.baseUrl, { access_token: u.token, user_id: u.userId, device_id: u.deviceId });
  await startSynced(client);
  sdkClients.push(client);
  return client;
}

describe("matrix-js-sdk + Rust crypto across two servers", () => {
  it("carol on A and dave on B exchange encrypted messages that both decrypt", async () => {
    const [carol, dave] = await Promise.all([sdkDevice(a, "carol"), sdkDevice(b, "dave")]);
    const { room_id: roomId } = await carol.createRoom({
      preset: sdk.Preset.PublicChat,
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    // Dave joins over federation while his client runs: the room's state (m.room.encryption
    // included) reaches the SDK through MSC4222 state_after, so it encrypts.
    await dave.joinRoom(roomId, { viaServers: [a.serverName] });
    await until("dave's client to know the room is encrypted", async () => !!dave.getRoom(roomId)?.currentState.getStateEvents("m.room.encryption", ""));
    await until("carol to see dave joined", async () => carol.getRoom(roomId)?.getMember(dave.getUserId()!)?.membership === "join");

    await carol.sendTextMessage(roomId, "hello dave, across servers");
    expect(await decrypted(dave, roomId, "hello dave, across servers")).toBe("hello dave, across servers");
    await dave.sendTextMessage(roomId, "hi carol");
    expect(await decrypted(carol, roomId, "hi carol")).toBe("hi carol");
  }, 80_000);

  it("erin on A and frank on B verify each other with interactive SAS; each server keeps its user's signature on the other's master key", async () => {
    const [erin, frank] = await Promise.all([sdkDevice(a, "erin"), sdkDevice(b, "frank")]);
    for (const c of [erin, frank]) {
      await c.getCrypto()!.bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(null).then(() => {}) });
    }
    const { room_id: roomId } = await erin.createRoom({
      preset: sdk.Preset.PublicChat,
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await frank.joinRoom(roomId, { viaServers: [a.serverName] });
    await until("erin to see frank joined", async () => erin.getRoom(roomId)?.getMember(frank.getUserId()!)?.membership === "join");
    await until("frank's client to know the room is encrypted", async () => !!frank.getRoom(roomId)?.currentState.getStateEvents("m.room.encryption", ""));
    await until("erin to know frank's cross-signing keys", async () => (await erin.getCrypto()!.userHasCrossSigningKeys(frank.getUserId()!, true)) || undefined);

    // In-room verification over federation: the request and the SAS messages are room events.
    const incoming = nextRequest(frank, erin.getUserId()!);
    const outgoing = await erin.getCrypto()!.requestVerificationDM(frank.getUserId()!, roomId);
    await sas(outgoing, await incoming);
    for (const [viewer, other] of [[erin, frank], [frank, erin]] as const) {
      await until(`${viewer.getUserId()} to trust ${other.getUserId()}`, async () =>
        (await viewer.getCrypto()!.getUserVerificationStatus(other.getUserId()!)).isCrossSigningVerified() || undefined,
      );
      await until(`${viewer.getUserId()} to see ${other.getUserId()}'s device cross-signed`, async () =>
        (await viewer.getCrypto()!.getDeviceVerificationStatus(other.getUserId()!, other.getDeviceId()!))?.crossSigningVerified || undefined,
      );
      // The signature by the viewer's user-signing key on the other (remote) user's master key
      // was accepted by the viewer's server, and its /keys/query shows it to the viewer.
      const usk = await viewer.getCrypto()!.getCrossSigningKeyId(CrossSigningKey.UserSigning);
      const server = viewer === erin ? a : b;
      const me: User = { server, userId: viewer.getUserId()!, deviceId: viewer.getDeviceId()!, token: viewer.getAccessToken()! };
      await until(`${server.serverName} to hold ${viewer.getUserId()}'s signature on ${other.getUserId()}'s master key`, async () => {
        const q = await ok(me, "POST", "/keys/query", { device_keys: { [other.getUserId()!]: [] } });
        return !!q.master_keys?.[other.getUserId()!]?.signatures?.[viewer.getUserId()!]?.[`ed25519:${usk}`] || undefined;
      });
    }
    await erin.sendTextMessage(roomId, "verified across servers");
    const ev = await until("frank to decrypt", async () => {
      for (const e of frank.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) {
        if (e.getWireType() !== "m.room.encrypted") continue;
        await frank.decryptEventIfNeeded(e);
        if (!e.isDecryptionFailure() && e.getContent().body === "verified across servers") return e;
      }
      return undefined;
    }, 30_000);
    // From a verified user's cross-signed device: no warning shield.
    expect(await frank.getCrypto()!.getEncryptionInfoForEvent(ev)).toEqual({ shieldColour: EventShieldColour.NONE, shieldReason: null });
  }, 90_000);
});
