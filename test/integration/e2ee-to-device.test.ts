// Send-to-device through /sync, device lists and key counts in /sync, dehydrated devices (MSC3814).
import { describe, it, expect } from "vitest";
import { call, registerUser, type TestUser } from "./helpers";
import { makeDeviceKeys, makeOneTimeKeys, password, uploadDeviceKeys } from "./e2ee-helpers";
import { signJson } from "../../src/core/signing";

const V3 = "/_matrix/client/v3";
const MSC3814 = "/_matrix/client/unstable/org.matrix.msc3814.v1";

async function login(u: TestUser): Promise<TestUser> {
  const r = await call("POST", `${V3}/login`, {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
  });
  if (r.status !== 200) throw new Error(`login: ${r.status}`);
  return { ...u, accessToken: r.body.access_token, deviceId: r.body.device_id };
}

async function sync(u: TestUser, since?: string) {
  const r = await call("GET", `${V3}/sync?timeout=0${since ? `&since=${encodeURIComponent(since)}` : ""}`, { token: u.accessToken });
  expect(r.status).toBe(200);
  return r.body;
}

const send = (u: TestUser, type: string, txn: string, messages: unknown) =>
  call("PUT", `${V3}/sendToDevice/${encodeURIComponent(type)}/${txn}`, { token: u.accessToken, body: { messages } });

describe("PUT /sendToDevice", () => {
  it("delivers through /sync exactly once, and only to the addressed device", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const b2 = await login(b);
    const s0 = await sync(b);
    const s0b2 = await sync(b2);
    const r = await send(a, "m.test", "t1", { [b.userId]: { [b.deviceId]: { n: 1 } } });
    expect(r.status).toBe(200);
    const s1 = await sync(b, s0.next_batch);
    expect(s1.to_device.events).toEqual([{ sender: a.userId, type: "m.test", content: { n: 1 } }]);
    // Not delivered again after syncing past it, and not to the other device.
    const s2 = await sync(b, s1.next_batch);
    expect(s2.to_device?.events ?? []).toEqual([]);
    const other = await sync(b2, s0b2.next_batch);
    expect(other.to_device?.events ?? []).toEqual([]);
  });

  it("redelivers when the client syncs again from the old token (not yet acknowledged)", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const s0 = await sync(b);
    await send(a, "m.test", "t1", { [b.userId]: { [b.deviceId]: { n: 1 } } });
    const first = await sync(b, s0.next_batch);
    const retry = await sync(b, s0.next_batch);
    expect(first.to_device.events).toHaveLength(1);
    expect(retry.to_device.events).toEqual(first.to_device.events);
  });

  it("is idempotent per transaction ID, and * reaches all devices", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const b2 = await login(b);
    const s0 = await sync(b);
    const s0b2 = await sync(b2);
    await send(a, "m.test", "same", { [b.userId]: { "*": { n: 2 } } });
    await send(a, "m.test", "same", { [b.userId]: { "*": { n: 2 } } });
    expect((await sync(b, s0.next_batch)).to_device.events).toEqual([{ sender: a.userId, type: "m.test", content: { n: 2 } }]);
    expect((await sync(b2, s0b2.next_batch)).to_device.events).toEqual([{ sender: a.userId, type: "m.test", content: { n: 2 } }]);
    // A different txnId is a new message; unknown devices and remote users are ignored.
    const r = await send(a, "m.test", "other", { [b.userId]: { NODEVICE: { n: 3 }, [b.deviceId]: { n: 4 } }, "@x:remote.example": { D: {} } });
    expect(r.status).toBe(200);
    const s = await sync(b, s0.next_batch);
    expect(s.to_device.events.map((e: any) => e.content.n)).toEqual([2, 4]);
  });

  it("validates the body and requires auth", async () => {
    const a = await registerUser();
    expect((await call("PUT", `${V3}/sendToDevice/m.test/x`, { body: { messages: {} } })).status).toBe(401);
    expect((await call("PUT", `${V3}/sendToDevice/m.test/x`, { token: a.accessToken, body: { messages: { "@b:test.local": { D: 5 } } } })).body.errcode).toBe("M_BAD_JSON");
  });
});

