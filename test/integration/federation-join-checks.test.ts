// What the joining server checks in a send_join answer before it seeds the room (workerd):
// every event's signatures, content hash and auth rules (Server-Server API "Joining Rooms":
// "the joining server must validate the state and auth chain"; "Checks performed on receipt of
// a PDU"). The answer is processed in bulk (one pass per event, many events per statement):
// these tests hold that no event escapes a check on the way.
import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import { call, clientOk, federationSetup, offline, type TestUser } from "./helpers";
import { generateSigningKey, type SigningKey } from "../../src/core/signing";
import { hashAndSignEvent, roomIdFromCreateEventId } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { JsonObject, PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "checked.test";
const REM = `@rem:${REMOTE}`;
const rv = getRoomVersion("12")!;
const enc = encodeURIComponent;
let key: SigningKey;
let alice: TestUser;

federationSetup(REMOTE, (s) => ({ key, alice } = s), "afterAll");

type Signed = { pdu: PDU; eventId: string };

/** A v12 room on checked.test: create, REM's join, power levels, public join rules, and the
 *  extra state `more` builds on top (each citing the power levels and REM's join). */
async function residentRoom(more: (sign: (ev: JsonObject) => Promise<Signed>, ctx: { roomId: string; auth: string[]; prev: string }) => Promise<Signed[]> = async () => []) {
  const sign = (ev: JsonObject, k = key) => hashAndSignEvent({ origin_server_ts: Date.now(), ...ev } as unknown as PDU, rv, REMOTE, k);
  const create = await sign({ type: "m.room.create", state_key: "", sender: REM, content: { room_version: "12" }, depth: 1, prev_events: [], auth_events: [] });
  const roomId = roomIdFromCreateEventId(create.eventId);
  const member = await sign({ room_id: roomId, type: "m.room.member", state_key: REM, sender: REM, content: { membership: "join" }, depth: 2, prev_events: [create.eventId], auth_events: [] });
  const pl = await sign({ room_id: roomId, type: "m.room.power_levels", state_key: "", sender: REM, content: {}, depth: 3, prev_events: [member.eventId], auth_events: [member.eventId] });
  const rules = await sign({ room_id: roomId, type: "m.room.join_rules", state_key: "", sender: REM, content: { join_rule: "public" }, depth: 4, prev_events: [pl.eventId], auth_events: [pl.eventId, member.eventId] });
  const extra = await more((ev) => sign({ room_id: roomId, sender: REM, ...ev }), { roomId, auth: [pl.eventId, member.eventId], prev: rules.eventId });
  const last = extra.length ? extra[extra.length - 1].eventId : rules.eventId;
  return { roomId, events: [create, member, pl, rules, ...extra], pl: pl.eventId, rules: rules.eventId, last, depth: 5 + extra.length };
}

/** Serve make_join and send_join for `room`, the send_join answer's state being `state`
 *  (`answer`: the send_join answer's text instead). */
function serve(room: Awaited<ReturnType<typeof residentRoom>>, state: PDU[], answer?: string) {
  setFederationFetch(async (input) => {
    const url = new URL(String(input));
    if (url.pathname.startsWith(`/_matrix/federation/v1/make_join/${enc(room.roomId)}/`)) {
      const event = { room_id: room.roomId, sender: alice.userId, state_key: alice.userId, type: "m.room.member", content: { membership: "join" }, origin_server_ts: Date.now(), depth: room.depth, prev_events: [room.last], auth_events: [room.pl, room.rules] };
      return Response.json({ room_version: "12", event });
    }
    if (url.pathname.startsWith(`/_matrix/federation/v2/send_join/${enc(room.roomId)}/`)) {
      if (answer !== undefined) return new Response(answer, { headers: { "content-type": "application/json" } });
      return Response.json({ state, auth_chain: state, servers_in_room: [REMOTE] });
    }
    if (url.pathname.startsWith("/_matrix/federation/")) return new Response("{}", { status: 404 });
    throw new Error("offline (test)");
  });
}

describe("checking a send_join answer", () => {
  it("drops a state event with a forged signature, redacts one whose content hash does not match, and keeps the rest", async () => {
    const forger = await generateSigningKey(key.keyId); // same key ID, another key: a forged signature
    const room = await residentRoom(async (sign, { auth, prev }) => {
      const topic = await sign({ type: "m.room.topic", state_key: "", content: { topic: "real" }, depth: 5, prev_events: [prev], auth_events: auth });
      const custom = await sign({ type: "org.test.checked", state_key: "a", content: { kept: true }, depth: 6, prev_events: [topic.eventId], auth_events: auth });
      const plain = await sign({ type: "org.test.checked", state_key: "b", content: { kept: true }, depth: 7, prev_events: [custom.eventId], auth_events: auth });
      return [topic, custom, plain];
    });
    const [, , , , topic, custom, plain] = room.events;
    // The topic re-signed by a key that is not checked.test's: its ID is the same (signatures
    // are not part of it), its signature does not verify.
    const forged = (await hashAndSignEvent({ ...topic.pdu, signatures: {} } as PDU, rv, REMOTE, forger)).pdu;
    // Content changed after hashing and signing: the redacted form (what is signed, and the event
    // ID) is unchanged, the content hash is not: "the event is redacted and processed as usual".
    const altered = { ...custom.pdu, content: { kept: true, added: "after signing" } } as PDU;
    serve(room, [...room.events.filter((e) => e !== topic && e !== custom).map((e) => e.pdu), forged, altered]);
    await clientOk(alice.accessToken, "POST", `/join/${enc(room.roomId)}?server_name=${REMOTE}`, {});
    const state = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(room.roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string; content: JsonObject }[];
    expect(state.find((e) => e.type === "m.room.topic")).toBeUndefined();
    const a = state.find((e) => e.type === "org.test.checked" && e.state_key === "a");
    expect(a?.event_id).toBe(custom.eventId);
    expect(a?.content).toEqual({});
    const b = state.find((e) => e.type === "org.test.checked" && e.state_key === "b");
    expect(b?.event_id).toBe(plain.eventId);
    expect(b?.content).toEqual({ kept: true });
    expect(state.find((e) => e.type === "m.room.member" && e.state_key === alice.userId)?.content.membership).toBe("join");
  });

  it("drops a state event whose state_key is over 255 bytes of UTF-8, keeps one of exactly 255 (spec: Size limits)", async () => {
    // 86 characters of 3 bytes: 258 bytes in 86 UTF-16 units; 85 of them: 255 bytes.
    const room = await residentRoom(async (sign, { auth, prev }) => {
      const long = await sign({ type: "org.test.ids", state_key: "日".repeat(86), content: {}, depth: 5, prev_events: [prev], auth_events: auth });
      const edge = await sign({ type: "org.test.ids", state_key: "日".repeat(85), content: {}, depth: 6, prev_events: [long.eventId], auth_events: auth });
      return [long, edge];
    });
    serve(room, room.events.map((e) => e.pdu));
    await clientOk(alice.accessToken, "POST", `/join/${enc(room.roomId)}?server_name=${REMOTE}`, {});
    const state = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(room.roomId)}/state`)) as unknown as { type: string; state_key: string }[];
    expect(state.filter((e) => e.type === "org.test.ids").map((e) => e.state_key)).toEqual(["日".repeat(85)]);
  });

  it("drops a state event whose auth events do not allow it (a sender without the power level)", async () => {
    const MAL = `@mallory:${REMOTE}`;
    const room = await residentRoom(async (sign, { auth, prev }) => {
      // Mallory never joined: neither her join nor her state event passes the auth rules.
      const name = await sign({ sender: MAL, type: "m.room.name", state_key: "", content: { name: "taken over" }, depth: 5, prev_events: [prev], auth_events: auth });
      return [name];
    });
    serve(room, room.events.map((e) => e.pdu));
    await clientOk(alice.accessToken, "POST", `/join/${enc(room.roomId)}?server_name=${REMOTE}`, {});
    const state = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(room.roomId)}/state`)) as unknown as { type: string }[];
    expect(state.find((e) => e.type === "m.room.name")).toBeUndefined();
    expect(state.find((e) => e.type === "m.room.join_rules")).toBeDefined();
  });

  it("a state larger than one statement's parameter takes (2,000 events of ~2 KB to a transaction) is stored whole", async () => {
    const pad = "x".repeat(2000);
    const room = await residentRoom(async (sign, { auth, prev }) => {
      const out: Signed[] = [];
      for (let i = 0; i < 1500; i++) out.push(await sign({ type: "org.test.big", state_key: `k${i}`, content: { pad, i }, depth: 5, prev_events: [prev], auth_events: auth }));
      return out;
    });
    serve(room, room.events.map((e) => e.pdu));
    await clientOk(alice.accessToken, "POST", `/join/${enc(room.roomId)}?server_name=${REMOTE}`, {});
    const state = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(room.roomId)}/state`)) as unknown as { type: string }[];
    expect(state.filter((e) => e.type === "org.test.big").length).toBe(1500);
  });

  it("refuses an answer that is not JSON, has no state, or omits the members without servers_in_room (502, no room); the same state whole is joined", async () => {
    const room = await residentRoom();
    const pdus = room.events.map((e) => e.pdu);
    // (The RoomDO reads the answer's text itself: the Worker no longer parses it first.)
    for (const answer of ["{not json", JSON.stringify({ auth_chain: pdus }), JSON.stringify({ state: pdus, auth_chain: pdus, members_omitted: true })]) {
      serve(room, pdus, answer);
      const r = await call("POST", `/_matrix/client/v3/join/${enc(room.roomId)}?server_name=${REMOTE}`, { token: alice.accessToken, body: {} });
      expect(r.status, answer.slice(0, 20)).toBe(502);
      expect(await env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(room.roomId).first()).toBeNull();
    }
    serve(room, pdus, JSON.stringify({ state: pdus, auth_chain: pdus, members_omitted: true, servers_in_room: [REMOTE, 5, "not a server name!"] }));
    await clientOk(alice.accessToken, "POST", `/join/${enc(room.roomId)}?server_name=${REMOTE}`, {});
    const state = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(room.roomId)}/state`)) as unknown as { type: string; state_key: string }[];
    expect(state.find((e) => e.type === "m.room.join_rules")).toBeDefined();
    expect(state.find((e) => e.type === "m.room.member" && e.state_key === alice.userId)).toBeDefined();
  });

  it("refuses the join when the create event's signature is forged (no room without it)", async () => {
    const forger = await generateSigningKey(key.keyId);
    const room = await residentRoom();
    const [create, ...rest] = room.events;
    const forged = (await hashAndSignEvent({ ...create.pdu, signatures: {} } as PDU, rv, REMOTE, forger)).pdu;
    serve(room, [forged, ...rest.map((e) => e.pdu)]);
    const r = await call("POST", `/_matrix/client/v3/join/${enc(room.roomId)}?server_name=${REMOTE}`, { token: alice.accessToken, body: {} });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(await env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(room.roomId).first()).toBeNull();
    const members = await call("GET", `/_matrix/client/v3/rooms/${enc(room.roomId)}/joined_members`, { token: alice.accessToken });
    expect([403, 404]).toContain(members.status);
  });
});
