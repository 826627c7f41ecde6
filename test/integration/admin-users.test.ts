// Synapse-compatible user admin API and the spec's client admin endpoints (whois, suspend, lock).
import { describe, expect, it } from "vitest";
import { SERVER, call, clientOk, registerUser, syncOk, uniqueName } from "./helpers";
import { A, enc, registerAdmin, uploadMedia } from "./admin-helpers";

describe("admin API: access", () => {
  it("answers 403 M_FORBIDDEN to non-admins and 401 without a token on every user endpoint", async () => {
    const u = await registerUser();
    const id = enc(u.userId);
    const endpoints: [string, string, unknown?][] = [
      ["GET", "/v1/server_version"],
      ["GET", "/v2/users"],
      ["GET", `/v2/users/${id}`],
      ["PUT", `/v2/users/${id}`, { displayname: "x" }],
      ["POST", `/v1/deactivate/${id}`, {}],
      ["POST", `/v1/reset_password/${id}`, { new_password: "x" }],
      ["GET", `/v1/users/${id}/admin`],
      ["PUT", `/v1/users/${id}/admin`, { admin: true }],
      ["GET", `/v2/users/${id}/devices`],
      ["DELETE", `/v2/users/${id}/devices/X`],
      ["POST", `/v2/users/${id}/delete_devices`, { devices: [] }],
      ["GET", `/v1/users/${id}/joined_rooms`],
      ["POST", `/v1/users/${id}/login`, {}],
      ["POST", `/v1/users/${id}/shadow_ban`],
      ["DELETE", `/v1/users/${id}/shadow_ban`],
      ["GET", `/v1/users/${id}/override_ratelimit`],
      ["POST", `/v1/users/${id}/override_ratelimit`, {}],
      ["DELETE", `/v1/users/${id}/override_ratelimit`],
    ];
    for (const [method, path, body] of endpoints) {
      const r = await call(method, `${A}${path}`, { token: u.accessToken, body });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.body.errcode, `${method} ${path}`).toBe("M_FORBIDDEN");
      const anon = await call(method, `${A}${path}`, { body });
      expect(anon.status, `${method} ${path} (no token)`).toBe(401);
    }
    for (const p of [`/_matrix/client/v1/admin/suspend/${id}`, `/_matrix/client/v1/admin/lock/${id}`]) {
      expect((await call("GET", p, { token: u.accessToken })).body.errcode).toBe("M_FORBIDDEN");
      expect((await call("PUT", p, { token: u.accessToken, body: { suspended: true, locked: true } })).body.errcode).toBe("M_FORBIDDEN");
    }
  });
});

