// Events sent to us while our join is under way (workerd). The resident server merges its
// forward extremities right after accepting a join from a server new to the room and sends the
// merge to the newcomer, often before the newcomer has read the send_join answer (a large
// room's state takes seconds to check). Refused as for an unknown room, that event was lost,
// and with it whatever it merged (the 10,000-member benchmark: B missed 2–5 members).
import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import { call, clientOk, federationCall, federationSetup, offline, SERVER, type TestUser } from "./helpers";
import { getServerSigningKey } from "../../src/services/server-key";
import { parseConfig } from "../../src/config";
import type { RoomStub } from "../../src/services/rooms";
import type { SigningKey } from "../../src/core/signing";
import { hashAndSignEvent, roomIdFromCreateEventId } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { JsonObject, PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "resident.test";
const REM = `@rem:${REMOTE}`;
const rv = getRoomVersion("12")!;
const enc = encodeURIComponent;
let key: SigningKey;
let alice: TestUser;

federationSetup(REMOTE, (s) => ({ key, alice } = s), "afterAll");

/** A v12 room on resident.test: create, REM's join, power levels, public join rules. */
async function residentRoom() {
  const sign = (ev: JsonObject) => hashAndSignEvent({ origin_server_ts: Date.now(), ...ev } as unknown as PDU, rv, REMOTE, key);
  const create = await sign({ type: "m.room.create", state_key: "", sender: REM, content: { room_version: "12" }, depth: 1, prev_events: [], auth_events: [] });
  const roomId = roomIdFromCreateEventId(create.eventId);
  const member = await sign({ room_id: roomId, type: "m.room.member", state_key: REM, sender: REM, content: { membership: "join" }, depth: 2, prev_events: [create.eventId], auth_events: [] });
  const pl = await sign({ room_id: roomId, type: "m.room.power_levels", state_key: "", sender: REM, content: {}, depth: 3, prev_events: [member.eventId], auth_events: [member.eventId] });
  const rules = await sign({ room_id: roomId, type: "m.room.join_rules", state_key: "", sender: REM, content: { join_rule: "public" }, depth: 4, prev_events: [pl.eventId], auth_events: [pl.eventId, member.eventId] });
  return { roomId, sign, events: [create, member, pl, rules], pl: pl.eventId, member: member.eventId, rules: rules.eventId };
}

describe("a join under way", () => {
  it("the room is registered before send_join goes out", async () => {
    const room = await residentRoom();
    let registeredAtSendJoin: unknown = "not asked";
    setFederationFetch(async (input) => {
      const url = new URL(String(input));
      if (url.pathname.startsWith(`/_matrix/federation/v1/make_join/${enc(room.roomId)}/`)) {
        const event = { room_id: room.roomId, sender: alice.userId, state_key: alice.userId, type: "m.room.member", content: { membership: "join" }, origin_server_ts: Date.now(), depth: 5, prev_events: [room.rules], auth_events: [room.pl, room.rules] };
        return Response.json({ room_version: "12", event });
      }
      if (url.pathname.startsWith(`/_matrix/federation/v2/send_join/${enc(room.roomId)}/`)) {
        registeredAtSendJoin = await env.DB.prepare("SELECT room_version FROM rooms WHERE room_id = ?").bind(room.roomId).first("room_version");
        const pdus = room.events.map((e) => e.pdu);
        return Response.json({ state: pdus, auth_chain: pdus, servers_in_room: [REMOTE] });
      }
      if (url.pathname.startsWith("/_matrix/federation/")) return new Response("{}", { status: 404 });
      throw new Error("offline (test)");
    });
    await clientOk(alice.accessToken, "POST", `/join/${enc(room.roomId)}?server_name=${REMOTE}`, {});
    expect(registeredAtSendJoin).toBe("12");
  });

  it("the RoomDO holds an event that arrives before the seed and admits it after", async () => {
    const room = await residentRoom();
    const stub = env.ROOMS.get(env.ROOMS.idFromName(room.roomId)) as unknown as RoomStub;
    const ours = await getServerSigningKey(env, { ...parseConfig(env), serverName: SERVER });
    const join = await hashAndSignEvent(
      { room_id: room.roomId, sender: alice.userId, state_key: alice.userId, type: "m.room.member", content: { membership: "join" }, origin_server_ts: Date.now(), depth: 5, prev_events: [room.rules], auth_events: [room.pl, room.rules] } as unknown as PDU,
      rv,
      SERVER,
      ours,
    );
    const message = await room.sign({ room_id: room.roomId, type: "m.room.message", sender: REM, content: { msgtype: "m.text", body: "sent during the join" }, depth: 6, prev_events: [join.eventId], auth_events: [room.pl, room.member] });
    await stub.expectJoin();
    const early = stub.admit(message.pdu, REMOTE); // before the room is here
    await new Promise((r) => setTimeout(r, 100));
    const pdus = room.events.map((e) => e.pdu);
    const seeded = await stub.seedFromJoin({ serverName: SERVER, roomId: room.roomId, roomVersion: "12", origin: REMOTE, join: join.pdu, state: pdus, authChain: pdus });
    expect(seeded.ok).toBe(true);
    await stub.joinSettled();
    expect((await early).status).toBe("accepted");
    expect(await stub.getForwardExtremities()).toEqual([message.eventId]);
  });

  it("a failed join takes the room out of the registry again: its events are refused as before", async () => {
    const room = await residentRoom();
    setFederationFetch(async (input) => {
      const url = new URL(String(input));
      if (url.pathname.startsWith(`/_matrix/federation/v1/make_join/${enc(room.roomId)}/`)) {
        const event = { room_id: room.roomId, sender: alice.userId, state_key: alice.userId, type: "m.room.member", content: { membership: "join" }, origin_server_ts: Date.now(), depth: 5, prev_events: [room.rules], auth_events: [room.pl, room.rules] };
        return Response.json({ room_version: "12", event });
      }
      if (url.pathname.startsWith(`/_matrix/federation/v2/send_join/`)) return Response.json({ errcode: "M_FORBIDDEN", error: "no" }, { status: 403 });
      throw new Error("offline (test)");
    });
    const refused = await call("POST", `/_matrix/client/v3/join/${enc(room.roomId)}?server_name=${REMOTE}`, { token: alice.accessToken, body: {} });
    expect(refused.status).toBe(403);
    expect(await env.DB.prepare("SELECT 1 FROM rooms WHERE room_id = ?").bind(room.roomId).first()).toBeNull();
    // Its events get no result (not a room of ours), as for any unknown room.
    const later = await room.sign({ room_id: room.roomId, type: "m.room.message", sender: REM, content: { msgtype: "m.text", body: "after" }, depth: 5, prev_events: [room.rules], auth_events: [room.pl, room.member] });
    const txn = await federationCall(REMOTE, key, "PUT", `/v1/send/fail${Date.now()}`, { origin: REMOTE, origin_server_ts: Date.now(), pdus: [later.pdu] });
    expect(txn.status).toBe(200);
    expect(txn.body.pdus?.[later.eventId]).toBeUndefined();
  });
});
