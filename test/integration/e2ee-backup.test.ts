// Server-side key backup: /room_keys/version[/{version}], /room_keys/keys at three levels.
import { describe, it, expect } from "vitest";
import { call, registerUser, type TestUser } from "./helpers";
import { shouldReplaceBackupKey } from "../../src/services/e2ee/backup";

const V3 = "/_matrix/client/v3";
const ALG = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM = "!room:test.local";

const key = (fmi: number, fwd: number, verified: boolean, tag = "x") => ({
  first_message_index: fmi,
  forwarded_count: fwd,
  is_verified: verified,
  session_data: { ephemeral: tag, ciphertext: tag, mac: tag },
});

async function newVersion(u: TestUser, authData: Record<string, unknown> = { public_key: "abc" }): Promise<string> {
  const r = await call("POST", `${V3}/room_keys/version`, { token: u.accessToken, body: { algorithm: ALG, auth_data: authData } });
  expect(r.status).toBe(200);
  return r.body.version;
}

describe("key backup versions", () => {
  it("creates, reads, updates and deletes versions; numbers are never reused", async () => {
    const u = await registerUser();
    const none = await call("GET", `${V3}/room_keys/version`, { token: u.accessToken });
    expect(none.status).toBe(404);
    expect(none.body.errcode).toBe("M_NOT_FOUND");
    const v1 = await newVersion(u);
    const v2 = await newVersion(u, { public_key: "def" });
    expect(Number(v2)).toBeGreaterThan(Number(v1));
    const cur = await call("GET", `${V3}/room_keys/version`, { token: u.accessToken });
    expect(cur.body).toEqual({ algorithm: ALG, auth_data: { public_key: "def" }, count: 0, etag: "0", version: v2 });
    expect((await call("GET", `${V3}/room_keys/version/${v1}`, { token: u.accessToken })).body.version).toBe(v1);
    expect((await call("GET", `${V3}/room_keys/version/999`, { token: u.accessToken })).status).toBe(404);
    expect((await call("GET", `${V3}/room_keys/version/abc`, { token: u.accessToken })).status).toBe(404);

    // Update: only auth_data; version in body must match; algorithm cannot change.
    const upd = await call("PUT", `${V3}/room_keys/version/${v2}`, { token: u.accessToken, body: { algorithm: ALG, auth_data: { public_key: "ghi" }, version: v2 } });
    expect(upd.status).toBe(200);
    expect((await call("GET", `${V3}/room_keys/version`, { token: u.accessToken })).body.auth_data).toEqual({ public_key: "ghi" });
    const mismatch = await call("PUT", `${V3}/room_keys/version/${v2}`, { token: u.accessToken, body: { algorithm: ALG, auth_data: {}, version: v1 } });
    expect(mismatch.body.errcode).toBe("M_INVALID_PARAM");
    const alg = await call("PUT", `${V3}/room_keys/version/${v2}`, { token: u.accessToken, body: { algorithm: "other", auth_data: {} } });
    expect(alg.body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("PUT", `${V3}/room_keys/version/999`, { token: u.accessToken, body: { algorithm: ALG, auth_data: {} } })).status).toBe(404);

    // Delete the current one: the previous becomes current; a new one gets a fresh number.
    expect((await call("DELETE", `${V3}/room_keys/version/${v2}`, { token: u.accessToken })).status).toBe(200);
    expect((await call("DELETE", `${V3}/room_keys/version/${v2}`, { token: u.accessToken })).status).toBe(404);
    expect((await call("GET", `${V3}/room_keys/version`, { token: u.accessToken })).body.version).toBe(v1);
    const v3 = await newVersion(u);
    expect(Number(v3)).toBeGreaterThan(Number(v2));
    // Versions are per user.
    const other = await registerUser();
    expect((await call("GET", `${V3}/room_keys/version/${v3}`, { token: other.accessToken })).status).toBe(404);
  });

  it("rejects bad bodies", async () => {
    const u = await registerUser();
    const r = await call("POST", `${V3}/room_keys/version`, { token: u.accessToken, body: { auth_data: {} } });
    expect(r.body.errcode).toBe("M_BAD_JSON");
  });
});

