// /sync and its neighbours, against the real Worker (D1, RoomDOs, UserDOs in workerd).
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { call, createRoom, joinRoom, registerUser, type Json, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let txn = 0;

async function send(u: TestUser, roomId: string, body: string, extra: Json = {}): Promise<string> {
  const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/t${++txn}`, { token: u.accessToken, body: { msgtype: "m.text", body, ...extra } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.event_id;
}
async function sync(u: TestUser, q: Record<string, string | number | boolean> = {}) {
  const qs = new URLSearchParams(Object.entries(q).map(([k, v]) => [k, String(v)])).toString();
  return call("GET", `${V3}/sync${qs ? `?${qs}` : ""}`, { token: u.accessToken });
}
async function pair() {
  const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
  const roomId = await createRoom(alice);
  await joinRoom(bob, roomId);
  return { alice, bob, roomId };
}

describe("initial and incremental sync", () => {
  it("returns joined rooms with timeline, state before the timeline, summary and a token", async () => {
    const { alice, bob, roomId } = await pair();
    await send(alice, roomId, "hello");
    const r = await sync(bob);
    expect(r.status).toBe(200);
    expect(r.body.next_batch).toMatch(/^s\d+_[0-9a-z]+$/);
    const room = r.body.rooms.join[roomId];
    expect(room.timeline.events.map((e: Json) => e.type)).toContain("m.room.message");
    // The whole short history fits the default limit: state before it is empty.
    expect(room.timeline.events[0].type).toBe("m.room.create");
    expect(room.state.events).toEqual([]);
    const small = (await sync(bob, { filter: JSON.stringify({ room: { timeline: { limit: 1 } } }) })).body.rooms.join[roomId];
    expect(small.timeline.limited).toBe(true);
    expect(small.state.events.map((e: Json) => e.type)).toContain("m.room.create");
    // State is the state at the *start* of the timeline: nothing in both.
    const tlIds = new Set(room.timeline.events.map((e: Json) => e.event_id));
    expect(room.state.events.filter((e: Json) => tlIds.has(e.event_id))).toEqual([]);
    expect(room.summary["m.joined_member_count"]).toBe(2);
    expect(room.summary["m.heroes"]).toEqual([alice.userId]);
    expect(r.body.device_one_time_keys_count).toEqual({});
    expect(r.body.device_unused_fallback_key_types).toEqual([]);

    // Incremental: only what is new.
    const e2 = await send(alice, roomId, "second");
    const r2 = await sync(bob, { since: r.body.next_batch });
    expect(r2.body.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id)).toEqual([e2]);
    expect(r2.body.rooms.join[roomId].timeline.limited).toBe(false);
    // Nothing new: empty and immediate with timeout 0.
    const r3 = await sync(bob, { since: r2.body.next_batch });
    expect(r3.body.rooms.join[roomId]).toBeUndefined();
    expect(r3.body.next_batch).toBe(r2.body.next_batch);
  });

  it("delivers every one of 120 events exactly once through limited syncs and /messages from prev_batch", async () => {
    const { alice, bob, roomId } = await pair();
    const filter = JSON.stringify({ room: { timeline: { limit: 10 } } });
    let token = (await sync(bob, { filter })).body.next_batch;
    const seen: string[] = [];
    const sent: string[] = [];
    const known = new Set<string>();
    let n = 0;
    for (const batch of [35, 1, 50, 10, 24]) {
      for (let i = 0; i < batch; i++) sent.push(await send(alice, roomId, `m${n++}`));
      const r = await sync(bob, { since: token, filter });
      expect(r.status).toBe(200);
      token = r.body.next_batch;
      const tl = r.body.rooms.join[roomId].timeline;
      const fresh = tl.events.filter((e: Json) => e.type === "m.room.message").map((e: Json) => e.event_id);
      expect(fresh.length).toBeLessThanOrEqual(10);
      expect(tl.limited).toBe(batch > 10);
      // Fill the gap: page back from prev_batch until we meet an event we already have.
      const gap: string[] = [];
      if (tl.limited) {
        let from = tl.prev_batch;
        outer: for (;;) {
          const page = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=7&from=${enc(from)}`, { token: bob.accessToken });
          expect(page.status).toBe(200);
          for (const e of page.body.chunk as Json[]) {
            if (known.has(e.event_id)) break outer;
            if (e.type === "m.room.message") gap.unshift(e.event_id);
            else known.add(e.event_id);
          }
          if (!page.body.end) break;
          from = page.body.end;
        }
      }
      for (const id of [...gap, ...fresh]) {
        seen.push(id);
        known.add(id);
      }
      // Anything non-message in the timeline counts as known too.
      for (const e of tl.events) known.add(e.event_id);
    }
    expect(seen.length).toBe(120);
    expect(new Set(seen).size).toBe(120);
    expect(seen).toEqual(sent);
  });

  it("long-polling returns as soon as a message arrives", async () => {
    const { alice, bob, roomId } = await pair();
    const token = (await sync(bob)).body.next_batch;
    const started = Date.now();
    const pending = sync(bob, { since: token, timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 150));
    const id = await send(alice, roomId, "wake up");
    const r = await pending;
    const elapsed = Date.now() - started;
    expect(r.body.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id)).toEqual([id]);
    expect(elapsed).toBeLessThan(10_000);
  });

  it("long-polling times out empty", async () => {
    const bob = await registerUser();
    const token = (await sync(bob)).body.next_batch;
    const started = Date.now();
    const r = await sync(bob, { since: token, timeout: 300 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(r.status).toBe(200);
    expect(r.body.next_batch).toBe(token);
  });

  it("refuses malformed and foreign since tokens with M_INVALID_PARAM", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const a = (await sync(alice)).body.next_batch;
    await sync(bob);
    const bad = await sync(bob, { since: "garbage" });
    expect(bad.status).toBe(400);
    expect(bad.body.errcode).toBe("M_INVALID_PARAM");
    const foreign = await sync(bob, { since: a });
    expect(foreign.status).toBe(400);
    expect(foreign.body.errcode).toBe("M_INVALID_PARAM");
    const future = await sync(alice, { since: a.replace(/^s\d+/, "s999999") });
    expect(future.status).toBe(400);
    expect(future.body.errcode).toBe("M_INVALID_PARAM");
  });

  it("state_after (MSC4222 and stable) replaces state", async () => {
    const { alice, bob, roomId } = await pair();
    const token = (await sync(bob)).body.next_batch;
    await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: "T" } });
    for (const param of ["use_state_after", "org.matrix.msc4222.use_state_after"]) {
      const r = await sync(bob, { since: token, [param]: true });
      const room = r.body.rooms.join[roomId];
      expect(room.state).toBeUndefined();
      expect(room.state_after.events.map((e: Json) => e.type)).toEqual(["m.room.topic"]);
    }
    const initial = await sync(bob, { use_state_after: true });
    expect(initial.body.rooms.join[roomId].state_after.events.map((e: Json) => e.type)).toContain("m.room.topic");
  });
});

