// Client-Server conformance edge cases (issue 22, items 10–16 and 19), against the real Worker
// (D1, RoomDOs, UserDOs in workerd).
import { describe, expect, it, beforeAll } from "vitest";
import { env } from "cloudflare:test";
import { call, federationCall, registerUser, remoteJoinWave, seedRemoteKey, SERVER, type Json, type TestUser, createRoom, joinRoom as join, leaveRoom as leave, sendText as send, syncOk as sync } from "./helpers";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import { setFederationFetch } from "../../src/services/federation/client";
import type { PDU } from "../../src/core/types";
import type { SigningKey } from "../../src/core/signing";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

// Simulated remote servers only: nothing leaves the test.
beforeAll(() =>
  setFederationFetch(async () => {
    throw new Error("offline (test)");
  }),
);

async function messages(u: TestUser, roomId: string, q = "dir=b&limit=100") {
  return call("GET", `${V3}/rooms/${enc(roomId)}/messages?${q}`, { token: u.accessToken });
}

describe("ignoring users in an existing room (module \"Ignoring Users\")", () => {
  it("a fresh sync hides what they sent before, an incremental sync with only their messages leaves the room out, /messages drops them", async () => {
    const [u1, u2, u3] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(u1);
    await join(u2, roomId);
    await join(u3, roomId);
    const m1 = await send(u1, roomId, "Message");
    const m2 = await send(u2, roomId, "Message");
    const m3 = await send(u3, roomId, "Message");
    const filter = JSON.stringify({ presence: { types: [] }, room: { timeline: { types: ["m.room.message"] }, state: { types: ["m.room.member"] } } });
    const first = await sync(u1, { filter });
    expect(first.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id)).toEqual([m1, m2, m3]);

    const ad = await call("PUT", `${V3}/user/${enc(u1.userId)}/account_data/m.ignored_user_list`, { token: u1.accessToken, body: { ignored_users: { [u2.userId]: {} } } });
    expect(ad.status).toBe(200);
    // A fresh sync (what the spec tells a client to do after ignoring): u2's earlier message is gone.
    const second = await sync(u1, { filter });
    expect(second.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id)).toEqual([m1, m3]);
    // Their state events still come (all three members).
    expect(second.rooms.join[roomId].state.events.filter((e: Json) => e.type === "m.room.member")).toHaveLength(3);

    // Only u2 speaks: nothing for u1 in this room (not an empty entry under rooms.join).
    await send(u2, roomId, "Message2");
    const third = await sync(u1, { filter, since: second.next_batch });
    expect(third.rooms.join[roomId]).toBeUndefined();

    const m4 = await send(u3, roomId, "Message3");
    const fourth = await sync(u1, { filter, since: third.next_batch });
    expect(fourth.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id)).toEqual([m4]);
    // Unread counts: m2 (from before the ignore), m3 and m4; not Message2.
    expect(fourth.rooms.join[roomId].unread_notifications.notification_count).toBe(3);

    // /messages: none of u2's messages, from before or after the ignore.
    const m = await messages(u1, roomId);
    expect(m.status).toBe(200);
    const senders = m.body.chunk.filter((e: Json) => e.type === "m.room.message").map((e: Json) => e.sender);
    expect(senders).not.toContain(u2.userId);
    expect(senders).toContain(u3.userId);
  });

  it("a long-poll is not woken into an empty answer by an ignored user's message", async () => {
    const [u1, u2] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(u1);
    await join(u2, roomId);
    await call("PUT", `${V3}/user/${enc(u1.userId)}/account_data/m.ignored_user_list`, { token: u1.accessToken, body: { ignored_users: { [u2.userId]: {} } } });
    const since = (await sync(u1)).next_batch;
    const started = Date.now();
    const pending = sync(u1, { since, timeout: 1500 });
    await new Promise((r) => setTimeout(r, 200));
    await send(u2, roomId, "ignored");
    const r = await pending;
    expect(r.rooms.join[roomId]).toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
  });

  it("an ignored user's typing notices and read receipts are not shown", async () => {
    const [u1, u2, u3] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(u1);
    await join(u2, roomId);
    await join(u3, roomId);
    const msg = await send(u1, roomId, "read me");
    await call("PUT", `${V3}/user/${enc(u1.userId)}/account_data/m.ignored_user_list`, { token: u1.accessToken, body: { ignored_users: { [u2.userId]: {} } } });
    const since = (await sync(u1)).next_batch;
    expect((await call("PUT", `${V3}/rooms/${enc(roomId)}/typing/${enc(u2.userId)}`, { token: u2.accessToken, body: { typing: true, timeout: 10000 } })).status).toBe(200);
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(msg)}`, { token: u2.accessToken, body: {} })).status).toBe(200);
    // Only the ignored user did anything: nothing for this room.
    const quiet = await sync(u1, { since });
    expect(quiet.rooms.join[roomId]).toBeUndefined();
    // u3's receipt comes, without u2's.
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(msg)}`, { token: u3.accessToken, body: {} })).status).toBe(200);
    const r = await sync(u1, { since });
    const eph = r.rooms.join[roomId].ephemeral.events;
    const receipt = eph.find((e: Json) => e.type === "m.receipt");
    expect(Object.keys(receipt.content[msg]["m.read"])).toEqual([u3.userId]);
    expect(eph.filter((e: Json) => e.type === "m.typing")).toEqual([]);
  });

  it("invites from an ignored user are not shown, in full or incremental syncs", async () => {
    const [u1, u2] = await Promise.all([registerUser(), registerUser()]);
    const [r1, r2] = await Promise.all([createRoom(u2, { preset: "private_chat" }), createRoom(u2, { preset: "private_chat" })]);
    await call("PUT", `${V3}/user/${enc(u1.userId)}/account_data/m.ignored_user_list`, { token: u1.accessToken, body: { ignored_users: { [u2.userId]: {} } } });
    expect((await call("POST", `${V3}/rooms/${enc(r1)}/invite`, { token: u2.accessToken, body: { user_id: u1.userId } })).status).toBe(200);
    const full = await sync(u1);
    expect(full.rooms.invite[r1]).toBeUndefined();
    expect((await call("POST", `${V3}/rooms/${enc(r2)}/invite`, { token: u2.accessToken, body: { user_id: u1.userId } })).status).toBe(200);
    const inc = await sync(u1, { since: full.next_batch });
    expect(inc.rooms.invite[r2]).toBeUndefined();
  });
});

