// Sync-hub log compaction (durable-objects/user/position-log.ts): below the floor the hub keeps
// only the newest log entry per (room, kind) and per device-list user. Tokens at or above the
// floor stay exact; a token below it still learns exactly which rooms changed, and a room whose
// timeline moved between the token and the floor comes as a gap (limited, full state) that
// /messages fills — so across compaction every event reaches the client exactly once.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, createRoom, joinRoom, registerUser, sendText, type Json, type TestUser } from "./helpers";
import type { UserStub } from "../../src/services/notifier";
import type { RoomEventNotice } from "../../src/rpc/user";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
const DAY = 24 * 3600_000;

async function sync(u: TestUser, since?: string, token = u.accessToken) {
  const filter = JSON.stringify({ room: { timeline: { limit: 10 } } });
  const r = await call("GET", `${V3}/sync?filter=${enc(filter)}${since ? `&since=${enc(since)}` : ""}`, { token });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}
function hub(u: TestUser): UserStub {
  return env.USERS.get(env.USERS.idFromName(u.userId)) as unknown as UserStub;
}
const posOf = (token: string) => Number(/^s(\d+)_/.exec(token)![1]);
const messages = (evs: Json[]) => evs.filter((e) => e.type === "m.room.message").map((e) => e.event_id as string);

/** Alice's three rooms, Bob joined to each. */
async function setUp() {
  const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
  const rooms = [await createRoom(alice), await createRoom(alice), await createRoom(alice)];
  for (const r of rooms) await joinRoom(bob, r);
  return { alice, bob, rooms };
}