describe("admin API: users", () => {
  it("server_version", async () => {
    const admin = await registerAdmin();
    const r = await call("GET", `${A}/v1/server_version`, { token: admin.accessToken });
    expect(r.status).toBe(200);
    expect(r.body.server_version).toMatch(/^Lattice /);
  });

  it("lists users with filters, ordering, total and next_token", async () => {
    const admin = await registerAdmin();
    const tag = uniqueName("lst");
    const users = [];
    for (let i = 0; i < 3; i++) users.push(await registerUser(`${tag}u${i}`));
    const page1 = await call("GET", `${A}/v2/users?name=${tag}&limit=2`, { token: admin.accessToken });
    expect(page1.status).toBe(200);
    expect(page1.body.total).toBe(3);
    expect(page1.body.users.map((x: any) => x.name)).toEqual([users[0].userId, users[1].userId]);
    expect(page1.body.next_token).toBe("2");
    const u0 = page1.body.users[0];
    expect(u0).toMatchObject({ is_guest: 0, admin: 0, deactivated: 0, shadow_banned: false, displayname: `${tag}u0`, locked: false });
    expect(typeof u0.creation_ts).toBe("number");
    const page2 = await call("GET", `${A}/v2/users?name=${tag}&limit=2&from=${page1.body.next_token}`, { token: admin.accessToken });
    expect(page2.body.users.map((x: any) => x.name)).toEqual([users[2].userId]);
    expect(page2.body.next_token).toBeUndefined();
    const back = await call("GET", `${A}/v2/users?name=${tag}&dir=b`, { token: admin.accessToken });
    expect(back.body.users[0].name).toBe(users[2].userId);
    // Deactivated users are hidden unless asked for; admins filter.
    await call("POST", `${A}/v1/deactivate/${enc(users[1].userId)}`, { token: admin.accessToken, body: {} });
    expect((await call("GET", `${A}/v2/users?name=${tag}`, { token: admin.accessToken })).body.total).toBe(2);
    expect((await call("GET", `${A}/v2/users?name=${tag}&deactivated=true`, { token: admin.accessToken })).body.total).toBe(3);
    // Locked accounts are left out unless locked=true (Synapse's default).
    await call("PUT", `/_matrix/client/v1/admin/lock/${enc(users[0].userId)}`, { token: admin.accessToken, body: { locked: true } });
    expect((await call("GET", `${A}/v2/users?name=${tag}`, { token: admin.accessToken })).body.total).toBe(1);
    expect((await call("GET", `${A}/v2/users?name=${tag}&locked=true`, { token: admin.accessToken })).body.total).toBe(2);
    const admins = await call("GET", `${A}/v2/users?admins=true&limit=1000`, { token: admin.accessToken });
    expect(admins.body.users.every((x: any) => x.admin === 1)).toBe(true);
    expect(admins.body.users.some((x: any) => x.name === admin.userId)).toBe(true);
  });

  it("refuses bad list parameters with M_INVALID_PARAM and caps huge pages", async () => {
    const admin = await registerAdmin();
    for (const q of ["limit=-1", "limit=abc", "from=x", "order_by=password_hash", "dir=up", "guests=maybe"]) {
      const r = await call("GET", `${A}/v2/users?${q}`, { token: admin.accessToken });
      expect(r.status, q).toBe(400);
      expect(r.body.errcode, q).toBe("M_INVALID_PARAM");
    }
    // limit=0 (a count): no next_token, or tools paging by it would never advance.
    const count = await call("GET", `${A}/v2/users?limit=0`, { token: admin.accessToken });
    expect(count.body.users).toEqual([]);
    expect(count.body.total).toBeGreaterThan(0);
    expect(count.body.next_token).toBeUndefined();
    const huge = await call("GET", `${A}/v2/users?limit=100000000000`, { token: admin.accessToken });
    expect(huge.status).toBe(200);
    expect(huge.body.users.length).toBeLessThanOrEqual(1000);
  });

  it("creates (201) and modifies (200) users with PUT v2, and queries them", async () => {
    const admin = await registerAdmin();
    const userId = `@${uniqueName("made")}:${SERVER}`;
    const created = await call("PUT", `${A}/v2/users/${enc(userId)}`, { token: admin.accessToken, body: { password: "pw one", displayname: "Made", admin: false } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: userId, displayname: "Made", admin: 0, deactivated: 0, threepids: [], external_ids: [] });
    const login = await call("POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password: "pw one" } });
    expect(login.status).toBe(200);
    const modified = await call("PUT", `${A}/v2/users/${enc(userId)}`, { token: admin.accessToken, body: { displayname: "Renamed", admin: true, password: "pw two" } });
    expect(modified.status).toBe(200);
    expect(modified.body).toMatchObject({ displayname: "Renamed", admin: 1 });
    // The password change logged the old session out.
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: login.body.access_token })).status).toBe(401);
    const q = await call("GET", `${A}/v2/users/${enc(userId)}`, { token: admin.accessToken });
    expect(q.body).toMatchObject({ name: userId, displayname: "Renamed", admin: 1 });
    // Deactivate through PUT, and re-activation needs a password.
    expect((await call("PUT", `${A}/v2/users/${enc(userId)}`, { token: admin.accessToken, body: { deactivated: true } })).body.deactivated).toBe(1);
    const noPw = await call("PUT", `${A}/v2/users/${enc(userId)}`, { token: admin.accessToken, body: { deactivated: false } });
    expect(noPw.status).toBe(400);
    const react = await call("PUT", `${A}/v2/users/${enc(userId)}`, { token: admin.accessToken, body: { deactivated: false, password: "pw three" } });
    expect(react.body.deactivated).toBe(0);
  });

  it("answers bad input: unknown and remote users, wrong types, invalid localparts", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    expect((await call("GET", `${A}/v2/users/${enc(`@nobody-${uniqueName()}:${SERVER}`)}`, { token: t })).body.errcode).toBe("M_NOT_FOUND");
    const remote = await call("GET", `${A}/v2/users/${enc("@x:elsewhere.example")}`, { token: t });
    expect(remote.status).toBe(400);
    expect((await call("GET", `${A}/v2/users/not-a-user-id`, { token: t })).status).toBe(400);
    const wrong = await call("PUT", `${A}/v2/users/${enc(`@${uniqueName()}:${SERVER}`)}`, { token: t, body: { admin: "yes" } });
    expect(wrong.status).toBe(400);
    expect(wrong.body.errcode).toBe("M_BAD_JSON");
    const badName = await call("PUT", `${A}/v2/users/${enc(`@UPPER:${SERVER}`)}`, { token: t, body: {} });
    expect(badName.status).toBe(400);
    expect((await call("POST", `${A}/v1/deactivate/${enc(`@nobody-${uniqueName()}:${SERVER}`)}`, { token: t, body: {} })).status).toBe(404);
    expect((await call("POST", `${A}/v1/reset_password/${enc(admin.userId)}`, { token: t, body: { new_password: 5 } })).body.errcode).toBe("M_BAD_JSON");
    expect((await call("PUT", `${A}/v1/users/${enc(admin.userId)}/admin`, { token: t, body: { admin: false } })).status).toBe(400);
  });

  it("deactivate with erase removes the profile, the uploaded media and room memberships", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const mediaId = await uploadMedia(u.accessToken);
    await clientOk(u.accessToken, "PUT", `/profile/${enc(u.userId)}/avatar_url`, { avatar_url: `mxc://${SERVER}/${mediaId}` });
    await clientOk(u.accessToken, "PUT", `/profile/${enc(u.userId)}/displayname`, { displayname: "Erase Me" });
    const other = await registerUser();
    const { room_id } = await clientOk(other.accessToken, "POST", "/createRoom", { preset: "public_chat" });
    await clientOk(u.accessToken, "POST", `/join/${enc(room_id)}`, {});
    const said = await clientOk(u.accessToken, "PUT", `/rooms/${enc(room_id)}/send/m.room.message/e1`, { msgtype: "m.text", body: "personal data" });
    const r = await call("POST", `${A}/v1/deactivate/${enc(u.userId)}`, { token: admin.accessToken, body: { erase: true } });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ id_server_unbind_result: "success" });
    const details = await call("GET", `${A}/v2/users/${enc(u.userId)}`, { token: admin.accessToken });
    expect(details.body).toMatchObject({ deactivated: 1, erased: true, displayname: null, avatar_url: null });
    // Tokens are gone, the media is gone, the user left the room.
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(401);
    const dl = await call("GET", `/_matrix/client/v1/media/download/${SERVER}/${mediaId}`, { token: other.accessToken });
    expect(dl.status).toBe(404);
    const member = await clientOk(other.accessToken, "GET", `/rooms/${enc(room_id)}/state/m.room.member/${enc(u.userId)}`);
    expect(member.membership).toBe("leave");
    expect(member.displayname).toBeUndefined();
    const profile = await call("GET", `/_matrix/client/v3/profile/${enc(u.userId)}`);
    expect(profile.body.displayname).toBeUndefined();
    // Erased: someone who joins later sees the message redacted.
    const late = await registerUser();
    await clientOk(late.accessToken, "POST", `/join/${enc(room_id)}`, {});
    const ev = await clientOk(late.accessToken, "GET", `/rooms/${enc(room_id)}/event/${enc(said.event_id)}`);
    expect(ev.content).toEqual({});
  });

  it("resets passwords, reads and sets the admin flag, lists devices and joined rooms, deletes devices", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    const u = await registerUser();
    const id = enc(u.userId);
    expect((await call("GET", `${A}/v1/users/${id}/admin`, { token: t })).body).toEqual({ admin: false });
    expect((await call("PUT", `${A}/v1/users/${id}/admin`, { token: t, body: { admin: true } })).status).toBe(200);
    expect((await call("GET", `${A}/v1/users/${id}/admin`, { token: t })).body).toEqual({ admin: true });
    const devs = await call("GET", `${A}/v2/users/${id}/devices`, { token: t });
    expect(devs.body.total).toBe(1);
    expect(devs.body.devices[0]).toMatchObject({ device_id: u.deviceId, user_id: u.userId });
    expect((await call("GET", `${A}/v2/users/${id}/devices/${u.deviceId}`, { token: t })).body.device_id).toBe(u.deviceId);
    const { room_id } = await clientOk(u.accessToken, "POST", "/createRoom", {});
    expect((await call("GET", `${A}/v1/users/${id}/joined_rooms`, { token: t })).body).toEqual({ joined_rooms: [room_id], total: 1 });
    const w = await call("GET", `${A}/v1/whois/${id}`, { token: t });
    expect(w.body.user_id).toBe(u.userId);
    expect(Object.keys(w.body.devices)).toEqual([u.deviceId]);
    expect((await call("DELETE", `${A}/v2/users/${id}/devices/${u.deviceId}`, { token: t })).status).toBe(200);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(401);
    const reset = await call("POST", `${A}/v1/reset_password/${id}`, { token: t, body: { new_password: "brand new" } });
    expect(reset.status).toBe(200);
    const login = await call("POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: "brand new" } });
    expect(login.status).toBe(200);
  });

  it("device deletion announces the device-list change to users who share a room", async () => {
    // Spec "Device management"/"Tracking the device list for a user": users sharing a room see
    // the owner in device_lists.changed, as when the user deletes the device itself.
    const admin = await registerAdmin();
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const { room_id } = await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" });
    await clientOk(bob.accessToken, "POST", `/join/${enc(room_id)}`, {});
    const second = await call("POST", "/_matrix/client/v3/login", { body: { type: "m.login.password", identifier: { type: "m.id.user", user: bob.userId }, password: bob.password } });
    expect(second.status).toBe(200);
    let since = (await syncOk(alice, { timeout: 0 })).next_batch;
    const requests: [string, string, unknown?][] = [
      ["DELETE", `/v2/users/${enc(bob.userId)}/devices/${bob.deviceId}`],
      ["POST", `/v2/users/${enc(bob.userId)}/delete_devices`, { devices: [second.body.device_id] }],
    ];
    for (const [method, path, body] of requests) {
      expect((await call(method, `${A}${path}`, { token: admin.accessToken, body })).status, path).toBe(200);
      const next = await syncOk(alice, { since, timeout: 0 });
      expect(next.device_lists?.changed ?? [], `${method} ${path}`).toContain(bob.userId);
      since = next.next_batch;
    }
  });

  it("logs in as a user with a short-lived token", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const r = await call("POST", `${A}/v1/users/${enc(u.userId)}/login`, { token: admin.accessToken, body: { valid_until_ms: Date.now() + 60_000 } });
    expect(r.status).toBe(200);
    expect((await clientOk(r.body.access_token, "GET", "/account/whoami")).user_id).toBe(u.userId);
    expect((await call("POST", `${A}/v1/users/${enc(admin.userId)}/login`, { token: admin.accessToken, body: {} })).status).toBe(400);
    expect((await call("POST", `${A}/v1/users/${enc(u.userId)}/login`, { token: admin.accessToken, body: { valid_until_ms: "soon" } })).status).toBe(400);
  });

  it("shadow-bans: sends answer an event ID but nothing reaches the room", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const { room_id } = await clientOk(u.accessToken, "POST", "/createRoom", {});
    expect((await call("POST", `${A}/v1/users/${enc(u.userId)}/shadow_ban`, { token: admin.accessToken })).body).toEqual({});
    expect((await call("GET", `${A}/v2/users/${enc(u.userId)}`, { token: admin.accessToken })).body.shadow_banned).toBe(true);
    const sent = await clientOk(u.accessToken, "PUT", `/rooms/${enc(room_id)}/send/m.room.message/t1`, { msgtype: "m.text", body: "spam" });
    expect(sent.event_id).toMatch(/^\$/);
    const ev = await call("GET", `/_matrix/client/v3/rooms/${enc(room_id)}/event/${enc(sent.event_id)}`, { token: u.accessToken });
    expect(ev.status).toBe(404);
    const invitee = await registerUser();
    expect((await call("POST", `/_matrix/client/v3/rooms/${enc(room_id)}/invite`, { token: u.accessToken, body: { user_id: invitee.userId } })).status).toBe(200);
    const inviteeSync = await clientOk(invitee.accessToken, "GET", "/sync?timeout=0");
    expect(Object.keys(inviteeSync.rooms?.invite ?? {})).not.toContain(room_id);
    await call("DELETE", `${A}/v1/users/${enc(u.userId)}/shadow_ban`, { token: admin.accessToken });
    const real = await clientOk(u.accessToken, "PUT", `/rooms/${enc(room_id)}/send/m.room.message/t2`, { msgtype: "m.text", body: "ok" });
    expect((await call("GET", `/_matrix/client/v3/rooms/${enc(room_id)}/event/${enc(real.event_id)}`, { token: u.accessToken })).status).toBe(200);
  });

  it("stores, reads and deletes rate-limit overrides", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const p = `${A}/v1/users/${enc(u.userId)}/override_ratelimit`;
    expect((await call("GET", p, { token: admin.accessToken })).body).toEqual({});
    expect((await call("POST", p, { token: admin.accessToken, body: { messages_per_second: 5 } })).body).toEqual({ messages_per_second: 5, burst_count: 0 });
    expect((await call("GET", p, { token: admin.accessToken })).body).toEqual({ messages_per_second: 5, burst_count: 0 });
    expect((await call("POST", p, { token: admin.accessToken, body: { messages_per_second: -1 } })).status).toBe(400);
    expect((await call("DELETE", p, { token: admin.accessToken })).body).toEqual({});
    expect((await call("GET", p, { token: admin.accessToken })).body).toEqual({});
  });
});