async function deactivate(u: TestUser, erase: boolean) {
  const c1 = await call("POST", `${V3}/account/deactivate`, { token: u.accessToken, body: {} });
  expect(c1.status).toBe(401);
  const r = await call("POST", `${V3}/account/deactivate`, {
    token: u.accessToken,
    body: { erase, auth: { type: "m.login.password", session: c1.body.session, identifier: { type: "m.id.user", user: u.userId }, password: u.password } },
  });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

describe("erasure (POST /account/deactivate with erase: true)", () => {
  it("later joiners get the erased user's events redacted; members who were there keep them", async () => {
    const [alice, bob, carol, dan] = await Promise.all([registerUser(), registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(bob, { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "shared" } }] });
    await join(alice, roomId);
    const secret = await send(alice, roomId, "my personal data");
    const kept = await send(bob, roomId, "bob's words");
    await deactivate(alice, true);
    await join(carol, roomId);

    // carol joined after the erasure: alice's message is served redacted everywhere.
    const m = await messages(carol, roomId);
    expect(m.status).toBe(200);
    const seen = m.body.chunk.find((e: Json) => e.event_id === secret);
    expect(seen).toBeDefined();
    expect(seen.content).toEqual({});
    expect(m.body.chunk.find((e: Json) => e.event_id === kept).content.body).toBe("bob's words");
    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(secret)}`, { token: carol.accessToken });
    expect(ev.status).toBe(200);
    expect(ev.body.content).toEqual({});
    const s = await sync(carol);
    const inSync = s.rooms.join[roomId].timeline.events.find((e: Json) => e.event_id === secret);
    expect(inSync?.content).toEqual({});
    const ctx = await call("GET", `${V3}/rooms/${enc(roomId)}/context/${enc(kept)}`, { token: carol.accessToken });
    expect(ctx.body.events_before.find((e: Json) => e.event_id === secret)?.content).toEqual({});

    // A server that joins after the erasure ("users (or servers) which join the room after"):
    // GET /event serves it the redacted PDU (still verifiable: signatures cover the redacted form).
    const remote = "erasure-remote.test";
    const rkey = await seedRemoteKey(remote);
    await remoteJoinWave(remote, rkey, roomId, 1, 1);
    const fe = await federationCall(remote, rkey, "GET", `/v1/event/${enc(secret)}`);
    expect(fe.status, JSON.stringify(fe.body)).toBe(200);
    expect(fe.body.pdus[0].content).toEqual({});
    const fk = await federationCall(remote, rkey, "GET", `/v1/event/${enc(kept)}`);
    expect(fk.body.pdus[0].content.body).toBe("bob's words");

    // bob was in the room when alice wrote: he keeps the content.
    const mb = await messages(bob, roomId);
    expect(mb.body.chunk.find((e: Json) => e.event_id === secret).content.body).toBe("my personal data");

    // Deactivation without erase redacts nothing.
    await join(dan, roomId);
    const plain = await send(dan, roomId, "not erased");
    await deactivate(dan, false);
    const late = await registerUser();
    await join(late, roomId);
    const ml = await messages(late, roomId);
    expect(ml.body.chunk.find((e: Json) => e.event_id === plain).content.body).toBe("not erased");
  });
});

describe("forgetting a room (POST /rooms/{roomId}/forget)", () => {
  it("refuses while joined; after leave + forget the room is gone from syncs (include_leave too) and its history is not served; rejoining brings it back", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const msg = await send(alice, roomId, "history");
    const joined = await call("POST", `${V3}/rooms/${enc(roomId)}/forget`, { token: bob.accessToken, body: {} });
    expect([joined.status, joined.body.errcode]).toEqual([400, "M_UNKNOWN"]);

    await leave(bob, roomId);
    const includeLeave = JSON.stringify({ room: { include_leave: true } });
    const before = await sync(bob, { filter: includeLeave });
    expect(before.rooms.leave[roomId]).toBeDefined();
    expect((await messages(bob, roomId)).body.chunk.map((e: Json) => e.event_id)).toContain(msg);

    const f = await call("POST", `${V3}/rooms/${enc(roomId)}/forget`, { token: bob.accessToken, body: {} });
    expect(f.status).toBe(200);
    const after = await sync(bob, { filter: includeLeave });
    expect(after.rooms.leave[roomId]).toBeUndefined();
    const inc = await sync(bob, { filter: includeLeave, since: before.next_batch });
    expect(inc.rooms.leave[roomId]).toBeUndefined();
    const m = await messages(bob, roomId);
    expect(m.status).toBe(403);
    expect(m.body.errcode).toBe("M_FORBIDDEN");
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(msg)}`, { token: bob.accessToken })).status).toBe(404);
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/state`, { token: bob.accessToken })).status).toBe(403);
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/members`, { token: bob.accessToken })).status).toBe(403);
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/context/${enc(msg)}`, { token: bob.accessToken })).status).toBe(403);
    // Forgetting twice is fine.
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/forget`, { token: bob.accessToken, body: {} })).status).toBe(200);

    // Rejoining clears it: the room and its (visible) history are back.
    await join(bob, roomId);
    const back = await sync(bob);
    expect(back.rooms.join[roomId]).toBeDefined();
    expect((await messages(bob, roomId)).status).toBe(200);
    const row = await env.DB.prepare("SELECT forgotten FROM room_memberships WHERE room_id = ? AND user_id = ?").bind(roomId, bob.userId).first<{ forgotten: number }>();
    expect(row?.forgotten).toBe(0);
  });

  it("the D1 mirror clears `forgotten` when a remote room invites the user again", async () => {
    const remote = "forget-remote.test";
    const key: SigningKey = await seedRemoteKey(remote);
    const alice = await registerUser();
    const roomId = `!forget${Date.now()}:${remote}`;
    const invite = async (n: number) => {
      const rv = getRoomVersion("10")!;
      const ev = {
        room_id: roomId,
        sender: `@inviter:${remote}`,
        type: "m.room.member",
        state_key: alice.userId,
        content: { membership: "invite" },
        origin_server_ts: Date.now() + n,
        depth: 5 + n,
        prev_events: ["$prev00000000000000000000000000000000000000"],
        auth_events: ["$auth00000000000000000000000000000000000000"],
      } as unknown as PDU;
      const { pdu, eventId } = await hashAndSignEvent(ev, rv, remote, key);
      const r = await federationCall(remote, key, "PUT", `/v2/invite/${enc(roomId)}/${enc(eventId)}`, { room_version: "10", event: pdu, invite_room_state: [] });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    };
    await invite(0);
    // As if alice had rejected an earlier invite and forgotten the room.
    await env.DB.prepare("UPDATE room_memberships SET membership = 'leave', forgotten = 1 WHERE room_id = ? AND user_id = ?").bind(roomId, alice.userId).run();
    await invite(1);
    const row = await env.DB.prepare("SELECT membership, forgotten FROM room_memberships WHERE room_id = ? AND user_id = ?").bind(roomId, alice.userId).first<{ membership: string; forgotten: number }>();
    expect(row).toEqual({ membership: "invite", forgotten: 0 });
  });
});

