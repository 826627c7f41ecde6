// E2EE key management: /keys/upload, /keys/query, /keys/claim, /keys/changes, cross-signing.
import { describe, it, expect } from "vitest";
import { call, registerUser, type TestUser } from "./helpers";
import { makeCrossSigning, makeDeviceKeys, makeOneTimeKeys, password, uploadDeviceKeys } from "./e2ee-helpers";
import { env } from "cloudflare:test";
import { generateSigningKey, signJson } from "../../src/core/signing";
import { deviceListPosition } from "../../src/services/e2ee/device-list-stream";

const V3 = "/_matrix/client/v3";

async function login(u: TestUser, deviceId?: string): Promise<TestUser> {
  const r = await call("POST", `${V3}/login`, {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, device_id: deviceId },
  });
  if (r.status !== 200) throw new Error(`login: ${r.status} ${JSON.stringify(r.body)}`);
  return { ...u, accessToken: r.body.access_token, deviceId: r.body.device_id };
}

const upload = (u: TestUser, body: unknown) => call("POST", `${V3}/keys/upload`, { token: u.accessToken, body });
const query = (u: TestUser, device_keys: Record<string, string[]>) => call("POST", `${V3}/keys/query`, { token: u.accessToken, body: { device_keys } });
const claim = (u: TestUser, one_time_keys: Record<string, Record<string, string>>) =>
  call("POST", `${V3}/keys/claim`, { token: u.accessToken, body: { one_time_keys } });

describe("POST /keys/upload", () => {
  it("requires authentication", async () => {
    const r = await call("POST", `${V3}/keys/upload`, { body: {} });
    expect(r.status).toBe(401);
    expect(r.body.errcode).toBe("M_MISSING_TOKEN");
  });

  it("stores device keys signed by the device's ed25519 key and returns OTK counts", async () => {
    const u = await registerUser();
    const dev = await makeDeviceKeys(u.userId, u.deviceId);
    const otks = await makeOneTimeKeys(u.userId, dev.ed, 5);
    const r = await upload(u, { device_keys: dev.deviceKeys, one_time_keys: otks });
    expect(r.status).toBe(200);
    expect(r.body.one_time_key_counts).toEqual({ signed_curve25519: 5 });
    const q = await query(u, { [u.userId]: [] });
    expect(q.body.device_keys[u.userId][u.deviceId].keys).toEqual(dev.deviceKeys.keys);
    expect(q.body.device_keys[u.userId][u.deviceId].signatures).toEqual(dev.deviceKeys.signatures);
  });

  it("rejects device keys signed by the wrong key (forgery)", async () => {
    const u = await registerUser();
    const other = await generateSigningKey(`ed25519:${u.deviceId}`);
    const forged = await makeDeviceKeys(u.userId, u.deviceId, other);
    const r = await upload(u, { device_keys: forged.deviceKeys });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe("M_INVALID_PARAM");
    // A signature that was valid but whose content was altered afterwards.
    const dev = await makeDeviceKeys(u.userId, u.deviceId);
    const tampered = { ...dev.deviceKeys, algorithms: ["m.megolm.v1.aes-sha2"] };
    expect((await upload(u, { device_keys: tampered })).status).toBe(400);
    // Unsigned.
    const { signatures: _s, ...unsigned } = dev.deviceKeys;
    expect((await upload(u, { device_keys: { ...unsigned, signatures: {} } })).status).toBe(400);
    const q = await query(u, { [u.userId]: [] });
    expect(q.body.device_keys[u.userId]).toEqual({});
  });

  it("rejects device keys for another user or another device", async () => {
    const u = await registerUser();
    const v = await registerUser();
    const forOtherUser = await makeDeviceKeys(v.userId, u.deviceId);
    expect((await upload(u, { device_keys: forOtherUser.deviceKeys })).status).toBe(400);
    const forOtherDevice = await makeDeviceKeys(u.userId, "OTHERDEVICE");
    const r = await upload(u, { device_keys: forOtherDevice.deviceKeys });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe("M_INVALID_PARAM");
  });

  it("rejects malformed bodies", async () => {
    const u = await registerUser();
    expect((await upload(u, { device_keys: { user_id: u.userId } })).body.errcode).toBe("M_BAD_JSON");
    expect((await upload(u, { one_time_keys: { "signed_curve25519:A": 5 } })).body.errcode).toBe("M_BAD_JSON");
    expect((await upload(u, { one_time_keys: { nocolon: "abc" } })).body.errcode).toBe("M_INVALID_PARAM");
  });

  it("accepts the same one-time key again but refuses a different key under the same ID", async () => {
    const u = await registerUser();
    const dev = await uploadDeviceKeys(u);
    const otks = await makeOneTimeKeys(u.userId, dev.ed, 3);
    expect((await upload(u, { one_time_keys: otks })).body.one_time_key_counts.signed_curve25519).toBe(3);
    const again = await upload(u, { one_time_keys: otks });
    expect(again.status).toBe(200);
    expect(again.body.one_time_key_counts.signed_curve25519).toBe(3);
    const different = await makeOneTimeKeys(u.userId, dev.ed, 1);
    const r = await upload(u, { one_time_keys: { "signed_curve25519:AAAA0": different["signed_curve25519:AAAA0"] } });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe("M_INVALID_PARAM");
    // The refused upload changed nothing.
    const r2 = await upload(u, {});
    expect(r2.body.one_time_key_counts).toEqual({ signed_curve25519: 3 });
  });

  it("re-uploading identical device keys is fine", async () => {
    const u = await registerUser();
    const dev = await uploadDeviceKeys(u);
    expect((await upload(u, { device_keys: dev.deviceKeys })).status).toBe(200);
  });
});