describe("E2EE state in /sync", () => {
  it("reports one-time key counts and unused fallback key types, and updates them after a claim", async () => {
    const a = await registerUser();
    const dev = await uploadDeviceKeys(a);
    const fb = { "signed_curve25519:FB": await signJson({ key: "fallbackkey", fallback: true }, a.userId, dev.ed) };
    await call("POST", `${V3}/keys/upload`, { token: a.accessToken, body: { one_time_keys: await makeOneTimeKeys(a.userId, dev.ed, 2), fallback_keys: fb } });
    const s0 = await sync(a);
    expect(s0.device_one_time_keys_count.signed_curve25519).toBe(2);
    expect(s0.device_unused_fallback_key_types).toEqual(["signed_curve25519"]);
    const b = await registerUser();
    for (let i = 0; i < 3; i++) await call("POST", `${V3}/keys/claim`, { token: b.accessToken, body: { one_time_keys: { [a.userId]: { [a.deviceId]: "signed_curve25519" } } } });
    const s1 = await sync(a, s0.next_batch);
    expect(s1.device_one_time_keys_count.signed_curve25519).toBe(0);
    expect(s1.device_unused_fallback_key_types).toEqual([]);
  });

  it("shows device-list changes to users sharing a room, including deletions", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const stranger = await registerUser();
    const room = await call("POST", `${V3}/createRoom`, { token: a.accessToken, body: { preset: "public_chat" } });
    await call("POST", `${V3}/join/${encodeURIComponent(room.body.room_id)}`, { token: b.accessToken, body: {} });
    const sa = await sync(a);
    const b2 = await login(b);
    await uploadDeviceKeys(b2);
    await uploadDeviceKeys(stranger);
    const sa1 = await sync(a, sa.next_batch);
    expect(sa1.device_lists.changed).toContain(b.userId);
    expect(sa1.device_lists.changed).not.toContain(stranger.userId);
    const del = await call("DELETE", `${V3}/devices/${b2.deviceId}`, { token: b.accessToken, body: {} });
    await call("DELETE", `${V3}/devices/${b2.deviceId}`, { token: b.accessToken, body: { auth: password(b, del.body.session) } });
    const sa2 = await sync(a, sa1.next_batch);
    expect(sa2.device_lists.changed).toContain(b.userId);
  });
});

