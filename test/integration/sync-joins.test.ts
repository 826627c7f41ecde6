// /sync around joins and leaves (issue 22, items 2-4): a room new to the client is `limited`
// unless its timeline reaches back to the start of what the user may see; in a private-history
// room, current state the user could not see when it happened still reaches the timeline; and a
// join and leave within one sync batch still deliver the room's state in the leave section.
import { describe, expect, it } from "vitest";
import { call, createRoom, registerUser, type Json, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let txn = 0;

async function ok(u: TestUser, method: string, path: string, body: Json = {}): Promise<Json> {
  const r = await call(method, `${V3}${path}`, { token: u.accessToken, body });
  expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(200);
  return r.body;
}
const join = (u: TestUser, roomId: string) => ok(u, "POST", `/rooms/${enc(roomId)}/join`);
const leave = (u: TestUser, roomId: string) => ok(u, "POST", `/rooms/${enc(roomId)}/leave`);
const invite = (u: TestUser, roomId: string, who: TestUser) => ok(u, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: who.userId });
async function send(u: TestUser, roomId: string, body: string): Promise<string> {
  return (await ok(u, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/sj${++txn}`, { msgtype: "m.text", body })).event_id;
}
async function sync(u: TestUser, q: { since?: string; filter?: Json } = {}): Promise<Json> {
  const qs = new URLSearchParams();
  if (q.since) qs.set("since", q.since);
  if (q.filter) qs.set("filter", JSON.stringify(q.filter));
  const r = await call("GET", `${V3}/sync?${qs}`, { token: u.accessToken });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}
const isJoinOf = (u: TestUser) => (e: Json) => e.type === "m.room.member" && e.state_key === u.userId && e.content.membership === "join";

describe("a room newly joined in an incremental sync", () => {
  it("is limited when its timeline does not reach the start of the visible history (types filter)", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const filter = { room: { timeline: { limit: 10, types: ["m.room.message"] }, state: { types: [] } } };
    const roomId = await createRoom(alice);
    for (let i = 0; i < 4; i++) await send(alice, roomId, `one-${i}`);
    const since = (await sync(bob, { filter })).next_batch;
    for (let i = 0; i < 4; i++) await send(alice, roomId, `two-${i}`);
    await join(bob, roomId);
    const room = (await sync(bob, { since, filter })).rooms.join[roomId];
    expect(room.timeline.events.map((e: Json) => e.type)).toEqual(Array(8).fill("m.room.message"));
    // The room's history (its creation, its members) is visible to Bob and lies before the
    // oldest message: the client must be told there is more, or it never paginates.
    expect(room.timeline.limited).toBe(true);
    const back = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&from=${enc(room.timeline.prev_batch)}&limit=50`, { token: bob.accessToken });
    expect(back.body.chunk.map((e: Json) => e.type)).toContain("m.room.create");
  });

  it("is not limited when the timeline holds everything the user may see", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    // Whole history within the limit.
    const small = await createRoom(alice);
    const since = (await sync(bob)).next_batch;
    await join(bob, small);
    const s = (await sync(bob, { since })).rooms.join[small];
    expect(s.timeline.events[0].type).toBe("m.room.create");
    expect(s.timeline.limited).toBe(false);
    // history_visibility joined: Bob's visible history starts at his join.
    const priv = await createRoom(alice, { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } }] });
    for (let i = 0; i < 15; i++) await send(alice, priv, `before-${i}`);
    const since2 = (await sync(bob)).next_batch;
    await join(bob, priv);
    await send(alice, priv, "after");
    const p = (await sync(bob, { since: since2 })).rooms.join[priv];
    expect(p.timeline.events.filter((e: Json) => e.type === "m.room.message").map((e: Json) => e.content.body)).toEqual(["after"]);
    expect(p.timeline.events.some(isJoinOf(bob))).toBe(true);
    expect(p.timeline.limited).toBe(false);
  });
});

