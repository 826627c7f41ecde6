// Guest access (spec: Client-Server API, module "Guest Access"): kind=guest registration behind
// GUEST_ACCESS, the endpoints a guest may call, m.room.guest_access on joins, guests leaving when
// guest access is revoked, and upgrading a guest to a full account.
import { describe, expect, it } from "vitest";
import { call, clientOk, createRoom, federationCall, offline, registerUser, seedRemoteKey, withEnv, type TestUser } from "./helpers";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let txn = 0;

async function registerGuest(body: unknown = {}): Promise<TestUser> {
  const r = await withEnv({ GUEST_ACCESS: "on" }, "POST", `${V3}/register?kind=guest`, body);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return { userId: r.body.user_id, accessToken: r.body.access_token, deviceId: r.body.device_id, password: "" };
}

async function membership(u: TestUser, roomId: string, userId: string): Promise<string | undefined> {
  const r = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`, { token: u.accessToken });
  return r.status === 200 ? r.body.membership : undefined;
}

describe("guest registration", () => {
  it("is refused with M_GUEST_ACCESS_FORBIDDEN while GUEST_ACCESS is off (the default)", async () => {
    const r = await withEnv({}, "POST", `${V3}/register?kind=guest`, {});
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe("M_GUEST_ACCESS_FORBIDDEN");
  });

  it("GUEST_ACCESS=on: issues a guest account without UIA, ignoring the body except the device display name", async () => {
    const r = await withEnv({ GUEST_ACCESS: "on" }, "POST", `${V3}/register?kind=guest`, {
      username: "chosenname",
      device_id: "CHOSENDEVICE",
      initial_device_display_name: "Guest phone",
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.user_id).toMatch(/^@[a-z0-9]+:test\.local$/);
    expect(r.body.user_id).not.toBe("@chosenname:test.local");
    expect(r.body.device_id).not.toBe("CHOSENDEVICE");
    const who = await call("GET", `${V3}/account/whoami`, { token: r.body.access_token });
    expect(who.body).toEqual({ user_id: r.body.user_id, device_id: r.body.device_id, is_guest: true });
    const dev = await call("GET", `${V3}/devices/${r.body.device_id}`, { token: r.body.access_token });
    expect(dev.body.display_name).toBe("Guest phone");
  });

  it("works with REGISTRATION=closed (guest access is its own switch)", async () => {
    const r = await withEnv({ GUEST_ACCESS: "on", REGISTRATION: "closed" }, "POST", `${V3}/register?kind=guest`, {});
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  });
});

describe("what a guest may call", () => {
  it("allows the spec's list and refuses everything else with 403 M_GUEST_ACCESS_FORBIDDEN", async () => {
    const g = await registerGuest();
    const ok = [
      ["GET", `${V3}/account/whoami`],
      ["GET", `/_matrix/client/r0/account/whoami`],
      ["GET", `${V3}/devices`],
      ["GET", `${V3}/sync?timeout=0`],
      ["POST", `${V3}/keys/query`, { device_keys: {} }],
      ["PUT", `${V3}/profile/${enc(g.userId)}/displayname`, { displayname: "Visitor" }],
      ["GET", `${V3}/publicRooms`],
    ] as const;
    for (const [method, path, body] of ok) {
      const r = await call(method, path, { token: g.accessToken, body });
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(200);
    }
    // Allowed, so the answer is about the media, not the guest.
    const media = await call("GET", `/_matrix/client/v1/media/download/test.local/nosuchmedia`, { token: g.accessToken });
    expect(media.status).toBe(404);
    expect(media.body.errcode).toBe("M_NOT_FOUND");
    const refused = [
      ["GET", `${V3}/capabilities`],
      ["POST", `${V3}/createRoom`, {}],
      ["PUT", `${V3}/profile/${enc(g.userId)}/avatar_url`, { avatar_url: "mxc://test.local/x" }],
      ["GET", `${V3}/joined_rooms`],
      ["POST", `${V3}/user/${enc(g.userId)}/filter`, {}],
      ["PUT", `${V3}/user/${enc(g.userId)}/account_data/m.x`, {}],
      ["POST", `${V3}/account/password`, { new_password: "x" }],
      ["GET", `${V3}/pushrules/`],
      ["POST", `${V3}/keys/device_signing/upload`, {}],
      ["DELETE", `${V3}/devices/${g.deviceId}`, {}],
      ["POST", `/_matrix/client/r0/createRoom`, {}],
      ["GET", `/_matrix/client/v1/media/config`],
    ] as const;
    for (const [method, path, body] of refused) {
      const r = await call(method, path, { token: g.accessToken, body });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.body.errcode, `${method} ${path}`).toBe("M_GUEST_ACCESS_FORBIDDEN");
    }
  });
});

describe("guests in rooms", () => {
  it("join only rooms whose m.room.guest_access is can_join, and send there", async () => {
    const owner = await registerUser();
    const g = await registerGuest();
    // public_chat: guest_access forbidden.
    const closed = await createRoom(owner, { preset: "public_chat" });
    const refused = await call("POST", `${V3}/rooms/${enc(closed)}/join`, { token: g.accessToken, body: {} });
    expect(refused.status).toBe(403);
    expect(refused.body.errcode).toBe("M_GUEST_ACCESS_FORBIDDEN");
    expect(await membership(owner, closed, g.userId)).toBeUndefined();

    const open = await createRoom(owner, {
      preset: "public_chat",
      initial_state: [{ type: "m.room.guest_access", state_key: "", content: { guest_access: "can_join" } }],
    });
    const joined = await call("POST", `${V3}/rooms/${enc(open)}/join`, { token: g.accessToken, body: {} });
    expect(joined.status, JSON.stringify(joined.body)).toBe(200);
    const member = await call("GET", `${V3}/rooms/${enc(open)}/state/m.room.member/${enc(g.userId)}`, { token: owner.accessToken });
    expect(member.body).toMatchObject({ membership: "join", kind: "guest" });
    const sent = await call("PUT", `${V3}/rooms/${enc(open)}/send/m.room.message/g${++txn}`, { token: g.accessToken, body: { msgtype: "m.text", body: "hi" } });
    expect(sent.status, JSON.stringify(sent.body)).toBe(200);
    const msgs = await call("GET", `${V3}/rooms/${enc(open)}/messages?dir=b&limit=5`, { token: g.accessToken });
    expect(msgs.status).toBe(200);
    expect(msgs.body.chunk.some((e: any) => e.event_id === sent.body.event_id)).toBe(true);
    const sync = await call("GET", `${V3}/sync?timeout=0`, { token: g.accessToken });
    expect(sync.status).toBe(200);
    expect(sync.body.rooms.join[open].timeline.events.some((e: any) => e.event_id === sent.body.event_id)).toBe(true);

    // Membership only through /join and /leave (which check guest access), not PUT /state.
    const direct = await call("PUT", `${V3}/rooms/${enc(closed)}/state/m.room.member/${enc(g.userId)}`, { token: g.accessToken, body: { membership: "join" } });
    expect(direct.status).toBe(403);
    expect(direct.body.errcode).toBe("M_GUEST_ACCESS_FORBIDDEN");
    // /join/{roomIdOrAlias} (what matrix-js-sdk uses) checks guest access the same way.
    const byId = await call("POST", `${V3}/join/${enc(closed)}`, { token: g.accessToken, body: {} });
    expect(byId.body.errcode).toBe("M_GUEST_ACCESS_FORBIDDEN");
    expect((await call("POST", `${V3}/join/${enc(open)}`, { token: g.accessToken, body: {} })).status).toBe(200);

    const left = await call("POST", `${V3}/rooms/${enc(open)}/leave`, { token: g.accessToken, body: {} });
    expect(left.status).toBe(200);
    expect(await membership(owner, open, g.userId)).toBe("leave");
  });

  it("leave when m.room.guest_access stops being can_join; full members stay", async () => {
    const owner = await registerUser();
    const member = await registerUser();
    const g1 = await registerGuest();
    const g2 = await registerGuest();
    const roomId = await createRoom(owner, {
      preset: "public_chat",
      initial_state: [{ type: "m.room.guest_access", state_key: "", content: { guest_access: "can_join" } }],
    });
    for (const u of [member, g1, g2]) {
      const r = await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: u.accessToken, body: {} });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    const revoke = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.guest_access/`, { token: owner.accessToken, body: { guest_access: "forbidden" } });
    expect(revoke.status, JSON.stringify(revoke.body)).toBe(200);
    // Done by the time the revoking request answers (Sytest checks at once, too).
    for (const g of [g1, g2]) {
      const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(g.userId)}?format=event`, { token: owner.accessToken });
      expect(ev.body).toMatchObject({ sender: g.userId, content: { membership: "leave" } });
    }
    expect(await membership(owner, roomId, member.userId)).toBe("join");
    expect(await membership(owner, roomId, owner.userId)).toBe("join");
    const again = await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: g1.accessToken, body: {} });
    expect(again.body.errcode).toBe("M_GUEST_ACCESS_FORBIDDEN");
  });
});

describe("guest access revoked over federation", () => {
  it("our guests leave when a remote server's event sets m.room.guest_access to forbidden", async () => {
    setFederationFetch(offline);
    const REMOTE = "guestfed.test";
    const REM = `@rem:${REMOTE}`;
    const key = await seedRemoteKey(REMOTE);
    const rv = getRoomVersion("12")!;
    const fed = (method: string, path: string, body?: unknown) => federationCall(REMOTE, key, method, path, body);
    const owner = await registerUser();
    const g = await registerGuest();
    const roomId = await createRoom(owner, {
      preset: "public_chat",
      room_version: "12",
      initial_state: [{ type: "m.room.guest_access", state_key: "", content: { guest_access: "can_join" } }],
    });
    const t = await fed("GET", `/v1/make_join/${enc(roomId)}/${enc(REM)}?ver=12`);
    const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, REMOTE, key);
    expect((await fed("PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu)).status).toBe(200);
    const pl = await clientOk(owner.accessToken, "GET", `/rooms/${enc(roomId)}/state/m.room.power_levels/`);
    await clientOk(owner.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl, users: { ...pl.users, [REM]: 100 } });
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: g.accessToken, body: {} })).status).toBe(200);

    const state = (await clientOk(owner.accessToken, "GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string }[];
    const id = (type: string, k = "") => state.find((e) => e.type === type && e.state_key === k)!.event_id;
    const latest = (await clientOk(owner.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=1`)).chunk[0].event_id as string;
    const depth = ((await fed("GET", `/v1/event/${enc(latest)}`)).body.pdus[0] as PDU).depth;
    const revoke = await hashAndSignEvent(
      {
        room_id: roomId,
        sender: REM,
        type: "m.room.guest_access",
        state_key: "",
        content: { guest_access: "forbidden" },
        origin_server_ts: Date.now(),
        depth: depth + 1,
        prev_events: [latest],
        auth_events: [id("m.room.power_levels"), id("m.room.member", REM)],
      } as unknown as PDU,
      rv,
      REMOTE,
      key,
    );
    const sent = await fed("PUT", `/v1/send/guests${Date.now()}`, { origin: REMOTE, origin_server_ts: Date.now(), pdus: [revoke.pdu] });
    expect(sent.status).toBe(200);
    expect(sent.body.pdus[revoke.eventId]).toEqual({});
    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(g.userId)}?format=event`, { token: owner.accessToken });
    expect(ev.body).toMatchObject({ sender: g.userId, content: { membership: "leave" } });
  });
});

describe("upgrading a guest account", () => {
  it("keeps the user ID, turns the account into a full one and logs in", async () => {
    const g = await registerGuest();
    const localpart = g.userId.slice(1).split(":")[0];
    const body = { username: localpart, password: "upgraded password", guest_access_token: g.accessToken };
    const first = await call("POST", `${V3}/register`, { body });
    expect(first.status, JSON.stringify(first.body)).toBe(401);
    const done = await call("POST", `${V3}/register`, { body: { ...body, auth: { type: "m.login.dummy", session: first.body.session } } });
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body.user_id).toBe(g.userId);
    const who = await call("GET", `${V3}/account/whoami`, { token: done.body.access_token });
    expect(who.body).toMatchObject({ user_id: g.userId, is_guest: false });
    // The guest's own token now belongs to a full account too.
    expect((await call("GET", `${V3}/capabilities`, { token: g.accessToken })).status).toBe(200);
    expect((await call("POST", `${V3}/createRoom`, { token: done.body.access_token, body: {} })).status).toBe(200);
    const login = await call("POST", `${V3}/login`, { body: { type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password: "upgraded password" } });
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    // Done once: the account is no longer a guest.
    const twice = await call("POST", `${V3}/register`, { body: { username: localpart, password: "x", guest_access_token: g.accessToken } });
    expect(twice.status).toBe(403);
  });

  it("refuses a token that is not that guest's", async () => {
    const g = await registerGuest();
    const other = await registerGuest();
    const full = await registerUser();
    const localpart = g.userId.slice(1).split(":")[0];
    const wrongUser = await call("POST", `${V3}/register`, { body: { username: localpart, password: "x", guest_access_token: other.accessToken } });
    expect(wrongUser.status).toBe(403);
    expect(wrongUser.body.errcode).toBe("M_FORBIDDEN");
    const notGuest = await call("POST", `${V3}/register`, { body: { username: full.userId.slice(1).split(":")[0], password: "x", guest_access_token: full.accessToken } });
    expect(notGuest.status).toBe(403);
    const unknown = await call("POST", `${V3}/register`, { body: { username: localpart, password: "x", guest_access_token: "lat_nonsense" } });
    expect(unknown.status).toBe(401);
    expect(unknown.body.errcode).toBe("M_UNKNOWN_TOKEN");
    const noName = await call("POST", `${V3}/register`, { body: { password: "x", guest_access_token: g.accessToken } });
    expect(noName.status).toBe(400);
    expect(noName.body.errcode).toBe("M_MISSING_PARAM");
    // Still a guest.
    expect((await call("GET", `${V3}/account/whoami`, { token: g.accessToken })).body.is_guest).toBe(true);
  });
});