describe("directory and room edge cases", () => {
  it("deleting an alias removes it from m.room.canonical_alias (alias and alt_aliases)", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice);
    const a1 = `#ca${Date.now()}a:${SERVER}`;
    const a2 = `#ca${Date.now()}b:${SERVER}`;
    for (const a of [a1, a2]) expect((await call("PUT", `${V3}/directory/room/${enc(a)}`, { token: alice.accessToken, body: { room_id: roomId } })).status).toBe(200);
    const put = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.canonical_alias/`, { token: alice.accessToken, body: { alias: a1, alt_aliases: [a2] } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect((await call("DELETE", `${V3}/directory/room/${enc(a1)}`, { token: alice.accessToken })).status).toBe(200);
    const ca1 = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.canonical_alias/`, { token: alice.accessToken });
    expect(ca1.body).toEqual({ alt_aliases: [a2] });
    expect((await call("DELETE", `${V3}/directory/room/${enc(a2)}`, { token: alice.accessToken })).status).toBe(200);
    const ca2 = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.canonical_alias/`, { token: alice.accessToken });
    expect(ca2.body).toEqual({});
  });

  it("POST /publicRooms takes null for its nullable fields", async () => {
    const alice = await registerUser();
    const r = await call("POST", `${V3}/publicRooms`, {
      token: alice.accessToken,
      body: { since: null, limit: null, filter: { generic_search_term: null, room_types: [null] }, third_party_instance_id: null, include_all_networks: null },
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(Array.isArray(r.body.chunk)).toBe(true);
    const bad = await call("POST", `${V3}/publicRooms`, { token: alice.accessToken, body: { limit: "ten" } });
    expect([bad.status, bad.body.errcode]).toEqual([400, "M_BAD_JSON"]);
  });

  it("a body that is not valid UTF-8 is 400 M_NOT_JSON, on client and federation endpoints", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice);
    // {"body":"\xff"} as bytes: a lone 0xFF is never valid UTF-8.
    const bytes = new Uint8Array([...new TextEncoder().encode('{"msgtype":"m.text","body":"'), 0xff, ...new TextEncoder().encode('"}')]);
    const { SELF } = await import("cloudflare:test");
    const r = await SELF.fetch(`http://test.local${V3}/rooms/${enc(roomId)}/send/m.room.message/utf8bad`, {
      method: "PUT",
      headers: { authorization: `Bearer ${alice.accessToken}`, "content-type": "application/json" },
      body: bytes,
    });
    expect(r.status).toBe(400);
    expect(((await r.json()) as Json).errcode).toBe("M_NOT_JSON");
    // Nothing was sent.
    const m = await messages(alice, roomId);
    expect(m.body.chunk.some((e: Json) => e.type === "m.room.message")).toBe(false);
    const r2 = await SELF.fetch(`http://test.local${V3}/createRoom`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice.accessToken}`, "content-type": "application/json" },
      body: new Uint8Array([...new TextEncoder().encode('{"name":"'), 0xc3, 0x28, ...new TextEncoder().encode('"}')]),
    });
    expect([r2.status, ((await r2.json()) as Json).errcode]).toEqual([400, "M_NOT_JSON"]);
    // Federation: rejected before the signature is even checked.
    const f = await SELF.fetch(`http://test.local/_matrix/federation/v1/send/utf8bad`, {
      method: "PUT",
      headers: { authorization: `X-Matrix origin="nobody.test",destination="${SERVER}",key="ed25519:x",sig="AAAA"`, "content-type": "application/json" },
      body: new Uint8Array([...new TextEncoder().encode('{"pdus":[],"edus":[],"origin":"'), 0xff, ...new TextEncoder().encode('"}')]),
    });
    expect([f.status, ((await f.json()) as Json).errcode]).toEqual([400, "M_NOT_JSON"]);
  });

  it("upgrading a room that does not exist is 404, whatever new_version says", async () => {
    const alice = await registerUser();
    for (const v of ["12", "1", "999"]) {
      const r = await call("POST", `${V3}/rooms/${enc(`!nowhere${Date.now()}:${SERVER}`)}/upgrade`, { token: alice.accessToken, body: { new_version: v } });
      expect([r.status, r.body.errcode], v).toEqual([404, "M_NOT_FOUND"]);
    }
    // A room the user is not in: 403 before the version is looked at.
    const bob = await registerUser();
    const roomId = await createRoom(bob);
    const r = await call("POST", `${V3}/rooms/${enc(roomId)}/upgrade`, { token: alice.accessToken, body: { new_version: "999" } });
    expect([r.status, r.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
  });

  it("redacting an event of another room is refused and leaves that event alone", async () => {
    const alice = await registerUser();
    const [roomA, roomB] = await Promise.all([createRoom(alice), createRoom(alice)]);
    const target = await send(alice, roomB, "keep me");
    const r = await call("PUT", `${V3}/rooms/${enc(roomA)}/redact/${enc(target)}/red1`, { token: alice.accessToken, body: {} });
    expect(r.status).toBe(404);
    expect(r.body.errcode).toBe("M_NOT_FOUND");
    const ev = await call("GET", `${V3}/rooms/${enc(roomB)}/event/${enc(target)}`, { token: alice.accessToken });
    expect(ev.body.content.body).toBe("keep me");
    const ma = await messages(alice, roomA);
    expect(ma.body.chunk.some((e: Json) => e.type === "m.room.redaction")).toBe(false);
  });
});