/** A second device (and access token) for `u`. */
async function login(u: TestUser): Promise<{ token: string; deviceId: string }> {
  const r = await call("POST", `${V3}/login`, { body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return { token: r.body.access_token, deviceId: r.body.device_id };
}

/** The messages a client gets for one room of a sync response: the timeline, and when it is
 *  limited, what /messages from prev_batch yields before reaching an event the client knows. */
async function receive(u: TestUser, token: string, roomId: string, room: Json | undefined, known: Set<string>): Promise<string[]> {
  if (!room) return [];
  const fresh = messages(room.timeline.events);
  const gap: string[] = [];
  if (room.timeline.limited) {
    let from = room.timeline.prev_batch;
    outer: for (let pages = 0; pages < 50; pages++) {
      const page = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=5&from=${enc(from)}`, { token });
      expect(page.status).toBe(200);
      for (const e of page.body.chunk as Json[]) {
        if (known.has(e.event_id)) break outer;
        if (e.type === "m.room.message") gap.unshift(e.event_id);
      }
      if (!page.body.end) break;
      from = page.body.end;
    }
  }
  for (const e of room.timeline.events as Json[]) known.add(e.event_id);
  for (const id of gap) known.add(id);
  return [...gap, ...fresh];
}

describe("sync hub log compaction", () => {
  it("a token at the floor stays exact: only what came after it, nothing repeated, no gap", async () => {
    const { alice, bob, rooms } = await setUp();
    const [r1, r2, r3] = rooms;
    const t0 = (await sync(bob)).next_batch;
    const before: string[] = [];
    for (let i = 0; i < 12; i++) before.push(await sendText(alice, r1, `r1 ${i}`));
    for (let i = 0; i < 3; i++) before.push(await sendText(alice, r2, `r2 ${i}`));
    await sendText(bob, r3, "bob in r3");
    const s1 = await sync(bob, t0);
    const t1 = s1.next_batch;
    expect(messages(s1.rooms.join[r2].timeline.events)).toEqual(before.slice(12));

    const after = [await sendText(alice, r1, "after 1"), await sendText(alice, r3, "after 2"), await sendText(alice, r1, "after 3")];
    const typing = await call("PUT", `${V3}/rooms/${enc(r2)}/typing/${enc(alice.userId)}`, { token: alice.accessToken, body: { typing: true, timeout: 30_000 } });
    expect(typing.status).toBe(200);
    // Device marks judged two days later (expired): the floor goes up to t1 exactly.
    const c = await hub(bob).compactLog({ keep: 0, now: Date.now() + 2 * DAY, at: posOf(t1) });
    expect(c.floor).toBe(posOf(t1));
    expect(c.removed).toBeGreaterThan(10);

    const s2 = await sync(bob, t1);
    expect(messages(s2.rooms.join[r1].timeline.events)).toEqual([after[0], after[2]]);
    expect(messages(s2.rooms.join[r3].timeline.events)).toEqual([after[1]]);
    expect(s2.rooms.join[r1].timeline.limited).toBe(false);
    expect(s2.rooms.join[r3].timeline.limited).toBe(false);
    // r2 changed only in typing: no timeline, the typing notice.
    expect(s2.rooms.join[r2].timeline.events).toEqual([]);
    expect(s2.rooms.join[r2].ephemeral.events).toEqual([{ type: "m.typing", content: { user_ids: [alice.userId] } }]);
    // Rooms are incremental, not new: no state re-sent.
    expect(s2.rooms.join[r1].state.events).toEqual([]);
    // And nothing more.
    const s3 = await sync(bob, s2.next_batch);
    expect(Object.keys(s3.rooms.join)).toEqual([]);
  });

  it("an incremental sync loop with compaction after every step sees every event exactly once, in order", async () => {
    const { alice, bob, rooms } = await setUp();
    let token = (await sync(bob)).next_batch;
    const sent = new Map<string, string[]>(rooms.map((r) => [r, []]));
    const seen = new Map<string, string[]>(rooms.map((r) => [r, []]));
    let n = 0;
    for (const burst of [7, 1, 15, 4, 0, 9]) {
      for (let i = 0; i < burst; i++) {
        const r = rooms[(n * 7 + i) % 3];
        sent.get(r)!.push(await sendText(alice, r, `m${n++}`));
      }
      const s = await sync(bob, token);
      for (const r of rooms) {
        const room = s.rooms.join[r];
        if (!room) continue;
        expect(room.timeline.limited).toBe(false);
        seen.get(r)!.push(...messages(room.timeline.events));
      }
      token = s.next_batch;
      // Everything up to the token just handed out is compacted away.
      const c = await hub(bob).compactLog({ keep: 0, now: Date.now() + 2 * DAY });
      expect(c.floor).toBeGreaterThanOrEqual(posOf(token));
    }
    for (const r of rooms) expect(seen.get(r)).toEqual(sent.get(r));
  });

  it("the mark of a device that synced recently holds compaction back", async () => {
    const { alice, bob, rooms } = await setUp();
    const t0 = (await sync(bob)).next_batch;
    for (let i = 0; i < 5; i++) await sendText(alice, rooms[0], `x${i}`);
    const c = await hub(bob).compactLog({ keep: 0 });
    expect(c.floor).toBeLessThanOrEqual(posOf(t0));
    const s = await sync(bob, t0);
    expect(messages(s.rooms.join[rooms[0]].timeline.events)).toHaveLength(5);
    expect(s.rooms.join[rooms[0]].timeline.limited).toBe(false);
  });

  it("a token below the floor: exact room list, a gap (limited, full state) where the timeline moved before the floor, nothing lost or repeated", async () => {
    const { alice, bob, rooms } = await setUp();
    const [r1, r2, r3] = rooms;
    // A second device syncs once and then sleeps past its mark's retention.
    const other = await login(bob);
    const first = await sync(bob, undefined, other.token);
    const t0 = first.next_batch;
    const known = new Set<string>();
    for (const r of rooms) for (const e of first.rooms.join[r].timeline.events as Json[]) known.add(e.event_id);
    const sent = new Map<string, string[]>(rooms.map((r) => [r, []]));
    for (let i = 0; i < 4; i++) sent.get(r1)!.push(await sendText(alice, r1, `r1 before floor ${i}`));
    for (let i = 0; i < 3; i++) sent.get(r2)!.push(await sendText(alice, r2, `r2 before floor ${i}`));
    const mid = (await sync(bob)).next_batch;
    await hub(bob).deviceListChanged(bob.userId, "@carol:remote.example");
    const c = await hub(bob).compactLog({ keep: 0, now: Date.now() + 2 * DAY });
    expect(c.floor).toBeGreaterThan(posOf(mid));
    expect(c.floor).toBeGreaterThan(posOf(t0));
    expect(c.removed).toBeGreaterThan(0);
    for (let i = 0; i < 2; i++) sent.get(r2)!.push(await sendText(alice, r2, `r2 after floor ${i}`));
    for (let i = 0; i < 2; i++) sent.get(r3)!.push(await sendText(alice, r3, `r3 after floor ${i}`));

    const s = await sync(bob, t0, other.token);
    expect(Object.keys(s.rooms.join).sort()).toEqual([r1, r2, r3].sort());
    // r1 and r2 moved between the token and the floor: gaps with full state.
    for (const r of [r1, r2]) {
      const room = s.rooms.join[r];
      expect(room.timeline.limited).toBe(true);
      expect(room.state.events.map((e: Json) => e.type)).toContain("m.room.create");
    }
    expect(messages(s.rooms.join[r1].timeline.events)).toEqual([]);
    expect(messages(s.rooms.join[r2].timeline.events)).toEqual(sent.get(r2)!.slice(3));
    // r3 moved only after the floor: exact.
    expect(s.rooms.join[r3].timeline.limited).toBe(false);
    expect(s.rooms.join[r3].state.events).toEqual([]);
    expect(messages(s.rooms.join[r3].timeline.events)).toEqual(sent.get(r3));
    // Device lists come from the latest-per-user table: exact.
    expect(s.device_lists.changed).toContain("@carol:remote.example");
    // Each room's messages exactly once: timeline plus what /messages yields back to the known.
    for (const r of rooms) expect(await receive(bob, other.token, r, s.rooms.join[r], known)).toEqual(sent.get(r));

    // GET /keys/changes: exact while `to` is at or above the floor; refused when both are below.
    const now = s.next_batch;
    const kc = await call("GET", `${V3}/keys/changes?from=${enc(t0)}&to=${enc(now)}`, { token: bob.accessToken });
    expect(kc.status, JSON.stringify(kc.body)).toBe(200);
    expect(kc.body.changed).toContain("@carol:remote.example");
    const old = await call("GET", `${V3}/keys/changes?from=${enc(t0)}&to=${enc(mid)}`, { token: bob.accessToken });
    expect(old.status).toBe(400);
    expect(old.body.errcode).toBe("M_INVALID_PARAM");
  });
  it("a backlog compacted in slices (one transaction each) ends as one transaction would, and the hub answers between slices", async () => {
    // Two hubs fed the same entries through their RPCs: timeline notices (some arriving out of
    // order, so the kept entry must carry the highest stream across slices), typing, receipts,
    // room account data and device-list changes.
    const tag = crypto.randomUUID().slice(0, 8);
    const users = [`@slice-one-${tag}:test.local`, `@slice-many-${tag}:test.local`];
    const hubs = users.map((u) => env.USERS.get(env.USERS.idFromName(u)) as unknown as UserStub);
    const rooms = ["!a:test.local", "!b:test.local", "!c:test.local"];
    const notice = (roomId: string, stream: number): RoomEventNotice => ({
      roomId,
      stream,
      event: { event_id: `$e${stream}-${roomId}`, room_id: roomId, type: "m.room.message", sender: "@someone:test.local", content: { msgtype: "m.text", body: "x" }, origin_server_ts: 1 },
      memberCount: 2,
      senderPowerLevel: 0,
    });
    for (let i = 0; i < 120; i++) {
      const room = rooms[Math.floor(i / 6) % 3];
      for (const [h, u] of hubs.map((h, k) => [h, users[k]] as const)) {
        const k = i % 6;
        if (k === 0) await h.roomEvents(u, [notice(room, 10 + i), notice(room, 5 + i)]);
        else if (k === 1) {
          await h.typing(u, room, "@typer:test.local", 30_000);
          await h.typing(u, room, "@typer:test.local", 0);
        } else if (k === 2) await h.receipt(u, { roomId: room, userId: "@reader:test.local", type: "m.read", eventId: `$e${i}`, threadId: "", ts: i });
        else if (k === 3) await h.setAccountData(u, room, `org.example.${i % 4}`, { i });
        else if (k === 4) await h.deviceListChanged(u, `@dev${i % 5}:test.local`);
        else await h.roomEvent(u, notice(room, 10 + i));
      }
    }
    const [t0, t1] = await Promise.all(hubs.map((h) => h.currentToken()));
    expect(posOf(t0)).toBe(posOf(t1));
    const keep = 20;
    const one = await hubs[0].compactLog({ keep, now: Date.now() + 2 * DAY });
    expect(one.slices).toBe(1);
    // Slices of 7 positions: the other hub answers a call while its compaction is under way.
    let done = false;
    const many = hubs[1].compactLog({ keep, now: Date.now() + 2 * DAY, slice: 7 }).then((c) => ((done = true), c));
    await hubs[1].currentToken();
    expect(done, "the hub answered only after the whole compaction").toBe(false);
    const c = await many;
    expect(c.slices).toBe(Math.ceil(one.floor / 7));
    expect({ floor: c.floor, removed: c.removed }).toEqual({ floor: one.floor, removed: one.removed });
    expect(c.removed).toBeGreaterThan(100);
    const dump = (h: UserStub) =>
      runInDurableObject(h as unknown as DurableObjectStub, async (_i, state) => ({
        roomLog: state.storage.sql.exec("SELECT upos, room_id, stream FROM room_log ORDER BY upos").toArray(),
        deviceListLog: state.storage.sql.exec("SELECT upos, user_id, left FROM device_list_log ORDER BY upos, user_id").toArray(),
      }));
    const [a, b] = [await dump(hubs[0]), await dump(hubs[1])];
    expect(b).toEqual(a);
    // One kept timeline entry per room at or below the floor.
    for (const r of rooms) {
      const kept = a.roomLog.filter((x) => x.room_id === r && x.stream !== null && (x.upos as number) <= one.floor);
      expect(kept).toHaveLength(1);
    }
    // A token from before the floor still answers, the same in both hubs.
    const pos = await Promise.all(hubs.map((h, k) => h.roomPosition(users[k], rooms[0], [t0, t1][k])));
    expect(pos[0].ok).toBe(true);
    expect(pos[1]).toEqual(pos[0]);
  });
});