describe("client admin endpoints (spec)", () => {
  it("whois: admins and the user themselves; others 403", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const other = await registerUser();
    const p = `/_matrix/client/v3/admin/whois/${enc(u.userId)}`;
    expect((await call("GET", p, { token: admin.accessToken })).body.user_id).toBe(u.userId);
    expect((await call("GET", p, { token: u.accessToken })).status).toBe(200);
    expect((await call("GET", p, { token: other.accessToken })).body.errcode).toBe("M_FORBIDDEN");
  });

  it("suspend: M_USER_SUSPENDED on sending, joining, profile changes; reads, leaving and redactions still work", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const { room_id } = await clientOk(u.accessToken, "POST", "/createRoom", {});
    const mine = await clientOk(u.accessToken, "PUT", `/rooms/${enc(room_id)}/send/m.room.message/s0`, { msgtype: "m.text", body: "before" });
    const p = `/_matrix/client/v1/admin/suspend/${enc(u.userId)}`;
    expect((await call("GET", p, { token: admin.accessToken })).body).toEqual({ suspended: false });
    expect((await call("PUT", p, { token: admin.accessToken, body: { suspended: true } })).body).toEqual({ suspended: true });
    expect((await call("GET", p, { token: admin.accessToken })).body).toEqual({ suspended: true });
    const send = await call("PUT", `/_matrix/client/v3/rooms/${enc(room_id)}/send/m.room.message/s1`, { token: u.accessToken, body: { msgtype: "m.text", body: "x" } });
    expect(send.status).toBe(403);
    expect(send.body.errcode).toBe("M_USER_SUSPENDED");
    expect((await call("POST", "/_matrix/client/v3/createRoom", { token: u.accessToken, body: {} })).body.errcode).toBe("M_USER_SUSPENDED");
    expect((await call("PUT", `/_matrix/client/v3/profile/${enc(u.userId)}/displayname`, { token: u.accessToken, body: { displayname: "n" } })).body.errcode).toBe("M_USER_SUSPENDED");
    expect((await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: u.accessToken })).status).toBe(200);
    expect((await call("PUT", `/_matrix/client/v3/rooms/${enc(room_id)}/redact/${enc(mine.event_id)}/r1`, { token: u.accessToken, body: {} })).status).toBe(200);
    expect((await call("POST", `/_matrix/client/v3/rooms/${enc(room_id)}/leave`, { token: u.accessToken, body: {} })).status).toBe(200);
    await call("PUT", p, { token: admin.accessToken, body: { suspended: false } });
    expect((await call("POST", "/_matrix/client/v3/createRoom", { token: u.accessToken, body: {} })).status).toBe(200);
  });

  it("lock: 401 M_USER_LOCKED with soft_logout on everything but logout; unlocking restores the session", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const p = `/_matrix/client/v1/admin/lock/${enc(u.userId)}`;
    expect((await call("PUT", p, { token: admin.accessToken, body: { locked: true } })).body).toEqual({ locked: true });
    const who = await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken });
    expect(who.status).toBe(401);
    expect(who.body).toMatchObject({ errcode: "M_USER_LOCKED", soft_logout: true });
    expect((await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: u.accessToken })).body.errcode).toBe("M_USER_LOCKED");
    expect((await call("GET", `${A}/v2/users/${enc(u.userId)}`, { token: admin.accessToken })).body.locked).toBe(true);
    expect((await call("PUT", p, { token: admin.accessToken, body: { locked: false } })).body).toEqual({ locked: false });
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: u.accessToken })).status).toBe(200);
    // Logout works while locked.
    await call("PUT", p, { token: admin.accessToken, body: { locked: true } });
    expect((await call("POST", "/_matrix/client/v3/logout", { token: u.accessToken, body: {} })).status).toBe(200);
  });

  it("moderation bad input: remote users 400, unknown 404, wrong types 400", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    expect((await call("GET", `/_matrix/client/v1/admin/lock/${enc("@a:remote.example")}`, { token: t })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("GET", `/_matrix/client/v1/admin/suspend/${enc(`@ghost${uniqueName()}:${SERVER}`)}`, { token: t })).body.errcode).toBe("M_NOT_FOUND");
    const u = await registerUser();
    expect((await call("PUT", `/_matrix/client/v1/admin/suspend/${enc(u.userId)}`, { token: t, body: { suspended: "yes" } })).body.errcode).toBe("M_BAD_JSON");
  });
});
