// Simplified Sliding Sync (MSC4186): per-connection state — what is sticky, and how much the
// hub keeps per connection and device.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, registerUser, sendText, sss, sssOk, type Json, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

const hub = (u: TestUser) => env.USERS.get(env.USERS.idFromName(u.userId));

async function createRoom(u: TestUser, body: Json = { preset: "private_chat" }): Promise<string> {
  const r = await call("POST", `${V3}/createRoom`, { token: u.accessToken, body });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.room_id;
}
const list = (extra: Json = {}) => ({ ranges: [[0, 9]], timeline_limit: 1, required_state: [["m.room.create", ""]], ...extra });

describe("sticky parameters", () => {
  // MSC4186: room subscriptions and extension config stay with the connection (matrix-js-sdk
  // sends a room subscription once and `unsubscribe_rooms` later; its e2ee extension notes
  // "this is sticky"). Lists are not sticky (the MSC's changelog struck "make lists sticky";
  // Synapse and matrix-rust-sdk send them whole every time): a request without lists has none.
  it("extensions stay enabled when a request omits them, until turned off", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat" });
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const first = await sssOk(alice, { lists: { all: list() }, extensions: { typing: { enabled: true }, account_data: { enabled: true }, to_device: { enabled: true } } });
    expect(first.extensions.typing).toEqual({ rooms: {} });
    await call("PUT", `${V3}/rooms/${enc(roomId)}/typing/${enc(bob.userId)}`, { token: bob.accessToken, body: { typing: true, timeout: 10_000 } });
    await call("PUT", `${V3}/user/${enc(alice.userId)}/account_data/org.example.sticky`, { token: alice.accessToken, body: { x: 1 } });
    // No `extensions` at all: still on.
    const next = await sssOk(alice, { lists: { all: list() } }, { pos: first.pos });
    expect(next.extensions.typing.rooms[roomId].content.user_ids).toEqual([bob.userId]);
    expect(next.extensions.account_data.global.map((e: Json) => e.type)).toContain("org.example.sticky");
    expect(next.extensions.to_device).toBeDefined();
    // Turned off explicitly: gone; the others stay.
    const off = await sssOk(alice, { lists: { all: list() }, extensions: { typing: { enabled: false } } }, { pos: next.pos });
    expect(off.extensions.typing).toBeUndefined();
    expect(off.extensions.account_data).toBeDefined();
    // The sticky config belongs to the pos: a retry of `next.pos` starts from what it had.
    const retry = await sssOk(alice, { lists: { all: list() } }, { pos: next.pos });
    expect(retry.extensions.typing).toEqual({ rooms: {} });
  });

  it("room subscriptions stay until unsubscribed, a changed config replaces the old one, and lists are not sticky", async () => {
    const alice = await registerUser();
    const sub = await createRoom(alice);
    await sendText(alice, sub, "s1");
    const first = await sssOk(alice, { lists: { all: list() }, room_subscriptions: { [sub]: { timeline_limit: 1, required_state: [] } } });
    expect(first.lists.all.count).toBe(1);
    await sendText(alice, sub, "s2");
    // Neither lists nor room_subscriptions: the subscription still shows the room; no lists.
    const next = await sssOk(alice, {}, { pos: first.pos });
    expect(next.lists).toEqual({});
    expect(next.rooms[sub].timeline.map((e: Json) => e.content.body)).toEqual(["s2"]);
    // The subscription resent with more required_state: that state comes at once, not after
    // the long-poll.
    const t0 = Date.now();
    const more = await sssOk(alice, { room_subscriptions: { [sub]: { timeline_limit: 1, required_state: [["m.room.create", ""]] } } }, { pos: next.pos, timeout: 10_000 });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(more.rooms[sub].required_state.map((e: Json) => e.type)).toEqual(["m.room.create"]);
    const un = await sssOk(alice, { unsubscribe_rooms: [sub] }, { pos: more.pos });
    await sendText(alice, sub, "s3");
    const after = await sssOk(alice, {}, { pos: un.pos, timeout: 300 });
    expect(after.rooms).toEqual({});
  });

  it("a request resending the same room subscriptions keeps long-polling past changes it does not show", async () => {
    const alice = await registerUser();
    const sub = await createRoom(alice);
    const other = await createRoom(alice);
    const body = { lists: { dms: list({ filters: { is_dm: true } }) }, room_subscriptions: { [sub]: { timeline_limit: 1, required_state: [] } } };
    const first = await sssOk(alice, body);
    const t0 = Date.now();
    const waiting = sssOk(alice, body, { pos: first.pos, timeout: 2000 });
    await new Promise((r) => setTimeout(r, 200));
    await sendText(alice, other, "not shown");
    const r = await waiting;
    expect(r.rooms).toEqual({});
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1800);
  });
});