describe("POST /keys/query", () => {
  it("returns device keys with display names, filters devices, reports remote servers in failures", async () => {
    const a = await registerUser();
    const a2 = await login(a);
    await call("PUT", `${V3}/devices/${a.deviceId}`, { token: a.accessToken, body: { display_name: "Phone" } });
    await uploadDeviceKeys(a);
    await uploadDeviceKeys(a2);
    const b = await registerUser();
    const all = await query(b, { [a.userId]: [], "@x:remote.example": [] });
    expect(all.status).toBe(200);
    expect(Object.keys(all.body.device_keys[a.userId]).sort()).toEqual([a.deviceId, a2.deviceId].sort());
    expect(all.body.device_keys[a.userId][a.deviceId].unsigned.device_display_name).toBe("Phone");
    expect(all.body.failures["remote.example"]).toBeDefined();
    const one = await query(b, { [a.userId]: [a2.deviceId] });
    expect(Object.keys(one.body.device_keys[a.userId])).toEqual([a2.deviceId]);
    const none = await query(b, { "@nobody:test.local": [] });
    expect(none.body.device_keys["@nobody:test.local"]).toEqual({});
  });

  it("rejects a body without device_keys", async () => {
    const u = await registerUser();
    const r = await call("POST", `${V3}/keys/query`, { token: u.accessToken, body: {} });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe("M_BAD_JSON");
  });
});

