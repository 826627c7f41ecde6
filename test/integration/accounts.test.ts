import { describe, it, expect } from "vitest";
import { call, clientOk, createRoom, joinRoom, registerUser, sendText, uniqueName, SERVER, withEnv, type TestUser } from "./helpers";

describe("discovery", () => {
  it("serves /versions without auth, with CORS", async () => {
    const r = await call("GET", "/_matrix/client/versions", { headers: { origin: "https://app.example" } });
    expect(r.status).toBe(200);
    expect(r.body.versions).toContain("v1.1");
    expect(r.headers.get("access-control-allow-origin")).toBe("*");
  });
  it("answers CORS preflight", async () => {
    const r = await call("OPTIONS", "/_matrix/client/v3/login", {
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    expect(r.status).toBeLessThan(300);
    expect(r.headers.get("access-control-allow-methods")).toContain("POST");
    expect(r.headers.get("access-control-allow-headers")).toContain("Authorization");
  });
  it("serves .well-known", async () => {
    const r = await call("GET", "/.well-known/matrix/client");
    expect(r.body["m.homeserver"].base_url).toBe("http://test.local");
  });
  it("answers unknown endpoints with 404 M_UNRECOGNIZED", async () => {
    const r = await call("GET", "/_matrix/client/v3/nonexistent");
    expect(r.status).toBe(404);
    expect(r.body.errcode).toBe("M_UNRECOGNIZED");
  });
  it("answers unknown endpoints under authenticated prefixes with 404, not 401", async () => {
    const r = await call("POST", "/_matrix/client/v3/account/3pid/add", { body: {} });
    expect(r.status).toBe(404);
    expect(r.body.errcode).toBe("M_UNRECOGNIZED");
  });
  it("answers a known endpoint with the wrong method with 405 M_UNRECOGNIZED", async () => {
    const r = await call("DELETE", "/_matrix/client/v3/login");
    expect(r.status).toBe(405);
    expect(r.body.errcode).toBe("M_UNRECOGNIZED");
    const p = await call("PATCH", "/_matrix/client/v3/devices/ABC");
    expect(p.status).toBe(405);
  });
  it("serves capabilities with room versions, default 12", async () => {
    const u = await registerUser();
    const r = await call("GET", "/_matrix/client/v3/capabilities", { token: u.accessToken });
    expect(r.status).toBe(200);
    expect(r.body.capabilities["m.room_versions"].default).toBe("12");
    expect(r.body.capabilities["m.room_versions"].available["12"]).toBe("stable");
    expect(r.body.capabilities["m.room_versions"].available["1"]).toBe("stable");
  });
  it("publishes a signed, persistent server key", async () => {
    const a = await call("GET", "/_matrix/key/v2/server");
    const b = await call("GET", "/_matrix/key/v2/server");
    expect(a.status).toBe(200);
    expect(a.body.server_name).toBe(SERVER);
    const ids = Object.keys(a.body.verify_keys);
    expect(ids).toHaveLength(1);
    expect(ids[0]).toMatch(/^ed25519:[A-Za-z0-9_]+$/);
    expect(Object.keys(b.body.verify_keys)).toEqual(ids);
    expect(a.body.signatures[SERVER][ids[0]]).toMatch(/^[A-Za-z0-9+/]{86}$/);
    const { verifyJsonSignature } = await import("../../src/core/signing");
    expect(await verifyJsonSignature(a.body, SERVER, ids[0], a.body.verify_keys[ids[0]].key)).toBe(true);
  });
});

describe("registration", () => {
  it("runs the UIA dance with m.login.dummy and logs in", async () => {
    const username = uniqueName("reg");
    const first = await call("POST", "/_matrix/client/v3/register", { body: { username, password: "pw-123456" } });
    expect(first.status).toBe(401);
    expect(first.body.flows).toEqual([{ stages: ["m.login.dummy"] }]);
    expect(typeof first.body.session).toBe("string");
    const done = await call("POST", "/_matrix/client/v3/register", {
      body: { username, password: "pw-123456", auth: { type: "m.login.dummy", session: first.body.session }, initial_device_display_name: "Phone" },
    });
    expect(done.status).toBe(200);
    expect(done.body.user_id).toBe(`@${username}:${SERVER}`);
    expect(done.body.access_token).toMatch(/^lat_/);
    const who = await call("GET", "/_matrix/client/v3/account/whoami", { token: done.body.access_token });
    expect(who.body).toEqual({ user_id: done.body.user_id, device_id: done.body.device_id, is_guest: false });
  });
  it("rejects taken and invalid usernames before UIA", async () => {
    const u = await registerUser();
    const local = u.userId.slice(1).split(":")[0];
    const taken = await call("POST", "/_matrix/client/v3/register", { body: { username: local, password: "x" } });
    expect(taken.status).toBe(400);
    expect(taken.body.errcode).toBe("M_USER_IN_USE");
    const bad = await call("POST", "/_matrix/client/v3/register", { body: { username: "Bad Name!", password: "x" } });
    expect(bad.body.errcode).toBe("M_INVALID_USERNAME");
    const long = await call("POST", "/_matrix/client/v3/register", { body: { username: "a".repeat(250), password: "x" } });
    expect(long.body.errcode).toBe("M_INVALID_USERNAME");
  });
  it("checks availability", async () => {
    const u = await registerUser();
    const local = u.userId.slice(1).split(":")[0];
    expect((await call("GET", `/_matrix/client/v3/register/available?username=${local}`)).body.errcode).toBe("M_USER_IN_USE");
    expect((await call("GET", `/_matrix/client/v3/register/available?username=${uniqueName()}`)).body).toEqual({ available: true });
    expect((await call("GET", `/_matrix/client/v3/register/available?username=%40%40`)).body.errcode).toBe("M_INVALID_USERNAME");
  });
  it("refuses guests clearly", async () => {
    const r = await call("POST", "/_matrix/client/v3/register?kind=guest", { body: {} });
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe("M_GUEST_ACCESS_FORBIDDEN");
  });
  it("honours inhibit_login", async () => {
    const username = uniqueName();
    const first = await call("POST", "/_matrix/client/v3/register", { body: { username, password: "p" } });
    const r = await call("POST", "/_matrix/client/v3/register", {
      body: { username, password: "p", inhibit_login: true, auth: { type: "m.login.dummy", session: first.body.session } },
    });
    expect(r.status).toBe(200);
    expect(r.body.access_token).toBeUndefined();
  });
  it("rejects unknown UIA sessions and unoffered stages", async () => {
    const r = await call("POST", "/_matrix/client/v3/register", {
      body: { username: uniqueName(), password: "p", auth: { type: "m.login.dummy", session: "nope" } },
    });
    expect(r.status).toBe(400);
    const first = await call("POST", "/_matrix/client/v3/register", { body: { username: uniqueName(), password: "p" } });
    const r2 = await call("POST", "/_matrix/client/v3/register", {
      body: { username: uniqueName(), password: "p", auth: { type: "m.login.password", session: first.body.session } },
    });
    expect(r2.status).toBe(401);
    expect(r2.body.errcode).toBe("M_UNRECOGNIZED");
  });
  it("answers bad bodies with M_NOT_JSON / M_BAD_JSON", async () => {
    const notJson = await call("POST", "/_matrix/client/v3/register", { rawBody: "{nope", headers: { "content-type": "application/json" } });
    expect(notJson.status).toBe(400);
    expect(notJson.body.errcode).toBe("M_NOT_JSON");
    const wrongType = await call("POST", "/_matrix/client/v3/register", { body: { username: 42 } });
    expect(wrongType.body.errcode).toBe("M_BAD_JSON");
    const array = await call("POST", "/_matrix/client/v3/register", { body: [1, 2] });
    expect(array.body.errcode).toBe("M_BAD_JSON");
    const huge = await call("POST", "/_matrix/client/v3/register", { rawBody: JSON.stringify({ username: "a".repeat(2_000_000) }) });
    expect(huge.status).toBe(413);
    expect(huge.body.errcode).toBe("M_TOO_LARGE");
  });
});

describe("login", () => {
  it("lists the password flow (and the appservice one)", async () => {
    const r = await call("GET", "/_matrix/client/v3/login");
    expect(r.body.flows).toEqual([{ type: "m.login.password" }, { type: "m.login.token", get_login_token: true }, { type: "m.login.application_service" }]);
  });
  it("logs in with localpart, full MXID and the legacy user field", async () => {
    const u = await registerUser();
    const local = u.userId.slice(1).split(":")[0];
    for (const body of [
      { type: "m.login.password", identifier: { type: "m.id.user", user: local }, password: u.password },
      { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
      { type: "m.login.password", user: local, password: u.password },
    ]) {
      const r = await call("POST", "/_matrix/client/v3/login", { body });
      expect(r.status).toBe(200);
      expect(r.body.user_id).toBe(u.userId);
      expect(r.body.device_id).toBeTruthy();
    }
  });
  it("rejects wrong passwords and unknown users alike", async () => {
    const u = await registerUser();
    const wrong = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: "wrong" },
    });
    expect(wrong.status).toBe(403);
    expect(wrong.body.errcode).toBe("M_FORBIDDEN");
    const unknown = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: "nobody-here" }, password: "wrong" },
    });
    expect(unknown.body).toEqual(wrong.body);
    const badType = await call("POST", "/_matrix/client/v3/login", { body: { type: "m.login.foo" } });
    expect(badType.status).toBe(400);
  });
  it("reuses a given device_id and replaces its old token", async () => {
    const u = await registerUser();
    const r = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, device_id: u.deviceId },
    });
    expect(r.body.device_id).toBe(u.deviceId);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(401);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: r.body.access_token })).status).toBe(200);
  });
  it("issues refresh tokens that work once", async () => {
    const u = await registerUser();
    const r = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, refresh_token: true },
    });
    expect(r.body.refresh_token).toMatch(/^latr_/);
    expect(r.body.expires_in_ms).toBeGreaterThan(0);
    const refreshed = await call("POST", "/_matrix/client/v3/refresh", { body: { refresh_token: r.body.refresh_token } });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.access_token).not.toBe(r.body.access_token);
    // The old access token died with its refresh token; the old refresh token is spent.
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: r.body.access_token })).status).toBe(401);
    const again = await call("POST", "/_matrix/client/v3/refresh", { body: { refresh_token: r.body.refresh_token } });
    expect(again.status).toBe(401);
    expect(again.body.errcode).toBe("M_UNKNOWN_TOKEN");
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: refreshed.body.access_token })).status).toBe(200);
  });
  it("reports expired tokens as soft logout", async () => {
    const u = await registerUser();
    const r = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, refresh_token: true },
    });
    const { env } = await import("cloudflare:test");
    await env.DB.prepare("UPDATE access_tokens SET expires_ts = 1 WHERE user_id = ? AND expires_ts IS NOT NULL").bind(u.userId).run();
    const who = await call("GET", "/_matrix/client/v3/account/whoami", { token: r.body.access_token });
    expect(who.status).toBe(401);
    expect(who.body).toMatchObject({ errcode: "M_UNKNOWN_TOKEN", soft_logout: true });
  });
  it("stores tokens only as hashes", async () => {
    const u = await registerUser();
    const { env } = await import("cloudflare:test");
    const row = await env.DB.prepare("SELECT token_hash FROM access_tokens WHERE user_id = ?").bind(u.userId).first<{ token_hash: string }>();
    expect(row!.token_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(row!.token_hash).not.toContain(u.accessToken);
    const pw = await env.DB.prepare("SELECT password_hash FROM users WHERE user_id = ?").bind(u.userId).first<{ password_hash: string }>();
    expect(pw!.password_hash).toMatch(/^pbkdf2-sha512\$100000\$/);
  });
  it("accepts the token as a query parameter, and on /r0", async () => {
    const u = await registerUser();
    const r = await call("GET", `/_matrix/client/r0/account/whoami?access_token=${u.accessToken}`);
    expect(r.status).toBe(200);
    expect(r.body.user_id).toBe(u.userId);
  });
  it("distinguishes missing and unknown tokens", async () => {
    const missing = await call("GET", "/_matrix/client/v3/account/whoami");
    expect(missing.status).toBe(401);
    expect(missing.body.errcode).toBe("M_MISSING_TOKEN");
    const unknown = await call("GET", "/_matrix/client/v3/account/whoami", { token: "lat_bogus" });
    expect(unknown.body).toMatchObject({ errcode: "M_UNKNOWN_TOKEN", soft_logout: false });
  });
  it("logs out one device, or all", async () => {
    const u = await registerUser();
    const second = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
    });
    expect((await call("POST", "/_matrix/client/v3/logout", { token: u.accessToken })).status).toBe(200);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(401);
    const devs = await call("GET", "/_matrix/client/v3/devices", { token: second.body.access_token });
    expect(devs.body.devices.map((d: any) => d.device_id)).toEqual([second.body.device_id]);
    const third = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
    });
    expect((await call("POST", "/_matrix/client/v3/logout/all", { token: third.body.access_token })).status).toBe(200);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: second.body.access_token })).status).toBe(401);
  });
});