describe("bounded connection state", () => {
  const rowsOf = (u: TestUser) =>
    runInDurableObject(hub(u), async (_i, state) =>
      state.storage.sql.exec<{ device_id: string; conn_id: string; state: string }>("SELECT device_id, conn_id, state FROM sliding_conns").toArray(),
    );

  it("a device keeps at most 10 connections: a new one evicts the least recently used", async () => {
    const alice = await registerUser();
    await createRoom(alice);
    const pos: string[] = [];
    for (let i = 0; i < 12; i++) pos.push((await sssOk(alice, { conn_id: `c${i}`, lists: { all: list() } })).pos);
    // c0 used again before the others were made would have survived; here c0 and c1 are the
    // least recently used.
    for (const i of [0, 1]) expect((await sss(alice, { conn_id: `c${i}`, lists: { all: list() } }, { pos: pos[i] })).body.errcode).toBe("M_UNKNOWN_POS");
    for (const i of [2, 11]) await sssOk(alice, { conn_id: `c${i}`, lists: { all: list() } }, { pos: pos[i] });
    const conns = new Set((await rowsOf(alice)).map((r) => r.conn_id));
    expect(conns.size).toBe(10);
    // Using c2 made it the most recent: a new connection now evicts c3, not c2.
    await sssOk(alice, { conn_id: "c12", lists: { all: list() } });
    const after = new Set((await rowsOf(alice)).map((r) => r.conn_id));
    expect(after.has("c2")).toBe(true);
    expect(after.has("c3")).toBe(false);
  });

  it("connections idle for 7 days are forgotten by the hub's compaction, even if the user never syncs again", async () => {
    const alice = await registerUser();
    await createRoom(alice);
    const first = await sssOk(alice, { lists: { all: list() } });
    expect((await rowsOf(alice)).length).toBe(1);
    await (hub(alice) as unknown as { compactLog(o: { now: number }): Promise<unknown> }).compactLog({ now: Date.now() + 6 * 24 * 3600_000 });
    expect((await rowsOf(alice)).length).toBe(1);
    await (hub(alice) as unknown as { compactLog(o: { now: number }): Promise<unknown> }).compactLog({ now: Date.now() + 8 * 24 * 3600_000 });
    expect(await rowsOf(alice)).toEqual([]);
    expect((await sss(alice, { lists: { all: list() } }, { pos: first.pos })).body.errcode).toBe("M_UNKNOWN_POS");
  });

  it("sticky room subscriptions are capped at 1,000 per connection, the oldest dropped", async () => {
    const alice = await registerUser();
    const ids = (from: number, n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`!sub${from + i}:test.local`, { timeline_limit: 1, required_state: [] }]));
    const first = await sssOk(alice, { room_subscriptions: ids(0, 1000) });
    await sssOk(alice, { room_subscriptions: ids(1000, 500) }, { pos: first.pos });
    const rows = await rowsOf(alice);
    const subs = Object.keys((JSON.parse(rows[rows.length - 1].state) as { subs: Record<string, unknown> }).subs);
    expect(subs).toHaveLength(1000);
    expect(subs).toContain("!sub1499:test.local");
    expect(subs).not.toContain("!sub0:test.local");
  });
});

describe("expanded_timeline (MSC4186 'Changes to timeline_limit')", () => {
  it("a bigger timeline_limit sends the latest events at once with expanded_timeline; deltas after that are plain", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "public_chat" });
    expect((await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: bob.accessToken, body: {} })).status).toBe(200);
    for (let i = 1; i <= 4; i++) await sendText(i % 2 ? bob : alice, roomId, `m${i}`);
    const l = (limit: number) => ({ all: list({ timeline_limit: limit, required_state: [["m.room.member", "$LAZY"]] }) });
    const bodies = (r: Json) => r.timeline.map((e: Json) => e.content.body);
    const first = await sssOk(alice, { lists: l(1) });
    expect(bodies(first.rooms[roomId])).toEqual(["m4"]);
    // The limit grows to 3: answered at once (not after the long-poll), with m2..m4.
    const t0 = Date.now();
    const grown = await sssOk(alice, { lists: l(3) }, { pos: first.pos, timeout: 10_000 });
    expect(Date.now() - t0).toBeLessThan(5000);
    const r = grown.rooms[roomId];
    expect(bodies(r)).toEqual(["m2", "m3", "m4"]);
    expect(r.unstable_expanded_timeline).toBe(true);
    expect(r.expanded_timeline).toBe(true);
    expect(r.initial).toBeUndefined();
    expect(r.num_live).toBe(0);
    expect(r.limited).toBe(true);
    // $LAZY: the member event of bob, who sent m3, comes with it.
    expect(r.required_state.map((e: Json) => e.state_key)).toContain(bob.userId);
    // Same limit again, one new event: a plain delta.
    await sendText(bob, roomId, "m5");
    const next = await sssOk(alice, { lists: l(3) }, { pos: grown.pos });
    expect(bodies(next.rooms[roomId])).toEqual(["m5"]);
    expect(next.rooms[roomId].expanded_timeline).toBeUndefined();
    expect(next.rooms[roomId].num_live).toBe(1);
    // A room subscription with a bigger limit than the list's expands it too.
    const sub = await sssOk(alice, { lists: l(3), room_subscriptions: { [roomId]: { timeline_limit: 5, required_state: [] } } }, { pos: next.pos, timeout: 10_000 });
    expect(bodies(sub.rooms[roomId])).toEqual(["m1", "m2", "m3", "m4", "m5"]);
    expect(sub.rooms[roomId].expanded_timeline).toBe(true);
  });
});

