// Who hears of what in /sync `device_lists.changed` (module "End-to-End Encryption": "users who
// have updated their device identity or cross-signing keys"), and signatures on other users'
// master keys (module "Cross-signing"):
//  - renaming a device is a device-list change for the users sharing a room with its owner;
//  - a signature by a user's user-signing key on another user's master key is private to the
//    signer: the signer's devices are told the signed user changed (so they query the keys again
//    and see that the user was verified), nobody else hears of it;
//  - the signed master key may belong to a remote user, whose key is then taken from the remote
//    device-list cache; the signature shows in the signer's /keys/query of that user.
import { describe, it, expect, beforeAll } from "vitest";
import { env } from "cloudflare:test";
import { call, offline, registerUser, seedRemoteKey, SERVER, type TestUser } from "./helpers";
import { makeCrossSigning, makeDeviceKeys, uploadDeviceKeys, type CrossSigning } from "./e2ee-helpers";
import { signJson, type SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";
import { storeRemoteDeviceList } from "../../src/services/federation/device-lists";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

async function ok(u: TestUser, method: string, path: string, body?: unknown) {
  const r = await call(method, `${V3}${path}`, { token: u.accessToken, body });
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function login(u: TestUser): Promise<TestUser> {
  const r = await call("POST", `${V3}/login`, { body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password } });
  if (r.status !== 200) throw new Error(`login: ${r.status} ${JSON.stringify(r.body)}`);
  return { ...u, accessToken: r.body.access_token, deviceId: r.body.device_id };
}

/** The current sync token of `u`'s device, and what changed since one. */
const token = async (u: TestUser) => (await ok(u, "GET", "/sync?timeout=0")).next_batch as string;
const changedSince = async (u: TestUser, since: string) =>
  ((await ok(u, "GET", `/sync?timeout=0&since=${enc(since)}`)).device_lists?.changed ?? []) as string[];

async function sharedRoom(owner: TestUser, ...others: TestUser[]): Promise<string> {
  const room = (await ok(owner, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
  for (const u of others) await ok(u, "POST", `/join/${enc(room)}`, {});
  return room;
}

async function crossSign(u: TestUser): Promise<CrossSigning> {
  const cs = await makeCrossSigning(u.userId);
  await ok(u, "POST", "/keys/device_signing/upload", cs.body);
  return cs;
}

const signaturesUpload = (u: TestUser, body: unknown) => call("POST", `${V3}/keys/signatures/upload`, { token: u.accessToken, body });
const query = (u: TestUser, userId: string) => ok(u, "POST", "/keys/query", { device_keys: { [userId]: [] } });

describe("renaming a device", () => {
  it("is a device-list change for the users sharing a room (and the owner), and shows in /keys/query", async () => {
    const [a, b, stranger] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    await sharedRoom(a, b);
    await uploadDeviceKeys(a);
    await ok(a, "PUT", `/devices/${a.deviceId}`, { display_name: "Old name" });
    const [tb, ta, ts] = await Promise.all([token(b), token(a), token(stranger)]);

    await ok(a, "PUT", `/devices/${a.deviceId}`, { display_name: "Work laptop" });
    expect(await changedSince(b, tb)).toContain(a.userId);
    expect(await changedSince(a, ta)).toContain(a.userId);
    expect(await changedSince(stranger, ts)).not.toContain(a.userId);
    expect((await query(b, a.userId)).device_keys[a.userId][a.deviceId].unsigned.device_display_name).toBe("Work laptop");
    const ch = await ok(b, "GET", `/keys/changes?from=${enc(tb)}&to=${enc(await token(b))}`);
    expect(ch.changed).toContain(a.userId);
  });

  it("without display_name (or with the same name) changes nothing", async () => {
    const [a, b] = await Promise.all([registerUser(), registerUser()]);
    await sharedRoom(a, b);
    await ok(a, "PUT", `/devices/${a.deviceId}`, { display_name: "Phone" });
    const tb = await token(b);
    // "If not given, the display name is unchanged."
    await ok(a, "PUT", `/devices/${a.deviceId}`, {});
    expect((await ok(a, "GET", `/devices/${a.deviceId}`)).display_name).toBe("Phone");
    await ok(a, "PUT", `/devices/${a.deviceId}`, { display_name: "Phone" });
    expect(await changedSince(b, tb)).not.toContain(a.userId);
  });
});

describe("a signature on another local user's master key", () => {
  it("tells the signer's devices that the signed user changed, and nobody else", async () => {
    const [a, b, c] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    await sharedRoom(a, b, c);
    const a2 = await login(a);
    await uploadDeviceKeys(a);
    const csA = await crossSign(a);
    const csB = await crossSign(b);
    const [ta, ta2, tb, tc] = await Promise.all([token(a), token(a2), token(b), token(c)]);

    const signed = await signJson(csB.body.master_key, a.userId, csA.userSigning);
    const r = await signaturesUpload(a, { [b.userId]: { [csB.master.publicKey]: signed } });
    expect(r.status).toBe(200);
    expect(r.body.failures).toEqual({});

    // Both of a's devices are told b changed; they see a's signature on b's master key.
    expect(await changedSince(a, ta)).toContain(b.userId);
    expect(await changedSince(a2, ta2)).toContain(b.userId);
    const q = await query(a2, b.userId);
    expect(q.master_keys[b.userId].signatures[a.userId][csA.userSigning.keyId]).toBe(signed.signatures[a.userId][csA.userSigning.keyId]);
    const ch = await ok(a2, "GET", `/keys/changes?from=${enc(ta2)}&to=${enc(await token(a2))}`);
    expect(ch.changed).toContain(b.userId);
    // The signature is a's alone: b and c hear of no change of a's or b's.
    expect(await changedSince(b, tb)).not.toContain(a.userId);
    expect(await changedSince(c, tc)).not.toContain(a.userId);
    expect(await changedSince(c, tc)).not.toContain(b.userId);
    expect((await query(c, b.userId)).master_keys[b.userId].signatures?.[a.userId]).toBeUndefined();
  });
});

describe("a signature on a remote user's master key", () => {
  const REMOTE = "remote-sig.test:8448";
  const REM = `@rem:${REMOTE}`;
  let remoteKey: SigningKey;
  let alice: TestUser;
  let bob: TestUser;
  let csAlice: CrossSigning;
  let csRem: CrossSigning;
  /** REM's master key as cached: signed by REM's device too, as clients do. */
  let remMaster: Record<string, any>;

  async function fed(method: string, path: string, body?: unknown) {
    const uri = `/_matrix/federation${path}`;
    const authorization = await signRequest(remoteKey, { method, uri, origin: REMOTE, destination: SERVER, content: body });
    return call(method, uri, { body, headers: { authorization } });
  }

  beforeAll(async () => {
    setFederationFetch(offline);
    remoteKey = await seedRemoteKey(REMOTE);
    [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const room = await sharedRoom(alice, bob);
    // REM joins over federation, so alice and bob share a room with REM.
    const t = await fed("GET", `/v1/make_join/${enc(room)}/${enc(REM)}?ver=12`);
    expect(t.status).toBe(200);
    const { origin: _o, ...ev } = t.body.event;
    void _o;
    const { pdu, eventId } = await hashAndSignEvent({ ...ev, origin_server_ts: Date.now() } as unknown as PDU, getRoomVersion(t.body.room_version)!, REMOTE, remoteKey);
    expect((await fed("PUT", `/v2/send_join/${enc(room)}/${enc(eventId)}`, pdu)).status).toBe(200);
    // REM's keys as their server told us (the device-list cache).
    csRem = await makeCrossSigning(REM);
    const dev = await makeDeviceKeys(REM, "REMDEV");
    remMaster = await signJson(csRem.body.master_key, REM, dev.ed);
    await storeRemoteDeviceList(env, REM, {
      streamId: 1,
      devices: [{ deviceId: "REMDEV", keys: dev.deviceKeys }],
      master: remMaster,
      selfSigning: csRem.body.self_signing_key,
    });
    await uploadDeviceKeys(alice);
    csAlice = await crossSign(alice);
  });

  it("is validated with the signer's user-signing key, stored, and shown to the signer only", async () => {
    expect((await query(alice, REM)).master_keys[REM].keys).toEqual(csRem.body.master_key.keys);
    const ta = await token(alice);
    const signed = await signJson(remMaster, alice.userId, csAlice.userSigning);
    const r = await signaturesUpload(alice, { [REM]: { [csRem.master.publicKey]: signed } });
    expect(r.status).toBe(200);
    expect(r.body.failures).toEqual({});
    expect(await changedSince(alice, ta)).toContain(REM);

    const mine = (await query(alice, REM)).master_keys[REM];
    expect(mine.signatures[alice.userId][csAlice.userSigning.keyId]).toBe(signed.signatures[alice.userId][csAlice.userSigning.keyId]);
    // REM's device's signature on its master key is kept alongside.
    expect(mine.signatures[REM]).toEqual(remMaster.signatures[REM]);
    const bobs = (await query(bob, REM)).master_keys[REM];
    expect(bobs.signatures?.[alice.userId]).toBeUndefined();
  });

  it("refuses forged or altered signatures, unknown keys and users whose keys are not cached", async () => {
    const forged = await signJson(remMaster, alice.userId, { ...csAlice.selfSigning, keyId: csAlice.userSigning.keyId });
    const altered = await signJson({ ...remMaster, usage: ["master", "other"] }, alice.userId, csAlice.userSigning);
    const stranger = `@nobody:${REMOTE}`;
    const strangerCs = await makeCrossSigning(stranger);
    const r = await signaturesUpload(alice, {
      [REM]: { [csRem.master.publicKey]: forged, [csRem.selfSigning.publicKey]: await signJson(csRem.body.self_signing_key, alice.userId, csAlice.userSigning) },
      [stranger]: { [strangerCs.master.publicKey]: await signJson(strangerCs.body.master_key, alice.userId, csAlice.userSigning) },
    });
    expect(r.status).toBe(200);
    expect(r.body.failures[REM][csRem.master.publicKey].errcode).toBe("M_INVALID_SIGNATURE");
    expect(r.body.failures[REM][csRem.selfSigning.publicKey].errcode).toBe("M_NOT_FOUND");
    expect(r.body.failures[stranger][strangerCs.master.publicKey].errcode).toBe("M_NOT_FOUND");
    const r2 = await signaturesUpload(alice, { [REM]: { [csRem.master.publicKey]: altered } });
    expect(r2.body.failures[REM][csRem.master.publicKey].errcode).toBe("M_INVALID_SIGNATURE");
    // A user without a user-signing key cannot sign anyone.
    const carol = await registerUser();
    const r3 = await signaturesUpload(carol, { [REM]: { [csRem.master.publicKey]: await signJson(remMaster, carol.userId, csAlice.userSigning) } });
    expect(r3.body.failures[REM][csRem.master.publicKey].errcode).toBe("M_NOT_FOUND");
  });
});