describe("devices", () => {
  it("lists, renames and deletes devices with UIA", async () => {
    const u = await registerUser();
    const other = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, initial_device_display_name: "Laptop" },
    });
    const list = await call("GET", "/_matrix/client/v3/devices", { token: u.accessToken });
    expect(list.body.devices).toHaveLength(2);
    const one = await call("GET", `/_matrix/client/v3/devices/${other.body.device_id}`, { token: u.accessToken });
    expect(one.body.display_name).toBe("Laptop");
    expect((await call("PUT", `/_matrix/client/v3/devices/${other.body.device_id}`, { token: u.accessToken, body: { display_name: "Desk" } })).status).toBe(200);
    expect((await call("GET", `/_matrix/client/v3/devices/${other.body.device_id}`, { token: u.accessToken })).body.display_name).toBe("Desk");
    expect((await call("GET", "/_matrix/client/v3/devices/NOPE", { token: u.accessToken })).status).toBe(404);
    expect((await call("PUT", "/_matrix/client/v3/devices/NOPE", { token: u.accessToken, body: {} })).status).toBe(404);

    const challenge = await call("DELETE", `/_matrix/client/v3/devices/${other.body.device_id}`, { token: u.accessToken, body: {} });
    expect(challenge.status).toBe(401);
    expect(challenge.body.flows).toEqual([{ stages: ["m.login.password"] }]);
    const wrong = await call("DELETE", `/_matrix/client/v3/devices/${other.body.device_id}`, {
      token: u.accessToken,
      body: { auth: { type: "m.login.password", session: challenge.body.session, identifier: { type: "m.id.user", user: u.userId }, password: "nope" } },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.errcode).toBe("M_FORBIDDEN");
    const ok = await call("DELETE", `/_matrix/client/v3/devices/${other.body.device_id}`, {
      token: u.accessToken,
      body: { auth: { type: "m.login.password", session: challenge.body.session, identifier: { type: "m.id.user", user: u.userId }, password: u.password } },
    });
    expect(ok.status).toBe(200);
    // Deleting a device revokes its tokens.
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: other.body.access_token })).status).toBe(401);
  });
  it("does not let a UIA session for one request authorise another", async () => {
    const u = await registerUser();
    const a = await call("POST", "/_matrix/client/v3/delete_devices", { token: u.accessToken, body: { devices: ["A"] } });
    const r = await call("POST", "/_matrix/client/v3/delete_devices", {
      token: u.accessToken,
      body: { devices: [u.deviceId], auth: { type: "m.login.password", session: a.body.session, user: u.userId, password: u.password } },
    });
    expect(r.status).toBe(403);
  });
  it("bulk-deletes devices", async () => {
    const u = await registerUser();
    const other = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
    });
    const first = await call("POST", "/_matrix/client/v3/delete_devices", { token: u.accessToken, body: { devices: [other.body.device_id, "GHOST"] } });
    const r = await call("POST", "/_matrix/client/v3/delete_devices", {
      token: u.accessToken,
      body: { devices: [other.body.device_id, "GHOST"], auth: { type: "m.login.password", session: first.body.session, identifier: { type: "m.id.user", user: u.userId }, password: u.password } },
    });
    expect(r.status).toBe(200);
    expect((await call("GET", "/_matrix/client/v3/devices", { token: u.accessToken })).body.devices).toHaveLength(1);
  });
});