describe("POST /keys/claim", () => {
  it("hands out each one-time key once, then the fallback key (marked used)", async () => {
    const a = await registerUser();
    const dev = await uploadDeviceKeys(a);
    const otks = await makeOneTimeKeys(a.userId, dev.ed, 2);
    const fallback = await makeOneTimeKeys(a.userId, dev.ed, 1, "FB");
    const fbSigned = { ...fallback["signed_curve25519:FB0"], fallback: true };
    const fbBody = { "signed_curve25519:FB0": await signJson({ key: fbSigned.key, fallback: true }, a.userId, dev.ed) };
    await upload(a, { one_time_keys: otks, fallback_keys: fbBody });
    const b = await registerUser();
    const got = new Set<string>();
    for (let i = 0; i < 2; i++) {
      const r = await claim(b, { [a.userId]: { [a.deviceId]: "signed_curve25519" } });
      expect(r.status).toBe(200);
      const keys = r.body.one_time_keys[a.userId][a.deviceId];
      const [id] = Object.keys(keys);
      expect(otks[id]).toEqual(keys[id]);
      got.add(id);
    }
    expect(got.size).toBe(2);
    // Exhausted: the fallback key, again and again.
    for (let i = 0; i < 2; i++) {
      const r = await claim(b, { [a.userId]: { [a.deviceId]: "signed_curve25519" } });
      expect(r.body.one_time_keys[a.userId][a.deviceId]).toEqual(fbBody);
    }
    const counts = await upload(a, {});
    expect(counts.body.one_time_key_counts.signed_curve25519).toBe(0);
    // Unknown devices and algorithms claim nothing.
    const none = await claim(b, { [a.userId]: { NODEVICE: "signed_curve25519", [a.deviceId]: "unknown_alg" }, "@x:remote.example": { D: "signed_curve25519" } });
    expect(none.body.one_time_keys).toEqual({});
    expect(none.body.failures["remote.example"]).toBeDefined();
  });

  it("never gives the same one-time key to two concurrent claims", async () => {
    const a = await registerUser();
    const dev = await uploadDeviceKeys(a);
    const otks = await makeOneTimeKeys(a.userId, dev.ed, 20);
    await upload(a, { one_time_keys: otks });
    const b = await registerUser();
    const results = await Promise.all(
      Array.from({ length: 30 }, () => claim(b, { [a.userId]: { [a.deviceId]: "signed_curve25519" } })),
    );
    const ids: string[] = [];
    for (const r of results) {
      expect(r.status).toBe(200);
      const k = r.body.one_time_keys[a.userId]?.[a.deviceId];
      if (k) ids.push(...Object.keys(k));
    }
    expect(ids).toHaveLength(20);
    expect(new Set(ids).size).toBe(20);
    expect((await upload(a, {})).body.one_time_key_counts.signed_curve25519).toBe(0);
  });
});

