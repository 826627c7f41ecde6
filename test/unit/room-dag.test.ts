// RoomDO admit pipeline on hand-built PDUs: forks and merges (state resolution), rejected events,
// soft-failed events, bad signatures, spoofed senders, auth events from another room.
import { describe, expect, it, beforeAll } from "vitest";
import { env } from "cloudflare:test";
import type { PDU, JsonObject } from "../../src/core/types";
import { getRoomVersion } from "../../src/core/room-versions";
import { hashAndSignEvent, roomIdFromCreateEventId } from "../../src/core/event-hashes";
import { generateSigningKey, type SigningKey } from "../../src/core/signing";
import { getServerSigningKey } from "../../src/services/server-key";
import { parseConfig } from "../../src/config";
import type { RoomStub } from "../../src/services/rooms";

const SERVER = "test.local";
const rv = getRoomVersion("12")!;
const alice = "@alice:test.local";
const bob = "@bob:test.local";
const carol = "@carol:test.local";

let key: SigningKey;
let stub: RoomStub;
let roomId: string;

async function sign(fields: Record<string, unknown>, k = key, server = SERVER): Promise<{ pdu: PDU; eventId: string }> {
  return hashAndSignEvent({ origin_server_ts: Date.now(), ...fields } as unknown as PDU, rv, server, k);
}

async function stateId(type: string, sk = ""): Promise<string> {
  const ev = await stub.getCurrentStateEvent(type, sk);
  return ev!.event_id as string;
}

async function depthOf(id: string): Promise<number> {
  return (await stub.getPdu(id))!.pdu.depth;
}

/** A PDU on top of `prev` with the given auth events. */
async function build(prev: string[], auth: string[], ev: { type: string; sender: string; state_key?: string; content: JsonObject }, k?: SigningKey, server?: string) {
  const depth = Math.max(...(await Promise.all(prev.map(depthOf)))) + 1;
  return sign({ room_id: roomId, prev_events: prev, auth_events: auth, depth, ...ev }, k, server);
}

async function bodies(userId: string): Promise<string[]> {
  const r = await stub.getMessages({ userId }, { dir: "f", limit: 1000 });
  if (!r.ok) throw new Error(r.error);
  return r.value.chunk.map((e) => `${e.type}|${(e.content as JsonObject).body ?? (e.content as JsonObject).membership ?? ""}`);
}

beforeAll(async () => {
  key = await getServerSigningKey(env, { ...parseConfig(env), serverName: SERVER });
  const create = await sign({ type: "m.room.create", state_key: "", sender: alice, content: { room_version: "12" }, depth: 1, prev_events: [], auth_events: [] });
  roomId = roomIdFromCreateEventId(create.eventId);
  stub = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
  const r = await stub.createRoom({
    serverName: SERVER,
    roomId,
    roomVersion: "12",
    createPdu: create.pdu,
    events: [
      { type: "m.room.member", state_key: alice, sender: alice, content: { membership: "join" } },
      { type: "m.room.power_levels", state_key: "", sender: alice, content: { users: { [bob]: 50 }, state_default: 50, ban: 50 } },
      { type: "m.room.join_rules", state_key: "", sender: alice, content: { join_rule: "public" } },
      { type: "m.room.member", state_key: bob, sender: bob, content: { membership: "join" } },
      { type: "m.room.member", state_key: carol, sender: carol, content: { membership: "join" } },
    ],
  });
  expect(r.ok, JSON.stringify(r)).toBe(true);
});

