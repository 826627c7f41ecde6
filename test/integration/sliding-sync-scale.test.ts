// Simplified Sliding Sync (MSC4186): what one request costs the user's hub as the user's room
// count grows (issue 15: "the time must not grow with the number of rooms the user is in").
// Measured as the SQLite rows the hub reads (cursor.rowsRead), which is deterministic where a
// timing is not. Lists' counts are one COUNT(*) per list (a C-level index scan, ~0.03 ms per
// 1,000 rooms) and are left out; everything else must not grow with the room count.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, registerUser, sssOk, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let txn = 0;

const hub = (u: TestUser) => env.USERS.get(env.USERS.idFromName(u.userId));

async function makeRooms(u: TestUser, n: number, into: string[]) {
  for (let i = 0; i < n; i++) {
    const r = await call("POST", `${V3}/createRoom`, { token: u.accessToken, body: { preset: "private_chat", name: `r${into.length}` } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    into.push(r.body.room_id);
  }
}

async function send(u: TestUser, roomId: string, body: string) {
  const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/s${++txn}`, { token: u.accessToken, body: { msgtype: "m.text", body } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

/** Rows the hub's SQL reads while `fn` runs (COUNT(*) statements apart). */
async function hubRowsRead(u: TestUser, fn: () => Promise<void>): Promise<number> {
  const cursors: SqlStorageCursor<Record<string, SqlStorageValue>>[] = [];
  let restore: () => void = () => {};
  await runInDurableObject(hub(u), async (_inst, state) => {
    const sql = state.storage.sql;
    const exec = sql.exec;
    sql.exec = function (query: string, ...args: unknown[]) {
      const c = exec.call(sql, query, ...args);
      if (!/^\s*SELECT COUNT\(\*\)/i.test(query)) cursors.push(c as never);
      return c;
    } as typeof sql.exec;
    restore = () => (sql.exec = exec);
  });
  try {
    await fn();
  } finally {
    await runInDurableObject(hub(u), async () => restore());
  }
  return cursors.reduce((n, c) => n + c.rowsRead, 0);
}

const LIST = { ranges: [[0, 4]], timeline_limit: 1, required_state: [["m.room.name", ""]] };

describe("sliding sync cost does not grow with the user's rooms", () => {
  it("hub reads for a first response and an incremental one stay flat from 20 to 80 rooms", async () => {
    const alice = await registerUser();
    const rooms: string[] = [];
    const measure = async () => {
      let pos = "";
      const first = await hubRowsRead(alice, async () => {
        const r = await sssOk(alice, { conn_id: `c${rooms.length}`, lists: { all: LIST } });
        expect(r.lists.all.count).toBe(rooms.length);
        expect(Object.keys(r.rooms)).toHaveLength(5);
        pos = r.pos;
      });
      await send(alice, rooms[0], "bump");
      const inc = await hubRowsRead(alice, async () => {
        const r = await sssOk(alice, { conn_id: `c${rooms.length}`, lists: { all: LIST } }, { pos, timeout: 0 });
        expect(Object.keys(r.rooms)).toEqual([rooms[0]]);
      });
      return { first, inc };
    };
    await makeRooms(alice, 20, rooms);
    const small = await measure();
    await makeRooms(alice, 60, rooms);
    const large = await measure();
    expect(small.first).toBeGreaterThan(0);
    // 60 more rooms: a handful more rows at most (positions, logs), not a pass over the rooms.
    expect(large.first - small.first, JSON.stringify({ small, large })).toBeLessThan(30);
    expect(large.inc - small.inc, JSON.stringify({ small, large })).toBeLessThan(30);
  }, 120_000);
});

describe("recency index", () => {
  it("is_dm follows m.direct, also for a room the hub learns after m.direct names it", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const a = (await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "private_chat" } })).body.room_id as string;
    const b = (await call("POST", `${V3}/createRoom`, { token: bob.accessToken, body: { preset: "private_chat" } })).body.room_id as string;
    const setDirect = async (ids: string[]) =>
      expect((await call("PUT", `${V3}/user/${enc(alice.userId)}/account_data/m.direct`, { token: alice.accessToken, body: { [bob.userId]: ids } })).status).toBe(200);
    // m.direct names room b before alice's hub has ever heard of it.
    await setDirect([b]);
    const dms = async () => Object.keys((await sssOk(alice, { lists: { l: { ranges: [[0, 9]], timeline_limit: 0, filters: { is_dm: true } } } })).rooms);
    expect(await dms()).toEqual([]);
    expect((await call("POST", `${V3}/rooms/${enc(b)}/invite`, { token: bob.accessToken, body: { user_id: alice.userId } })).status).toBe(200);
    expect(await dms()).toEqual([b]);
    await setDirect([a]);
    expect(await dms()).toEqual([a]);
  });

  it("overlapping and out-of-range ranges list each room once, in recency order", async () => {
    const alice = await registerUser();
    const rooms: string[] = [];
    await makeRooms(alice, 6, rooms);
    const r = await sssOk(alice, { lists: { l: { ranges: [[4, 9], [0, 1], [1, 2], [50, 60]], timeline_limit: 0 } } });
    expect(r.lists.l.count).toBe(6);
    // Newest first: rooms[5] is index 0.
    expect(Object.keys(r.rooms).sort()).toEqual([rooms[5], rooms[4], rooms[3], rooms[1], rooms[0]].sort());
  });
});
