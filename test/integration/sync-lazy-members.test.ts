// /sync with lazy-loaded members (spec: Client-Server API "Lazy-loading room members" and GET /sync:
// "When a sync is limited, the server MUST return membership events for events in the gap"),
// profile changes in incremental syncs, and `event_format: "federation"` (filter definition).
// Scenarios follow the shape of the sytest lazy-loading suite (tests/31sync/15lazy-members.pl).
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, type Json, type TestUser, createRoom as newRoom, joinRoom as join, leaveRoom as leave, sendText as send, syncOk as sync } from "./helpers";
import type { UserStub } from "../../src/services/notifier";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

const createRoom = (owner: TestUser) => newRoom(owner, { preset: "public_chat", name: "A room name" });

async function fill(u: TestUser, roomId: string, n: number) {
  for (let i = 1; i <= n; i++) await send(u, roomId, `filler ${i}`);
}
/** Member events in a room's `state` of a sync response: state_key → membership. */
function members(body: Json, roomId: string): Record<string, string> {
  const room = body.rooms.join[roomId];
  expect(room, `room ${roomId} in rooms.join`).toBeDefined();
  const out: Record<string, string> = {};
  for (const e of room.state.events as Json[]) {
    if (e.type !== "m.room.member") continue;
    expect(out[e.state_key], `${e.state_key} sent twice`).toBeUndefined();
    out[e.state_key] = e.content.membership;
  }
  return out;
}
const joined = (...us: TestUser[]) => Object.fromEntries(us.map((u) => [u.userId, "join"]));

const LL = JSON.stringify({ room: { state: { lazy_load_members: true }, timeline: { limit: 10 } } });
const LL_REDUNDANT = JSON.stringify({ room: { state: { lazy_load_members: true, include_redundant_members: true }, timeline: { limit: 10 } } });

async function users(n: number): Promise<TestUser[]> {
  return Promise.all(Array.from({ length: n }, () => registerUser()));
}

/** alice's public room with bob and charlie joined: where most scenarios start. */
async function threeInARoom() {
  const [alice, bob, charlie] = await users(3);
  const roomId = await createRoom(alice);
  await join(bob, roomId);
  await join(charlie, roomId);
  return { alice, bob, charlie, roomId };
}