describe("dehydrated devices (MSC3814)", () => {
  it("stores, fetches, receives to-device messages for, replaces and deletes a dehydrated device", async () => {
    const u = await registerUser();
    expect((await call("GET", `${MSC3814}/dehydrated_device`, { token: u.accessToken })).body.errcode).toBe("M_NOT_FOUND");
    const dev = await makeDeviceKeys(u.userId, "DEHYDRATED1");
    const dk = await signJson({ ...dev.deviceKeys, dehydrated: true, signatures: undefined }, u.userId, dev.ed);
    const put = await call("PUT", `${MSC3814}/dehydrated_device`, {
      token: u.accessToken,
      body: {
        device_id: "DEHYDRATED1",
        device_data: { algorithm: "org.matrix.msc3814.v1.olm", device_pickle: "opaque" },
        initial_device_display_name: "Dehydrated device",
        device_keys: dk,
        one_time_keys: await makeOneTimeKeys(u.userId, dev.ed, 2),
      },
    });
    expect(put.status).toBe(200);
    expect(put.body.device_id).toBe("DEHYDRATED1");
    const got = await call("GET", `${MSC3814}/dehydrated_device`, { token: u.accessToken });
    expect(got.body).toEqual({ device_id: "DEHYDRATED1", device_data: { algorithm: "org.matrix.msc3814.v1.olm", device_pickle: "opaque" } });
    // Visible to others with its keys, and its one-time keys can be claimed.
    const other = await registerUser();
    const q = await call("POST", `${V3}/keys/query`, { token: other.accessToken, body: { device_keys: { [u.userId]: [] } } });
    expect(q.body.device_keys[u.userId].DEHYDRATED1.dehydrated).toBe(true);
    const c = await call("POST", `${V3}/keys/claim`, { token: other.accessToken, body: { one_time_keys: { [u.userId]: { DEHYDRATED1: "signed_curve25519" } } } });
    expect(Object.keys(c.body.one_time_keys[u.userId].DEHYDRATED1)).toHaveLength(1);

    // To-device messages sent to it come out of the events endpoint, paged.
    await send(other, "m.room.encrypted", "d1", { [u.userId]: { DEHYDRATED1: { n: 1 } } });
    await send(other, "m.room.encrypted", "d2", { [u.userId]: { "*": { n: 2 } } });
    const p1 = await call("GET", `${MSC3814}/dehydrated_device/DEHYDRATED1/events`, { token: u.accessToken });
    expect(p1.status).toBe(200);
    expect(p1.body.events.map((e: any) => e.content.n)).toEqual([1, 2]);
    expect(p1.body.next_batch).toBeTruthy();
    const p2 = await call("GET", `${MSC3814}/dehydrated_device/DEHYDRATED1/events?from=${encodeURIComponent(p1.body.next_batch)}`, { token: u.accessToken });
    expect(p2.body.events).toEqual([]);
    expect(p2.body.next_batch).toBeUndefined();
    const post = await call("POST", `${MSC3814}/dehydrated_device/DEHYDRATED1/events`, { token: u.accessToken, body: { next_batch: p1.body.next_batch } });
    expect(post.body.events).toEqual([]);
    // Only the user's current dehydrated device.
    expect((await call("GET", `${MSC3814}/dehydrated_device/OTHER/events`, { token: u.accessToken })).status).toBe(403);
    expect((await call("GET", `${MSC3814}/dehydrated_device/DEHYDRATED1/events`, { token: other.accessToken })).status).toBe(403);

    // Keys must be the dehydrated device's own, correctly signed.
    const forged = await makeDeviceKeys(u.userId, "DEHYDRATED2", dev.ed);
    const bad = await call("PUT", `${MSC3814}/dehydrated_device`, {
      token: u.accessToken,
      body: { device_id: "DEHYDRATED2", device_data: { algorithm: "x" }, device_keys: forged.deviceKeys },
    });
    expect(bad.status).toBe(400);
    // Cannot take over an existing ordinary device.
    const takeover = await call("PUT", `${MSC3814}/dehydrated_device`, { token: u.accessToken, body: { device_id: u.deviceId, device_data: { algorithm: "x" } } });
    expect(takeover.status).toBe(400);

    // Replacing removes the old device and its keys.
    const dev3 = await makeDeviceKeys(u.userId, "DEHYDRATED3");
    const rep = await call("PUT", `${MSC3814}/dehydrated_device`, {
      token: u.accessToken,
      body: { device_id: "DEHYDRATED3", device_data: { algorithm: "y" }, device_keys: dev3.deviceKeys },
    });
    expect(rep.status).toBe(200);
    const q2 = await call("POST", `${V3}/keys/query`, { token: other.accessToken, body: { device_keys: { [u.userId]: [] } } });
    expect(Object.keys(q2.body.device_keys[u.userId]).sort()).toEqual(["DEHYDRATED3"]);
    expect((await call("GET", `${MSC3814}/dehydrated_device`, { token: u.accessToken })).body.device_id).toBe("DEHYDRATED3");

    const del = await call("DELETE", `${MSC3814}/dehydrated_device`, { token: u.accessToken });
    expect(del.body).toEqual({ device_id: "DEHYDRATED3" });
    expect((await call("GET", `${MSC3814}/dehydrated_device`, { token: u.accessToken })).status).toBe(404);
    expect((await call("DELETE", `${MSC3814}/dehydrated_device`, { token: u.accessToken })).status).toBe(404);
    const devices = await call("GET", `${V3}/devices`, { token: u.accessToken });
    expect(devices.body.devices.map((d: any) => d.device_id)).toEqual([u.deviceId]);
  });
});
