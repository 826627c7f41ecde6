// POST /v3/search, room_events (issue 16): FTS5 in each RoomDO, merged by the Worker.
import { describe, expect, it } from "vitest";
import { call, registerUser, type Json, type TestUser, createRoom, joinRoom as join, sendText as send } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let txn = 0;

async function search(u: TestUser, room_events: Json, nextBatch?: string) {
  return call("POST", `${V3}/search${nextBatch ? `?next_batch=${enc(nextBatch)}` : ""}`, { token: u.accessToken, body: { search_categories: { room_events } } });
}
const ids = (r: { body: Json }) => r.body.search_categories.room_events.results.map((x: Json) => x.result.event_id);

describe("POST /v3/search", () => {
  it("finds messages case- and accent-insensitively across rooms, with count, highlights, rank and recent order, next_batch", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const r1 = await createRoom(alice, { preset: "public_chat", name: "Kitchen", topic: "recipes and crème brûlée" });
    const r2 = await createRoom(bob);
    await join(alice, r2);
    const a = await send(alice, r1, "The Crème brûlée was great");
    const b = await send(bob, r2, "creme brulee recipe please");
    const c = await send(alice, r1, "unrelated words");
    void c;
    const d = await send(bob, r2, "BRULEE brulee brulee");

    const r = await search(alice, { search_term: "brulee", order_by: "recent" });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const re = r.body.search_categories.room_events;
    // The room's topic (its m.room.topic event, oldest) matches too: keys default to all three.
    expect(ids(r).slice(0, 3)).toEqual([d, b, a]);
    expect(re.results[3].result.type).toBe("m.room.topic");
    expect(re.count).toBe(4);
    expect(re.highlights).toEqual(["brulee"]);
    expect(re.next_batch).toBeUndefined();
    expect(typeof re.results[0].rank).toBe("number");
    // Topic key: the room's m.room.topic matches too.
    const topic = await search(alice, { search_term: "crème", keys: ["content.topic"] });
    expect(topic.body.search_categories.room_events.results.map((x: Json) => x.result.type)).toEqual(["m.room.topic"]);
    const name = await search(alice, { search_term: "kitchen", keys: ["content.name"] });
    expect(name.body.search_categories.room_events.results.length).toBe(1);

    // rank: the message with the term three times first.
    const ranked = await search(alice, { search_term: "brulee", keys: ["content.body"] });
    expect(ids(ranked)[0]).toBe(d);
    // Pagination, both orders.
    for (const order_by of ["rank", "recent"]) {
      const p1 = await search(alice, { search_term: "brulee", keys: ["content.body"], order_by, filter: { limit: 2 } });
      expect(ids(p1).length).toBe(2);
      const nb = p1.body.search_categories.room_events.next_batch;
      expect(typeof nb).toBe("string");
      const p2 = await search(alice, { search_term: "brulee", keys: ["content.body"], order_by, filter: { limit: 2 } }, nb);
      expect(p2.status, JSON.stringify(p2.body)).toBe(200);
      expect(ids(p2).length).toBe(1);
      expect(new Set([...ids(p1), ...ids(p2)])).toEqual(new Set([a, b, d]));
      expect(p2.body.search_categories.room_events.next_batch).toBeUndefined();
    }
    // Room filter and sender filter.
    expect(ids(await search(alice, { search_term: "brulee", keys: ["content.body"], order_by: "recent", filter: { rooms: [r1] } }))).toEqual([a]);
    expect(ids(await search(alice, { search_term: "brulee", order_by: "recent", filter: { senders: [bob.userId] } }))).toEqual([d, b]);
  });

  it("event_context with profile_info, groupings by room and sender, include_state", async () => {
    const alice = await registerUser();
    await call("PUT", `${V3}/profile/${enc(alice.userId)}/displayname`, { token: alice.accessToken, body: { displayname: "Alice A" } });
    const room = await createRoom(alice);
    const before = await send(alice, room, "first");
    const hit = await send(alice, room, "the needle here");
    const after = await send(alice, room, "last");
    const r = await search(alice, {
      search_term: "needle",
      event_context: { before_limit: 1, after_limit: 1, include_profile: true },
      groupings: { group_by: [{ key: "room_id" }, { key: "sender" }] },
      include_state: true,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const re = r.body.search_categories.room_events;
    expect(ids(r)).toEqual([hit]);
    const ctx = re.results[0].context;
    expect(ctx.events_before.map((e: Json) => e.event_id)).toEqual([before]);
    expect(ctx.events_after.map((e: Json) => e.event_id)).toEqual([after]);
    expect(ctx.profile_info[alice.userId].displayname).toBe("Alice A");
    expect(typeof ctx.start).toBe("string");
    expect(re.groups.room_id[room].results).toEqual([hit]);
    expect(re.groups.sender[alice.userId].results).toEqual([hit]);
    expect(re.state[room].some((e: Json) => e.type === "m.room.create")).toBe(true);
  });

  it("only what the user may see: not rooms never joined, not events after leaving, not redacted events, not encrypted rooms", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "private_chat" });
    await call("POST", `${V3}/rooms/${enc(room)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    await join(bob, room);
    const seen = await send(alice, room, "secret plan one");
    const red = await send(alice, room, "secret plan redacted");
    await call("PUT", `${V3}/rooms/${enc(room)}/redact/${enc(red)}/x${++txn}`, { token: alice.accessToken, body: {} });
    await call("POST", `${V3}/rooms/${enc(room)}/leave`, { token: bob.accessToken, body: {} });
    await send(alice, room, "secret plan two");
    const r = await search(bob, { search_term: "secret plan", order_by: "recent" });
    expect(ids(r)).toEqual([seen]);
    expect(r.body.search_categories.room_events.count).toBeLessThanOrEqual(2);
    const stranger = await registerUser();
    expect(ids(await search(stranger, { search_term: "secret" }))).toEqual([]);

    const enc2 = await createRoom(alice, { preset: "private_chat", initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] });
    await send(alice, enc2, "plaintext needle in an encrypted room");
    expect(ids(await search(alice, { search_term: "plaintext needle" }))).toEqual([]);
  });

  it("ignored users (m.ignored_user_list): their messages are not hits, not counted, not in groupings, not in event_context", async () => {
    const [alice, bob, mallory] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "public_chat" });
    await join(bob, room);
    await join(mallory, room);
    const a1 = await send(alice, room, "walrus one");
    await send(mallory, room, "walrus spam");
    const filler = await send(alice, room, "filler");
    await send(mallory, room, "walrus more spam");
    const a2 = await send(alice, room, "walrus two");
    await send(mallory, room, "trailing spam");
    // A thread reply from mallory: not bundled into a1 for bob (m.thread would count it).
    await call("PUT", `${V3}/rooms/${enc(room)}/send/m.room.message/t${++txn}`, { token: mallory.accessToken, body: { msgtype: "m.text", body: "threaded spam", "m.relates_to": { rel_type: "m.thread", event_id: a1 } } });
    const q = { search_term: "walrus", keys: ["content.body"], order_by: "recent", event_context: { before_limit: 2, after_limit: 2, include_profile: true }, groupings: { group_by: [{ key: "sender" }] } };
    expect((await search(bob, q)).body.search_categories.room_events.count).toBe(4);
    const ign = await call("PUT", `${V3}/user/${enc(bob.userId)}/account_data/m.ignored_user_list`, { token: bob.accessToken, body: { ignored_users: { [mallory.userId]: {} } } });
    expect(ign.status).toBe(200);
    // Module "Ignoring Users": the client no longer receives events sent by that user (state events excepted).
    const r = await search(bob, q);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const re = r.body.search_categories.room_events;
    expect(ids(r)).toEqual([a2, a1]);
    expect(re.count).toBe(2);
    expect(Object.keys(re.groups.sender)).toEqual([alice.userId]);
    const ctx = re.results[0].context;
    expect(ctx.events_before.map((e: Json) => e.event_id)).toEqual([filler, a1]);
    expect(ctx.events_after).toEqual([]);
    expect(Object.keys(ctx.profile_info)).toEqual([alice.userId]);
    expect(re.results[1].result.unsigned?.["m.relations"]?.["m.thread"]).toBeUndefined();
    for (const c of re.results.map((x: Json) => x.context)) for (const e of [...c.events_before, ...c.events_after]) expect(e.sender === mallory.userId && e.state_key === undefined).toBe(false);
    // Paging by one reaches the same two hits and no more.
    const p1 = await search(bob, { ...q, order_by: "rank", filter: { limit: 1 } });
    const p2 = await search(bob, { ...q, order_by: "rank", filter: { limit: 1 } }, p1.body.search_categories.room_events.next_batch);
    expect(new Set([...ids(p1), ...ids(p2)])).toEqual(new Set([a1, a2]));
    expect(p2.body.search_categories.room_events.next_batch).toBeUndefined();
    // Someone who ignores nobody still finds all four.
    const all = await search(alice, q);
    expect(ids(all).length).toBe(4);
    expect(all.body.search_categories.room_events.results[3].result.unsigned["m.relations"]["m.thread"].count).toBe(1);
  });

  it("bad input: missing search_term, unknown key, bad order_by, bad next_batch; FTS syntax is not interpreted", async () => {
    const alice = await registerUser();
    const room = await createRoom(alice);
    await send(alice, room, 'quote " and NEAR( star*');
    expect((await call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: {} } } })).body.errcode).toBe("M_BAD_JSON");
    expect((await search(alice, { search_term: "x", keys: ["content.nope"] })).status).toBe(400);
    expect((await search(alice, { search_term: "x", order_by: "newest" })).status).toBe(400);
    const bad = await search(alice, { search_term: "x" }, "garbage");
    expect(bad.status).toBe(400);
    expect(bad.body.errcode).toBe("M_INVALID_PARAM");
    const odd = await search(alice, { search_term: 'NEAR( " star*' });
    expect(odd.status, JSON.stringify(odd.body)).toBe(200);
    expect(ids(odd).length).toBe(1);
    expect((await call("POST", `${V3}/search`, { body: { search_categories: {} } })).status).toBe(401);
  });

  it("edits: the message is found once, also by its edited text; an edit by someone else or a redacted edit counts for nothing", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const room = await createRoom(alice);
    await join(bob, room);
    const orig = await send(alice, room, "the quarterly zeppelin report");
    const editContent = (by: string) => ({ msgtype: "m.text", body: `* ${by}`, "m.new_content": { msgtype: "m.text", body: by }, "m.relates_to": { rel_type: "m.replace", event_id: orig } });
    const put = async (u: TestUser, content: Json) => (await call("PUT", `${V3}/rooms/${enc(room)}/send/m.room.message/e${++txn}`, { token: u.accessToken, body: content })).body.event_id as string;
    const edit = await put(alice, editContent("the quarterly airship summary"));
    await put(bob, editContent("hijacked blimp"));
    expect(ids(await search(alice, { search_term: "zeppelin" }))).toEqual([orig]);
    expect(ids(await search(alice, { search_term: "airship" }))).toEqual([orig]);
    expect(ids(await search(alice, { search_term: "blimp" }))).toEqual([]);
    expect(ids(await search(alice, { search_term: "airship", order_by: "recent" }))).toEqual([orig]);
    expect(ids(await search(alice, { search_term: "blimp", order_by: "recent" }))).toEqual([]);
    // Both texts match: one message, counted once.
    const both = await search(alice, { search_term: "quarterly" });
    expect(ids(both)).toEqual([orig]);
    expect(both.body.search_categories.room_events.count).toBe(1);
    await call("PUT", `${V3}/rooms/${enc(room)}/redact/${enc(edit)}/x${++txn}`, { token: alice.accessToken, body: {} });
    expect(ids(await search(alice, { search_term: "airship" }))).toEqual([]);
  });
});
