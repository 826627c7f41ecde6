// The room summary in /sync (spec: GET /sync, RoomSummary): m.heroes only for a room without a
// name or canonical alias, and joined/invited counts that follow membership in incremental syncs.
import { describe, it, expect } from "vitest";
import { call, clientOk, registerUser, type Json, type TestUser } from "./helpers";

const enc = encodeURIComponent;

async function sync(u: TestUser, since?: string): Promise<Json> {
  const r = await call("GET", `/_matrix/client/v3/sync?timeout=0${since ? `&since=${enc(since)}` : ""}`, { token: u.accessToken });
  expect(r.status).toBe(200);
  return r.body;
}

describe("room summary", () => {
  it("counts follow membership in incremental syncs; heroes only while the room has no name or canonical alias", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    await clientOk(bob.accessToken, "POST", `/join/${enc(roomId)}`, {});
    let s = await sync(bob);
    expect(s.rooms.join[roomId].summary).toEqual({ "m.heroes": [alice.userId], "m.joined_member_count": 2, "m.invited_member_count": 0 });

    const step = async () => {
      s = await sync(bob, s.next_batch);
      return s.rooms.join[roomId].summary;
    };
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: carol.userId });
    expect(await step()).toMatchObject({ "m.joined_member_count": 2, "m.invited_member_count": 1 });
    await clientOk(carol.accessToken, "POST", `/join/${enc(roomId)}`, {});
    expect(await step()).toEqual({ "m.heroes": [alice.userId, carol.userId].sort(), "m.joined_member_count": 3, "m.invited_member_count": 0 });
    await clientOk(carol.accessToken, "POST", `/rooms/${enc(roomId)}/leave`, {});
    expect(await step()).toMatchObject({ "m.joined_member_count": 2, "m.invited_member_count": 0 });

    // Named: no heroes. Name removed (empty): heroes again.
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.name`, { name: "Named" });
    expect(await step()).toEqual({ "m.joined_member_count": 2, "m.invited_member_count": 0 });
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.name`, { name: "" });
    expect((await step())["m.heroes"]).toEqual([alice.userId]);

    // A canonical alias names the room too.
    const aliased = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_alias_name: `sum${Date.now()}` })).room_id as string;
    await clientOk(bob.accessToken, "POST", `/join/${enc(aliased)}`, {});
    const fresh = await sync(bob);
    expect(fresh.rooms.join[aliased].summary).toEqual({ "m.joined_member_count": 2, "m.invited_member_count": 0 });
  });

  it("with lazy-loaded members, the heroes' member events are in the state", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    for (const u of [bob, carol]) await clientOk(u.accessToken, "POST", `/join/${enc(roomId)}`, {});
    for (let i = 0; i < 3; i++) await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/h${i}`, { msgtype: "m.text", body: `m${i}` });
    const filter = JSON.stringify({ room: { timeline: { limit: 2 }, state: { lazy_load_members: true } } });
    const r = await call("GET", `/_matrix/client/v3/sync?timeout=0&filter=${enc(filter)}`, { token: bob.accessToken });
    const room = r.body.rooms.join[roomId];
    expect(room.summary["m.heroes"]).toEqual([alice.userId, carol.userId].sort());
    const members = (room.state.events as Json[]).filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    expect(members.sort()).toEqual([alice.userId, bob.userId, carol.userId].sort());
  });
});