describe("lazy-loaded members", () => {
  it("an initial sync carries the timeline's senders and my own member event only", async () => {
    const { alice, bob, charlie, roomId } = await threeInARoom();
    await fill(bob, roomId, 10);
    await fill(charlie, roomId, 10);
    expect(members(await sync(alice, { filter: LL }), roomId)).toEqual(joined(alice, charlie));
  });

  it("an incremental sync carries only new senders, then nothing once they were sent", async () => {
    const { alice, bob, charlie, roomId } = await threeInARoom();
    await fill(bob, roomId, 10);
    const s1 = await sync(alice, { filter: LL });
    expect(members(s1, roomId)).toEqual(joined(alice, bob));
    await send(charlie, roomId, "Message from charlie");
    const s2 = await sync(alice, { filter: LL, since: s1.next_batch });
    expect(s2.rooms.join[roomId].state.events.map((e: Json) => [e.type, e.state_key])).toEqual([["m.room.member", charlie.userId]]);
    const s3 = await sync(alice, { filter: LL, since: s2.next_batch });
    expect(s3.rooms.join[roomId]).toBeUndefined();
  });

  it("does not resend members this device already has (include_redundant_members defaults to false), and does when asked", async () => {
    for (const [filter, expectAgain] of [
      [LL, false],
      [LL_REDUNDANT, true],
    ] as const) {
      const { alice, bob, charlie, roomId } = await threeInARoom();
      await fill(bob, roomId, 10);
      await fill(charlie, roomId, 5);
      const s1 = await sync(alice, { filter });
      expect(members(s1, roomId)).toEqual(joined(alice, bob, charlie));
      await send(bob, roomId, "New message from bob");
      await send(charlie, roomId, "New message from charlie");
      const s2 = await sync(alice, { filter, since: s1.next_batch });
      expect(members(s2, roomId)).toEqual(expectAgain ? joined(bob, charlie) : {});
    }
  });

  it("leaves redundant members out of state_after too", async () => {
    const [alice, bob] = await users(2);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await fill(bob, roomId, 12);
    const stateAfter = (b: Json) => (b.rooms.join[roomId].state_after.events as Json[]).filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    const s1 = await sync(alice, { filter: LL, use_state_after: true });
    expect(stateAfter(s1).sort()).toEqual([alice.userId, bob.userId].sort());
    await send(bob, roomId, "more");
    const s2 = await sync(alice, { filter: LL, use_state_after: true, since: s1.next_batch });
    expect(stateAfter(s2)).toEqual([]);
  });

  it("a retried since token gets the members again: what was sent counts only once the client presents a later token", async () => {
    const [alice, bob] = await users(2);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await fill(alice, roomId, 10);
    const s1 = await sync(alice, { filter: LL });
    expect(members(s1, roomId)).toEqual(joined(alice));
    await send(bob, roomId, "hello");
    const s2 = await sync(alice, { filter: LL, since: s1.next_batch });
    expect(members(s2, roomId)).toEqual(joined(bob));
    // The response was lost: the client retries from s1 and must still get Bob.
    const retry = await sync(alice, { filter: LL, since: s1.next_batch });
    expect(members(retry, roomId)).toEqual(joined(bob));
    await send(bob, roomId, "again");
    expect(members(await sync(alice, { filter: LL, since: retry.next_batch }), roomId)).toEqual({});
    // Another device of the same user has been sent nothing.
    const other = await call("POST", `${V3}/login`, { body: { type: "m.login.password", identifier: { type: "m.id.user", user: alice.userId }, password: "correct horse battery staple" } });
    expect(other.status, JSON.stringify(other.body)).toBe(200);
    const dev2 = { ...alice, accessToken: other.body.access_token as string };
    const d1 = await sync(dev2, { filter: LL });
    expect(members(d1, roomId)).toEqual(joined(alice, bob));
    // A new initial sync of the first device starts over.
    const again = await sync(alice, { filter: LL });
    expect(members(again, roomId)).toEqual(joined(alice, bob));
  });

  it("a gapped incremental sync carries every membership change of the gap, and senders not yet sent", async () => {
    const [alice, bob, charlie, dave] = await users(4);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await join(charlie, roomId);
    await fill(bob, roomId, 10);
    const s1 = await sync(alice, { filter: LL });
    expect(members(s1, roomId)).toEqual(joined(alice, bob));
    await join(dave, roomId);
    await fill(charlie, roomId, 20);
    const s2 = await sync(alice, { filter: LL, since: s1.next_batch });
    expect(s2.rooms.join[roomId].timeline.limited).toBe(true);
    expect(members(s2, roomId)).toEqual(joined(charlie, dave));
    // Dave leaves in the next gap; Charlie was sent already.
    await leave(dave, roomId);
    await fill(charlie, roomId, 20);
    const s3 = await sync(alice, { filter: LL, since: s2.next_batch });
    expect(s3.rooms.join[roomId].timeline.limited).toBe(true);
    expect(members(s3, roomId)).toEqual({ [dave.userId]: "leave" });
  });

  it("a gapped incremental sync carries other state changes of the gap", async () => {
    const [alice, bob] = await users(2);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const s1 = await sync(alice, { filter: LL });
    const t = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: "in the gap" } });
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    await fill(bob, roomId, 15);
    const room = (await sync(alice, { filter: LL, since: s1.next_batch })).rooms.join[roomId];
    expect(room.timeline.limited).toBe(true);
    expect(room.state.events.find((e: Json) => e.type === "m.room.topic")?.content.topic).toBe("in the gap");
  });

  it("old leaves are present once in gapped incremental syncs, and leaves in non-gapped ones", async () => {
    for (const n of [10, 5]) {
      const { alice, bob, charlie, roomId } = await threeInARoom();
      await send(charlie, roomId, "Hello world");
      await fill(bob, roomId, 10);
      const s1 = await sync(alice, { filter: LL });
      expect(members(s1, roomId)).toEqual(joined(alice, bob));
      await leave(charlie, roomId);
      await fill(bob, roomId, n);
      const s2 = await sync(alice, { filter: LL, since: s1.next_batch });
      const room = s2.rooms.join[roomId];
      const leaveInTimeline = room.timeline.events.some((e: Json) => e.type === "m.room.member" && e.state_key === charlie.userId);
      if (n === 10) {
        // Gapped: the leave is in the gap, so it comes in `state` — once, and nothing else.
        expect(room.timeline.limited).toBe(true);
        expect(leaveInTimeline).toBe(false);
        expect(members(s2, roomId)).toEqual({ [charlie.userId]: "leave" });
      } else {
        // Not gapped: the leave is in the timeline; `state` (before the timeline) may carry
        // Charlie's membership up to it — he is the leave's sender and was never sent — and
        // nobody else.
        expect(room.timeline.limited).toBe(false);
        expect(leaveInTimeline).toBe(true);
        expect(Object.keys(members(s2, roomId))).toEqual([charlie.userId]);
      }
    }
  });

  it("old members who start speaking after a gap are sent", async () => {
    const { alice, bob, charlie, roomId } = await threeInARoom();
    await fill(bob, roomId, 10);
    const s1 = await sync(alice, { filter: LL });
    await fill(bob, roomId, 10);
    await fill(charlie, roomId, 10);
    expect(members(await sync(alice, { filter: LL, since: s1.next_batch }), roomId)).toEqual(joined(charlie));
  });

  it("a member event in the timeline counts as sent", async () => {
    const [alice, bob] = await users(2);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await fill(bob, roomId, 10);
    const s1 = await sync(alice, { filter: LL });
    expect(members(s1, roomId)).toEqual(joined(alice, bob));
    // Bob's new member event comes in the timeline (not redundant: it is an event).
    const nick = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.userId)}`, { token: bob.accessToken, body: { membership: "join", displayname: "Bobby" } });
    expect(nick.status).toBe(200);
    await send(bob, roomId, "renamed");
    const s2 = await sync(alice, { filter: LL, since: s1.next_batch });
    expect(s2.rooms.join[roomId].timeline.events.some((e: Json) => e.event_id === nick.body.event_id)).toBe(true);
    expect(members(s2, roomId)).toEqual({});
    await send(bob, roomId, "again");
    expect(members(await sync(alice, { filter: LL, since: s2.next_batch }), roomId)).toEqual({});
  });
});

describe("what a device was sent (hub)", () => {
  it("goes with the device, and with devices idle for a day", async () => {
    const [alice] = await users(1);
    const hub = env.USERS.get(env.USERS.idFromName(alice.userId)) as unknown as UserStub;
    await sync(alice);
    const t = await hub.currentToken();
    const roomId = "!r:test.local";
    const bob = "@bob:test.local";
    const record = (deviceId: string) => hub.settleLazyMembers(alice.userId, { deviceId, since: t, nextBatch: t, rooms: [{ roomId, candidates: {}, sent: { [bob]: "$e1" } }] });
    const ask = (deviceId: string) => hub.settleLazyMembers(alice.userId, { deviceId, since: t, nextBatch: t, rooms: [{ roomId, candidates: { [bob]: "$e1" }, sent: {} }] });
    await record("D1");
    expect(await ask("D1")).toEqual({ [roomId]: [bob] });
    // Another event for the same member is not redundant.
    expect(await hub.settleLazyMembers(alice.userId, { deviceId: "D1", since: t, nextBatch: t, rooms: [{ roomId, candidates: { [bob]: "$e2" }, sent: {} }] })).toEqual({});
    await record("D1");
    await hub.deleteDevice(alice.userId, "D1");
    expect(await ask("D1")).toEqual({});
    // Alice's real device synced just now; D2 never did: a compaction a day later prunes both.
    await record(alice.deviceId);
    await record("D2");
    expect(await ask(alice.deviceId)).toEqual({ [roomId]: [bob] });
    await hub.compactLog({ now: Date.now() });
    expect(await ask(alice.deviceId)).toEqual({ [roomId]: [bob] });
    expect(await ask("D2")).toEqual({});
    await hub.compactLog({ now: Date.now() + 25 * 3600_000 });
    expect(await ask(alice.deviceId)).toEqual({});
  });
});

describe("profile changes in incremental syncs", () => {
  it("a display-name change is not a full state sync: the next sync carries only the new member event", async () => {
    const [alice, bob] = await users(2);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await send(bob, roomId, "hi");
    const s1 = await sync(alice);
    const r = await call("PUT", `${V3}/profile/${enc(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: "boris" } });
    expect(r.status).toBe(200);
    const s2 = await sync(alice, { since: s1.next_batch });
    const room = s2.rooms.join[roomId];
    expect(room.state.events).toEqual([]);
    expect(room.timeline.limited).toBe(false);
    expect(room.timeline.events.map((e: Json) => [e.type, e.state_key, e.content.displayname])).toEqual([["m.room.member", alice.userId, "boris"]]);

    // With state and timeline filters that leave the member event out, nothing comes back
    // for the room — in particular not its full state.
    const filter = JSON.stringify({ room: { timeline: { types: [] }, state: { types: ["a.madeup.test.state"] }, ephemeral: { types: [] } }, presence: { types: [] } });
    const st = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/a.madeup.test.state/`, { token: alice.accessToken, body: { my_key: 1 } });
    expect(st.status).toBe(200);
    const f1 = await sync(alice, { filter });
    expect(f1.rooms.join[roomId].state.events.length).toBe(1);
    const nick = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(alice.userId)}`, { token: alice.accessToken, body: { membership: "join", displayname: "boris2" } });
    expect(nick.status).toBe(200);
    await send(alice, roomId, "after");
    const f2 = await sync(alice, { filter, since: f1.next_batch });
    expect(f2.rooms.join[roomId]).toBeUndefined();
  });
});