describe("an initial sync stays count-based", () => {
  it("a filtered timeline that reaches its limit is not limited (sytest 'A filtered timeline reaches its limit')", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice);
    const mine = await send(alice, roomId, "My message");
    for (let i = 0; i < 11; i++) await ok(alice, "PUT", `/rooms/${enc(roomId)}/send/a.made.up.filler.type/f${++txn}`, { filler: i });
    const room = (await sync(alice, { filter: { room: { timeline: { limit: 1, types: ["m.room.message"] }, state: { types: [] } } } })).rooms.join[roomId];
    expect(room.timeline.events.map((e: Json) => e.event_id)).toEqual([mine]);
    expect(room.timeline.limited).toBe(false);
  });
});

describe("private history: current state reaches the timeline (sytest 31sync/06state)", () => {
  // The syncer leaves, the invitee joins while the syncer cannot see it (history_visibility
  // joined), the syncer rejoins: its next sync must carry the invitee's join.
  for (const variant of ["plain", "many messages before", "many messages after"]) {
    it(`shows the join that happened while the syncer was away (${variant})`, async () => {
      const [creator, syncer, invitee] = await Promise.all([registerUser(), registerUser(), registerUser()]);
      const roomId = await createRoom(creator);
      await join(syncer, roomId);
      await ok(creator, "PUT", `/rooms/${enc(roomId)}/state/m.room.history_visibility/`, { history_visibility: "joined" });
      await invite(creator, roomId, invitee);
      const since = (await sync(syncer)).next_batch;
      if (variant === "many messages before") for (let i = 0; i < 30; i++) await send(creator, roomId, `before ${i}`);
      await leave(syncer, roomId);
      await join(invitee, roomId);
      if (variant === "many messages after") for (let i = 0; i < 30; i++) await send(creator, roomId, `after ${i}`);
      await join(syncer, roomId);
      const room = (await sync(syncer, { since })).rooms.join[roomId];
      expect(room, "room in rooms.join").toBeDefined();
      expect(room.timeline.events.some(isJoinOf(invitee)), "No join for joined user").toBe(true);
      expect(room.timeline.events.some(isJoinOf(syncer)), "the syncer's own join").toBe(true);
      // Messages sent while the syncer was away stay hidden.
      expect(room.timeline.events.filter((e: Json) => e.type === "m.room.message" && String(e.content.body).startsWith("after"))).toEqual([]);
    });
  }

  it("the first sync after joining a joined-history room with many messages before and after carries the joiner's join", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } }] });
    for (let i = 0; i < 30; i++) await send(alice, roomId, `before ${i}`);
    const since = (await sync(bob)).next_batch;
    await join(bob, roomId);
    for (let i = 0; i < 30; i++) await send(alice, roomId, `after ${i}`);
    for (const body of [await sync(bob, { since }), await sync(bob)]) {
      const room = body.rooms.join[roomId];
      const all = [...room.timeline.events, ...room.state.events];
      expect(all.some(isJoinOf(bob)), "No join for joined user").toBe(true);
      expect(room.timeline.limited).toBe(true);
    }
  });
});

describe("join and leave within one sync batch", () => {
  it("the leave section still carries the room's state", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const filter = { room: { timeline: { types: [] }, state: { types: ["a.madeup.test.state"] }, ephemeral: { types: [] }, include_leave: true }, presence: { types: [] } };
    const roomId = await createRoom(alice);
    await ok(alice, "PUT", `/rooms/${enc(roomId)}/state/a.madeup.test.state/`, { my_key: 1 });
    await invite(alice, roomId, bob);
    const since = (await sync(bob, { filter })).next_batch;
    await join(bob, roomId);
    await leave(bob, roomId);
    const room = (await sync(bob, { since, filter })).rooms.leave[roomId];
    expect(room, "room in rooms.leave").toBeDefined();
    expect(room.state.events.map((e: Json) => [e.type, e.content.my_key])).toEqual([["a.madeup.test.state", 1]]);
  });

  it("a rejected invite stays an incremental leave (no room state to someone who never joined)", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await ok(alice, "PUT", `/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: "private topic" });
    await invite(alice, roomId, bob);
    const since = (await sync(bob)).next_batch;
    await leave(bob, roomId);
    const room = (await sync(bob, { since })).rooms.leave[roomId];
    expect(room).toBeDefined();
    expect(room.state.events.map((e: Json) => e.type)).not.toContain("m.room.topic");
  });
});
