// Federation EDUs and E2EE over federation, in workerd: inbound m.typing, m.receipt,
// m.presence, m.direct_to_device, m.device_list_update (with prev_id gaps resynced through
// GET /user/devices), m.signing_key_update; the serving endpoints GET /user/devices,
// POST /user/keys/query and /user/keys/claim; client /keys/query and /keys/claim for remote
// users; outbound EDUs. The remote server is simulated: its signing key is seeded, its requests
// are signed here, and outbound federation goes to a fake fetch.
import { describe, it, expect, beforeAll, afterEach } from "vitest";
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { call, offline, registerUser, seedRemoteKey, SERVER, type TestUser } from "./helpers";
import { makeCrossSigning, makeDeviceKeys, makeOneTimeKeys, uploadDeviceKeys } from "./e2ee-helpers";
import { generateSigningKey, type SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { resetKeyFetchThrottle } from "../../src/services/federation/keys";
import { setFederationFetch } from "../../src/services/federation/client";
import { clearDiscoveryCache } from "../../src/services/federation/discovery";

// An explicit port skips .well-known/SRV discovery: requests go to https://remote.test:8448.
const REMOTE = "remote.test:8448";
const OTHER = "other.test:8448";
const BASE_URL = `https://${REMOTE}`;
const keys: Record<string, SigningKey> = {};
const enc = encodeURIComponent;

async function fed(origin: string, method: string, path: string, body?: unknown) {
  const uri = `/_matrix/federation${path}`;
  const authorization = await signRequest(keys[origin], { method, uri, origin, destination: SERVER, content: body });
  return call(method, uri, { body, headers: { authorization } });
}

let txnCounter = 0;
/** PUT /send with only EDUs; expects 200 (EDUs never fail a transaction). */
async function sendEdus(origin: string, edus: unknown[]) {
  const r = await fed(origin, "PUT", `/v1/send/edu${Date.now()}_${txnCounter++}`, { origin, origin_server_ts: Date.now(), pdus: [], edus });
  expect(r.status).toBe(200);
}

async function ok(u: TestUser, method: string, path: string, body?: unknown) {
  const r = await call(method, `/_matrix/client/v3${path}`, { token: u.accessToken, body });
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function signTemplate(template: Record<string, any>, server: string) {
  const rv = getRoomVersion(template.room_version)!;
  const { origin: _o, ...ev } = template.event;
  void _o;
  return hashAndSignEvent({ ...ev, origin_server_ts: Date.now() } as unknown as PDU, rv, server, keys[server]);
}

async function remoteJoin(roomId: string, userId: string) {
  const server = userId.slice(userId.indexOf(":") + 1);
  const t = await fed(server, "GET", `/v1/make_join/${enc(roomId)}/${enc(userId)}?ver=12`);
  expect(t.status).toBe(200);
  const { pdu, eventId } = await signTemplate(t.body, server);
  const r = await fed(server, "PUT", `/v2/send_join/${enc(roomId)}/${enc(eventId)}`, pdu);
  expect(r.status).toBe(200);
  return eventId;
}

/** Sync from `since` (no waiting). */
async function sync(u: TestUser, since?: string) {
  return ok(u, "GET", `/sync?timeout=0${since ? `&since=${enc(since)}` : ""}`);
}

const REM = `@rem:${REMOTE}`;
let alice: TestUser;
let room: string;
let firstEvent: string;

beforeAll(async () => {
  setFederationFetch(offline);
  for (const s of [REMOTE, OTHER]) keys[s] = await seedRemoteKey(s);
  alice = await registerUser();
  room = (await ok(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
  await remoteJoin(room, REM);
  firstEvent = (await ok(alice, "PUT", `/rooms/${enc(room)}/send/m.room.message/t1`, { msgtype: "m.text", body: "hi" })).event_id;
});

afterEach(() => {
  setFederationFetch(offline);
  resetKeyFetchThrottle();
  clearDiscoveryCache();
});

describe("inbound m.typing and m.receipt", () => {
  it("a remote member's typing and read receipt reach local /sync", async () => {
    const s0 = (await sync(alice)).next_batch;
    await sendEdus(REMOTE, [
      { edu_type: "m.typing", content: { room_id: room, user_id: REM, typing: true } },
      { edu_type: "m.receipt", content: { [room]: { "m.read": { [REM]: { event_ids: [firstEvent], data: { ts: 1234 } } } } } },
    ]);
    const s1 = await sync(alice, s0);
    const eph = s1.rooms.join[room].ephemeral.events;
    expect(eph.find((e: any) => e.type === "m.typing").content.user_ids).toEqual([REM]);
    expect(eph.find((e: any) => e.type === "m.receipt").content[firstEvent]["m.read"][REM].ts).toBe(1234);
    await sendEdus(REMOTE, [{ edu_type: "m.typing", content: { room_id: room, user_id: REM, typing: false } }]);
    const s2 = await sync(alice, s1.next_batch);
    expect(s2.rooms.join[room].ephemeral.events.find((e: any) => e.type === "m.typing").content.user_ids).toEqual([]);
  });

  it("ignores typing and receipts for users of another server, non-members, and malformed content", async () => {
    const s0 = (await sync(alice)).next_batch;
    await sendEdus(REMOTE, [
      // Not the origin's user.
      { edu_type: "m.typing", content: { room_id: room, user_id: `@x:${OTHER}`, typing: true } },
      { edu_type: "m.receipt", content: { [room]: { "m.read": { [`@x:${OTHER}`]: { event_ids: [firstEvent], data: { ts: 1 } } } } } },
      // The origin's user, but not in the room.
      { edu_type: "m.typing", content: { room_id: room, user_id: `@stranger:${REMOTE}`, typing: true } },
      { edu_type: "m.receipt", content: { [room]: { "m.read": { [`@stranger:${REMOTE}`]: { event_ids: [firstEvent], data: {} } } } } },
      // Garbage.
      { edu_type: "m.typing", content: { room_id: 5, user_id: REM, typing: "yes" } },
      { edu_type: "m.receipt", content: { [room]: "nope", "!bad": { "m.read": 3 } } },
      { edu_type: "m.typing" },
      "not an edu",
    ]);
    const s1 = await sync(alice, s0);
    const eph = s1.rooms?.join?.[room]?.ephemeral?.events ?? [];
    for (const e of eph) {
      expect(JSON.stringify(e)).not.toContain(OTHER);
      expect(JSON.stringify(e)).not.toContain("stranger");
    }
  });
});

describe("inbound m.presence", () => {
  it("delivers a remote member's presence and ignores other servers' users", async () => {
    const s0 = (await sync(alice)).next_batch;
    await sendEdus(REMOTE, [
      {
        edu_type: "m.presence",
        content: {
          push: [
            { user_id: REM, presence: "online", status_msg: "here", last_active_ago: 1000, currently_active: true },
            { user_id: `@x:${OTHER}`, presence: "online", last_active_ago: 0 },
            { user_id: REM, presence: "flying" },
            "junk",
          ],
        },
      },
    ]);
    const s1 = await sync(alice, s0);
    const events = s1.presence?.events ?? [];
    expect(events.find((e: any) => e.sender === REM)?.content).toMatchObject({ presence: "online", status_msg: "here" });
    expect(events.find((e: any) => e.sender === `@x:${OTHER}`)).toBeUndefined();
  });
});

describe("inbound m.direct_to_device", () => {
  it("delivers to the named local device once per message_id, and to all devices for '*'", async () => {
    const s0 = (await sync(alice)).next_batch;
    const edu = (messageId: string, device: string, n: number) => ({
      edu_type: "m.direct_to_device",
      content: { sender: REM, type: "m.test", message_id: messageId, messages: { [alice.userId]: { [device]: { n } } } },
    });
    await sendEdus(REMOTE, [edu("m1", alice.deviceId, 1)]);
    // The same message_id in another transaction: not delivered again.
    await sendEdus(REMOTE, [edu("m1", alice.deviceId, 1)]);
    await sendEdus(REMOTE, [edu("m2", "*", 2)]);
    const s1 = await sync(alice, s0);
    const got = s1.to_device.events.filter((e: any) => e.type === "m.test");
    expect(got.map((e: any) => [e.sender, e.content.n])).toEqual([
      [REM, 1],
      [REM, 2],
    ]);
  });

  it("ignores a sender of another server, non-local recipients and malformed content", async () => {
    const s0 = (await sync(alice)).next_batch;
    await sendEdus(REMOTE, [
      { edu_type: "m.direct_to_device", content: { sender: `@x:${OTHER}`, type: "m.bad", message_id: "x1", messages: { [alice.userId]: { "*": {} } } } },
      { edu_type: "m.direct_to_device", content: { sender: REM, type: "m.bad", message_id: "x2", messages: { [`@bob:${OTHER}`]: { D: {} } } } },
      { edu_type: "m.direct_to_device", content: { sender: REM, type: "m.bad", messages: { [alice.userId]: { "*": {} } } } },
      { edu_type: "m.direct_to_device", content: { sender: REM, type: "m.bad", message_id: "x3", messages: [] } },
      { edu_type: "m.direct_to_device", content: { sender: REM, type: "m.bad", message_id: "x4", messages: { [alice.userId]: { "*": "str" } } } },
    ]);
    const s1 = await sync(alice, s0);
    expect((s1.to_device?.events ?? []).filter((e: any) => e.type === "m.bad")).toEqual([]);
  });
});

/** A remote user's device as their server would publish it. */
async function remoteDevice(userId: string, deviceId: string) {
  return makeDeviceKeys(userId, deviceId);
}

describe("inbound m.device_list_update and m.signing_key_update", () => {
  it("tells local users sharing a room; applies updates to a cached list; resyncs on a prev_id gap", async () => {
    const d1 = await remoteDevice(REM, "RDEV1");
    const d2 = await remoteDevice(REM, "RDEV2");
    const cs = await makeCrossSigning(REM);
    let devicesServed = [{ device_id: "RDEV1", keys: d1.deviceKeys }];
    const requests: string[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      requests.push(`${init?.method ?? "GET"} ${url.pathname}`);
      if (url.pathname === `/_matrix/federation/v1/user/devices/${enc(REM)}`) {
        return Response.json({ user_id: REM, stream_id: 10, devices: devicesServed, master_key: cs.body.master_key, self_signing_key: cs.body.self_signing_key });
      }
      if (url.pathname === "/_matrix/federation/v1/user/keys/query") {
        return Response.json({ device_keys: { [REM]: { RDEV1: d1.deviceKeys } }, master_keys: { [REM]: cs.body.master_key } });
      }
      return new Response("{}", { status: 404 });
    });

    // First query: not cached → asked over federation; full list of a room-sharing user → cached.
    const q1 = await ok(alice, "POST", "/keys/query", { device_keys: { [REM]: [] } });
    expect(Object.keys(q1.device_keys[REM])).toEqual(["RDEV1"]);
    expect(q1.master_keys[REM]).toEqual(cs.body.master_key);
    expect(q1.failures).toEqual({});
    expect(requests.filter((r) => r.includes("keys/query")).length).toBe(1);
    // Second query: from the cache.
    await ok(alice, "POST", "/keys/query", { device_keys: { [REM]: [] } });
    expect(requests.filter((r) => r.includes("keys/query")).length).toBe(1);

    // An update with a prev_id we never saw (the cache has no stream position yet): resync.
    const s0 = (await sync(alice)).next_batch;
    devicesServed = [
      { device_id: "RDEV1", keys: d1.deviceKeys },
      { device_id: "RDEV2", keys: d2.deviceKeys },
    ];
    await sendEdus(REMOTE, [{ edu_type: "m.device_list_update", content: { user_id: REM, device_id: "RDEV2", stream_id: 10, prev_id: [9], keys: d2.deviceKeys } }]);
    expect(requests.filter((r) => r.includes("/user/devices/")).length).toBe(1);
    const s1 = await sync(alice, s0);
    expect(s1.device_lists.changed).toContain(REM);
    const q2 = await ok(alice, "POST", "/keys/query", { device_keys: { [REM]: [] } });
    expect(Object.keys(q2.device_keys[REM]).sort()).toEqual(["RDEV1", "RDEV2"]);
    expect(requests.filter((r) => r.includes("keys/query")).length).toBe(1);

    // An in-order update (prev_id = the position we hold) applies without a resync: RDEV1 deleted.
    await sendEdus(REMOTE, [{ edu_type: "m.device_list_update", content: { user_id: REM, device_id: "RDEV1", stream_id: 11, prev_id: [10], deleted: true } }]);
    expect(requests.filter((r) => r.includes("/user/devices/")).length).toBe(1);
    const q3 = await ok(alice, "POST", "/keys/query", { device_keys: { [REM]: [] } });
    expect(Object.keys(q3.device_keys[REM])).toEqual(["RDEV2"]);

    // A new master key via m.signing_key_update.
    const cs2 = await makeCrossSigning(REM);
    const s2 = (await sync(alice)).next_batch;
    await sendEdus(REMOTE, [{ edu_type: "m.signing_key_update", content: { user_id: REM, master_key: cs2.body.master_key } }]);
    expect((await sync(alice, s2)).device_lists.changed).toContain(REM);
    const q4 = await ok(alice, "POST", "/keys/query", { device_keys: { [REM]: [] } });
    expect(q4.master_keys[REM]).toEqual(cs2.body.master_key);
  });

  it("ignores updates about another server's users, forged device keys and malformed content", async () => {
    const s0 = (await sync(alice)).next_batch;
    const forged = await makeDeviceKeys(REM, "EVIL", await generateSigningKey("ed25519:EVIL"));
    forged.deviceKeys.keys["ed25519:EVIL"] = (await generateSigningKey()).publicKey; // signature no longer matches
    const otherCs = await makeCrossSigning(`@x:${OTHER}`);
    await sendEdus(REMOTE, [
      { edu_type: "m.device_list_update", content: { user_id: `@x:${OTHER}`, device_id: "D", stream_id: 1, prev_id: [] } },
      { edu_type: "m.device_list_update", content: { user_id: REM, device_id: "EVIL", stream_id: 12, prev_id: [11], keys: forged.deviceKeys } },
      { edu_type: "m.device_list_update", content: { user_id: REM, device_id: 7, stream_id: "x" } },
      { edu_type: "m.signing_key_update", content: { user_id: `@x:${OTHER}`, master_key: otherCs.body.master_key } },
      { edu_type: "m.signing_key_update", content: { user_id: REM, master_key: otherCs.body.master_key } }, // key of another user
    ]);
    const s1 = await sync(alice, s0);
    expect(s1.device_lists?.changed ?? []).not.toContain(`@x:${OTHER}`);
    const q = await ok(alice, "POST", "/keys/query", { device_keys: { [REM]: [] } });
    expect(q.device_keys[REM].EVIL).toBeUndefined();
    expect(q.master_keys[REM]?.user_id).toBe(REM);
  });
});

describe("serving /user/devices, /user/keys/query, /user/keys/claim", () => {
  it("GET /user/devices lists a local user's devices with keys, cross-signing keys and a stream_id", async () => {
    const u = await registerUser();
    const dev = await uploadDeviceKeys(u);
    const cs = await makeCrossSigning(u.userId);
    await ok(u, "POST", "/keys/device_signing/upload", cs.body);
    const r = await fed(REMOTE, "GET", `/v1/user/devices/${enc(u.userId)}`);
    expect(r.status).toBe(200);
    expect(r.body.user_id).toBe(u.userId);
    expect(typeof r.body.stream_id).toBe("number");
    expect(r.body.devices).toEqual([{ device_id: u.deviceId, keys: dev.deviceKeys }]);
    expect(r.body.master_key).toEqual(cs.body.master_key);
    expect(r.body.self_signing_key).toEqual(cs.body.self_signing_key);
    expect(r.body.user_signing_key).toBeUndefined();
    expect((await fed(REMOTE, "GET", `/v1/user/devices/${enc(`@nobody:${SERVER}`)}`)).status).toBe(404);
    expect((await fed(REMOTE, "GET", `/v1/user/devices/${enc(REM)}`)).status).toBe(400);
  });

  it("POST /user/keys/query answers local users only, without the user-signing key", async () => {
    const u = await registerUser();
    const dev = await uploadDeviceKeys(u);
    const cs = await makeCrossSigning(u.userId);
    await ok(u, "POST", "/keys/device_signing/upload", cs.body);
    const r = await fed(REMOTE, "POST", "/v1/user/keys/query", { device_keys: { [u.userId]: [], [REM]: [] } });
    expect(r.status).toBe(200);
    expect(r.body.device_keys).toEqual({ [u.userId]: { [u.deviceId]: dev.deviceKeys } });
    expect(r.body.master_keys[u.userId]).toEqual(cs.body.master_key);
    expect(r.body.user_signing_keys).toBeUndefined();
    const bad = await fed(REMOTE, "POST", "/v1/user/keys/query", { device_keys: "all" });
    expect(bad.status).toBe(400);
  });

  it("POST /user/keys/claim hands out each one-time key once (concurrently), then the fallback key", async () => {
    const u = await registerUser();
    const dev = await uploadDeviceKeys(u);
    const otks = await makeOneTimeKeys(u.userId, dev.ed, 3);
    const fallback = await makeOneTimeKeys(u.userId, dev.ed, 1, "FB");
    await ok(u, "POST", "/keys/upload", { one_time_keys: otks, fallback_keys: fallback });
    const claim = () => fed(REMOTE, "POST", "/v1/user/keys/claim", { one_time_keys: { [u.userId]: { [u.deviceId]: "signed_curve25519" } } });
    const results = await Promise.all([claim(), claim(), claim()]);
    const ids = results.map((r) => {
      expect(r.status).toBe(200);
      return Object.keys(r.body.one_time_keys[u.userId][u.deviceId])[0];
    });
    expect(new Set(ids).size).toBe(3);
    expect(ids.every((id) => id in otks)).toBe(true);
    const fb = await claim();
    expect(Object.keys(fb.body.one_time_keys[u.userId][u.deviceId])).toEqual(Object.keys(fallback));
    const remoteUser = await fed(REMOTE, "POST", "/v1/user/keys/claim", { one_time_keys: { [REM]: { X: "signed_curve25519" } } });
    expect(remoteUser.body.one_time_keys).toEqual({});
  });
});

describe("client /keys/query and /keys/claim for remote users", () => {
  it("one request per server; unreachable servers in failures; bad answers filtered", async () => {
    const good = await makeDeviceKeys(`@a:${OTHER}`, "ADEV");
    const seen: string[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      seen.push(`${url.host} ${url.pathname}`);
      if (url.host === OTHER && url.pathname === "/_matrix/federation/v1/user/keys/query") {
        const body = JSON.parse(String(init!.body));
        expect(Object.keys(body.device_keys).sort()).toEqual([`@a:${OTHER}`, `@b:${OTHER}`]);
        return Response.json({
          device_keys: {
            [`@a:${OTHER}`]: { ADEV: good.deviceKeys, WRONG: good.deviceKeys },
            [`@c:${REMOTE}`]: { X: {} }, // not asked for, other server
          },
        });
      }
      if (url.host === OTHER && url.pathname === "/_matrix/federation/v1/user/keys/claim") {
        return Response.json({ one_time_keys: { [`@a:${OTHER}`]: { ADEV: { "signed_curve25519:K": { key: "k" } } }, [`@z:${OTHER}`]: { Z: { a: 1 } } } });
      }
      throw new Error("unreachable");
    });
    const q = await ok(alice, "POST", "/keys/query", { device_keys: { [`@a:${OTHER}`]: [], [`@b:${OTHER}`]: [], "@d:down.test:8448": [] } });
    expect(q.device_keys[`@a:${OTHER}`]).toEqual({ ADEV: good.deviceKeys });
    expect(q.device_keys[`@b:${OTHER}`]).toEqual({});
    expect(q.device_keys[`@c:${REMOTE}`]).toBeUndefined();
    expect(Object.keys(q.failures)).toEqual(["down.test:8448"]);
    expect(seen.filter((s) => s.startsWith(OTHER)).length).toBe(1);

    const c = await ok(alice, "POST", "/keys/claim", { one_time_keys: { [`@a:${OTHER}`]: { ADEV: "signed_curve25519" }, "@d:down.test:8448": { D: "signed_curve25519" } } });
    expect(c.one_time_keys).toEqual({ [`@a:${OTHER}`]: { ADEV: { "signed_curve25519:K": { key: "k" } } } });
    expect(Object.keys(c.failures)).toEqual(["down.test:8448"]);
  });
});

describe("outbound EDUs", () => {
  it("typing, receipts, to-device and device-list updates of a local user go to the room's other servers", async () => {
    const edus: any[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      if (url.host === REMOTE && url.pathname.startsWith("/_matrix/federation/v1/send/")) {
        edus.push(...(JSON.parse(String(init!.body)).edus ?? []));
        return Response.json({ pdus: {} });
      }
      return new Response("{}", { status: 404 });
    });
    const stub = env.FEDERATION_SENDER.get(env.FEDERATION_SENDER.idFromName(REMOTE));
    await ok(alice, "PUT", `/rooms/${enc(room)}/typing/${enc(alice.userId)}`, { typing: true, timeout: 10000 });
    await ok(alice, "POST", `/rooms/${enc(room)}/receipt/m.read/${enc(firstEvent)}`, {});
    await ok(alice, "PUT", `/sendToDevice/m.test/txn-out-1`, { messages: { [REM]: { RDEV2: { hello: 1 } }, [alice.userId]: { "*": { self: 1 } } } });
    await ok(alice, "PUT", `/sendToDevice/m.test/txn-out-1`, { messages: { [REM]: { RDEV2: { hello: 1 } } } }); // retry: not resent
    await uploadDeviceKeys(alice);
    const want = ["m.typing", "m.receipt", "m.direct_to_device", "m.device_list_update"];
    for (let i = 0; i < 40 && !want.every((t) => edus.some((e) => e.edu_type === t)); i++) {
      await runDurableObjectAlarm(stub);
      await new Promise((r) => setTimeout(r, 25));
    }
    const typing = edus.find((e) => e.edu_type === "m.typing");
    expect(typing.content).toEqual({ room_id: room, user_id: alice.userId, typing: true });
    const receipt = edus.find((e) => e.edu_type === "m.receipt");
    expect(receipt.content[room]["m.read"][alice.userId].event_ids).toEqual([firstEvent]);
    const toDev = edus.filter((e) => e.edu_type === "m.direct_to_device");
    expect(toDev.length).toBe(1);
    expect(toDev[0].content).toMatchObject({ sender: alice.userId, type: "m.test", messages: { [REM]: { RDEV2: { hello: 1 } } } });
    expect(typeof toDev[0].content.message_id).toBe("string");
    const dl = edus.find((e) => e.edu_type === "m.device_list_update");
    expect(dl.content).toMatchObject({ user_id: alice.userId, device_id: alice.deviceId });
    expect(typeof dl.content.stream_id).toBe("number");
    expect(Array.isArray(dl.content.prev_id)).toBe(true);
    expect(dl.content.keys.device_id).toBe(alice.deviceId);
  });
});