describe("event_format", () => {
  it('"federation" returns events as PDUs, "client" (the default) as client events', async () => {
    const [alice] = await users(1);
    const roomId = await createRoom(alice);
    const eventId = await send(alice, roomId, "pdu please");
    const f = JSON.stringify({ event_format: "federation", room: { timeline: { limit: 3 } } });
    const room = (await sync(alice, { filter: f })).rooms.join[roomId];
    const ev = room.timeline.events.find((e: Json) => e.event_id === eventId);
    expect(ev, JSON.stringify(room.timeline.events)).toBeDefined();
    // PDU fields (spec: Server-Server API "PDUs"): auth_events, prev_events, depth, hashes, signatures.
    for (const k of ["auth_events", "prev_events", "depth", "hashes", "signatures", "room_id", "sender", "origin_server_ts", "content", "type"]) expect(ev, k).toHaveProperty(k);
    expect(ev.content.body).toBe("pdu please");
    for (const e of room.state.events as Json[]) expect(e).toHaveProperty("auth_events");
    const client = (await sync(alice, { filter: JSON.stringify({ room: { timeline: { limit: 3 } } }) })).rooms.join[roomId];
    const cev = client.timeline.events.find((e: Json) => e.event_id === eventId);
    expect(cev).not.toHaveProperty("auth_events");
    expect(cev).not.toHaveProperty("hashes");
  });
});
