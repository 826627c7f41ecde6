// Simplified Sliding Sync (MSC4186) against the real Worker, hubs and RoomDOs in workerd.
import { describe, expect, it } from "vitest";
import { call, createRoom, joinRoom, registerUser, sendText, sss, sssOk, type Json, type TestUser } from "./helpers";
import { makeOneTimeKeys, uploadDeviceKeys } from "./e2ee-helpers";
import { signJson } from "../../src/core/signing";

const V3 = "/_matrix/client/v3";
const SSS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const enc = encodeURIComponent;

async function state(u: TestUser, roomId: string, type: string, key: string, content: Json) {
  const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/state/${type}/${enc(key)}`, { token: u.accessToken, body: content });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}
const list = (extra: Json = {}) => ({ ranges: [[0, 9]], timeline_limit: 1, required_state: [["m.room.create", ""]], ...extra });
const bodies = (evs: Json[]) => evs.map((e) => e.content?.body);

describe("discovery", () => {
  it("advertises org.matrix.simplified_msc3575 in /versions", async () => {
    const r = await call("GET", "/_matrix/client/versions");
    expect(r.body.unstable_features["org.matrix.simplified_msc3575"]).toBe(true);
  });
});

describe("lists, order and windows", () => {
  it("sorts rooms by recency, windows them, counts them, and moves a room with a new message to the top", async () => {
    const alice = await registerUser();
    const rooms: string[] = [];
    for (let i = 0; i < 4; i++) {
      const id = await createRoom(alice, { preset: "private_chat", name: `room ${i}` });
      await sendText(alice, id, `hello ${i}`);
      rooms.push(id);
    }
    const first = await sssOk(alice, { lists: { all: list({ ranges: [[0, 1]] }) } });
    expect(first.lists.all.count).toBe(4);
    // Newest first: rooms 3 and 2 in the window.
    expect(Object.keys(first.rooms).sort()).toEqual([rooms[3], rooms[2]].sort());
    const r3 = first.rooms[rooms[3]];
    expect(r3.initial).toBe(true);
    expect(r3.name).toBe("room 3");
    expect(bodies(r3.timeline)).toEqual(["hello 3"]);
    expect(r3.limited).toBe(true);
    expect(r3.prev_batch).toMatch(/^t\d+$/);
    expect(r3.num_live).toBe(0);
    expect(r3.joined_count).toBe(1);
    expect(r3.invited_count).toBe(0);
    expect(r3.required_state.map((e: Json) => e.type)).toEqual(["m.room.create"]);
    expect(first.rooms[rooms[3]].bump_stamp).toBeGreaterThan(first.rooms[rooms[2]].bump_stamp);

    // A message in room 0 moves it into the window, at the top.
    await sendText(alice, rooms[0], "bump");
    const next = await sssOk(alice, { lists: { all: list({ ranges: [[0, 1]] }) } }, { pos: first.pos });
    expect(Object.keys(next.rooms)).toEqual([rooms[0]]);
    expect(next.rooms[rooms[0]].initial).toBe(true);
    expect(bodies(next.rooms[rooms[0]].timeline)).toEqual(["bump"]);
    expect(next.rooms[rooms[0]].bump_stamp).toBeGreaterThan(r3.bump_stamp);

    // An incremental update of a room already sent: only the new event, not initial.
    await sendText(alice, rooms[0], "again");
    const third = await sssOk(alice, { lists: { all: list({ ranges: [[0, 1]] }) } }, { pos: next.pos });
    const r0 = third.rooms[rooms[0]];
    expect(r0.initial).toBeUndefined();
    expect(bodies(r0.timeline)).toEqual(["again"]);
    expect(r0.num_live).toBe(1);
    expect(r0.limited).toBe(false);
    expect(r0.name).toBeUndefined();
  });

  it("answers an unknown pos with 400 M_UNKNOWN_POS, and a retried pos from the same starting point", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, { preset: "private_chat", name: "r" });
    const bad = await sss(alice, { lists: { all: list() } }, { pos: "999999" });
    expect(bad.status).toBe(400);
    expect(bad.body.errcode).toBe("M_UNKNOWN_POS");
    const garbage = await sss(alice, { lists: { all: list() } }, { pos: "not-a-pos" });
    expect(garbage.body.errcode).toBe("M_UNKNOWN_POS");

    const first = await sssOk(alice, { lists: { all: list() } });
    await sendText(alice, roomId, "one");
    const a = await sssOk(alice, { lists: { all: list() } }, { pos: first.pos });
    // The response to `a` was lost: the client retries with the same pos and gets the message again.
    const b = await sssOk(alice, { lists: { all: list() } }, { pos: first.pos });
    expect(bodies(a.rooms[roomId].timeline)).toEqual(["one"]);
    const noAge = (r: Json) => JSON.parse(JSON.stringify(r), (k, v) => (k === "age" ? undefined : v));
    expect(noAge(b.rooms[roomId])).toEqual(noAge(a.rooms[roomId]));
    // Another user's pos is unknown to this user.
    const bob = await registerUser();
    expect((await sss(bob, { lists: { all: list() } }, { pos: b.pos })).body.errcode).toBe("M_UNKNOWN_POS");
    // Another conn_id does not share positions.
    expect((await sss(alice, { conn_id: "other", lists: { all: list() } }, { pos: b.pos })).body.errcode).toBe("M_UNKNOWN_POS");
  });

  it("long-polls until something changes, and wakes on a new message", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, { preset: "private_chat" });
    const first = await sssOk(alice, { lists: { all: list() } });
    const t0 = Date.now();
    const idle = await sssOk(alice, { lists: { all: list() } }, { pos: first.pos, timeout: 300 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(idle.rooms).toEqual({});
    const waiting = sssOk(alice, { lists: { all: list() } }, { pos: idle.pos, timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 100));
    const t1 = Date.now();
    await sendText(alice, roomId, "wake");
    const woke = await waiting;
    expect(Date.now() - t1).toBeLessThan(5000);
    expect(bodies(woke.rooms[roomId].timeline)).toEqual(["wake"]);
    // A change no list shows (a room outside the is_dm filter) keeps the request waiting.
    const dmOnly = { dms: list({ filters: { is_dm: true } }) };
    const base = await sssOk(alice, { lists: dmOnly }, { pos: woke.pos });
    const t2 = Date.now();
    const quiet = sssOk(alice, { lists: dmOnly }, { pos: base.pos, timeout: 800 });
    await new Promise((r) => setTimeout(r, 100));
    await sendText(alice, roomId, "not shown");
    const res = await quiet;
    expect(Date.now() - t2).toBeGreaterThanOrEqual(700);
    expect(res.rooms).toEqual({});
    expect(res.lists.dms.count).toBe(0);
    // A request that changes its lists is answered at once, even with nothing new to show.
    const t3 = Date.now();
    const changed = await sssOk(alice, { lists: { dms: list({ ranges: [[0, 50]], filters: { is_dm: true } }) } }, { pos: res.pos, timeout: 5000 });
    expect(Date.now() - t3).toBeLessThan(2500);
    expect(changed.lists.dms.count).toBe(0);
  });
});

describe("ordering under concurrent activity", () => {
  it("a connection following concurrent sends ends with the same order as a fresh one, and sequential sends order the window", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const rooms: string[] = [];
    for (let i = 0; i < 6; i++) {
      const id = await createRoom(alice, { preset: "public_chat", name: `c${i}` });
      await joinRoom(bob, id);
      rooms.push(id);
    }
    const l = { all: list({ ranges: [[0, 5]] }) };
    let res = await sssOk(alice, { lists: l });
    const stamps = new Map<string, number>();
    const track = (r: Json) => {
      for (const [id, room] of Object.entries(r.rooms as Record<string, Json>)) if (room.bump_stamp !== undefined) stamps.set(id, room.bump_stamp);
    };
    track(res);
    // 24 sends from two users into random rooms, all at once, while the connection follows.
    const sends = Promise.all(Array.from({ length: 24 }, (_, i) => sendText(i % 2 ? alice : bob, rooms[(i * 7) % 6], `c${i}`)));
    let done = false;
    void sends.then(() => (done = true));
    for (let i = 0; i < 50 && !done; i++) {
      res = await sssOk(alice, { lists: l }, { pos: res.pos, timeout: 200 });
      track(res);
    }
    await sends;
    res = await sssOk(alice, { lists: l }, { pos: res.pos });
    track(res);
    const fresh = await sssOk(alice, { conn_id: "fresh", lists: l });
    const order = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).map(([id]) => id);
    const freshStamps = new Map(Object.entries(fresh.rooms as Record<string, Json>).map(([id, r]) => [id, r.bump_stamp as number]));
    expect(order(stamps)).toEqual(order(freshStamps));
    expect(stamps).toEqual(freshStamps);
    // Sequential sends: c5 first … c0 last → c0, c1, c2 at the top.
    for (let i = 5; i >= 0; i--) await sendText(bob, rooms[i], `seq ${i}`);
    const top = await sssOk(alice, { lists: { all: list({ ranges: [[0, 2]] }) } }, { pos: res.pos });
    track(top);
    expect(order(stamps).slice(0, 3)).toEqual(rooms.slice(0, 3));
  });
});

describe("room fields and required_state", () => {
  it("required_state with *, $ME and $LAZY; heroes for a room without a name; counts", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat" });
    await joinRoom(bob, roomId);
    await state(alice, roomId, "m.room.topic", "", { topic: "t" });
    await sendText(bob, roomId, "from bob");
    // Everything.
    const all = await sssOk(alice, { lists: { all: list({ required_state: [["*", "*"]] }) } });
    const types = new Set(all.rooms[roomId].required_state.map((e: Json) => e.type));
    for (const t of ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.topic", "m.room.member"]) expect(types.has(t), t).toBe(true);
    expect(all.rooms[roomId].heroes).toEqual([{ user_id: bob.userId, displayname: bob.userId.slice(1).split(":")[0] }]);
    expect(all.rooms[roomId].joined_count).toBe(2);
    // $LAZY: the members of the timeline's senders only; $ME: mine.
    const lazy = await sssOk(alice, { conn_id: "lazy", lists: { all: list({ required_state: [["m.room.member", "$LAZY"]] }) } });
    expect(lazy.rooms[roomId].required_state.map((e: Json) => e.state_key)).toEqual([bob.userId]);
    const me = await sssOk(alice, { conn_id: "me", lists: { all: list({ required_state: [["m.room.member", "$ME"]] }) } });
    expect(me.rooms[roomId].required_state.map((e: Json) => e.state_key)).toEqual([alice.userId]);
    // Bob's message counts for alice.
    expect(me.rooms[roomId].notification_count).toBe(1);
    expect(me.rooms[roomId].highlight_count).toBe(0);
  });

  it("required_state of an incremental response holds the state changes (name change → name)", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, { preset: "private_chat", name: "before" });
    const l = { all: list({ required_state: [["m.room.name", ""], ["m.room.topic", ""]] }) };
    const first = await sssOk(alice, { lists: l });
    expect(first.rooms[roomId].name).toBe("before");
    await state(alice, roomId, "m.room.name", "", { name: "after" });
    const next = await sssOk(alice, { lists: l }, { pos: first.pos });
    expect(next.rooms[roomId].name).toBe("after");
    expect(next.rooms[roomId].required_state.map((e: Json) => [e.type, e.content.name])).toEqual([["m.room.name", "after"]]);
  });

  it("an invite shows with invite_state, and a kick removes the room with its last event", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat", name: "secret" });
    const first = await sssOk(bob, { lists: { all: list() } });
    expect(first.lists.all.count).toBe(0);
    const inv = await call("POST", `${V3}/rooms/${enc(roomId)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    expect(inv.status).toBe(200);
    const invited = await sssOk(bob, { lists: { all: list() } }, { pos: first.pos });
    expect(invited.lists.all.count).toBe(1);
    const room = invited.rooms[roomId];
    expect(room.initial).toBe(true);
    expect(room.name).toBe("secret");
    const mine = room.invite_state.find((e: Json) => e.type === "m.room.member" && e.state_key === bob.userId);
    expect(mine.content.membership).toBe("invite");
    expect(room.timeline).toBeUndefined();
    await joinRoom(bob, roomId);
    const joined = await sssOk(bob, { lists: { all: list() } }, { pos: invited.pos });
    expect(joined.rooms[roomId].initial).toBe(true);
    expect(joined.rooms[roomId].timeline[0].content.membership).toBe("join");
    const kick = await call("POST", `${V3}/rooms/${enc(roomId)}/kick`, { token: alice.accessToken, body: { user_id: bob.userId } });
    expect(kick.status).toBe(200);
    const kicked = await sssOk(bob, { lists: { all: list() } }, { pos: joined.pos });
    expect(kicked.rooms[roomId].timeline.at(-1).content.membership).toBe("leave");
    const after = await sssOk(bob, { lists: { all: list() } }, { pos: kicked.pos });
    expect(after.lists.all.count).toBe(0);
    expect(after.rooms[roomId]).toBeUndefined();
  });
});

