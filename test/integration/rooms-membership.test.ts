// Membership endpoints, /joined_rooms, history visibility, profile propagation, upgrades.
import { describe, expect, it, beforeAll } from "vitest";
import { call, registerUser, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let txn = 0;

async function createRoom(u: TestUser, body: Record<string, unknown> = {}): Promise<string> {
  const r = await call("POST", `${V3}/createRoom`, { token: u.accessToken, body });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.room_id;
}
async function send(u: TestUser, roomId: string, text: string) {
  return call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/m${Date.now()}-${++txn}`, { token: u.accessToken, body: { msgtype: "m.text", body: text } });
}
async function post(u: TestUser, path: string, body: Record<string, unknown> = {}) {
  return call("POST", `${V3}${path}`, { token: u.accessToken, body });
}
async function membership(u: TestUser, roomId: string, userId: string) {
  const r = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`, { token: u.accessToken });
  return r.status === 200 ? r.body.membership : undefined;
}
async function bodies(u: TestUser, roomId: string): Promise<string[]> {
  const r = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`, { token: u.accessToken });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.chunk.filter((e: any) => e.type === "m.room.message").map((e: any) => e.content.body).reverse();
}

describe("membership", () => {
  let alice: TestUser, bob: TestUser, carol: TestUser;
  beforeAll(async () => {
    [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
  });

  it("invite-only: join needs an invite; invite, join, leave, /joined_rooms, forget", async () => {
    const roomId = await createRoom(alice, { preset: "private_chat" });
    const denied = await post(bob, `/rooms/${enc(roomId)}/join`);
    expect(denied.status).toBe(403);
    expect(denied.body.errcode).toBe("M_FORBIDDEN");
    // bob cannot invite (not in the room); alice can.
    expect((await post(bob, `/rooms/${enc(roomId)}/invite`, { user_id: carol.userId })).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(roomId)}/invite`, { user_id: bob.userId, reason: "welcome" })).status).toBe(200);
    expect(await membership(alice, roomId, bob.userId)).toBe("invite");
    const joined = await post(bob, `/join/${enc(roomId)}`);
    expect(joined.body.room_id).toBe(roomId);
    expect((await call("GET", `${V3}/joined_rooms`, { token: bob.accessToken })).body.joined_rooms).toContain(roomId);
    // Inviting a joined user is refused.
    expect((await post(alice, `/rooms/${enc(roomId)}/invite`, { user_id: bob.userId })).status).toBe(403);
    // forget while joined: 400 M_UNKNOWN.
    expect((await post(bob, `/rooms/${enc(roomId)}/forget`)).body.errcode).toBe("M_UNKNOWN");
    expect((await post(bob, `/rooms/${enc(roomId)}/leave`)).status).toBe(200);
    expect(await membership(alice, roomId, bob.userId)).toBe("leave");
    expect((await call("GET", `${V3}/joined_rooms`, { token: bob.accessToken })).body.joined_rooms).not.toContain(roomId);
    expect((await post(bob, `/rooms/${enc(roomId)}/leave`)).status).toBe(403);
    expect((await post(bob, `/rooms/${enc(roomId)}/forget`)).status).toBe(200);
    // Unknown room.
    expect((await post(bob, `/rooms/${enc("!nope:test.local")}/join`)).body.errcode).toBe("M_NOT_FOUND");
    expect((await call("GET", `${V3}/joined_rooms`)).status).toBe(401);
  });

  it("kick, ban, unban with power levels; a kicked user cannot rejoin an invite-only room", async () => {
    const roomId = await createRoom(alice, { preset: "private_chat", invite: [bob.userId, carol.userId] });
    await post(bob, `/rooms/${enc(roomId)}/join`);
    await post(carol, `/rooms/${enc(roomId)}/join`);
    // bob (PL 0) may not kick carol.
    expect((await post(bob, `/rooms/${enc(roomId)}/kick`, { user_id: carol.userId })).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(roomId)}/kick`, { user_id: carol.userId, reason: "bye" })).status).toBe(200);
    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(carol.userId)}?format=event`, { token: alice.accessToken });
    expect(ev.body.content).toMatchObject({ membership: "leave", reason: "bye" });
    expect(ev.body.sender).toBe(alice.userId);
    expect((await post(carol, `/rooms/${enc(roomId)}/join`)).status).toBe(403);
    // Kicking someone not in the room.
    expect((await post(alice, `/rooms/${enc(roomId)}/kick`, { user_id: carol.userId })).status).toBe(403);
    // ban, then banned users can't be invited or join; unban.
    expect((await post(alice, `/rooms/${enc(roomId)}/ban`, { user_id: bob.userId })).status).toBe(200);
    expect(await membership(alice, roomId, bob.userId)).toBe("ban");
    expect((await post(bob, `/rooms/${enc(roomId)}/join`)).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(roomId)}/invite`, { user_id: bob.userId })).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(roomId)}/unban`, { user_id: carol.userId })).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(roomId)}/unban`, { user_id: bob.userId })).status).toBe(200);
    expect(await membership(alice, roomId, bob.userId)).toBe("leave");
  });

  it("knock on a knock room (v7+), then get invited", async () => {
    const roomId = await createRoom(alice, { initial_state: [{ type: "m.room.join_rules", content: { join_rule: "knock" } }] });
    expect((await post(bob, `/knock/${enc(roomId)}`, { reason: "let me in" })).status).toBe(200);
    expect(await membership(alice, roomId, bob.userId)).toBe("knock");
    const invite = await createRoom(alice, { preset: "private_chat" });
    expect((await post(carol, `/knock/${enc(invite)}`)).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(roomId)}/invite`, { user_id: bob.userId })).status).toBe(200);
    expect((await post(bob, `/rooms/${enc(roomId)}/join`)).status).toBe(200);
  });

  it("restricted joins: members of an allowed room may join", async () => {
    const space = await createRoom(alice, { preset: "private_chat", invite: [bob.userId] });
    await post(bob, `/rooms/${enc(space)}/join`);
    const roomId = await createRoom(alice, {
      initial_state: [{ type: "m.room.join_rules", content: { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: space }] } }],
    });
    expect((await post(carol, `/rooms/${enc(roomId)}/join`)).status).toBe(403);
    const ok = await post(bob, `/rooms/${enc(roomId)}/join`);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.userId)}`, { token: alice.accessToken });
    expect(ev.body.join_authorised_via_users_server).toBe(alice.userId);
  });

  it("join by alias", async () => {
    const name = `room${Date.now()}`;
    const roomId = await createRoom(alice, { preset: "public_chat", room_alias_name: name });
    const r = await post(carol, `/join/${enc(`#${name}:test.local`)}`);
    expect(r.body.room_id).toBe(roomId);
    expect((await post(carol, `/join/${enc("#missing:test.local")}`)).body.errcode).toBe("M_NOT_FOUND");
  });
});

describe("history visibility", () => {
  let alice: TestUser, bob: TestUser, eve: TestUser;
  beforeAll(async () => {
    [alice, bob, eve] = await Promise.all([registerUser(), registerUser(), registerUser()]);
  });

  it("joined: a new member sees nothing before their join; a leaver sees nothing after", async () => {
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "joined" } }] });
    await send(alice, roomId, "before");
    await post(bob, `/rooms/${enc(roomId)}/join`);
    await send(alice, roomId, "during");
    const beforeId = (await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`, { token: alice.accessToken })).body.chunk.find((e: any) => e.content.body === "before").event_id;
    expect(await bodies(bob, roomId)).toEqual(["during"]);
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(beforeId)}`, { token: bob.accessToken })).status).toBe(404);
    await post(bob, `/rooms/${enc(roomId)}/leave`);
    await send(alice, roomId, "after");
    expect(await bodies(bob, roomId)).toEqual(["during"]);
    expect(await bodies(alice, roomId)).toEqual(["before", "during", "after"]);
    // A user who was never in the room may not read it at all.
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/messages`, { token: eve.accessToken })).status).toBe(403);
    // The leaver gets the state as of their leave.
    const st = await call("GET", `${V3}/rooms/${enc(roomId)}/state`, { token: bob.accessToken });
    expect(st.status).toBe(200);
  });

  it("shared: history before the join is visible once joined", async () => {
    const roomId = await createRoom(alice, { preset: "public_chat" });
    await send(alice, roomId, "old");
    await post(bob, `/rooms/${enc(roomId)}/join`);
    expect(await bodies(bob, roomId)).toEqual(["old"]);
  });

  it("invited: visible from the invite on", async () => {
    const roomId = await createRoom(alice, { preset: "private_chat", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "invited" } }] });
    await send(alice, roomId, "pre-invite");
    await post(alice, `/rooms/${enc(roomId)}/invite`, { user_id: bob.userId });
    await send(alice, roomId, "post-invite");
    await post(bob, `/rooms/${enc(roomId)}/join`);
    expect(await bodies(bob, roomId)).toEqual(["post-invite"]);
  });

  it("world_readable: anyone may read", async () => {
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "world_readable" } }] });
    await send(alice, roomId, "public");
    expect(await bodies(eve, roomId)).toEqual(["public"]);
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/state`, { token: eve.accessToken })).status).toBe(200);
  });
});

describe("profile propagation and upgrades", () => {
  it("a displayname change updates m.room.member in joined rooms", async () => {
    const alice = await registerUser();
    const r1 = await createRoom(alice);
    const r2 = await createRoom(alice);
    const put = await call("PUT", `${V3}/profile/${enc(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: "Alice A." } });
    expect(put.status).toBe(200);
    for (const r of [r1, r2]) {
      const m = await call("GET", `${V3}/rooms/${enc(r)}/state/m.room.member/${enc(alice.userId)}`, { token: alice.accessToken });
      expect(m.body).toMatchObject({ membership: "join", displayname: "Alice A." });
    }
    const jm = await call("GET", `${V3}/rooms/${enc(r1)}/joined_members`, { token: alice.accessToken });
    expect(jm.body.joined[alice.userId].display_name).toBe("Alice A.");
    // New rooms carry the profile from the start.
    const r3 = await createRoom(alice);
    const m3 = await call("GET", `${V3}/rooms/${enc(r3)}/state/m.room.member/${enc(alice.userId)}`, { token: alice.accessToken });
    expect(m3.body.displayname).toBe("Alice A.");
  });

  it("upgrades a room: tombstone, predecessor, state copied, old room restricted", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const old = await createRoom(alice, { room_version: "11", preset: "public_chat", name: "Old name", topic: "t" });
    await post(bob, `/rooms/${enc(old)}/join`);
    expect((await post(bob, `/rooms/${enc(old)}/upgrade`, { new_version: "12" })).status).toBe(403);
    expect((await post(alice, `/rooms/${enc(old)}/upgrade`, { new_version: "999" })).body.errcode).toBe("M_UNSUPPORTED_ROOM_VERSION");
    const up = await post(alice, `/rooms/${enc(old)}/upgrade`, { new_version: "12" });
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    const newRoom = up.body.replacement_room;
    const tomb = await call("GET", `${V3}/rooms/${enc(old)}/state/m.room.tombstone`, { token: bob.accessToken });
    expect(tomb.body.replacement_room).toBe(newRoom);
    const create = await call("GET", `${V3}/rooms/${enc(newRoom)}/state/m.room.create`, { token: alice.accessToken });
    expect(create.body.predecessor.room_id).toBe(old);
    expect(create.body.room_version).toBe("12");
    const name = await call("GET", `${V3}/rooms/${enc(newRoom)}/state/m.room.name`, { token: alice.accessToken });
    expect(name.body.name).toBe("Old name");
    const jr = await call("GET", `${V3}/rooms/${enc(newRoom)}/state/m.room.join_rules`, { token: alice.accessToken });
    expect(jr.body.join_rule).toBe("public");
    // bob can no longer talk in the old room, and can join the new one.
    expect((await send(bob, old, "hello?")).status).toBe(403);
    expect((await post(bob, `/rooms/${enc(newRoom)}/join`)).status).toBe(200);
  });
});