describe("RoomDO admit", () => {
  it("a fork is merged by state resolution and the next local event cites both tips", async () => {
    const [tip] = await stub.getForwardExtremities();
    const pl = await stateId("m.room.power_levels");
    const aliceJoin = await stateId("m.room.member", alice);
    const bobJoin = await stateId("m.room.member", bob);
    const a = await build([tip], [pl, aliceJoin], { type: "m.room.topic", sender: alice, state_key: "", content: { topic: "from alice" } });
    const b = await build([tip], [pl, bobJoin], { type: "m.room.name", sender: bob, state_key: "", content: { name: "from bob" } });
    expect((await stub.admit(a.pdu, SERVER)).status).toBe("accepted");
    expect((await stub.admit(b.pdu, SERVER)).status).toBe("accepted");
    expect((await stub.getForwardExtremities()).sort()).toEqual([a.eventId, b.eventId].sort());
    expect((await stub.getCurrentStateEvent("m.room.topic", ""))!.content).toEqual({ topic: "from alice" });
    expect((await stub.getCurrentStateEvent("m.room.name", ""))!.content).toEqual({ name: "from bob" });
    // Admitting the same event again is a no-op.
    expect((await stub.admit(a.pdu, SERVER)).status).toBe("duplicate");

    const m = await stub.createLocalEvent({ type: "m.room.message", sender: carol, content: { body: "merge" } });
    expect(m.ok).toBe(true);
    const merged = (await stub.getPdu(m.ok ? m.value.eventId : ""))!.pdu;
    expect((merged.prev_events as string[]).slice().sort()).toEqual([a.eventId, b.eventId].sort());
    expect(await stub.getForwardExtremities()).toEqual([m.ok && m.value.eventId]);
  });

  it("rejects a member raising their own power level; the rejected event is never served", async () => {
    const [tip] = await stub.getForwardExtremities();
    const pl = await stateId("m.room.power_levels");
    const carolJoin = await stateId("m.room.member", carol);
    const bad = await build([tip], [pl, carolJoin], { type: "m.room.power_levels", sender: carol, state_key: "", content: { users: { [carol]: 100, [bob]: 50 } } });
    const out = await stub.admit(bad.pdu, SERVER);
    expect(out.status).toBe("rejected");
    expect((await stub.getPdu(bad.eventId))!.status).toBe("rejected");
    expect(await stateId("m.room.power_levels")).toBe(pl);
    const ev = await stub.getEventForClient({ userId: alice }, bad.eventId);
    expect(ev.ok).toBe(false);
    // An event citing the rejected one as an auth event is rejected too (rule 2.3).
    const child = await build([tip], [bad.eventId, carolJoin], { type: "m.room.message", sender: carol, content: { body: "x" } });
    expect((await stub.admit(child.pdu, SERVER)).status).toBe("rejected");
    // The local path refuses without storing anything.
    const local = await stub.createLocalEvent({ type: "m.room.power_levels", state_key: "", sender: carol, content: { users: { [carol]: 100 } } });
    expect(local.ok).toBe(false);
    if (!local.ok) expect(local.errcode).toBe("M_FORBIDDEN");
  });

  it("soft-fails an event allowed by the state before it but not by the current state", async () => {
    const [tip] = await stub.getForwardExtremities();
    const pl = await stateId("m.room.power_levels");
    const carolJoin = await stateId("m.room.member", carol);
    const ban = await stub.createLocalEvent({ type: "m.room.member", state_key: carol, sender: alice, content: { membership: "ban" } });
    expect(ban.ok).toBe(true);
    // carol's message on the old tip: fine before the ban, soft-failed now.
    const msg = await build([tip], [pl, carolJoin], { type: "m.room.message", sender: carol, content: { body: "sneaky" } });
    const out = await stub.admit(msg.pdu, SERVER);
    expect(out.status).toBe("soft_failed");
    expect(await bodies(alice)).not.toContain("m.room.message|sneaky");
    // Soft-failed events are not forward extremities.
    expect(await stub.getForwardExtremities()).toEqual([ban.ok && ban.value.eventId]);
  });

  it("refuses bad signatures, spoofed senders and auth events from another room", async () => {
    const [tip] = await stub.getForwardExtremities();
    const pl = await stateId("m.room.power_levels");
    const aliceJoin = await stateId("m.room.member", alice);
    const other = await generateSigningKey();
    const forged = await build([tip], [pl, aliceJoin], { type: "m.room.message", sender: alice, content: { body: "forged" } }, { ...other, keyId: key.keyId });
    expect((await stub.admit(forged.pdu, SERVER)).status).toBe("invalid");
    expect(await stub.getPdu(forged.eventId)).toBeNull();
    // Sender on another server, signed by us: the sender's server never signed it.
    const spoof = await build([tip], [pl], { type: "m.room.message", sender: "@mallory:evil.example", content: { body: "hi" } });
    expect((await stub.admit(spoof.pdu, SERVER)).status).toBe("invalid");
    // Tampered content after signing: hash mismatch → redacted before processing.
    const good = await build([tip], [pl, aliceJoin], { type: "m.room.message", sender: alice, content: { body: "original" } });
    const tampered = { ...good.pdu, content: { body: "tampered" } } as PDU;
    const t = await stub.admit(tampered, SERVER);
    expect(t.status).toBe("accepted");
    expect((await stub.getEventForClient({ userId: alice }, t.eventId!)).ok && (await stub.getEventForClient({ userId: alice }, t.eventId!))).toMatchObject({ value: { content: {} } });

    // Auth events from another room.
    const create2 = await sign({ type: "m.room.create", state_key: "", sender: alice, content: { room_version: "12", x: 1 }, depth: 1, prev_events: [], auth_events: [] });
    const room2 = roomIdFromCreateEventId(create2.eventId);
    const stub2 = env.ROOMS.get(env.ROOMS.idFromName(room2)) as unknown as RoomStub;
    expect((await stub2.createRoom({ serverName: SERVER, roomId: room2, roomVersion: "12", createPdu: create2.pdu, events: [{ type: "m.room.member", state_key: alice, sender: alice, content: { membership: "join" } }] })).ok).toBe(true);
    const foreignJoin = (await stub2.getCurrentStateEvent("m.room.member", alice))!.event_id as string;
    const [tip2] = await stub.getForwardExtremities();
    // The foreign event is unknown to this room: the event cannot be authorised.
    const cross = await build([tip2], [pl, foreignJoin], { type: "m.room.message", sender: alice, content: { body: "x" } });
    expect(["invalid", "rejected", "missing"]).toContain((await stub.admit(cross.pdu, SERVER)).status);
    // Oversized PDUs are refused before anything else.
    const huge = await build([tip2], [pl, aliceJoin], { type: "m.room.message", sender: alice, content: { body: "x".repeat(70000) } });
    expect(await stub.admit(huge.pdu, SERVER)).toMatchObject({ status: "invalid", reason: "M_TOO_LARGE" });
  });

  it("answers state at any event from state groups", async () => {
    const members = await stub.getMembers({ userId: alice }, { at: "t4" });
    expect(members.ok && members.value.map((e) => e.state_key)).toEqual([alice]);
    const now = await stub.getMembers({ userId: alice }, {});
    expect(now.ok && now.value.length).toBe(3);
  });
});