describe("forgotten rooms", () => {
  it("a room left and forgotten is gone from the lists", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat" });
    await joinRoom(bob, roomId);
    const first = await sssOk(bob, { lists: { all: list() } });
    expect(first.lists.all.count).toBe(1);
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/leave`, { token: bob.accessToken, body: {} })).status).toBe(200);
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/forget`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const next = await sssOk(bob, { lists: { all: list() } }, { pos: first.pos });
    expect(next.lists.all.count).toBe(0);
    expect(next.rooms).toEqual({});
  });
});

describe("knocks", () => {
  it("a knock shows with knock_state", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat", name: "knock here", initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }] });
    const k = await call("POST", `${V3}/knock/${enc(roomId)}`, { token: bob.accessToken, body: {} });
    expect(k.status, JSON.stringify(k.body)).toBe(200);
    const res = await sssOk(bob, { lists: { all: list() } });
    expect(res.lists.all.count).toBe(1);
    const room = res.rooms[roomId];
    expect(room.knock_state.find((e: Json) => e.type === "m.room.member" && e.state_key === bob.userId).content.membership).toBe("knock");
    expect(room.name).toBe("knock here");
  });
});

describe("ignored users", () => {
  it("leaves out messages and invites from ignored users", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat" });
    await joinRoom(bob, roomId);
    await joinRoom(carol, roomId);
    const r = await call("PUT", `${V3}/user/${enc(alice.userId)}/account_data/m.ignored_user_list`, { token: alice.accessToken, body: { ignored_users: { [bob.userId]: {} } } });
    expect(r.status).toBe(200);
    await sendText(bob, roomId, "from bob");
    await sendText(carol, roomId, "from carol");
    const other = await createRoom(bob, { preset: "private_chat" });
    expect((await call("POST", `${V3}/rooms/${enc(other)}/invite`, { token: bob.accessToken, body: { user_id: alice.userId } })).status).toBe(200);
    const res = await sssOk(alice, { lists: { all: list({ timeline_limit: 5 }) } });
    expect(res.lists.all.count).toBe(1);
    expect(bodies(res.rooms[roomId].timeline)).toContain("from carol");
    expect(bodies(res.rooms[roomId].timeline)).not.toContain("from bob");
  });
});