describe("cross-signing", () => {
  it("allows the first upload without UIA, requires UIA to replace, and is idempotent", async () => {
    const u = await registerUser();
    const cs = await makeCrossSigning(u.userId);
    const first = await call("POST", `${V3}/keys/device_signing/upload`, { token: u.accessToken, body: cs.body });
    expect(first.status).toBe(200);
    // The same keys again: no UIA (a retried request).
    const again = await call("POST", `${V3}/keys/device_signing/upload`, { token: u.accessToken, body: cs.body });
    expect(again.status).toBe(200);
    // New keys: UIA with the password.
    const cs2 = await makeCrossSigning(u.userId);
    const challenge = await call("POST", `${V3}/keys/device_signing/upload`, { token: u.accessToken, body: cs2.body });
    expect(challenge.status).toBe(401);
    expect(challenge.body.flows).toEqual([{ stages: ["m.login.password"] }]);
    const wrong = await call("POST", `${V3}/keys/device_signing/upload`, {
      token: u.accessToken,
      body: { ...cs2.body, auth: { ...password(u, challenge.body.session), password: "nope" } },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.errcode).toBe("M_FORBIDDEN");
    const ok = await call("POST", `${V3}/keys/device_signing/upload`, {
      token: u.accessToken,
      body: { ...cs2.body, auth: password(u, challenge.body.session) },
    });
    expect(ok.status).toBe(200);
    const q = await query(u, { [u.userId]: [] });
    expect(q.body.master_keys[u.userId]).toEqual(cs2.body.master_key);
    expect(q.body.self_signing_keys[u.userId]).toEqual(cs2.body.self_signing_key);
    expect(q.body.user_signing_keys[u.userId]).toEqual(cs2.body.user_signing_key);
  });

  it("shows the user-signing key only to its owner", async () => {
    const u = await registerUser();
    const cs = await makeCrossSigning(u.userId);
    await call("POST", `${V3}/keys/device_signing/upload`, { token: u.accessToken, body: cs.body });
    const v = await registerUser();
    const q = await query(v, { [u.userId]: [] });
    expect(q.body.master_keys[u.userId]).toEqual(cs.body.master_key);
    expect(q.body.self_signing_keys[u.userId]).toEqual(cs.body.self_signing_key);
    expect(q.body.user_signing_keys[u.userId]).toBeUndefined();
  });

  it("rejects keys not signed by the master key, wrong usage, wrong user, no master", async () => {
    const u = await registerUser();
    const cs = await makeCrossSigning(u.userId);
    const forger = await generateSigningKey();
    const badSsk = await signJson(
      { user_id: u.userId, usage: ["self_signing"], keys: cs.body.self_signing_key.keys },
      u.userId,
      { ...forger, keyId: Object.keys(cs.body.master_key.keys)[0] },
    );
    const r = await call("POST", `${V3}/keys/device_signing/upload`, { token: u.accessToken, body: { ...cs.body, self_signing_key: badSsk } });
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe("M_INVALID_SIGNATURE");
    const usage = await call("POST", `${V3}/keys/device_signing/upload`, {
      token: u.accessToken,
      body: { master_key: { ...cs.body.master_key, usage: ["self_signing"] } },
    });
    expect(usage.body.errcode).toBe("M_INVALID_PARAM");
    const user = await call("POST", `${V3}/keys/device_signing/upload`, {
      token: u.accessToken,
      body: { master_key: { ...cs.body.master_key, user_id: "@other:test.local" } },
    });
    expect(user.body.errcode).toBe("M_INVALID_PARAM");
    const noMaster = await call("POST", `${V3}/keys/device_signing/upload`, {
      token: u.accessToken,
      body: { self_signing_key: cs.body.self_signing_key },
    });
    expect(noMaster.status).toBe(400);
    expect(noMaster.body.errcode).toBe("M_MISSING_PARAM");
    // Nothing was stored by the failed attempts.
    expect((await query(u, { [u.userId]: [] })).body.master_keys[u.userId]).toBeUndefined();
  });

  it("uploads signatures: device by self-signing key, master by device, other user's master by user-signing key", async () => {
    const a = await registerUser();
    const dev = await uploadDeviceKeys(a);
    const cs = await makeCrossSigning(a.userId);
    await call("POST", `${V3}/keys/device_signing/upload`, { token: a.accessToken, body: cs.body });
    const b = await registerUser();
    const bcs = await makeCrossSigning(b.userId);
    await call("POST", `${V3}/keys/device_signing/upload`, { token: b.accessToken, body: bcs.body });

    const signedDevice = await signJson(dev.deviceKeys, a.userId, cs.selfSigning);
    const signedMaster = await signJson(cs.body.master_key, a.userId, dev.ed);
    const signedB = await signJson(bcs.body.master_key, a.userId, cs.userSigning);
    const forged = await signJson(bcs.body.master_key, a.userId, { ...dev.ed, keyId: cs.userSigning.keyId });
    const bMasterId = bcs.master.publicKey;
    const r = await call("POST", `${V3}/keys/signatures/upload`, {
      token: a.accessToken,
      body: {
        [a.userId]: { [a.deviceId]: signedDevice, [cs.master.publicKey]: signedMaster, NOSUCHDEVICE: signedDevice },
        [b.userId]: { [bMasterId]: signedB },
      },
    });
    expect(r.status).toBe(200);
    expect(r.body.failures[a.userId]?.NOSUCHDEVICE).toBeDefined();
    expect(r.body.failures[a.userId]?.[a.deviceId]).toBeUndefined();
    expect(r.body.failures[b.userId]).toBeUndefined();

    const forgedR = await call("POST", `${V3}/keys/signatures/upload`, { token: a.accessToken, body: { [b.userId]: { [bMasterId]: forged } } });
    expect(forgedR.body.failures[b.userId][bMasterId].errcode).toBe("M_INVALID_SIGNATURE");
    // Altered content is refused even with a valid signature over it.
    const altered = await signJson({ ...dev.deviceKeys, algorithms: ["x"] }, a.userId, cs.selfSigning);
    const alteredR = await call("POST", `${V3}/keys/signatures/upload`, { token: a.accessToken, body: { [a.userId]: { [a.deviceId]: altered } } });
    expect(alteredR.body.failures[a.userId][a.deviceId].errcode).toBe("M_INVALID_SIGNATURE");

    // Everyone sees the device's self-signing signature and the device's signature on the master key.
    const qb = await query(b, { [a.userId]: [] });
    expect(qb.body.device_keys[a.userId][a.deviceId].signatures[a.userId][cs.selfSigning.keyId]).toBe(signedDevice.signatures[a.userId][cs.selfSigning.keyId]);
    expect(qb.body.master_keys[a.userId].signatures[a.userId][`ed25519:${a.deviceId}`]).toBeDefined();
    // The signature on B's master key by A's user-signing key is visible to A only.
    const qa = await query(a, { [b.userId]: [] });
    expect(qa.body.master_keys[b.userId].signatures[a.userId][cs.userSigning.keyId]).toBe(signedB.signatures[a.userId][cs.userSigning.keyId]);
    const qbSelf = await query(b, { [b.userId]: [] });
    expect(qbSelf.body.master_keys[b.userId].signatures?.[a.userId]).toBeUndefined();
  });
});

describe("GET /keys/changes and device deletion", () => {
  it("reports device-list changes of users sharing a room, and deleting a device removes its keys", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const stranger = await registerUser();
    const room = await call("POST", `${V3}/createRoom`, { token: a.accessToken, body: { preset: "public_chat" } });
    expect(room.status).toBe(200);
    expect((await call("POST", `${V3}/join/${encodeURIComponent(room.body.room_id)}`, { token: b.accessToken, body: {} })).status).toBe(200);

    const from = "0";
    const b2 = await login(b);
    const dev = await uploadDeviceKeys(b2);
    await upload(b2, { one_time_keys: await makeOneTimeKeys(b.userId, dev.ed, 3) });
    await uploadDeviceKeys(stranger);
    const big = "999999999";
    const ch = await call("GET", `${V3}/keys/changes?from=${from}&to=${big}`, { token: a.accessToken });
    expect(ch.status).toBe(200);
    expect(ch.body.changed).toContain(b.userId);
    expect(ch.body.changed).not.toContain(stranger.userId);
    expect(ch.body.left).toEqual([]);

    // From the current position on nothing changed; then deleting b2 is a change of b's list.
    const pos = String(await deviceListPosition(env));
    const before = await call("GET", `${V3}/keys/changes?from=${pos}&to=${big}`, { token: a.accessToken });
    expect(before.body.changed).toEqual([]);

    const del = await call("DELETE", `${V3}/devices/${b2.deviceId}`, { token: b.accessToken, body: {} });
    expect(del.status).toBe(401);
    const ok = await call("DELETE", `${V3}/devices/${b2.deviceId}`, { token: b.accessToken, body: { auth: password(b, del.body.session) } });
    expect(ok.status).toBe(200);
    const after = await call("GET", `${V3}/keys/changes?from=${pos}&to=${big}`, { token: a.accessToken });
    expect(after.body.changed).toEqual([b.userId]);
    const q = await query(a, { [b.userId]: [] });
    expect(q.body.device_keys[b.userId][b2.deviceId]).toBeUndefined();
    const c = await claim(a, { [b.userId]: { [b2.deviceId]: "signed_curve25519" } });
    expect(c.body.one_time_keys).toEqual({});
  });

  it("requires from and to, and rejects garbage tokens", async () => {
    const a = await registerUser();
    expect((await call("GET", `${V3}/keys/changes?from=0`, { token: a.accessToken })).body.errcode).toBe("M_MISSING_PARAM");
    expect((await call("GET", `${V3}/keys/changes?from=abc&to=1`, { token: a.accessToken })).body.errcode).toBe("M_INVALID_PARAM");
    // Sync-style tokens carrying a "dl<N>" segment are understood.
    expect((await call("GET", `${V3}/keys/changes?from=s1_dl0_t2&to=s5_dl999999_t2`, { token: a.accessToken })).status).toBe(200);
    // Sync tokens are the caller's own hub's: a token it did not issue is refused (as by /sync),
    // not answered with a guess; mixing a sync token with a device-list position too.
    const foreign = await call("GET", `${V3}/keys/changes?from=s1_abc&to=s9_abc`, { token: a.accessToken });
    expect(foreign.status).toBe(400);
    expect(foreign.body.errcode).toBe("M_INVALID_PARAM");
    const t = (await call("GET", `${V3}/sync`, { token: a.accessToken })).body.next_batch;
    expect((await call("GET", `${V3}/keys/changes?from=${t}&to=5`, { token: a.accessToken })).body.errcode).toBe("M_INVALID_PARAM");
    const b = await registerUser();
    const tb = (await call("GET", `${V3}/sync`, { token: b.accessToken })).body.next_batch;
    expect((await call("GET", `${V3}/keys/changes?from=${tb}&to=${tb}`, { token: a.accessToken })).body.errcode).toBe("M_INVALID_PARAM");
  });

  it("between two /sync tokens: exactly the users whose device lists changed in between, and those left", async () => {
    const [a, b, c, d] = await Promise.all([registerUser(), registerUser(), registerUser(), registerUser()]);
    const encrypted = { preset: "public_chat", initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] };
    const room = await call("POST", `${V3}/createRoom`, { token: a.accessToken, body: encrypted });
    for (const u of [b, c, d]) expect((await call("POST", `${V3}/join/${encodeURIComponent(room.body.room_id)}`, { token: u.accessToken, body: {} })).status).toBe(200);
    const syncA = async () => (await call("GET", `${V3}/sync`, { token: a.accessToken })).body.next_batch as string;
    const changes = async (from: string, to: string) => {
      const r = await call("GET", `${V3}/keys/changes?from=${from}&to=${to}`, { token: a.accessToken });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body as { changed: string[]; left: string[] };
    };
    // c changes keys before t1 (not in range), b between t1 and t2, d after t2 (not in range).
    await uploadDeviceKeys(c);
    const t1 = await syncA();
    await uploadDeviceKeys(b);
    await uploadDeviceKeys(await login(b));
    const t2 = await syncA();
    await uploadDeviceKeys(d);
    const t3 = await syncA();
    expect(await changes(t1, t2)).toEqual({ changed: [b.userId], left: [] });
    expect(await changes(t2, t3)).toEqual({ changed: [d.userId], left: [] });
    expect(await changes(t1, t3)).toEqual({ changed: [b.userId, d.userId].sort(), left: [] });
    expect(await changes(t3, t3)).toEqual({ changed: [], left: [] });
    // d leaves: no longer shares a room with a → left; changed again if d rejoins.
    expect((await call("POST", `${V3}/rooms/${encodeURIComponent(room.body.room_id)}/leave`, { token: d.accessToken, body: {} })).status).toBe(200);
    const t4 = await syncA();
    expect(await changes(t3, t4)).toEqual({ changed: [], left: [d.userId] });
    // The last entry in the range decides: d left then came back → changed, not left.
    expect((await call("POST", `${V3}/join/${encodeURIComponent(room.body.room_id)}`, { token: d.accessToken, body: {} })).status).toBe(200);
    const t5 = await syncA();
    expect(await changes(t3, t5)).toEqual({ changed: [d.userId], left: [] });
    expect(await changes(t4, t5)).toEqual({ changed: [d.userId], left: [] });
  });
});
