// What /sync and /members show after concurrent joins (workerd). Two users of remote.test join
// through make_join/send_join at once: both templates cite the same extremity, so the joins are
// two branches and the room is left with two forward extremities. The state after the newest
// join holds only its own branch; what clients are sent must be the room's current state — the
// resolution over every forward extremity (Server-Server API "Room State Resolution") — in
// `state`, `state_after` and the summary alike, agreeing with /members and /joined_members.
import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import { call, clientOk, federationCall, federationSetup, offline, registerUser, remoteJoinWave, syncOk, type Json, type TestUser } from "./helpers";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import type { SigningKey } from "../../src/core/signing";
import type { RoomStub } from "../../src/services/rooms";

const REMOTE = "remote.test";
const enc = encodeURIComponent;
let key: SigningKey;
let alice: TestUser;

federationSetup(REMOTE, (s) => ({ key, alice } = s));

const sync = (u: TestUser, q: Record<string, string>): Promise<Json> => syncOk(u, { timeout: "0", ...q });

/** user → membership from a list of client-format state events. */
const members = (events: Json[]) => Object.fromEntries(events.filter((e) => e.type === "m.room.member").map((e) => [e.state_key, e.content.membership]));

describe("sync state after concurrent joins", () => {
  it("state, state_after, the summary and /members all show the resolved state over every forward extremity", async () => {
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
    // A first remote join alone (the server is new to the room: a merge follows; wait for it).
    await remoteJoinWave(REMOTE, key, roomId, 0, 1);
    for (let i = 0; i < 50 && (await room.getForwardExtremities()).length !== 1; i++) await new Promise((r) => setTimeout(r, 50));
    const first = await sync(alice, { use_state_after: "true" });
    // Then two at once: two branches, left unmerged.
    await remoteJoinWave(REMOTE, key, roomId, 1, 2);
    expect(await room.getForwardExtremities()).toHaveLength(2);
    const everyone = [alice.userId, `@w0u0:${REMOTE}`, `@w1u0:${REMOTE}`, `@w1u1:${REMOTE}`].sort();

    const joined = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/joined_members`)).joined as Json;
    expect(Object.keys(joined).sort()).toEqual(everyone);
    const listed = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/members`)).chunk as Json[];
    expect(members(listed)).toEqual(Object.fromEntries(everyone.map((u) => [u, "join"])));

    // Incremental with state_after: both new joins are in state_after.
    const inc = (await sync(alice, { since: first.next_batch, use_state_after: "true" })).rooms.join[roomId];
    expect(members(inc.state_after.events)).toMatchObject({ [`@w1u0:${REMOTE}`]: "join", [`@w1u1:${REMOTE}`]: "join" });
    expect(inc.summary["m.joined_member_count"]).toBe(4);
    expect(inc.summary["m.invited_member_count"]).toBe(0);

    // Initial sync, state_after: every member joined; the summary agrees.
    const initial = (await sync(alice, { use_state_after: "true" })).rooms.join[roomId];
    expect(members(initial.state_after.events)).toEqual(Object.fromEntries(everyone.map((u) => [u, "join"])));
    expect(initial.summary["m.joined_member_count"]).toBe(4);

    // Initial sync with a short timeline: state (before the timeline) + timeline hold every join.
    const short = (await sync(alice, { filter: JSON.stringify({ room: { timeline: { limit: 1 } } }) })).rooms.join[roomId];
    expect(members([...short.state.events, ...short.timeline.events])).toEqual(Object.fromEntries(everyone.map((u) => [u, "join"])));
    expect(short.summary["m.joined_member_count"]).toBe(4);

  });

  it("/messages shows a member the events /sync showed them: a remote join on a branch without their own join", async () => {
    const bob = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
    await remoteJoinWave(REMOTE, key, roomId, 0, 1);
    for (let i = 0; i < 50 && (await room.getForwardExtremities()).length !== 1; i++) await new Promise((r) => setTimeout(r, 50));
    // remote.test asks for a template, bob joins here, then the remote join arrives: its
    // prev_events predate bob's join, so the state before it has no bob.
    const late = `@late:${REMOTE}`;
    const t = await federationCall(REMOTE, key, "GET", `/v1/make_join/${enc(roomId)}/${enc(late)}?ver=12`);
    expect(t.status).toBe(200);
    const first = await sync(bob, {});
    await clientOk(bob.accessToken, "POST", `/join/${enc(roomId)}`, {});
    const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, getRoomVersion("12")!, REMOTE, key);
    expect((await federationCall(REMOTE, key, "PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu)).status).toBe(200);

    const synced = (await sync(bob, { since: first.next_batch })).rooms.join[roomId].timeline.events.map((e: Json) => e.event_id);
    expect(synced).toContain(j.eventId);
    const m = await clientOk(bob.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=50`);
    expect((m.chunk as Json[]).map((e) => e.event_id)).toContain(j.eventId);
  });
});

describe("rejecting a remote invite", () => {
  it("when the inviting server cannot be reached, the rejection is made here and the leave comes in the user's /sync", async () => {
    const bob = await registerUser();
    const roomId = `!unreachable${Date.now()}:${REMOTE}`;
    const ev = {
      room_id: roomId,
      sender: `@inviter:${REMOTE}`,
      type: "m.room.member",
      state_key: bob.userId,
      content: { membership: "invite", is_direct: true },
      origin_server_ts: Date.now(),
      depth: 5,
      prev_events: ["$prev00000000000000000000000000000000000000"],
      auth_events: ["$auth00000000000000000000000000000000000000"],
    } as unknown as PDU;
    const first = await sync(bob, {});
    const { pdu, eventId } = await hashAndSignEvent(ev, getRoomVersion("12")!, REMOTE, key);
    const inv = await federationCall(REMOTE, key, "PUT", `/v2/invite/${enc(roomId)}/${enc(eventId)}`, { room_version: "12", event: pdu, invite_room_state: [] });
    expect(inv.status).toBe(200);
    const invited = await sync(bob, { since: first.next_batch });
    const mine = (invited.rooms.invite[roomId].invite_state.events as Json[]).find((e) => e.type === "m.room.member" && e.state_key === bob.userId);
    expect(mine?.content).toMatchObject({ membership: "invite", is_direct: true });

    // Federation is offline: make_leave fails, the rejection is made here.
    expect((await call("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const left = await sync(bob, { since: invited.next_batch });
    const tl = left.rooms.leave[roomId].timeline.events as Json[];
    expect(tl.map((e) => [e.type, e.state_key, e.content.membership])).toEqual([["m.room.member", bob.userId, "leave"]]);
    expect(left.rooms.invite?.[roomId]).toBeUndefined();
    // And with state_after, the leave is the state too.
    const after = await sync(bob, { since: invited.next_batch, use_state_after: "true" });
    expect((after.rooms.leave[roomId].state_after.events as Json[]).map((e) => e.content.membership)).toEqual(["leave"]);
    // Not shown again.
    const again = await sync(bob, { since: left.next_batch });
    expect(again.rooms?.leave?.[roomId]).toBeUndefined();
  });
});