describe("filters and room subscriptions", () => {
  it("is_dm, is_encrypted, is_invite, room_types, not_room_types and spaces", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const plain = await createRoom(alice, { preset: "private_chat", name: "plain" });
    const dm = await createRoom(alice, { preset: "trusted_private_chat", is_direct: true });
    const encrypted = await createRoom(alice, { preset: "private_chat", initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] });
    const space = await createRoom(alice, { preset: "private_chat", creation_content: { type: "m.space" } });
    await state(alice, space, "m.space.child", plain, { via: ["test.local"] });
    const r = await call("PUT", `${V3}/user/${enc(alice.userId)}/account_data/m.direct`, { token: alice.accessToken, body: { [bob.userId]: [dm] } });
    expect(r.status).toBe(200);
    const other = await createRoom(bob, { preset: "private_chat" });
    expect((await call("POST", `${V3}/rooms/${enc(other)}/invite`, { token: bob.accessToken, body: { user_id: alice.userId } })).status).toBe(200);

    const ids = (res: Json, name: string) => {
      expect(res.lists[name].count, name).toBe(Object.keys(res.rooms).length);
      return Object.keys(res.rooms).sort();
    };
    const only = async (filters: Json) => sssOk(alice, { conn_id: JSON.stringify(filters), lists: { l: list({ filters }) } });
    expect(ids(await only({ is_dm: true }), "l")).toEqual([dm]);
    expect(ids(await only({ is_encrypted: true }), "l")).toEqual([encrypted]);
    expect(ids(await only({ is_invite: true }), "l")).toEqual([other]);
    expect(ids(await only({ room_types: ["m.space"] }), "l")).toEqual([space]);
    expect(ids(await only({ not_room_types: ["m.space"], is_invite: false }), "l")).toEqual([plain, dm, encrypted].sort());
    expect(ids(await only({ room_types: [null], is_dm: false, is_encrypted: false, is_invite: false }), "l")).toEqual([plain]);
    expect(ids(await only({ spaces: [space] }), "l")).toEqual([plain]);
    // A space bob joined (his hub never saw its create event): the type is read from the room
    // once and kept; both requests see it.
    expect((await call("POST", `${V3}/rooms/${enc(space)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } })).status).toBe(200);
    await joinRoom(bob, space);
    for (const conn of ["b1", "b2"]) {
      const b = await sssOk(bob, { conn_id: conn, lists: { l: list({ filters: { room_types: ["m.space"] } }) } });
      expect(Object.keys(b.rooms)).toEqual([space]);
    }
    // Two lists in one request, each with its own count.
    const two = await sssOk(alice, { lists: { dms: list({ filters: { is_dm: true } }), invites: list({ filters: { is_invite: true } }) } });
    expect(two.lists).toEqual({ dms: { count: 1 }, invites: { count: 1 } });
    expect(two.rooms[dm].is_dm).toBe(true);
  });

  it("room_subscriptions are sticky until unsubscribe_rooms", async () => {
    const alice = await registerUser();
    const quiet = await createRoom(alice, { preset: "private_chat", name: "quiet" });
    for (let i = 0; i < 3; i++) await createRoom(alice, { preset: "private_chat" });
    await sendText(alice, quiet, "q1");
    await sendText(alice, quiet, "q2");
    const l = { top: list({ ranges: [[0, 0]] }) };
    for (let i = 0; i < 2; i++) await sendText(alice, await createRoom(alice, { preset: "private_chat" }), "newer");
    const first = await sssOk(alice, { lists: l, room_subscriptions: { [quiet]: { timeline_limit: 5, required_state: [["m.room.name", ""]] } } });
    expect(bodies(first.rooms[quiet].timeline).slice(-2)).toEqual(["q1", "q2"]);
    expect(first.rooms[quiet].required_state.map((e: Json) => e.type)).toEqual(["m.room.name"]);
    expect(Object.keys(first.rooms)).toHaveLength(2);
    // Not sent again, but still subscribed: its new events arrive although it is outside the window.
    await sendText(alice, quiet, "q3");
    const next = await sssOk(alice, { lists: l }, { pos: first.pos });
    expect(bodies(next.rooms[quiet].timeline)).toEqual(["q3"]);
    // "q3" also moved it into the list's window, which asks for other state: the timeline stays
    // a delta, the state it now needs comes in full.
    expect(next.rooms[quiet].initial).toBeUndefined();
    expect(next.rooms[quiet].required_state.map((e: Json) => e.type).sort()).toEqual(["m.room.create", "m.room.name"]);
    // Unsubscribed, with a list that does not show it: nothing more of it.
    const none = { top: list({ ranges: [[0, 0]], filters: { is_dm: true } }) };
    const un = await sssOk(alice, { lists: none, unsubscribe_rooms: [quiet] }, { pos: next.pos });
    expect(un.rooms[quiet]).toBeUndefined();
    await sendText(alice, quiet, "q4");
    const after = await sssOk(alice, { lists: none }, { pos: un.pos, timeout: 200 });
    expect(after.rooms[quiet]).toBeUndefined();
    // A subscription to a room the user is not in shows nothing.
    const stranger = await registerUser();
    const s = await sssOk(stranger, { room_subscriptions: { [quiet]: { timeline_limit: 5 } } });
    expect(s.rooms).toEqual({});
  });
});

describe("extensions", () => {
  const ext = (extra: Json = {}) => ({ to_device: { enabled: true }, e2ee: { enabled: true }, account_data: { enabled: true }, receipts: { enabled: true }, typing: { enabled: true }, ...extra });

  it("to_device: delivered after `since`, deleted once a later since is presented", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const put = (n: number) =>
      call("PUT", `${V3}/sendToDevice/m.test/tx${n}${alice.deviceId}`, { token: bob.accessToken, body: { messages: { [alice.userId]: { [alice.deviceId]: { n } } } } });
    expect((await put(1)).status).toBe(200);
    const first = await sssOk(alice, { extensions: { to_device: { enabled: true } } });
    expect(first.extensions.to_device.events.map((e: Json) => e.content.n)).toEqual([1]);
    expect(first.extensions.to_device.events[0].sender).toBe(bob.userId);
    const since = first.extensions.to_device.next_batch;
    // A retry without the new since gets the message again (not acknowledged yet).
    const again = await sssOk(alice, { extensions: { to_device: { enabled: true } } }, { pos: first.pos });
    expect(again.extensions.to_device.events.map((e: Json) => e.content.n)).toEqual([1]);
    // The long-poll wakes for a new message.
    const t0 = Date.now();
    const waiting = sssOk(alice, { extensions: { to_device: { enabled: true, since } } }, { pos: first.pos, timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 150));
    await put(2);
    const next = await waiting;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(next.extensions.to_device.events.map((e: Json) => e.content.n)).toEqual([2]);
    const third = await sssOk(alice, { extensions: { to_device: { enabled: true, since: next.extensions.to_device.next_batch } } }, { pos: next.pos });
    expect(third.extensions.to_device.events).toEqual([]);
    // Limit: the rest comes next time, nothing skipped.
    for (let i = 3; i < 6; i++) await put(i);
    const lim = await sssOk(alice, { extensions: { to_device: { enabled: true, since: third.extensions.to_device.next_batch, limit: 2 } } }, { pos: third.pos });
    expect(lim.extensions.to_device.events.map((e: Json) => e.content.n)).toEqual([3, 4]);
    const rest = await sssOk(alice, { extensions: { to_device: { enabled: true, since: lim.extensions.to_device.next_batch, limit: 2 } } }, { pos: lim.pos });
    expect(rest.extensions.to_device.events.map((e: Json) => e.content.n)).toEqual([5]);
    expect((await sss(alice, { extensions: { to_device: { enabled: true, since: "garbage" } } })).body.errcode).toBe("M_INVALID_PARAM");
  });

  it("e2ee: one-time key counts, fallback key types, and device_lists.changed when someone joins an encrypted room", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const dev = await uploadDeviceKeys(alice);
    const fb = { "signed_curve25519:FB": await signJson({ key: "fallbackkey", fallback: true }, alice.userId, dev.ed) };
    await call("POST", `${V3}/keys/upload`, { token: alice.accessToken, body: { one_time_keys: await makeOneTimeKeys(alice.userId, dev.ed, 3), fallback_keys: fb } });
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }] });
    const first = await sssOk(alice, { lists: { all: list() }, extensions: { e2ee: { enabled: true } } });
    expect(first.extensions.e2ee.device_one_time_keys_count.signed_curve25519).toBe(3);
    expect(first.extensions.e2ee.device_unused_fallback_key_types).toEqual(["signed_curve25519"]);
    await joinRoom(bob, roomId);
    const next = await sssOk(alice, { lists: { all: list() }, extensions: { e2ee: { enabled: true } } }, { pos: first.pos });
    expect(next.extensions.e2ee.device_lists.changed).toContain(bob.userId);
    // A claim of one of alice's one-time keys wakes her long-poll with the new count.
    const t0 = Date.now();
    const waiting = sssOk(alice, { lists: { all: list() }, extensions: { e2ee: { enabled: true } } }, { pos: next.pos, timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 150));
    const claim = await call("POST", `${V3}/keys/claim`, { token: bob.accessToken, body: { one_time_keys: { [alice.userId]: { [alice.deviceId]: "signed_curve25519" } } } });
    expect(claim.status).toBe(200);
    const woke = await waiting;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(woke.extensions.e2ee.device_one_time_keys_count.signed_curve25519).toBe(2);
  });

  it("account_data (global and per room), receipts and typing for the rooms shown", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat" });
    await joinRoom(bob, roomId);
    const ev = await sendText(bob, roomId, "read me");
    await call("PUT", `${V3}/user/${enc(alice.userId)}/account_data/org.example.global`, { token: alice.accessToken, body: { a: 1 } });
    await call("PUT", `${V3}/user/${enc(alice.userId)}/rooms/${enc(roomId)}/account_data/org.example.room`, { token: alice.accessToken, body: { b: 2 } });
    const first = await sssOk(alice, { lists: { all: list() }, extensions: ext() });
    expect(first.extensions.account_data.global.find((e: Json) => e.type === "org.example.global").content).toEqual({ a: 1 });
    expect(first.extensions.account_data.rooms[roomId]).toEqual([{ type: "org.example.room", content: { b: 2 } }]);
    expect(first.rooms[roomId].notification_count).toBe(1);
    // Bob reads and types; alice reads (her count drops to 0).
    await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(ev)}`, { token: bob.accessToken, body: {} });
    await call("PUT", `${V3}/rooms/${enc(roomId)}/typing/${enc(bob.userId)}`, { token: bob.accessToken, body: { typing: true, timeout: 10_000 } });
    await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(ev)}`, { token: alice.accessToken, body: {} });
    const next = await sssOk(alice, { lists: { all: list() }, extensions: ext() }, { pos: first.pos });
    expect(next.extensions.receipts.rooms[roomId].content[ev]["m.read"][bob.userId]).toBeDefined();
    expect(next.extensions.typing.rooms[roomId].content.user_ids).toEqual([bob.userId]);
    expect(next.rooms[roomId].notification_count).toBe(0);
    // Account data already sent is not repeated.
    expect(next.extensions.account_data.global).toEqual([]);
    expect(next.extensions.account_data.rooms).toEqual({});
    // Scoped to a list that does not exist: no rooms.
    const scoped = await sssOk(alice, { conn_id: "scoped", lists: { all: list() }, extensions: ext({ typing: { enabled: true, lists: ["other"] } }) });
    expect(scoped.extensions.typing.rooms).toEqual({});
  });
});

describe("bad input: clear M_* errors, never a 5xx", () => {
  it("rejects malformed bodies, ranges, limits, required_state and filters; ignores unknown extensions", async () => {
    const alice = await registerUser();
    await createRoom(alice, { preset: "private_chat" });
    const raw = await call("POST", SSS, { token: alice.accessToken, rawBody: "{not json", headers: { "content-type": "application/json" } });
    expect([raw.status, raw.body.errcode]).toEqual([400, "M_NOT_JSON"]);
    expect((await call("POST", SSS, { body: {} })).status).toBe(401);
    const cases: [Json, string][] = [
      [[], "M_BAD_JSON"],
      [{ lists: [] }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: [[5, 2]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: [[-1, 2]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: [[0, 1e15]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: [[0, 1.5]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: [[0]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: [[0, 1, 2]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: "0-10" } } }, "M_BAD_JSON"],
      [{ lists: { a: { ranges: Array.from({ length: 101 }, (_, i) => [i, i]) } } }, "M_BAD_JSON"],
      [{ lists: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`l${i}`, {}])) }, "M_BAD_JSON"],
      [{ lists: { a: { timeline_limit: -1 } } }, "M_BAD_JSON"],
      [{ lists: { a: { timeline_limit: 1e9 } } }, "M_BAD_JSON"],
      [{ lists: { a: { required_state: [["m.room.name"]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { required_state: [[1, 2]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { required_state: "*" } } }, "M_BAD_JSON"],
      [{ lists: { a: { required_state: [["x".repeat(10_000), ""]] } } }, "M_BAD_JSON"],
      [{ lists: { a: { required_state: Array.from({ length: 5000 }, (_, i) => ["t", `${i}`]) } } }, "M_BAD_JSON"],
      [{ lists: { a: { filters: { is_dm: "yes" } } } }, "M_BAD_JSON"],
      [{ lists: { a: { filters: { spaces: ["not-a-room"] } } } }, "M_BAD_JSON"],
      [{ lists: { a: { filters: { is_tombstoned: true } } } }, "M_INVALID_PARAM"],
      [{ lists: { a: { filters: [] } } }, "M_BAD_JSON"],
      [{ room_subscriptions: { "not-a-room": {} } }, "M_BAD_JSON"],
      [{ room_subscriptions: { "!r:x": { timeline_limit: "ten" } } }, "M_BAD_JSON"],
      [{ unsubscribe_rooms: "!r:x" }, "M_BAD_JSON"],
      [{ conn_id: "c".repeat(1000) }, "M_BAD_JSON"],
      [{ extensions: { to_device: { enabled: "yes" } } }, "M_BAD_JSON"],
      [{ extensions: { to_device: { enabled: true, limit: 0 } } }, "M_BAD_JSON"],
    ];
    for (const [body, errcode] of cases) {
      const r = await call("POST", SSS, { token: alice.accessToken, body });
      expect([r.status, r.body.errcode], JSON.stringify(body).slice(0, 120)).toEqual([400, errcode]);
      expect(typeof r.body.error).toBe("string");
    }
    for (const q of ["timeout=-5", "timeout=abc"]) expect((await call("POST", `${SSS}?${q}`, { token: alice.accessToken, body: {} })).body.errcode).toBe("M_INVALID_PARAM");
    // A huge but well-formed range is clamped to the list; unknown extensions and top-level
    // keys (clientTimeout, newer extensions) are ignored.
    const ok = await sssOk(alice, {
      lists: { a: { ranges: [[0, 2 ** 31 - 1]], timeline_limit: 0, required_state: [["*", "*"], ["m.room.member", "$LAZY"], ["", ""], ["m.room.member", "@nobody:nowhere"]] } },
      extensions: { "org.example.unknown": { enabled: true }, thread_subscriptions: { enabled: true } },
      clientTimeout: 5000,
    });
    expect(ok.lists.a.count).toBe(1);
    expect(Object.keys(ok.extensions)).toEqual([]);
    const room = Object.values(ok.rooms)[0] as Json;
    expect(room.timeline).toEqual([]);
    expect(room.required_state.length).toBeGreaterThan(3);
  });
});