describe("account", () => {
  const pwAuth = (u: { userId: string }, session: string, password: string) => ({
    type: "m.login.password",
    session,
    identifier: { type: "m.id.user", user: u.userId },
    password,
  });
  const enc = encodeURIComponent;
  /** POST /account/deactivate through its password UIA. */
  const deactivate = async (u: TestUser, erase = false) => {
    const c1 = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: {} });
    const r = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: { auth: pwAuth(u, c1.body.session, u.password), erase } });
    expect(r.status).toBe(200);
  };
  /** The user's sync hub (durable-objects/user.ts), where account data and thread subscriptions live. */
  const hubOf = async (userId: string) => {
    const { env } = await import("cloudflare:test");
    const { userStub } = await import("../../src/rpc/stubs");
    return userStub(env, userId, {});
  };
  it("changes the password and logs out other devices", async () => {
    const u = await registerUser();
    const other = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
    });
    const c1 = await call("POST", "/_matrix/client/v3/account/password", { token: u.accessToken, body: { new_password: "new-pass-1" } });
    expect(c1.status).toBe(401);
    const r = await call("POST", "/_matrix/client/v3/account/password", {
      token: u.accessToken,
      body: { new_password: "new-pass-1", auth: pwAuth(u, c1.body.session, u.password) },
    });
    expect(r.status).toBe(200);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: other.body.access_token })).status).toBe(401);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(200);
    const login = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: "new-pass-1" },
    });
    expect(login.status).toBe(200);
  });
  it("deactivates: tokens die, login refused, ID stays reserved", async () => {
    const u = await registerUser();
    const c1 = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: {} });
    const r = await call("POST", "/_matrix/client/v3/account/deactivate", {
      token: u.accessToken,
      body: { auth: pwAuth(u, c1.body.session, u.password), erase: true },
    });
    expect(r.status).toBe(200);
    expect(r.body.id_server_unbind_result).toBe("no-support");
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(401);
    const login = await call("POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
    });
    expect(login.status).toBe(403);
    const local = u.userId.slice(1).split(":")[0];
    expect((await call("GET", `/_matrix/client/v3/register/available?username=${local}`)).body.errcode).toBe("M_USER_IN_USE");
  });
  it("deactivation parts the user from their rooms and declines their invites, as the admin API's does", async () => {
    const u = await registerUser();
    const owner = await registerUser();
    const joined = await createRoom(owner);
    await joinRoom(u, joined);
    const invitedTo = await createRoom(owner, { preset: "private_chat", invite: [u.userId] });
    const c1 = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: {} });
    const r = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: { auth: pwAuth(u, c1.body.session, u.password) } });
    expect(r.status).toBe(200);
    for (const roomId of [joined, invitedTo]) {
      const m = await call("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.member/${encodeURIComponent(u.userId)}`, { token: owner.accessToken });
      expect(m.body.membership).toBe("leave");
    }
  });
  it("deactivation drops the user's thread subscriptions (MSC4306)", async () => {
    const u = await registerUser();
    const owner = await registerUser();
    const roomId = await createRoom(owner);
    await joinRoom(u, roomId);
    const root = await sendText(owner, roomId, "thread root");
    const hub = await hubOf(u.userId);
    expect(await hub.subscribeThread(u.userId, roomId, root, undefined)).toBe("ok");
    await deactivate(u);
    expect(await hub.getThreadSubscription(u.userId, roomId, root)).toBeNull();
  });
  it("deactivation purges the user's account data and push rules (as Synapse does)", async () => {
    const u = await registerUser();
    const roomId = await createRoom(u);
    await clientOk(u.accessToken, "PUT", `/user/${enc(u.userId)}/account_data/org.example.secret`, { s: 1 });
    await clientOk(u.accessToken, "PUT", `/user/${enc(u.userId)}/rooms/${enc(roomId)}/account_data/org.example.secret`, { s: 2 });
    await clientOk(u.accessToken, "PUT", `/pushrules/global/content/mine`, { pattern: "secret", actions: ["notify"] });
    await deactivate(u);
    const hub = await hubOf(u.userId);
    expect(await hub.getAccountData(null, "org.example.secret")).toBeNull();
    expect(await hub.getAccountData(roomId, "org.example.secret")).toBeNull();
    expect((await hub.getPushRules(u.userId)).content.some((r) => r.rule_id === "mine")).toBe(false);
  });
  it("deactivation deletes the user's server-side key backup (as Synapse does)", async () => {
    const u = await registerUser();
    const v = await call("POST", "/_matrix/client/v3/room_keys/version", { token: u.accessToken, body: { algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", auth_data: { public_key: "abc" } } });
    const session = { first_message_index: 0, forwarded_count: 0, is_verified: true, session_data: { ephemeral: "e", ciphertext: "c", mac: "m" } };
    expect((await call("PUT", `/_matrix/client/v3/room_keys/keys/${enc("!r:test.local")}/s1?version=${v.body.version}`, { token: u.accessToken, body: session })).status).toBe(200);
    await deactivate(u);
    const { env } = await import("cloudflare:test");
    expect(await env.DB.prepare("SELECT count(*) AS n FROM key_backup_keys WHERE user_id = ?").bind(u.userId).first("n")).toBe(0);
    // Versions are marked deleted, as DELETE /room_keys/version does, so numbers are never reused.
    expect(await env.DB.prepare("SELECT count(*) AS n FROM key_backup_versions WHERE user_id = ? AND deleted = 0").bind(u.userId).first("n")).toBe(0);
  });
  it("deactivation deletes the user's dehydrated device (MSC3814) with its data", async () => {
    const u = await registerUser();
    const { makeDeviceKeys } = await import("./e2ee-helpers");
    const { signJson } = await import("../../src/core/signing");
    const dev = await makeDeviceKeys(u.userId, "DEHYDRATED1");
    const put = await call("PUT", "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", {
      token: u.accessToken,
      body: {
        device_id: "DEHYDRATED1",
        device_data: { algorithm: "org.matrix.msc3814.v1.olm", device_pickle: "opaque" },
        device_keys: await signJson({ ...dev.deviceKeys, dehydrated: true, signatures: undefined }, u.userId, dev.ed),
      },
    });
    expect(put.status).toBe(200);
    await deactivate(u);
    const { env } = await import("cloudflare:test");
    expect(await env.DB.prepare("SELECT count(*) AS n FROM dehydrated_devices WHERE user_id = ?").bind(u.userId).first("n")).toBe(0);
  });
  it("erasure deletes the extended profile fields with the displayname and avatar; plain deactivation keeps them", async () => {
    const { env } = await import("cloudflare:test");
    const fields = (userId: string) => env.DB.prepare("SELECT count(*) AS n FROM profile_fields WHERE user_id = ?").bind(userId).first("n");
    const [kept, erased] = [await registerUser(), await registerUser()];
    for (const u of [kept, erased]) {
      expect((await call("PUT", `/_matrix/client/v3/profile/${enc(u.userId)}/m.tz`, { token: u.accessToken, body: { "m.tz": "Europe/Paris" } })).status).toBe(200);
    }
    await deactivate(kept);
    await deactivate(erased, true);
    expect(await fields(kept.userId)).toBe(1);
    expect(await fields(erased.userId)).toBe(0);
  });
  it("deactivation deletes pushers that belong to no device (an appservice's, set without device_id)", async () => {
    const { addAppservice, serverAdmin } = await import("./appservice-helpers");
    const { as, registerGhost } = await addAppservice();
    const ghost = await registerGhost("pushed");
    const set = await as("POST", `/_matrix/client/v3/pushers/set?user_id=${enc(ghost)}`, {
      kind: "http",
      app_id: "org.example.app",
      pushkey: "pk-ghost",
      app_display_name: "Example",
      device_display_name: "Bridge",
      lang: "en",
      data: { url: "https://push.example.org/_matrix/push/v1/notify" },
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    const r = await call("POST", `/_synapse/admin/v1/deactivate/${enc(ghost)}`, { token: (await serverAdmin()).accessToken, body: {} });
    expect(r.status).toBe(200);
    const { env } = await import("cloudflare:test");
    expect(await env.DB.prepare("SELECT count(*) AS n FROM pushers WHERE user_id = ?").bind(ghost).first("n")).toBe(0);
  });
  it("deactivation ends the user's browser sessions on the OAuth pages: a re-activated account does not revive them", async () => {
    const { Browser, field } = await import("./oauth-helpers");
    const { serverAdmin } = await import("./appservice-helpers");
    const u = await registerUser();
    const b = new Browser();
    const page = await b.fetch("/_lattice/oauth/account");
    const login = await b.fetch("/_lattice/oauth/account/login", { form: { csrf: field(page.html, "csrf"), username: u.userId, password: u.password } });
    expect(login.status).toBe(303);
    expect((await b.fetch("/_lattice/oauth/account")).html).not.toContain('action="/_lattice/oauth/account/login"');
    await deactivate(u);
    const back = await call("PUT", `/_synapse/admin/v2/users/${enc(u.userId)}`, { token: (await serverAdmin()).accessToken, body: { deactivated: false, password: "a fresh password" } });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect((await b.fetch("/_lattice/oauth/account")).html).toContain('action="/_lattice/oauth/account/login"');
  });
  it("lists no third-party identifiers", async () => {
    const u = await registerUser();
    expect((await call("GET", "/_matrix/client/v3/account/3pid", { token: u.accessToken })).body).toEqual({ threepids: [] });
  });
});

describe("profile", () => {
  it("gets and sets displayname and avatar", async () => {
    const u = await registerUser();
    const enc = encodeURIComponent(u.userId);
    const initial = await call("GET", `/_matrix/client/v3/profile/${enc}`);
    expect(initial.body.displayname).toBe(u.userId.slice(1).split(":")[0]);
    expect((await call("PUT", `/_matrix/client/v3/profile/${enc}/displayname`, { token: u.accessToken, body: { displayname: "Alice" } })).status).toBe(200);
    expect((await call("PUT", `/_matrix/client/v3/profile/${enc}/avatar_url`, { token: u.accessToken, body: { avatar_url: "mxc://test.local/abc" } })).status).toBe(200);
    expect((await call("GET", `/_matrix/client/v3/profile/${enc}`)).body).toEqual({ displayname: "Alice", avatar_url: "mxc://test.local/abc" });
    expect((await call("GET", `/_matrix/client/v3/profile/${enc}/displayname`)).body).toEqual({ displayname: "Alice" });
  });
  it("refuses to set another user's profile, and bad values", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const r = await call("PUT", `/_matrix/client/v3/profile/${encodeURIComponent(b.userId)}/displayname`, { token: a.accessToken, body: { displayname: "x" } });
    expect(r.status).toBe(403);
    const bad = await call("PUT", `/_matrix/client/v3/profile/${encodeURIComponent(a.userId)}/avatar_url`, { token: a.accessToken, body: { avatar_url: "http://evil" } });
    expect(bad.body.errcode).toBe("M_BAD_JSON");
    const wrongType = await call("PUT", `/_matrix/client/v3/profile/${encodeURIComponent(a.userId)}/displayname`, { token: a.accessToken, body: { displayname: 5 } });
    expect(wrongType.body.errcode).toBe("M_BAD_JSON");
  });
  it("404s unknown users", async () => {
    const r = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent("@ghost:test.local")}`);
    expect(r.status).toBe(404);
    expect(r.body.errcode).toBe("M_NOT_FOUND");
  });
});

describe("shared-secret admin registration", () => {
  it("creates an admin with a valid HMAC, once per nonce", async () => {
    const { sharedSecretMac } = await import("../../src/api/admin/admin");
    const n = await call("GET", "/_synapse/admin/v1/register");
    const username = uniqueName("admin");
    const mac = await sharedSecretMac("test-shared-secret", n.body.nonce, username, "pw", true);
    const r = await call("POST", "/_synapse/admin/v1/register", { body: { nonce: n.body.nonce, username, password: "pw", admin: true, mac } });
    expect(r.status).toBe(200);
    expect(r.body.user_id).toBe(`@${username}:${SERVER}`);
    const replay = await call("POST", "/_synapse/admin/v1/register", { body: { nonce: n.body.nonce, username: username + "x", password: "pw", admin: true, mac } });
    expect(replay.status).toBe(400);
    // Admin can mint registration tokens.
    const t = await call("POST", "/_synapse/admin/v1/registration_tokens/new", { token: r.body.access_token, body: { uses_allowed: 1 } });
    expect(t.status).toBe(200);
    expect(t.body.token).toHaveLength(16);
  });
  it("rejects a wrong HMAC", async () => {
    const n = await call("GET", "/_synapse/admin/v1/register");
    const r = await call("POST", "/_synapse/admin/v1/register", {
      body: { nonce: n.body.nonce, username: uniqueName(), password: "pw", mac: "0".repeat(40) },
    });
    expect(r.status).toBe(403);
  });
  it("keeps registration-token admin endpoints for admins only", async () => {
    const u = await registerUser();
    const r = await call("POST", "/_synapse/admin/v1/registration_tokens/new", { token: u.accessToken, body: {} });
    expect(r.status).toBe(403);
  });
});

describe("registration modes", () => {
  it("closed: registration refused with M_FORBIDDEN", async () => {
    const r = await withEnv({ REGISTRATION: "closed" }, "POST", "/_matrix/client/v3/register", { username: uniqueName(), password: "p" });
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe("M_FORBIDDEN");
  });
  it("token: needs a valid registration token, counts uses", async () => {
    const { sharedSecretMac } = await import("../../src/api/admin/admin");
    const n = await call("GET", "/_synapse/admin/v1/register");
    const adminName = uniqueName("adm");
    const mac = await sharedSecretMac("test-shared-secret", n.body.nonce, adminName, "pw", true);
    const adm = await call("POST", "/_synapse/admin/v1/register", { body: { nonce: n.body.nonce, username: adminName, password: "pw", admin: true, mac } });
    const t = await call("POST", "/_synapse/admin/v1/registration_tokens/new", { token: adm.body.access_token, body: { uses_allowed: 1 } });
    const token = t.body.token;

    const valid = await withEnv({ REGISTRATION: "token" }, "GET", `/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
    expect(valid.body).toEqual({ valid: true });
    const invalid = await withEnv({ REGISTRATION: "token" }, "GET", `/_matrix/client/v1/register/m.login.registration_token/validity?token=nope`);
    expect(invalid.body).toEqual({ valid: false });

    const username = uniqueName();
    const first = await withEnv({ REGISTRATION: "token" }, "POST", "/_matrix/client/v3/register", { username, password: "p" });
    expect(first.status).toBe(401);
    expect(first.body.flows).toEqual([{ stages: ["m.login.registration_token"] }]);
    const bad = await withEnv({ REGISTRATION: "token" }, "POST", "/_matrix/client/v3/register", {
      username, password: "p", auth: { type: "m.login.registration_token", token: "wrong", session: first.body.session },
    });
    expect(bad.status).toBe(401);
    expect(bad.body.errcode).toBe("M_FORBIDDEN");
    // m.login.dummy is not offered in token mode.
    const dummy = await withEnv({ REGISTRATION: "token" }, "POST", "/_matrix/client/v3/register", {
      username, password: "p", auth: { type: "m.login.dummy", session: first.body.session },
    });
    expect(dummy.status).toBe(401);
    const ok = await withEnv({ REGISTRATION: "token" }, "POST", "/_matrix/client/v3/register", {
      username, password: "p", auth: { type: "m.login.registration_token", token, session: first.body.session },
    });
    expect(ok.status).toBe(200);
    const used = await withEnv({ REGISTRATION: "token" }, "GET", `/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
    expect(used.body).toEqual({ valid: false });
  });
  it("invalid configuration gives a clear error", async () => {
    const r = await withEnv({ REGISTRATION: "sometimes" }, "GET", "/_matrix/client/versions");
    expect(r.status).toBe(500);
    expect(r.body.error).toMatch(/Invalid Lattice configuration: REGISTRATION/);
  });
  async function failedLogins(env: Record<string, string>, n: number, ip: (i: number) => string) {
    const { env: base, createExecutionContext, waitOnExecutionContext } = await import("cloudflare:test");
    const app = (await import("../../src/index")).default;
    let limited = 0;
    for (let i = 0; i < n; i++) {
      const ctx = createExecutionContext();
      const res = await app.fetch(
        new Request("http://test.local/_matrix/client/v3/login", {
          method: "POST",
          headers: { "content-type": "application/json", "cf-connecting-ip": ip(i) },
          body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: uniqueName("nobody") }, password: "x" }),
        }),
        { ...base, ...env },
        ctx,
      );
      await waitOnExecutionContext(ctx);
      if (res.status === 429) limited++;
    }
    return limited;
  }
  it("limits failed logins per client address (different accounts, one address)", async () => {
    expect(await failedLogins({ RATE_LIMITS: "on" }, 14, () => "198.51.100.7")).toBeGreaterThan(0);
  });
  it("with CLIENT_ADDRESS=none ignores a client-sent CF-Connecting-IP entirely", async () => {
    // Where nothing overwrites the header, trusting it would let a client pick its bucket; with
    // "none" the address is not used at all (no shared bucket for everyone), per-account limits stay.
    expect(await failedLogins({ RATE_LIMITS: "on", CLIENT_ADDRESS: "none" }, 14, () => "198.51.100.8")).toBe(0);
  });
  it("rate limits logins when enabled", async () => {
    const u = await registerUser();
    let limited: any;
    for (let i = 0; i < 12 && !limited; i++) {
      const r = await withEnv({ RATE_LIMITS: "on" }, "POST", "/_matrix/client/v3/login", {
        type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: "wrong",
      });
      if (r.status === 429) limited = r.body;
    }
    expect(limited).toMatchObject({ errcode: "M_LIMIT_EXCEEDED" });
    expect(limited.retry_after_ms).toBeGreaterThan(0);
  });
});

describe("OpenID", () => {
  it("issues a short-lived token that userinfo exchanges for the user ID", async () => {
    const u = await registerUser();
    const r = await call("POST", `/_matrix/client/v3/user/${encodeURIComponent(u.userId)}/openid/request_token`, { token: u.accessToken, body: {} });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ token_type: "Bearer", matrix_server_name: SERVER, expires_in: 3600 });
    // Authenticated by the OpenID token alone (no X-Matrix): third parties call it.
    const info = await call("GET", `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(r.body.access_token)}`);
    expect(info.status).toBe(200);
    expect(info.body).toEqual({ sub: u.userId });
    // The OpenID token is not an access token, and an access token is not an OpenID token.
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: r.body.access_token })).status).toBe(401);
    const wrong = await call("GET", `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(u.accessToken)}`);
    expect(wrong.status).toBe(401);
    expect(wrong.body.errcode).toBe("M_UNKNOWN_TOKEN");
    expect((await call("GET", "/_matrix/federation/v1/openid/userinfo")).status).toBe(401);
  });
  it("refuses tokens for another user and expired tokens", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const other = await call("POST", `/_matrix/client/v3/user/${encodeURIComponent(b.userId)}/openid/request_token`, { token: a.accessToken, body: {} });
    expect(other.status).toBe(403);
    const r = await call("POST", `/_matrix/client/v3/user/${encodeURIComponent(a.userId)}/openid/request_token`, { token: a.accessToken, body: {} });
    const { env } = await import("cloudflare:test");
    await env.DB.prepare("UPDATE openid_tokens SET expires_ts = 1 WHERE user_id = ?").bind(a.userId).run();
    expect((await call("GET", `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(r.body.access_token)}`)).status).toBe(401);
  });
});