describe("memberships in sync", () => {
  it("shows invites with stripped state, and kicks in leave with the final event", async () => {
    const [alice, carol] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat", name: "Secret" });
    const t0 = (await sync(carol)).body.next_batch;
    const inv = await call("POST", `${V3}/rooms/${enc(roomId)}/invite`, { token: alice.accessToken, body: { user_id: carol.userId } });
    expect(inv.status).toBe(200);
    const r = await sync(carol, { since: t0 });
    const state = r.body.rooms.invite[roomId].invite_state.events as Json[];
    expect(state.find((e) => e.type === "m.room.name")?.content.name).toBe("Secret");
    expect(state.find((e) => e.type === "m.room.member" && e.state_key === carol.userId)?.content.membership).toBe("invite");

    await joinRoom(carol, roomId);
    const r2 = await sync(carol, { since: r.body.next_batch });
    const joined = r2.body.rooms.join[roomId];
    // Newly joined: the room is new to the client, so everything up to now is there.
    expect([...joined.state.events, ...joined.timeline.events].map((e: Json) => e.type)).toContain("m.room.create");
    expect(r2.body.rooms.invite[roomId]).toBeUndefined();
    const kick = await call("POST", `${V3}/rooms/${enc(roomId)}/kick`, { token: alice.accessToken, body: { user_id: carol.userId, reason: "bye" } });
    expect(kick.status).toBe(200);
    await send(alice, roomId, "after the kick");
    const r3 = await sync(carol, { since: r2.body.next_batch });
    expect(r3.body.rooms.join[roomId]).toBeUndefined();
    const left = r3.body.rooms.leave[roomId];
    const last = left.timeline.events[left.timeline.events.length - 1];
    expect(last.type).toBe("m.room.member");
    expect(last.content.membership).toBe("leave");
    expect(left.timeline.events.some((e: Json) => e.content?.body === "after the kick")).toBe(false);
  });
});

