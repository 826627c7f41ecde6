// Issue 16: bundled aggregations (unsigned.m.relations), duplicate annotations, the thread list.
import { describe, expect, it } from "vitest";
import { call, registerUser, type Json, type TestUser, createRoom, joinRoom as join, leaveRoom as leave } from "./helpers";

const V3 = "/_matrix/client/v3";
const V1 = "/_matrix/client/v1";
const enc = encodeURIComponent;
let txn = 0;

async function sendRaw(u: TestUser, roomId: string, content: Json, type = "m.room.message") {
  return call("PUT", `${V3}/rooms/${enc(roomId)}/send/${type}/cv${++txn}`, { token: u.accessToken, body: content });
}
async function send(u: TestUser, roomId: string, content: Json, type = "m.room.message"): Promise<string> {
  const r = await sendRaw(u, roomId, content, type);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.event_id;
}
const text = (body: string, extra: Json = {}) => ({ msgtype: "m.text", body, ...extra });
const inThread = (root: string, body: string) => text(body, { "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } } });
const edit = (orig: string, body: string) => text(`* ${body}`, { "m.new_content": text(body), "m.relates_to": { rel_type: "m.replace", event_id: orig } });
async function getEvent(u: TestUser, roomId: string, eventId: string) {
  const r = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(eventId)}`, { token: u.accessToken });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}
async function redact(u: TestUser, roomId: string, eventId: string) {
  const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/${enc(eventId)}/rd${++txn}`, { token: u.accessToken, body: {} });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

describe("bundled aggregations", () => {
  it("m.thread: latest_event, count, current_user_participated in /event, /messages, /context, /sync and /relations", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await join(carol, roomId);
    const root = await send(alice, roomId, text("root"));
    await send(bob, roomId, inThread(root, "r1"));
    const r2 = await send(bob, roomId, inThread(root, "r2"));
    // The latest event carries its own aggregations (an edit of it).
    const r2edit = await send(bob, roomId, edit(r2, "r2 edited"));

    const asBob = await getEvent(bob, roomId, root);
    const th = asBob.unsigned["m.relations"]["m.thread"];
    expect(th.count).toBe(2);
    expect(th.current_user_participated).toBe(true);
    expect(th.latest_event.event_id).toBe(r2);
    expect(th.latest_event.unsigned["m.relations"]["m.replace"].event_id).toBe(r2edit);
    expect((await getEvent(alice, roomId, root)).unsigned["m.relations"]["m.thread"].current_user_participated).toBe(true); // root sender
    expect((await getEvent(carol, roomId, root)).unsigned["m.relations"]["m.thread"].current_user_participated).toBe(false);

    const msgs = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=20`, { token: carol.accessToken });
    expect(msgs.body.chunk.find((e: Json) => e.event_id === root).unsigned["m.relations"]["m.thread"].count).toBe(2);
    const ctx = await call("GET", `${V3}/rooms/${enc(roomId)}/context/${enc(root)}?limit=4`, { token: carol.accessToken });
    expect(ctx.body.event.unsigned["m.relations"]["m.thread"].latest_event.event_id).toBe(r2);
    const sync = await call("GET", `${V3}/sync?timeout=0`, { token: carol.accessToken });
    const inSync = sync.body.rooms.join[roomId].timeline.events.find((e: Json) => e.event_id === root);
    expect(inSync.unsigned["m.relations"]["m.thread"].count).toBe(2);

    // Redacting a thread reply removes it from the count.
    await redact(bob, roomId, r2);
    const after = (await getEvent(carol, roomId, root)).unsigned["m.relations"]["m.thread"];
    expect(after.count).toBe(1);
    expect(after.latest_event.content.body).toBe("r1");
  });

  it("m.replace: the most recent valid edit only (same sender, same type, m.new_content); none once the original is redacted", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const orig = await send(alice, roomId, text("hello"));
    const e1 = await send(alice, roomId, edit(orig, "hello 1"));
    // Invalid: another sender; no m.new_content; another event type.
    await send(bob, roomId, edit(orig, "bob's edit"));
    await send(alice, roomId, { msgtype: "m.text", body: "* x", "m.relates_to": { rel_type: "m.replace", event_id: orig } });
    await send(alice, roomId, { ...edit(orig, "sticker"), body: "s" }, "m.sticker");
    let rel = (await getEvent(bob, roomId, orig)).unsigned["m.relations"];
    expect(rel["m.replace"].event_id).toBe(e1);
    const e2 = await send(alice, roomId, edit(orig, "hello 2"));
    rel = (await getEvent(bob, roomId, orig)).unsigned["m.relations"];
    expect(rel["m.replace"].event_id).toBe(e2);
    expect(rel["m.replace"].content["m.new_content"].body).toBe("hello 2");
    // The newest edit redacted: the one before applies again.
    await redact(alice, roomId, e2);
    expect((await getEvent(bob, roomId, orig)).unsigned["m.relations"]["m.replace"].event_id).toBe(e1);
    await redact(alice, roomId, orig);
    expect((await getEvent(bob, roomId, orig)).unsigned["m.relations"]).toBeUndefined();
  });

  it("m.reference: chunk of event IDs; annotations are not bundled", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice);
    const target = await send(alice, roomId, text("poll"));
    const ref = await send(alice, roomId, { "m.relates_to": { rel_type: "m.reference", event_id: target } }, "m.poll.response");
    await send(alice, roomId, { "m.relates_to": { rel_type: "m.annotation", event_id: target, key: "👍" } }, "m.reaction");
    const rel = (await getEvent(alice, roomId, target)).unsigned["m.relations"];
    expect(rel).toEqual({ "m.reference": { chunk: [{ event_id: ref }] } });
  });

  it("a user who left sees no later relations bundled", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat", invite: [] });
    const inv = await call("POST", `${V3}/rooms/${enc(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    expect(inv.status).toBe(200);
    await join(bob, roomId);
    const root = await send(alice, roomId, text("root"));
    const r1 = await send(alice, roomId, inThread(root, "before leave"));
    await leave(bob, roomId);
    await send(alice, roomId, inThread(root, "after leave"));
    const orig = root;
    await send(alice, roomId, edit(orig, "edited after leave"));
    const seen = (await getEvent(bob, roomId, root)).unsigned["m.relations"];
    expect(seen["m.thread"].count).toBe(1);
    expect(seen["m.thread"].latest_event.event_id).toBe(r1);
    expect(seen["m.replace"]).toBeUndefined();
    // /relations does not list the later reply either.
    const rels = await call("GET", `${V1}/rooms/${enc(roomId)}/relations/${enc(root)}/m.thread`, { token: bob.accessToken });
    expect(rels.body.chunk.map((e: Json) => e.event_id)).toEqual([r1]);
  });
});

describe("annotations", () => {
  it("a second identical annotation by the same sender is refused with M_DUPLICATE_ANNOTATION; after redaction it is allowed", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const target = await send(alice, roomId, text("react to me"));
    const react = (key: string) => ({ "m.relates_to": { rel_type: "m.annotation", event_id: target, key } });
    const first = await send(bob, roomId, react("👍"), "m.reaction");
    const dup = await sendRaw(bob, roomId, react("👍"), "m.reaction");
    expect(dup.status).toBe(400);
    expect(dup.body.errcode).toBe("M_DUPLICATE_ANNOTATION");
    await send(bob, roomId, react("🎉"), "m.reaction"); // another key
    await send(alice, roomId, react("👍"), "m.reaction"); // another sender
    await redact(bob, roomId, first);
    await send(bob, roomId, react("👍"), "m.reaction");
    const rels = await call("GET", `${V1}/rooms/${enc(roomId)}/relations/${enc(target)}/m.annotation`, { token: alice.accessToken });
    expect(rels.body.chunk.length).toBe(3);
  });
});

describe("GET /v1/rooms/{roomId}/threads", () => {
  it("lists roots by latest activity, include=participated, paginates with next_batch, rejects bad input", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const t1 = await send(alice, roomId, text("t1"));
    const t2 = await send(alice, roomId, text("t2"));
    const t3 = await send(bob, roomId, text("t3"));
    await send(alice, roomId, inThread(t1, "a"));
    await send(alice, roomId, inThread(t2, "b"));
    await send(alice, roomId, inThread(t3, "c"));
    await send(alice, roomId, inThread(t1, "d")); // t1 is now the most recently active
    const threads = (q: string, u = bob) => call("GET", `${V1}/rooms/${enc(roomId)}/threads?${q}`, { token: u.accessToken });

    const all = await threads("");
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(all.body.chunk.map((e: Json) => e.event_id)).toEqual([t1, t3, t2]);
    expect(all.body.chunk[0].unsigned["m.relations"]["m.thread"].count).toBe(2);
    expect(all.body.next_batch).toBeUndefined();

    const p1 = await threads("limit=2");
    expect(p1.body.chunk.map((e: Json) => e.event_id)).toEqual([t1, t3]);
    const p2 = await threads(`limit=2&from=${enc(p1.body.next_batch)}`);
    expect(p2.body.chunk.map((e: Json) => e.event_id)).toEqual([t2]);
    expect(p2.body.next_batch).toBeUndefined();

    // Bob sent only the root of t3.
    expect((await threads("include=participated")).body.chunk.map((e: Json) => e.event_id)).toEqual([t3]);

    expect((await threads("include=some")).body.errcode).toBe("M_INVALID_PARAM");
    expect((await threads("from=zzz")).status).toBe(400);
    const stranger = await registerUser();
    expect((await threads("", stranger)).status).toBe(403);
  });

  it("a user who left does not see thread roots sent after they left", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat" });
    await call("POST", `${V3}/rooms/${enc(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    await join(bob, roomId);
    const early = await send(alice, roomId, text("early"));
    await send(alice, roomId, inThread(early, "x"));
    await leave(bob, roomId);
    const late = await send(alice, roomId, text("late"));
    await send(alice, roomId, inThread(late, "y"));
    await send(alice, roomId, inThread(early, "z"));
    const r = await call("GET", `${V1}/rooms/${enc(roomId)}/threads`, { token: bob.accessToken });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.chunk.map((e: Json) => e.event_id)).toEqual([early]);
    expect(r.body.chunk[0].unsigned["m.relations"]["m.thread"].count).toBe(1);
  });
});

describe("bundling on large pages", () => {
  it("a page of 100 events (/messages limit=100) is served: the relations query stays within SQLite's 100 bound parameters", { timeout: 120_000 }, async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice);
    const root = await send(alice, roomId, text("root"));
    await send(alice, roomId, inThread(root, "reply"));
    for (let i = 0; i < 100; i++) await send(alice, roomId, text(`m${i}`));
    const r = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`, { token: alice.accessToken });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.chunk.length).toBe(100);
    const all = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=120`, { token: alice.accessToken });
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(all.body.chunk.find((e: Json) => e.event_id === root).unsigned["m.relations"]["m.thread"].count).toBe(1);
  });
});
