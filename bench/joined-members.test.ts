// GET /joined_members of a room of MEMBERS (10,000) joined members: the RoomDO's work
// (getJoinedMembers), on a cold instance (a new RoomDO on the same storage) and a warm one.
// The members are written straight into the room's SQLite (as outliers in a state group on the
// current one, and in current_state), because 10,000 joins through the API take an hour here.
// Run: BENCH=1 npx vitest run --project workers bench/joined-members.test.ts
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { RoomDO } from "../durable-objects/room";
import { clientOk, registerUser } from "../test/integration/helpers";
import { roomObject } from "./room-fill";

const MEMBERS = Number(process.env.MEMBERS ?? 10_000);
const RUNS = 9;
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)].toFixed(1);

describe("joined_members", () => {
  it(`a room of ${MEMBERS} members`, { timeout: 300_000 }, async () => {
    const alice = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    const r = await runInDurableObject(roomObject(roomId), async (_inst, state) => {
      const sql = state.storage.sql;
      const cur = Number(sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'current_group'").one().value);
      const g = sql.exec<{ id: number }>("SELECT max(id) + 1 AS id FROM state_groups").one().id;
      const chain = sql.exec<{ chain: number }>("SELECT chain FROM state_groups WHERE id = ?", cur).one().chain;
      sql.exec("INSERT INTO state_groups (id, parent, chain) VALUES (?, ?, ?)", g, cur, chain + MEMBERS);
      const now = Date.now();
      for (let i = 0; i < MEMBERS; i++) {
        const user = `@m${i}:bench.test`;
        const id = `$member${i}`;
        const content = { membership: "join", displayname: `Member ${i}`, ...(i % 2 ? { avatar_url: `mxc://bench.test/${i}` } : {}) };
        const pdu = { type: "m.room.member", state_key: user, content, sender: user, room_id: roomId, origin_server_ts: now, depth: 5, prev_events: [], auth_events: [], hashes: { sha256: "x" }, signatures: {} };
        sql.exec("INSERT INTO events (event_id, stream, depth, type, state_key, sender, origin_server_ts, pdu, status, received_ts) VALUES (?, NULL, 5, 'm.room.member', ?, ?, ?, ?, 'accepted', ?)", id, user, user, now, JSON.stringify(pdu), now);
        sql.exec("INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?, 'm.room.member', ?, ?)", g, user, id);
        sql.exec("INSERT INTO current_state (type, state_key, event_id) VALUES ('m.room.member', ?, ?)", user, id);
      }
      sql.exec("UPDATE meta SET value = ? WHERE key = 'current_group'", String(g));
      const req = { userId: alice.userId, deviceId: alice.deviceId };
      type JM = Pick<InstanceType<typeof RoomDO>, "getJoinedMembers">;
      const cold: number[] = [];
      const warm: number[] = [];
      let n = 0;
      for (let i = 0; i < RUNS; i++) {
        const room = new RoomDO(state, env) as unknown as JM;
        let t = performance.now();
        const out = await room.getJoinedMembers(req);
        cold.push(performance.now() - t);
        t = performance.now();
        await room.getJoinedMembers(req);
        warm.push(performance.now() - t);
        if (!out.ok) throw new Error(JSON.stringify(out));
        n = Object.keys(out.value).length;
        expect(out.value["@m1:bench.test"]).toEqual({ display_name: "Member 1", avatar_url: "mxc://bench.test/1" });
      }
      return { n, cold: p50(cold), warm: p50(warm) };
    });
    console.log(`joined_members of ${r.n}: cold p50 ${r.cold} ms, warm p50 ${r.warm} ms (RUNS ${RUNS})`);
    expect(r.n).toBe(MEMBERS + 1);
  });
});