describe("knocking in sync", () => {
  it("shows the knocker rooms.knock and the room the knock", async () => {
    const [alice, carol] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat", name: "Knock here", initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }] });
    const [ta, tc] = [(await sync(alice)).body.next_batch, (await sync(carol)).body.next_batch];
    const k = await call("POST", `${V3}/knock/${enc(roomId)}`, { token: carol.accessToken, body: { reason: "let me in" } });
    expect(k.status, JSON.stringify(k.body)).toBe(200);
    const rc = await sync(carol, { since: tc });
    const ks = rc.body.rooms.knock[roomId].knock_state.events as Json[];
    expect(ks.find((e) => e.type === "m.room.member" && e.state_key === carol.userId)?.content.membership).toBe("knock");
    expect(ks.find((e) => e.type === "m.room.join_rules")?.content.join_rule).toBe("knock");
    const ra = await sync(alice, { since: ta });
    expect(ra.body.rooms.join[roomId].timeline.events.some((e: Json) => e.type === "m.room.member" && e.content.membership === "knock")).toBe(true);
  });
});

describe("filters", () => {
  it("stores filters, and applies types, limits, lazy-loading and room lists", async () => {
    const { alice, bob, roomId } = await pair();
    const bad = await call("POST", `${V3}/user/${enc(bob.userId)}/filter`, { token: bob.accessToken, body: { room: { timeline: { limit: "x" } } } });
    expect(bad.status).toBe(400);
    const other = await call("POST", `${V3}/user/${enc(alice.userId)}/filter`, { token: bob.accessToken, body: {} });
    expect(other.status).toBe(403);
    const def = { room: { timeline: { limit: 2, types: ["m.room.message"] }, state: { lazy_load_members: true } } };
    const created = await call("POST", `${V3}/user/${enc(bob.userId)}/filter`, { token: bob.accessToken, body: def });
    expect(created.status).toBe(200);
    const got = await call("GET", `${V3}/user/${enc(bob.userId)}/filter/${created.body.filter_id}`, { token: bob.accessToken });
    expect(got.body).toEqual(def);
    expect((await call("GET", `${V3}/user/${enc(bob.userId)}/filter/99999`, { token: bob.accessToken })).status).toBe(404);

    for (let i = 0; i < 3; i++) await send(alice, roomId, `f${i}`);
    const r = await sync(bob, { filter: created.body.filter_id });
    const room = r.body.rooms.join[roomId];
    expect(room.timeline.events.map((e: Json) => e.content.body)).toEqual(["f1", "f2"]);
    expect(room.timeline.limited).toBe(true);
    // Lazy-loading: members of the timeline's senders and my own, no one else's.
    const members = room.state.events.filter((e: Json) => e.type === "m.room.member").map((e: Json) => e.state_key).sort();
    expect(members).toEqual([alice.userId, bob.userId].sort());

    // A state change the timeline filter hides still reaches the client through `state`.
    const t1 = r.body.next_batch;
    await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: "hidden from the timeline" } });
    await send(alice, roomId, "after topic");
    const r1 = await sync(bob, { since: t1, filter: created.body.filter_id });
    expect(r1.body.rooms.join[roomId].timeline.events.map((e: Json) => e.content.body)).toEqual(["after topic"]);
    expect(r1.body.rooms.join[roomId].state.events.map((e: Json) => e.type)).toContain("m.room.topic");

    const none = await sync(bob, { filter: JSON.stringify({ room: { not_rooms: [roomId] } }) });
    expect(none.body.rooms.join[roomId]).toBeUndefined();
    expect((await sync(bob, { filter: "{not json" })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await sync(bob, { filter: "12345" })).body.errcode).toBe("M_INVALID_PARAM");
  });
});