describe("key backup keys", () => {
  it("stores keys at all three levels with etag and count, and enforces the current version", async () => {
    const u = await registerUser();
    const v1 = await newVersion(u);
    const put1 = await call("PUT", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v1}`, { token: u.accessToken, body: key(0, 0, false) });
    expect(put1.status).toBe(200);
    expect(put1.body.count).toBe(1);
    const e1 = put1.body.etag;
    expect(typeof e1).toBe("string");
    const put2 = await call("PUT", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}?version=${v1}`, {
      token: u.accessToken,
      body: { sessions: { s2: key(0, 0, false), s3: key(0, 0, false) } },
    });
    expect(put2.body.count).toBe(3);
    expect(put2.body.etag).not.toBe(e1);
    const put3 = await call("PUT", `${V3}/room_keys/keys?version=${v1}`, {
      token: u.accessToken,
      body: { rooms: { "!other:test.local": { sessions: { s4: key(0, 0, false) } } } },
    });
    expect(put3.body.count).toBe(4);

    const all = await call("GET", `${V3}/room_keys/keys?version=${v1}`, { token: u.accessToken });
    expect(Object.keys(all.body.rooms).sort()).toEqual([ROOM, "!other:test.local"].sort());
    expect(Object.keys(all.body.rooms[ROOM].sessions).sort()).toEqual(["s1", "s2", "s3"]);
    const room = await call("GET", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}?version=${v1}`, { token: u.accessToken });
    expect(Object.keys(room.body.sessions).sort()).toEqual(["s1", "s2", "s3"]);
    const one = await call("GET", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v1}`, { token: u.accessToken });
    expect(one.body).toEqual(key(0, 0, false));
    expect((await call("GET", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/nope?version=${v1}`, { token: u.accessToken })).status).toBe(404);
    expect((await call("GET", `${V3}/room_keys/keys/${encodeURIComponent("!empty:x")}?version=${v1}`, { token: u.accessToken })).body).toEqual({ sessions: {} });
    const info = await call("GET", `${V3}/room_keys/version`, { token: u.accessToken });
    expect(info.body.count).toBe(4);
    expect(info.body.etag).toBe(put3.body.etag);

    // Missing or unknown version.
    expect((await call("GET", `${V3}/room_keys/keys`, { token: u.accessToken })).body.errcode).toBe("M_MISSING_PARAM");
    expect((await call("GET", `${V3}/room_keys/keys?version=999`, { token: u.accessToken })).status).toBe(404);

    // A newer version makes v1 stale for writes: M_WRONG_ROOM_KEYS_VERSION with current_version.
    const v2 = await newVersion(u);
    const stale = await call("PUT", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/s9?version=${v1}`, { token: u.accessToken, body: key(0, 0, false) });
    expect(stale.status).toBe(403);
    expect(stale.body.errcode).toBe("M_WRONG_ROOM_KEYS_VERSION");
    expect(stale.body.current_version).toBe(v2);
    // Reading the old version still works.
    expect((await call("GET", `${V3}/room_keys/keys?version=${v1}`, { token: u.accessToken })).status).toBe(200);

    // Deletes at three levels report the new count.
    const d1 = await call("DELETE", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v1}`, { token: u.accessToken });
    expect(d1.body.count).toBe(3);
    const d2 = await call("DELETE", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}?version=${v1}`, { token: u.accessToken });
    expect(d2.body.count).toBe(1);
    const d3 = await call("DELETE", `${V3}/room_keys/keys?version=${v1}`, { token: u.accessToken });
    expect(d3.body.count).toBe(0);
    expect(d3.body.etag).not.toBe(d2.body.etag);
    // Deleting a version removes its keys.
    await call("PUT", `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v2}`, { token: u.accessToken, body: key(0, 0, false) });
    await call("DELETE", `${V3}/room_keys/version/${v2}`, { token: u.accessToken });
    expect((await call("GET", `${V3}/room_keys/keys?version=${v2}`, { token: u.accessToken })).status).toBe(404);
  });

  it("replaces a stored session key only by a better one", async () => {
    const u = await registerUser();
    const v = await newVersion(u);
    const path = `${V3}/room_keys/keys/${encodeURIComponent(ROOM)}/s?version=${v}`;
    const put = (k: unknown) => call("PUT", path, { token: u.accessToken, body: k });
    const get = async () => (await call("GET", path, { token: u.accessToken })).body;
    await put(key(5, 2, false, "a"));
    const etag0 = (await call("GET", `${V3}/room_keys/version`, { token: u.accessToken })).body.etag;
    // Worse (higher first_message_index): kept; the etag does not move.
    const worse = await put(key(6, 0, false, "b"));
    expect(worse.body.etag).toBe(etag0);
    expect((await get()).session_data.ciphertext).toBe("a");
    // Lower forwarded_count with the same index: replaced.
    await put(key(5, 1, false, "c"));
    expect((await get()).session_data.ciphertext).toBe("c");
    // Lower first_message_index: replaced.
    await put(key(3, 9, false, "d"));
    expect((await get()).session_data.ciphertext).toBe("d");
    // Verified beats everything else.
    await put(key(9, 9, true, "e"));
    expect((await get()).session_data.ciphertext).toBe("e");
    // Unverified never replaces verified, even with a lower index.
    await put(key(0, 0, false, "f"));
    expect((await get()).session_data.ciphertext).toBe("e");
    // Equal metadata keeps the stored one.
    await put(key(9, 9, true, "g"));
    expect((await get()).session_data.ciphertext).toBe("e");
  });

  it("the replacement rule as a pure function", () => {
    const k = (first_message_index: number, forwarded_count: number, is_verified: boolean) => ({ first_message_index, forwarded_count, is_verified });
    expect(shouldReplaceBackupKey(k(0, 0, false), k(9, 9, true))).toBe(true);
    expect(shouldReplaceBackupKey(k(9, 9, true), k(0, 0, false))).toBe(false);
    expect(shouldReplaceBackupKey(k(5, 0, false), k(4, 9, false))).toBe(true);
    expect(shouldReplaceBackupKey(k(5, 1, false), k(5, 0, false))).toBe(true);
    expect(shouldReplaceBackupKey(k(5, 1, false), k(5, 1, false))).toBe(false);
  });
});
