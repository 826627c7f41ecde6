// Rooms: createRoom, send, state, event, redact, /messages, /context, members, errors.
import { describe, expect, it, beforeAll } from "vitest";
import { call, createRoom, registerUser, uniqueName, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
let txn = 0;
const nextTxn = () => `t${Date.now()}-${++txn}`;

async function send(u: TestUser, roomId: string, body: Record<string, unknown>, type = "m.room.message") {
  return call("PUT", `${V3}/rooms/${encodeURIComponent(roomId)}/send/${type}/${nextTxn()}`, { token: u.accessToken, body });
}
const enc = encodeURIComponent;

describe("createRoom", () => {
  let alice: TestUser;
  beforeAll(async () => {
    alice = await registerUser();
  });

  it("creates a v12 room with the spec's event order", async () => {
    const bob = await registerUser();
    const roomId = await createRoom(alice, { name: "Lounge", topic: "chat", invite: [bob.userId], preset: "private_chat" });
    expect(roomId).toMatch(/^![A-Za-z0-9_-]{43}$/);
    const msgs = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=50`, { token: alice.accessToken });
    expect(msgs.status).toBe(200);
    const types = msgs.body.chunk.map((e: any) => `${e.type}|${e.state_key ?? ""}`);
    expect(types).toEqual([
      "m.room.create|",
      `m.room.member|${alice.userId}`,
      "m.room.power_levels|",
      "m.room.join_rules|",
      "m.room.history_visibility|",
      "m.room.guest_access|",
      "m.room.name|",
      "m.room.topic|",
      `m.room.member|${bob.userId}`,
    ]);
    const create = msgs.body.chunk[0];
    expect(create.content.room_version).toBe("12");
    expect(create.content.creator).toBeUndefined();
    expect(create.event_id).toBe("$" + roomId.slice(1));
    const pl = msgs.body.chunk[2].content;
    expect(pl.users[alice.userId]).toBeUndefined(); // v12 creators are implicit
    expect(pl.events["m.room.tombstone"]).toBe(150);
    expect(msgs.body.chunk[3].content.join_rule).toBe("invite");
  });

  it("supports older versions, presets, initial_state, overrides", async () => {
    const roomId = await createRoom(alice, {
      room_version: "10",
      preset: "public_chat",
      initial_state: [{ type: "m.room.history_visibility", content: { history_visibility: "world_readable" } }],
      power_level_content_override: { events_default: 10 },
      creation_content: { "m.federate": false },
    });
    expect(roomId).toMatch(/^![A-Za-z0-9]+:test\.local$/);
    const create = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.create/`, { token: alice.accessToken });
    expect(create.body).toMatchObject({ creator: alice.userId, room_version: "10", "m.federate": false });
    const pl = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, { token: alice.accessToken });
    expect(pl.body.users[alice.userId]).toBe(100);
    expect(pl.body.events_default).toBe(10);
    const hv = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.history_visibility`, { token: alice.accessToken });
    expect(hv.body.history_visibility).toBe("world_readable");
    const jr = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.join_rules`, { token: alice.accessToken });
    expect(jr.body.join_rule).toBe("public");
  });

  it("refuses unknown room versions", async () => {
    for (const v of ["999", "", "12.0"]) {
      const r = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { room_version: v } });
      expect(r.status).toBe(400);
      expect(r.body.errcode).toBe("M_UNSUPPORTED_ROOM_VERSION");
    }
  });

  it("validates the body and needs auth", async () => {
    expect((await call("POST", `${V3}/createRoom`, { body: {} })).status).toBe(401);
    const bad = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { invite: "x" } });
    expect(bad.body.errcode).toBe("M_BAD_JSON");
    const notJson = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, rawBody: "{", headers: { "content-type": "application/json" } });
    expect(notJson.body.errcode).toBe("M_NOT_JSON");
  });

  it("room_alias_name creates the alias and canonical_alias; taken alias is M_ROOM_IN_USE", async () => {
    const name = uniqueName("alias");
    const roomId = await createRoom(alice, { room_alias_name: name });
    const dir = await call("GET", `${V3}/directory/room/${enc(`#${name}:test.local`)}`);
    expect(dir.body.room_id).toBe(roomId);
    const ca = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.canonical_alias`, { token: alice.accessToken });
    expect(ca.body.alias).toBe(`#${name}:test.local`);
    const again = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { room_alias_name: name } });
    expect(again.status).toBe(400);
    expect(again.body.errcode).toBe("M_ROOM_IN_USE");
  });
});