describe("room versions 1 and 2 can be created (event IDs `$opaque:server`, pair refs)", () => {
  for (const version of ["1", "2"]) {
    it(`v${version}: create, send, state, join (local and over federation), read back`, async () => {
      const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
      const roomId = await createRoom(alice, { room_version: version, preset: "public_chat", name: `v${version} room` });
      const create = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.create/`, { token: alice.accessToken });
      expect(create.body).toMatchObject({ room_version: version, creator: alice.userId });
      const msg = await send(alice, roomId, "hello old room");
      expect(msg).toMatch(/^\$[A-Za-z0-9]+:test\.local$/);
      const topic = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: "old times" } });
      expect(topic.status, JSON.stringify(topic.body)).toBe(200);
      await join(bob, roomId);
      const reply = await send(bob, roomId, "hi");
      const st = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: bob.accessToken });
      expect(st.body).toEqual({ topic: "old times" });
      const m = await messages(bob, roomId);
      expect(m.body.chunk.map((e: Json) => e.event_id)).toEqual(expect.arrayContaining([msg, reply, topic.body.event_id]));
      expect(m.body.chunk.every((e: Json) => /^\$[A-Za-z0-9]+:test\.local$/.test(e.event_id))).toBe(true);
      const s = await sync(bob);
      expect(s.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id)).toContain(reply);

      // The stored PDU names itself and refers to its prev/auth events by [id, {sha256}] pairs.
      const stub = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as { getPdu(id: string): Promise<{ pdu: Json } | null> };
      const pdu = (await stub.getPdu(reply))!.pdu;
      expect(pdu.event_id).toBe(reply);
      expect(pdu.prev_events[0]).toEqual([expect.any(String), { sha256: expect.any(String) }]);
      expect(pdu.auth_events.length).toBeGreaterThan(0);
      for (const a of pdu.auth_events) expect(a).toEqual([expect.stringMatching(/^\$/), { sha256: expect.any(String) }]);

      // A remote user joins through make_join/send_join: the template uses pairs, the joining
      // server names the event.
      const remote = `v${version}remote.test`;
      const key = await seedRemoteKey(remote);
      const user = `@carol:${remote}`;
      const t = await federationCall(remote, key, "GET", `/v1/make_join/${enc(roomId)}/${enc(user)}?ver=${version}`);
      expect(t.status, JSON.stringify(t.body)).toBe(200);
      expect(t.body.room_version).toBe(version);
      expect(t.body.event.prev_events[0]).toEqual([expect.any(String), { sha256: expect.any(String) }]);
      const rv = getRoomVersion(version)!;
      const j = await hashAndSignEvent({ ...t.body.event, event_id: `$join${Date.now()}:${remote}`, origin_server_ts: Date.now() } as PDU, rv, remote, key);
      const sj = await federationCall(remote, key, "PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu);
      expect(sj.status, JSON.stringify(sj.body)).toBe(200);
      const members = await call("GET", `${V3}/rooms/${enc(roomId)}/joined_members`, { token: alice.accessToken });
      expect(Object.keys(members.body.joined)).toEqual(expect.arrayContaining([alice.userId, bob.userId, user]));
    });
  }
});