describe("ephemeral and per-user data", () => {
  it("typing reaches the other member and expires", async () => {
    const { alice, bob, roomId } = await pair();
    const token = (await sync(bob)).body.next_batch;
    const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/typing/${enc(alice.userId)}`, { token: alice.accessToken, body: { typing: true, timeout: 400 } });
    expect(r.status).toBe(200);
    const s1 = await sync(bob, { since: token, timeout: 5000 });
    const typing = s1.body.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === "m.typing");
    expect(typing.content.user_ids).toEqual([alice.userId]);
    // Expiry wakes the long-poll with an empty typing list.
    const s2 = await sync(bob, { since: s1.body.next_batch, timeout: 5000 });
    expect(s2.body.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === "m.typing").content.user_ids).toEqual([]);
    const forbidden = await call("PUT", `${V3}/rooms/${enc(roomId)}/typing/${enc(bob.userId)}`, { token: alice.accessToken, body: { typing: true } });
    expect(forbidden.status).toBe(403);
  });

  it("counts unread notifications, clears them with receipts and shares public receipts", async () => {
    const { alice, bob, roomId } = await pair();
    const token = (await sync(bob)).body.next_batch;
    await send(alice, roomId, "one");
    await send(alice, roomId, "two");
    const last = await send(alice, roomId, `hey @bob`, { "m.mentions": { user_ids: [bob.userId] } });
    const s1 = await sync(bob, { since: token });
    expect(s1.body.rooms.join[roomId].unread_notifications).toEqual({ notification_count: 3, highlight_count: 1 });
    const aliceToken = (await sync(alice)).body.next_batch;
    const rc = await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(last)}`, { token: bob.accessToken, body: {} });
    expect(rc.status).toBe(200);
    const s2 = await sync(bob, { since: s1.body.next_batch });
    expect(s2.body.rooms.join[roomId].unread_notifications).toEqual({ notification_count: 0, highlight_count: 0 });
    const sa = await sync(alice, { since: aliceToken });
    const receipt = sa.body.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === "m.receipt");
    expect(receipt.content[last]["m.read"][bob.userId].ts).toBeTypeOf("number");
    // Private receipts stay private; read markers set m.fully_read.
    const t2 = sa.body.next_batch;
    await call("POST", `${V3}/rooms/${enc(roomId)}/read_markers`, { token: bob.accessToken, body: { "m.fully_read": last, "m.read.private": last } });
    const sb = await sync(bob, { since: s2.body.next_batch });
    expect(sb.body.rooms.join[roomId].account_data.events).toContainEqual({ type: "m.fully_read", content: { event_id: last } });
    expect(sb.body.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === "m.receipt").content[last]["m.read.private"][bob.userId]).toBeDefined();
    const sa2 = await sync(alice, { since: t2 });
    expect(sa2.body.rooms.join[roomId]).toBeUndefined();
    const badThread = await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(last)}`, { token: bob.accessToken, body: { thread_id: "" } });
    expect(badThread.body.errcode).toBe("M_INVALID_PARAM");
  });

  it("stores global and room account data and tags, delivered through sync", async () => {
    const { bob, roomId } = await pair();
    const token = (await sync(bob)).body.next_batch;
    const base = `${V3}/user/${enc(bob.userId)}`;
    expect((await call("GET", `${base}/account_data/org.example`, { token: bob.accessToken })).status).toBe(404);
    expect((await call("PUT", `${base}/account_data/org.example`, { token: bob.accessToken, body: { a: 1 } })).status).toBe(200);
    expect((await call("GET", `${base}/account_data/org.example`, { token: bob.accessToken })).body).toEqual({ a: 1 });
    expect((await call("PUT", `${base}/rooms/${enc(roomId)}/account_data/org.room`, { token: bob.accessToken, body: { b: 2 } })).status).toBe(200);
    expect((await call("PUT", `${base}/rooms/${enc(roomId)}/tags/m.favourite`, { token: bob.accessToken, body: { order: 0.5 } })).status).toBe(200);
    expect((await call("GET", `${base}/rooms/${enc(roomId)}/tags`, { token: bob.accessToken })).body).toEqual({ tags: { "m.favourite": { order: 0.5 } } });
    expect((await call("PUT", `${base}/rooms/${enc(roomId)}/account_data/m.fully_read`, { token: bob.accessToken, body: {} })).status).toBe(405);
    const r = await sync(bob, { since: token });
    expect(r.body.account_data.events).toContainEqual({ type: "org.example", content: { a: 1 } });
    const roomAd = r.body.rooms.join[roomId].account_data.events;
    expect(roomAd).toContainEqual({ type: "org.room", content: { b: 2 } });
    expect(roomAd).toContainEqual({ type: "m.tag", content: { tags: { "m.favourite": { order: 0.5 } } } });
    expect((await call("DELETE", `${base}/rooms/${enc(roomId)}/tags/m.favourite`, { token: bob.accessToken })).status).toBe(200);
    expect((await call("GET", `${base}/rooms/${enc(roomId)}/tags`, { token: bob.accessToken })).body).toEqual({ tags: {} });
  });

  it("hides ignored users' events", async () => {
    const { alice, bob, roomId } = await pair();
    const token = (await sync(bob)).body.next_batch;
    await call("PUT", `${V3}/user/${enc(bob.userId)}/account_data/m.ignored_user_list`, { token: bob.accessToken, body: { ignored_users: { [alice.userId]: {} } } });
    await send(alice, roomId, "ignored");
    const r = await sync(bob, { since: token });
    const tl = r.body.rooms.join[roomId]?.timeline.events ?? [];
    expect(tl.some((e: Json) => e.content?.body === "ignored")).toBe(false);
  });

  it("ignored users: /sync and /messages and /context drop their messages but keep their state events", async () => {
    const { alice, bob, roomId } = await pair();
    const carol = await registerUser();
    await joinRoom(carol, roomId);
    const before = await send(alice, roomId, "before ignoring");
    const token = (await sync(bob)).body.next_batch;
    await call("PUT", `${V3}/user/${enc(bob.userId)}/account_data/m.ignored_user_list`, { token: bob.accessToken, body: { ignored_users: { [alice.userId]: {} } } });
    const hidden = await send(alice, roomId, "from alice, ignored");
    const topic = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, { token: alice.accessToken, body: { topic: "still shown" } });
    expect(topic.status).toBe(200);
    const shown = await send(carol, roomId, "from carol");

    // /sync: alice's message is gone, her state event is not ("Servers must still send state
    // events sent by ignored users to clients").
    const r = await sync(bob, { since: token });
    const tl = r.body.rooms.join[roomId].timeline.events.map((e: Json) => e.event_id);
    expect(tl).not.toContain(hidden);
    expect(tl).toContain(topic.body.event_id);
    expect(tl).toContain(shown);

    // /messages, backwards from the end: same rule; paging on reaches older history exactly
    // once, without alice's messages (including the one from before she was ignored).
    const seen: string[] = [];
    let from: string | undefined;
    for (let i = 0; i < 20; i++) {
      const m = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=2${from ? `&from=${from}` : ""}`, { token: bob.accessToken });
      expect(m.status).toBe(200);
      seen.push(...m.body.chunk.map((e: Json) => e.event_id));
      for (const e of m.body.chunk) if (e.sender === alice.userId) expect(e.state_key).toBeDefined();
      if (!m.body.end) break;
      from = m.body.end;
    }
    expect(seen).not.toContain(hidden);
    expect(seen).not.toContain(before);
    expect(seen).toContain(topic.body.event_id);
    expect(seen).toContain(shown);
    expect(new Set(seen).size).toBe(seen.length);
    // carol (not ignoring) sees alice's message.
    const mc = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: carol.accessToken });
    expect(mc.body.chunk.map((e: Json) => e.event_id)).toContain(hidden);

    // /context around carol's message: alice's message is not among the neighbours.
    const ctx = await call("GET", `${V3}/rooms/${enc(roomId)}/context/${enc(shown)}?limit=10`, { token: bob.accessToken });
    expect(ctx.status).toBe(200);
    const around = [...ctx.body.events_before, ...ctx.body.events_after].map((e: Json) => e.event_id);
    expect(around).not.toContain(hidden);
    expect(around).toContain(topic.body.event_id);

    // Un-ignoring: alice's new messages come again.
    await call("PUT", `${V3}/user/${enc(bob.userId)}/account_data/m.ignored_user_list`, { token: bob.accessToken, body: { ignored_users: {} } });
    const again = await send(alice, roomId, "visible again");
    const m2 = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=1`, { token: bob.accessToken });
    expect(m2.body.chunk.map((e: Json) => e.event_id)).toEqual([again]);
  });

  it("presence: PUT/GET and delivery to room-mates", async () => {
    const { alice, bob } = await pair();
    const token = (await sync(bob, { set_presence: "offline" })).body.next_batch;
    expect((await call("PUT", `${V3}/presence/${enc(alice.userId)}/status`, { token: alice.accessToken, body: { presence: "unavailable", status_msg: "lunch" } })).status).toBe(200);
    const g = await call("GET", `${V3}/presence/${enc(alice.userId)}/status`, { token: bob.accessToken });
    expect(g.body.presence).toBe("unavailable");
    expect(g.body.status_msg).toBe("lunch");
    const r = await sync(bob, { since: token, set_presence: "offline" });
    expect(r.body.presence.events).toContainEqual(expect.objectContaining({ type: "m.presence", sender: alice.userId }));
  });

  it("to-device messages and device list changes pushed into the hub are delivered once", async () => {
    const bob = await registerUser();
    const hub = env.USERS.get(env.USERS.idFromName(bob.userId));
    const t0 = (await sync(bob)).body.next_batch;
    await hub.pushToDevice(bob.userId, [bob.deviceId], [{ sender: "@x:test.local", type: "m.test", content: { n: 1 } }]);
    await hub.deviceListChanged(bob.userId, "@x:test.local");
    await hub.setDeviceKeyCounts(bob.userId, bob.deviceId, { signed_curve25519: 5 }, ["signed_curve25519"]);
    const r = await sync(bob, { since: t0 });
    expect(r.body.to_device.events).toEqual([{ sender: "@x:test.local", type: "m.test", content: { n: 1 } }]);
    expect(r.body.device_lists.changed).toEqual(["@x:test.local"]);
    expect(r.body.device_one_time_keys_count).toEqual({ signed_curve25519: 5 });
    expect(r.body.device_unused_fallback_key_types).toEqual(["signed_curve25519"]);
    const again = await sync(bob, { since: r.body.next_batch });
    expect(again.body.to_device.events).toEqual([]);
  });
});

describe("device_lists on membership changes in encrypted rooms", () => {
  const encrypted = { preset: "public_chat", initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] };
  const dl = async (u: TestUser, since: string) => {
    const r = await sync(u, { since, timeout: 0 });
    expect(r.status).toBe(200);
    return { changed: [...r.body.device_lists.changed].sort(), left: [...r.body.device_lists.left].sort(), next: r.body.next_batch as string };
  };
  const sorted = (...xs: string[]) => [...xs].sort();

  it("left when the last shared room is left (leave, kick, ban); changed when sharing starts again", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const room1 = await createRoom(alice, encrypted);
    const room2 = await createRoom(alice, encrypted);
    let ta = (await sync(alice)).body.next_batch;
    let tb = (await sync(bob)).body.next_batch;
    let tc = (await sync(carol)).body.next_batch;

    // bob and carol join room1, carol also room2: everyone now shares an encrypted room.
    await joinRoom(bob, room1);
    await joinRoom(carol, room1);
    await joinRoom(carol, room2);
    let a = await dl(alice, ta);
    expect(a.changed).toEqual(sorted(bob.userId, carol.userId));
    expect(a.left).toEqual([]);
    let b = await dl(bob, tb);
    // bob, on joining, learns of everyone already there (and of carol, who came later).
    expect(b.changed).toEqual(sorted(alice.userId, carol.userId));
    let c = await dl(carol, tc);
    expect(c.changed).toEqual(sorted(alice.userId, bob.userId));
    [ta, tb, tc] = [a.next, b.next, c.next];

    // Kick bob from room1, his only room: he and the others stop sharing.
    const kick = await call("POST", `${V3}/rooms/${enc(room1)}/kick`, { token: alice.accessToken, body: { user_id: bob.userId } });
    expect(kick.status).toBe(200);
    a = await dl(alice, ta);
    expect(a.left).toEqual([bob.userId]);
    expect(a.changed).toEqual([]);
    b = await dl(bob, tb);
    expect(b.left).toEqual(sorted(alice.userId, carol.userId));
    c = await dl(carol, tc);
    expect(c.left).toEqual([bob.userId]);
    [ta, tb, tc] = [a.next, b.next, c.next];

    // carol leaves room1 but still shares room2 with alice: nobody is "left".
    expect((await call("POST", `${V3}/rooms/${enc(room1)}/leave`, { token: carol.accessToken, body: {} })).status).toBe(200);
    a = await dl(alice, ta);
    expect(a.left).toEqual([]);
    c = await dl(carol, tc);
    expect(c.left).toEqual([]);
    [ta, tc] = [a.next, c.next];

    // bob comes back: shared again, so changed (he may have new devices meanwhile).
    await joinRoom(bob, room1);
    a = await dl(alice, ta);
    expect(a.changed).toEqual([bob.userId]);
    expect(a.left).toEqual([]);
    b = await dl(bob, tb);
    expect(b.changed).toEqual([alice.userId]);
    expect(b.left).toEqual([]);
    [ta, tb] = [a.next, b.next];

    // A ban is a leave too.
    expect((await call("POST", `${V3}/rooms/${enc(room1)}/ban`, { token: alice.accessToken, body: { user_id: bob.userId } })).status).toBe(200);
    expect((await dl(alice, ta)).left).toEqual([bob.userId]);
    expect((await dl(bob, tb)).left).toEqual([alice.userId]);
  });

  it("a room that becomes encrypted marks its members changed; unencrypted rooms do not touch device lists", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    let tb = (await sync(bob)).body.next_batch;
    await joinRoom(bob, roomId);
    let b = await dl(bob, tb);
    expect(b.changed).toEqual([]);
    tb = b.next;
    const ta = (await sync(alice)).body.next_batch;
    const e = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.encryption/`, { token: alice.accessToken, body: { algorithm: "m.megolm.v1.aes-sha2" } });
    expect(e.status).toBe(200);
    expect((await dl(alice, ta)).changed).toEqual([bob.userId]);
    b = await dl(bob, tb);
    expect(b.changed).toEqual([alice.userId]);
  });
});