describe("send, state, event, redact", () => {
  let alice: TestUser;
  let bob: TestUser;
  let roomId: string;
  beforeAll(async () => {
    alice = await registerUser();
    bob = await registerUser();
    roomId = await createRoom(alice, { preset: "public_chat" });
    const j = await call("POST", `${V3}/join/${enc(roomId)}`, { token: bob.accessToken, body: {} });
    expect(j.status, JSON.stringify(j.body)).toBe(200);
  });

  it("sends messages idempotently per txn and serves them in client format", async () => {
    const path = `${V3}/rooms/${enc(roomId)}/send/m.room.message/fixed-txn`;
    const a = await call("PUT", path, { token: alice.accessToken, body: { msgtype: "m.text", body: "hi" } });
    const b = await call("PUT", path, { token: alice.accessToken, body: { msgtype: "m.text", body: "hi" } });
    expect(a.status).toBe(200);
    expect(b.body.event_id).toBe(a.body.event_id);
    // Same txn ID from another user is another event.
    const c = await call("PUT", path, { token: bob.accessToken, body: { msgtype: "m.text", body: "hi" } });
    expect(c.body.event_id).not.toBe(a.body.event_id);

    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(a.body.event_id)}`, { token: alice.accessToken });
    expect(ev.status).toBe(200);
    expect(ev.body).toMatchObject({ type: "m.room.message", sender: alice.userId, room_id: roomId, event_id: a.body.event_id, content: { body: "hi" } });
    expect(ev.body.unsigned.transaction_id).toBe("fixed-txn");
    expect(typeof ev.body.unsigned.age).toBe("number");
    const evBob = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(a.body.event_id)}`, { token: bob.accessToken });
    expect(evBob.body.unsigned.transaction_id).toBeUndefined();
    expect(ev.body.hashes).toBeUndefined();
    expect(ev.body.signatures).toBeUndefined();
  });

  it("enforces power levels on state, and state round-trips", async () => {
    const denied = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.name`, { token: bob.accessToken, body: { name: "bob's" } });
    expect(denied.status).toBe(403);
    expect(denied.body.errcode).toBe("M_FORBIDDEN");
    const ok = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.name/`, { token: alice.accessToken, body: { name: "Alice's" } });
    expect(ok.status).toBe(200);
    const again = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.name`, { token: alice.accessToken, body: { name: "Alice's" } });
    expect(again.body.event_id).toBe(ok.body.event_id);
    const got = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.name/`, { token: bob.accessToken });
    expect(got.body).toEqual({ name: "Alice's" });
    const full = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.name?format=event`, { token: bob.accessToken });
    expect(full.body.event_id).toBe(ok.body.event_id);
    // A state key that is another user's ID is refused (auth rules: "starts with an @ and does
    // not match the sender").
    const others = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/org.example.thing/${enc(bob.userId)}`, { token: alice.accessToken, body: { x: 1 } });
    expect(others.status).toBe(403);
    const custom = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/org.example.thing/a%2Fb`, { token: alice.accessToken, body: { x: 1 } });
    expect(custom.status).toBe(200);
    const all = await call("GET", `${V3}/rooms/${enc(roomId)}/state`, { token: bob.accessToken });
    expect(all.body.find((e: any) => e.type === "org.example.thing").state_key).toBe("a/b");
    const missing = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, { token: bob.accessToken });
    expect(missing.status).toBe(404);
    expect(missing.body.errcode).toBe("M_NOT_FOUND");
    // prev_content on replacement
    const ok2 = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.name`, { token: alice.accessToken, body: { name: "Third" } });
    const ev2 = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(ok2.body.event_id)}`, { token: bob.accessToken });
    expect(ev2.body.unsigned.prev_content).toEqual({ name: "Alice's" });
  });

  it("rejects oversized events with M_TOO_LARGE and non-objects with M_BAD_JSON / M_NOT_JSON", async () => {
    const big = await send(alice, roomId, { msgtype: "m.text", body: "x".repeat(70000) });
    expect(big.status).toBe(413);
    expect(big.body.errcode).toBe("M_TOO_LARGE");
    const arr = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, { token: alice.accessToken, body: [1] });
    expect(arr.body.errcode).toBe("M_BAD_JSON");
    const nj = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/${nextTxn()}`, { token: alice.accessToken, rawBody: "nope" });
    expect(nj.body.errcode).toBe("M_NOT_JSON");
  });

  it("unknown rooms and events are M_NOT_FOUND; non-members are M_FORBIDDEN", async () => {
    const carol = await registerUser();
    const r1 = await send(alice, "!doesnotexist:test.local", { body: "x" });
    expect(r1.status).toBe(404);
    expect(r1.body.errcode).toBe("M_NOT_FOUND");
    const r2 = await call("GET", `${V3}/rooms/${enc(roomId)}/event/$nope`, { token: alice.accessToken });
    expect(r2.body.errcode).toBe("M_NOT_FOUND");
    const r3 = await send(carol, roomId, { body: "x" });
    expect(r3.status).toBe(403);
    expect(r3.body.errcode).toBe("M_FORBIDDEN");
    const r4 = await call("GET", `${V3}/rooms/${enc(roomId)}/state`, { token: carol.accessToken });
    expect(r4.body.errcode).toBe("M_FORBIDDEN");
    const r5 = await call("GET", `${V3}/rooms/${enc(roomId)}/messages`, { token: carol.accessToken });
    expect(r5.body.errcode).toBe("M_FORBIDDEN");
  });

  it("redacts: own events, others' only with power; served redacted with redacted_because", async () => {
    const m = await send(bob, roomId, { msgtype: "m.text", body: "secret" });
    const m2 = await send(alice, roomId, { msgtype: "m.text", body: "alice's" });
    const denied = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/${enc(m2.body.event_id)}/${nextTxn()}`, { token: bob.accessToken, body: {} });
    expect(denied.status).toBe(403);
    const txnId = nextTxn();
    const red = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/${enc(m.body.event_id)}/${txnId}`, { token: alice.accessToken, body: { reason: "spam" } });
    expect(red.status, JSON.stringify(red.body)).toBe(200);
    const again = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/${enc(m.body.event_id)}/${txnId}`, { token: alice.accessToken, body: { reason: "spam" } });
    expect(again.body.event_id).toBe(red.body.event_id);
    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(m.body.event_id)}`, { token: bob.accessToken });
    expect(ev.body.content).toEqual({});
    expect(ev.body.unsigned.redacted_because.event_id).toBe(red.body.event_id);
    expect(ev.body.unsigned.redacted_because.content).toMatchObject({ reason: "spam", redacts: m.body.event_id });
    const own = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/${enc(m2.body.event_id)}/${nextTxn()}`, { token: alice.accessToken, body: {} });
    expect(own.status).toBe(200);
    const unknown = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/$unknown/${nextTxn()}`, { token: alice.accessToken, body: {} });
    expect(unknown.status).toBe(404);
  });
});

