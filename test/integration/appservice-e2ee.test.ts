// Encrypted appservices: MSC3202 (device lists, one-time-key counts and unused fallback key
// types in transactions, for registrations with `org.matrix.msc3202: true`), MSC2409 to-device
// messages arriving over federation, and the appservice's own configuration handling.
import { describe, it, expect } from "vitest";
import { call, federationCall, registerUser, seedRemoteKey, type TestUser } from "./helpers";
import { makeDeviceKeys, makeOneTimeKeys } from "./e2ee-helpers";
import { addAppservice, eventually, pendingTransaction, queuedItems } from "./appservice-helpers";

const enc = encodeURIComponent;

async function ok(u: TestUser, method: string, path: string, body?: unknown) {
  const r = await call(method, `/_matrix/client/v3${path}`, { token: u.accessToken, body });
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** A ghost with a device (logged in by the appservice) holding 2 one-time keys and a fallback key. */
async function ghostWithKeys(a: Awaited<ReturnType<typeof addAppservice>>, name: string, deviceId: string) {
  const ghost = await a.registerGhost(name);
  const login = await a.as("POST", "/_matrix/client/v3/login", { type: "m.login.application_service", identifier: { type: "m.id.user", user: ghost }, device_id: deviceId });
  expect(login.status, JSON.stringify(login.body)).toBe(200);
  const dev = await makeDeviceKeys(ghost, deviceId);
  const otks = await makeOneTimeKeys(ghost, dev.ed, 2);
  const fallback = await makeOneTimeKeys(ghost, dev.ed, 1, "FB");
  // Masquerading as the device (MSC3202 device_id) with the as_token.
  const up = await a.as("POST", `/_matrix/client/v3/keys/upload?user_id=${enc(ghost)}&org.matrix.msc3202.device_id=${deviceId}`, {
    device_keys: dev.deviceKeys,
    one_time_keys: otks,
    fallback_keys: { "signed_curve25519:FB0": fallback["signed_curve25519:FB0"] },
  });
  expect(up.status, JSON.stringify(up.body)).toBe(200);
  expect(up.body.one_time_key_counts.signed_curve25519).toBe(2);
  return ghost;
}

describe("MSC3202: device lists and key counts in transactions", () => {
  it("sends device-list changes and lefts, OTK counts and unused fallback key types to an msc3202 appservice", async () => {
    const a = await addAppservice({ url: "http://127.0.0.1:1", "org.matrix.msc3202": true });
    const ghost = await ghostWithKeys(a, "alice", "GHOSTDEV");
    const bob = await registerUser();
    const roomId = await ok(bob, "POST", "/createRoom", { preset: "public_chat" }).then((r) => r.room_id);
    // The ghost joins a room with bob: bob's devices now matter to the appservice.
    expect((await a.as("POST", `/_matrix/client/v3/join/${enc(roomId)}?user_id=${enc(ghost)}`, {})).status).toBe(200);
    const listItems = async () => (await queuedItems(a.p)).filter((i) => i.kind === "device_list").map((i) => i.body);
    // The ghost's own key upload was the first change; then bob, who now shares a room.
    expect(await eventually(listItems, (l) => l.length >= 2)).toEqual([
      { user_id: ghost, left: false },
      { user_id: bob.userId, left: false },
    ]);
    // bob uploads device keys (a device-list change for everyone sharing a room with him).
    const bobDev = await makeDeviceKeys(bob.userId, bob.deviceId);
    await ok(bob, "POST", "/keys/upload", { device_keys: bobDev.deviceKeys });
    expect(await eventually(listItems, (l) => l.length >= 3)).toHaveLength(3);
    // Someone claims one of the ghost's keys: its count changes, which the appservice hears of.
    await ok(bob, "POST", "/keys/claim", { one_time_keys: { [ghost]: { GHOSTDEV: "signed_curve25519" } } });
    await eventually(
      async () => (await queuedItems(a.p)).filter((i) => i.kind === "keys").length,
      (n) => n >= 2,
    );
    let body = await pendingTransaction(a.p);
    expect(body["org.matrix.msc3202.device_lists"]).toEqual({ changed: [ghost, bob.userId], left: [] });
    expect(body["org.matrix.msc3202.device_one_time_keys_count"][ghost]).toEqual({ GHOSTDEV: { signed_curve25519: 1 } });
    expect(body["org.matrix.msc3202.device_one_time_key_counts"][ghost]).toEqual({ GHOSTDEV: { signed_curve25519: 1 } });
    expect(body["org.matrix.msc3202.device_unused_fallback_key_types"][ghost]).toEqual({ GHOSTDEV: ["signed_curve25519"] });
    // bob leaves the only room he shared with the appservice's users: "left" wins over the
    // earlier "changed".
    await ok(bob, "POST", `/rooms/${enc(roomId)}/leave`, {});
    await eventually(listItems, (l) => l.some((d) => d.left));
    body = await pendingTransaction(a.p);
    expect(body["org.matrix.msc3202.device_lists"]).toEqual({ changed: [ghost], left: [bob.userId] });
  });

  it("an appservice without org.matrix.msc3202 gets none of it", async () => {
    const a = await addAppservice({ url: "http://127.0.0.1:1" });
    const ghost = await ghostWithKeys(a, "plain", "PLAINDEV");
    const bob = await registerUser();
    const roomId = await ok(bob, "POST", "/createRoom", { preset: "public_chat" }).then((r) => r.room_id);
    expect((await a.as("POST", `/_matrix/client/v3/join/${enc(roomId)}?user_id=${enc(ghost)}`, {})).status).toBe(200);
    await eventually(
      async () => (await queuedItems(a.p)).filter((i) => i.kind === "event").length,
      (n) => n >= 1,
    );
    await ok(bob, "POST", "/keys/claim", { one_time_keys: { [ghost]: { PLAINDEV: "signed_curve25519" } } });
    await new Promise((r) => setTimeout(r, 200));
    expect((await queuedItems(a.p)).map((i) => i.kind).filter((k) => k !== "event")).toEqual([]);
    const body = await pendingTransaction(a.p);
    expect(Object.keys(body).filter((k) => k.includes("msc3202"))).toEqual([]);
  });
});

describe("MSC2409: to-device messages over federation", () => {
  it("a to-device message from another server to an appservice user reaches the appservice", async () => {
    const remote = "as-remote.test:8448";
    const key = await seedRemoteKey(remote);
    const a = await addAppservice({ url: "http://127.0.0.1:1", receive_ephemeral: true });
    const ghost = await a.registerGhost("tod");
    const login = await a.as("POST", "/_matrix/client/v3/login", { type: "m.login.application_service", identifier: { type: "m.id.user", user: ghost }, device_id: "TODDEV" });
    expect(login.status).toBe(200);
    const sender = `@rem:${remote}`;
    const r = await federationCall(remote, key, "PUT", `/v1/send/td${Date.now()}`, {
      origin: remote,
      origin_server_ts: Date.now(),
      pdus: [],
      edus: [{ edu_type: "m.direct_to_device", content: { sender, type: "m.room.encrypted", message_id: `m${Date.now()}`, messages: { [ghost]: { "*": { ciphertext: "x" } } } } }],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const toDevice = await eventually(
      async () => (await queuedItems(a.p)).filter((i) => i.kind === "to_device").map((i) => i.body),
      (l) => l.length >= 1,
    );
    expect(toDevice).toEqual([{ type: "m.room.encrypted", sender, content: { ciphertext: "x" }, to_user_id: ghost, to_device_id: "TODDEV" }]);
  });
});

describe("AppserviceSenderDO configuration", () => {
  it("parses the configuration once per instance", async () => {
    const { runInDurableObject, env } = await import("cloudflare:test");
    const a = await addAppservice({ url: "http://127.0.0.1:1" });
    const stub = env.APPSERVICE_SENDER.get(env.APPSERVICE_SENDER.idFromName(a.p));
    const same = await runInDurableObject(stub, (instance) => {
      const i = instance as any;
      return i.config("test.local") === i.config("test.local");
    });
    expect(same).toBe(true);
  });
});