describe("push rules API", () => {
  it("lists defaults, creates, orders, toggles and deletes rules; counts follow the rules", async () => {
    const { alice, bob, roomId } = await pair();
    const all = await call("GET", `${V3}/pushrules/`, { token: bob.accessToken });
    expect(all.body.global.override[0].rule_id).toBe(".m.rule.master");
    expect(all.body.global.underride.map((r: Json) => r.rule_id)).toContain(".m.rule.message");
    expect((await call("GET", `${V3}/pushrules/global/`, { token: bob.accessToken })).body.override[0].rule_id).toBe(".m.rule.master");
    const base = `${V3}/pushrules/global`;
    expect((await call("PUT", `${base}/room/${enc(roomId)}`, { token: bob.accessToken, body: { actions: [] } })).status).toBe(200);
    expect((await call("GET", `${base}/room/${enc(roomId)}/actions`, { token: bob.accessToken })).body).toEqual({ actions: [] });
    const token = (await sync(bob)).body.next_batch;
    await send(alice, roomId, "muted");
    const r = await sync(bob, { since: token });
    expect(r.body.rooms.join[roomId].unread_notifications.notification_count).toBe(0);
    expect(r.body.account_data.events.map((e: Json) => e.type)).not.toContain("m.push_rules");
    expect((await call("PUT", `${base}/room/${enc(roomId)}/enabled`, { token: bob.accessToken, body: { enabled: false } })).status).toBe(200);
    await send(alice, roomId, "loud");
    const r2 = await sync(bob, { since: r.body.next_batch });
    expect(r2.body.rooms.join[roomId].unread_notifications.notification_count).toBe(1);
    expect((await call("PUT", `${base}/override/a.rule?before=nope`, { token: bob.accessToken, body: { actions: ["notify"], conditions: [] } })).status).toBe(404);
    expect((await call("PUT", `${base}/override/a.rule`, { token: bob.accessToken, body: { actions: ["notify"], conditions: [] } })).status).toBe(200);
    expect((await call("PUT", `${base}/override/b.rule?before=a.rule`, { token: bob.accessToken, body: { actions: [], conditions: [] } })).status).toBe(200);
    const ov = (await call("GET", `${V3}/pushrules/`, { token: bob.accessToken })).body.global.override.map((x: Json) => x.rule_id);
    expect(ov.slice(0, 3)).toEqual([".m.rule.master", "b.rule", "a.rule"]);
    expect((await call("DELETE", `${base}/override/b.rule`, { token: bob.accessToken })).status).toBe(200);
    expect((await call("DELETE", `${base}/override/.m.rule.master`, { token: bob.accessToken })).status).toBe(400);
    expect((await call("PUT", `${base}/override/.m.rule.master/enabled`, { token: bob.accessToken, body: { enabled: true } })).status).toBe(200);
    expect((await call("GET", `${base}/override/.m.rule.master/enabled`, { token: bob.accessToken })).body).toEqual({ enabled: true });
    expect((await call("GET", `${base}/override/nope`, { token: bob.accessToken })).status).toBe(404);
    const notifs = await call("GET", `${V3}/notifications`, { token: bob.accessToken });
    expect(notifs.body.notifications.map((n: Json) => n.event.content.body)).toEqual(["loud"]);
  });
});