describe("/messages, /context, /members, timestamp_to_event", () => {
  let alice: TestUser;
  let bob: TestUser;
  let roomId: string;
  const sent: string[] = [];
  beforeAll(async () => {
    alice = await registerUser();
    bob = await registerUser();
    roomId = await createRoom(alice, { preset: "public_chat" });
    await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: bob.accessToken, body: {} });
    for (let i = 0; i < 12; i++) {
      const r = await send(i % 2 ? bob : alice, roomId, { msgtype: "m.text", body: `m${i}` });
      sent.push(r.body.event_id);
    }
  });

  it("paginates backwards and forwards with tokens", async () => {
    const p1 = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=5`, { token: alice.accessToken });
    expect(p1.body.chunk.map((e: any) => e.content.body)).toEqual(["m11", "m10", "m9", "m8", "m7"]);
    expect(p1.body.start).toBeTruthy();
    const p2 = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=5&from=${p1.body.end}`, { token: alice.accessToken });
    expect(p2.body.chunk.map((e: any) => e.content.body)).toEqual(["m6", "m5", "m4", "m3", "m2"]);
    const f = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=3&from=${p2.body.end}`, { token: alice.accessToken });
    expect(f.body.chunk.map((e: any) => e.content.body)).toEqual(["m2", "m3", "m4"]);
    // Back to the beginning: the last page has no `end`.
    let from = p2.body.end;
    let pages = 0;
    for (;;) {
      const p = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=5&from=${from}`, { token: alice.accessToken });
      pages++;
      if (!p.body.end) {
        expect(p.body.chunk.at(-1)?.type ?? "m.room.create").toBe("m.room.create");
        break;
      }
      from = p.body.end;
      expect(pages).toBeLessThan(10);
    }
    const bad = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=x`, { token: alice.accessToken });
    expect(bad.status).toBe(400);
  });

  it("filters by type/sender and lazy-loads members", async () => {
    const filter = enc(JSON.stringify({ senders: [bob.userId], types: ["m.room.message"], lazy_load_members: true }));
    const r = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=3&filter=${filter}`, { token: alice.accessToken });
    expect(r.body.chunk.map((e: any) => e.content.body)).toEqual(["m11", "m9", "m7"]);
    expect(r.body.state.map((e: any) => e.state_key)).toEqual([bob.userId]);
    const nt = enc(JSON.stringify({ not_types: ["m.room.*"] }));
    const r2 = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&filter=${nt}`, { token: alice.accessToken });
    expect(r2.body.chunk).toEqual([]);
  });

  it("/context returns events around an event", async () => {
    const r = await call("GET", `${V3}/rooms/${enc(roomId)}/context/${enc(sent[5])}?limit=4`, { token: bob.accessToken });
    expect(r.status).toBe(200);
    expect(r.body.event.content.body).toBe("m5");
    expect(r.body.events_before.map((e: any) => e.content.body)).toEqual(["m4", "m3"]);
    expect(r.body.events_after.map((e: any) => e.content.body)).toEqual(["m6", "m7"]);
    expect(r.body.state.some((e: any) => e.type === "m.room.create")).toBe(true);
    const next = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=2&from=${r.body.end}`, { token: bob.accessToken });
    expect(next.body.chunk.map((e: any) => e.content.body)).toEqual(["m8", "m9"]);
    const prev = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=2&from=${r.body.start}`, { token: bob.accessToken });
    expect(prev.body.chunk.map((e: any) => e.content.body)).toEqual(["m2", "m1"]);
    const nf = await call("GET", `${V3}/rooms/${enc(roomId)}/context/$nope`, { token: bob.accessToken });
    expect(nf.status).toBe(404);
  });

  it("/members and /joined_members", async () => {
    const m = await call("GET", `${V3}/rooms/${enc(roomId)}/members`, { token: bob.accessToken });
    expect(m.body.chunk.map((e: any) => e.state_key).sort()).toEqual([alice.userId, bob.userId].sort());
    const notJoin = await call("GET", `${V3}/rooms/${enc(roomId)}/members?not_membership=join`, { token: bob.accessToken });
    expect(notJoin.body.chunk).toEqual([]);
    const jm = await call("GET", `${V3}/rooms/${enc(roomId)}/joined_members`, { token: bob.accessToken });
    expect(Object.keys(jm.body.joined).sort()).toEqual([alice.userId, bob.userId].sort());
    // `at` a token from before bob joined.
    const early = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=7`, { token: bob.accessToken });
    const at = await call("GET", `${V3}/rooms/${enc(roomId)}/members?at=${early.body.chunk.length ? "t6" : ""}`, { token: bob.accessToken });
    expect(at.body.chunk.map((e: any) => e.state_key)).toEqual([alice.userId]);
  });

  it("timestamp_to_event", async () => {
    const ev = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(sent[3])}`, { token: alice.accessToken });
    const r = await call("GET", `/_matrix/client/v1/rooms/${enc(roomId)}/timestamp_to_event?ts=${ev.body.origin_server_ts}&dir=f`, { token: alice.accessToken });
    expect(r.status).toBe(200);
    expect(r.body.origin_server_ts).toBeGreaterThanOrEqual(ev.body.origin_server_ts);
    const none = await call("GET", `/_matrix/client/v1/rooms/${enc(roomId)}/timestamp_to_event?ts=1&dir=b`, { token: alice.accessToken });
    expect(none.status).toBe(404);
    const bad = await call("GET", `/_matrix/client/v1/rooms/${enc(roomId)}/timestamp_to_event?ts=1`, { token: alice.accessToken });
    expect(bad.body.errcode).toBe("M_INVALID_PARAM");
  });
});
