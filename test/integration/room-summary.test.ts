// GET /v1/room_summary/{roomIdOrAlias} and GET /v1/mutual_rooms (issue 16).
import { afterEach, describe, expect, it } from "vitest";
import { call, createRoom, offline, registerUser, type TestUser } from "./helpers";
import { setFederationFetch } from "../../src/services/federation/client";
import { clearHierarchyCache } from "../../src/services/space-hierarchy";

const V3 = "/_matrix/client/v3";
const V1 = "/_matrix/client/v1";
const enc = encodeURIComponent;

const summary = (idOrAlias: string, u?: TestUser, q = "") => call("GET", `${V1}/room_summary/${enc(idOrAlias)}${q}`, u ? { token: u.accessToken } : {});

afterEach(() => {
  setFederationFetch(offline);
  clearHierarchyCache();
});

describe("GET /v1/room_summary", () => {
  it("summarises a public room by ID or alias, also without a token; membership for a member", async () => {
    const alice = await registerUser();
    const alias = `sum${Date.now().toString(36)}`;
    const roomId = await createRoom(alice, { preset: "public_chat", name: "Summary room", topic: "about things", room_alias_name: alias });
    const r = await summary(roomId, alice);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ room_id: roomId, name: "Summary room", topic: "about things", join_rule: "public", num_joined_members: 1, membership: "join", room_version: expect.any(String) });
    expect(r.body.children_state).toBeUndefined();
    const byAlias = await summary(`#${alias}:test.local`);
    expect(byAlias.status, JSON.stringify(byAlias.body)).toBe(200);
    expect(byAlias.body.room_id).toBe(roomId);
    expect(byAlias.body.membership).toBeUndefined();
  });

  it("a private room: 404 for strangers and without a token, as for an unknown room; 200 for the invited", async () => {
    const [alice, bob, stranger] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat", name: "Secret", invite: [bob.userId] });
    const unknown = await summary("!nothing:test.local", stranger);
    for (const r of [await summary(roomId, stranger), await summary(roomId)]) {
      expect(r.status).toBe(404);
      expect(r.body).toEqual(unknown.body);
    }
    const invited = await summary(roomId, bob);
    expect(invited.status).toBe(200);
    expect(invited.body.membership).toBe("invite");
    expect((await summary("not-a-room", bob)).status).toBe(400);
    expect((await summary(roomId, bob, "?via=bad%20server")).status).toBe(400);
  });

  it("a room we are not in is asked for over federation from `via`", async () => {
    const bob = await registerUser();
    const REMOTE_ROOM = "!elsewhere:remote.example";
    let asked = "";
    setFederationFetch(async (input) => {
      const url = new URL(typeof input === "string" || input instanceof URL ? input.toString() : input.url);
      if (url.pathname === `/_matrix/federation/v1/hierarchy/${enc(REMOTE_ROOM)}`) {
        asked = url.host;
        return Response.json({ room: { room_id: REMOTE_ROOM, name: "Far away", num_joined_members: 7, world_readable: false, guest_can_join: false, join_rule: "public", children_state: [] }, children: [], inaccessible_children: [] });
      }
      return new Response(JSON.stringify({ errcode: "M_NOT_FOUND" }), { status: 404 });
    });
    const r = await summary(REMOTE_ROOM, bob, "?via=other.example");
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ room_id: REMOTE_ROOM, name: "Far away", num_joined_members: 7, join_rule: "public" });
    expect(asked).toContain("other.example");
  });
});

describe("GET /v1/mutual_rooms", () => {
  it("lists rooms both users are joined to (stable and MSC2666 paths); bad input", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const shared = await createRoom(alice, { preset: "public_chat" });
    const mine = await createRoom(alice, { preset: "public_chat" });
    void mine;
    expect((await call("POST", `${V3}/rooms/${enc(shared)}/join`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const r = await call("GET", `${V1}/mutual_rooms?user_id=${enc(bob.userId)}`, { token: alice.accessToken });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ joined: [shared], count: 1 });
    const unstable = await call("GET", `/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id=${enc(bob.userId)}`, { token: alice.accessToken });
    expect(unstable.body.joined).toEqual([shared]);
    expect((await call("GET", `${V1}/mutual_rooms?user_id=${enc(carol.userId)}`, { token: alice.accessToken })).body).toEqual({ joined: [], count: 0 });
    // Bob leaves: no longer mutual.
    await call("POST", `${V3}/rooms/${enc(shared)}/leave`, { token: bob.accessToken, body: {} });
    expect((await call("GET", `${V1}/mutual_rooms?user_id=${enc(bob.userId)}`, { token: alice.accessToken })).body.joined).toEqual([]);

    expect((await call("GET", `${V1}/mutual_rooms`, { token: alice.accessToken })).body.errcode).toBe("M_MISSING_PARAM");
    expect((await call("GET", `${V1}/mutual_rooms?user_id=nope`, { token: alice.accessToken })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("GET", `${V1}/mutual_rooms?user_id=${enc(alice.userId)}`, { token: alice.accessToken })).status).toBe(400);
    expect((await call("GET", `${V1}/mutual_rooms?user_id=${enc(bob.userId)}&from=%%%`, { token: alice.accessToken })).status).toBe(400);
    expect((await call("GET", `${V1}/mutual_rooms?user_id=${enc(bob.userId)}`)).status).toBe(401);
  });
});