describe("more sync options", () => {
  it("include_leave, full_state, event_fields and m.push_rules in initial sync", async () => {
    const { alice, bob, roomId } = await pair();
    const first = await sync(bob);
    expect(first.body.account_data.events.find((e: Json) => e.type === "m.push_rules").content.global.override[0].rule_id).toBe(".m.rule.master");
    const fields = await sync(bob, { filter: JSON.stringify({ event_fields: ["type", "content.body"], room: { timeline: { limit: 3 } } }) });
    for (const e of fields.body.rooms.join[roomId].timeline.events) expect(Object.keys(e).sort()).toEqual(e.content?.body ? ["content", "type"] : ["type"]);
    const full = await sync(bob, { since: first.body.next_batch, full_state: true, timeout: 10_000 });
    expect(full.body.rooms.join[roomId].state.events.length + full.body.rooms.join[roomId].timeline.events.length).toBeGreaterThan(0);
    expect(full.body.rooms.join[roomId].timeline.events).toEqual([]);
    expect(full.body.rooms.join[roomId].state.events.map((e: Json) => e.type)).toContain("m.room.create");

    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/leave`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const plain = await sync(bob);
    expect(plain.body.rooms.leave[roomId]).toBeUndefined();
    const withLeave = await sync(bob, { filter: JSON.stringify({ room: { include_leave: true } }) });
    const tl = withLeave.body.rooms.leave[roomId].timeline.events;
    expect(tl[tl.length - 1]).toMatchObject({ type: "m.room.member", state_key: bob.userId, content: { membership: "leave" } });
    void alice;
  });

  it("threaded receipts and unread_thread_notifications", async () => {
    const { alice, bob, roomId } = await pair();
    const root = await send(alice, roomId, "root");
    const t = (await sync(bob)).body.next_batch;
    const inThread = await send(alice, roomId, "in thread", { "m.relates_to": { rel_type: "m.thread", event_id: root } });
    await send(alice, roomId, "main");
    const filter = JSON.stringify({ room: { timeline: { unread_thread_notifications: true } } });
    const r = await sync(bob, { since: t, filter });
    const room = r.body.rooms.join[roomId];
    expect(room.unread_notifications.notification_count).toBe(2); // root + main (root sent before t, unread)
    expect(room.unread_thread_notifications[root]).toEqual({ notification_count: 1, highlight_count: 0 });
    await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(inThread)}`, { token: bob.accessToken, body: { thread_id: root } });
    const r2 = await sync(bob, { since: r.body.next_batch, filter });
    expect(r2.body.rooms.join[roomId].unread_thread_notifications).toEqual({});
    expect(r2.body.rooms.join[roomId].unread_notifications.notification_count).toBe(2);
    const receipt = r2.body.rooms.join[roomId].ephemeral.events.find((e: Json) => e.type === "m.receipt");
    expect(receipt.content[inThread]["m.read"][bob.userId].thread_id).toBe(root);
    // Without the filter option, thread counts fold into the room's count.
    const r3 = await sync(bob, { since: r.body.next_batch });
    expect(r3.body.rooms.join[roomId].unread_thread_notifications).toBeUndefined();
  });
});