describe("per-room connection rows", () => {
  it("a response writes only the rooms it changed; the pos row does not grow with the rooms sent", async () => {
    const alice = await registerUser();
    const rooms: string[] = [];
    for (let i = 0; i < 30; i++) rooms.push(await createRoom(alice));
    const big = { all: list({ ranges: [[0, 49]] }) };
    const first = await sssOk(alice, { lists: big });
    expect(Object.keys(first.rooms)).toHaveLength(30);
    await sendText(alice, rooms[3], "one");
    const next = await sssOk(alice, { lists: big }, { pos: first.pos });
    expect(Object.keys(next.rooms)).toEqual([rooms[3]]);
    const stored = await runInDurableObject(hub(alice), async (_i, state) => ({
      row: state.storage.sql.exec<{ state: string }>("SELECT state FROM sliding_conns WHERE id = ?", Number(next.pos)).one().state,
      written: state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM sliding_conn_rooms WHERE pos = ?", Number(next.pos)).one().n,
    }));
    // 30 rooms' worth would be several KB; the row holds config only.
    expect(stored.row.length).toBeLessThan(1000);
    expect(stored.written).toBe(1);
  });

  it("rows of an abandoned sibling pos are not taken for the retried one", async () => {
    const alice = await registerUser();
    const x = await createRoom(alice);
    await sendText(alice, x, "x");
    for (let i = 0; i < 2; i++) await sendText(alice, await createRoom(alice), "newer");
    const l = { top: list({ ranges: [[0, 0]] }) };
    const p0 = await sssOk(alice, { lists: l });
    expect(p0.rooms[x]).toBeUndefined();
    // N1 subscribes to x (the client never sees N1) ...
    const n1 = await sssOk(alice, { lists: l, room_subscriptions: { [x]: { timeline_limit: 1, required_state: [] } } }, { pos: p0.pos });
    expect(n1.rooms[x].initial).toBe(true);
    // ... and retries p0 without it: N2; from N2 subscribing again, x is still new.
    const n2 = await sssOk(alice, { lists: l }, { pos: p0.pos });
    const n3 = await sssOk(alice, { lists: l, room_subscriptions: { [x]: { timeline_limit: 1, required_state: [] } } }, { pos: n2.pos });
    expect(n3.rooms[x].initial).toBe(true);
    expect(n3.rooms[x].timeline.map((e: Json) => e.content.body)).toEqual(["x"]);
  });

  it("a pos row from before the per-room rows (rooms in its JSON) still knows what was sent", async () => {
    const alice = await registerUser();
    const r = await createRoom(alice);
    await sendText(alice, r, "a");
    const first = await sssOk(alice, { lists: { all: list() } });
    expect(first.rooms[r].initial).toBe(true);
    // Make the row look like one written before sliding_conn_rooms existed.
    await runInDurableObject(hub(alice), async (_i, state) => {
      const sql = state.storage.sql;
      const rows = sql.exec<{ room_id: string; sent: string }>("SELECT room_id, sent FROM sliding_conn_rooms WHERE pos = ?", Number(first.pos)).toArray();
      const st = JSON.parse(sql.exec<{ state: string }>("SELECT state FROM sliding_conns WHERE id = ?", Number(first.pos)).one().state);
      st.rooms = Object.fromEntries(rows.map((x) => [x.room_id, JSON.parse(x.sent)]));
      delete st.chain;
      sql.exec("UPDATE sliding_conns SET state = ? WHERE id = ?", JSON.stringify(st), Number(first.pos));
      sql.exec("DELETE FROM sliding_conn_rooms");
    });
    await sendText(alice, r, "b");
    const next = await sssOk(alice, { lists: { all: list() } }, { pos: first.pos });
    expect(next.rooms[r].initial).toBeUndefined();
    expect(next.rooms[r].timeline.map((e: Json) => e.content.body)).toEqual(["b"]);
  });
});
