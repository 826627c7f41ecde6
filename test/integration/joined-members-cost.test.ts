// GET /rooms/{roomId}/joined_members reads display names and avatars of the current joined
// members in a statement or two, not an event load (statement, JSON parse, client format) per
// member: ~0.5 s of CPU for a room of 10,000 members.
import { describe, expect, it, beforeAll, afterAll } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { RoomDO } from "../../durable-objects/room";
import { call, clientOk, offline, registerUser, remoteJoinWave, seedRemoteKey } from "./helpers";
import { setFederationFetch } from "../../src/services/federation/client";

const enc = encodeURIComponent;
const REMOTE = "joined-members.test";

beforeAll(() => setFederationFetch(offline));
afterAll(() => setFederationFetch(offline));

describe("GET /joined_members", () => {
  it("the joined members with display_name/avatar_url (redacted member events give nulls); a few statements on a cold room for 60+ members", async () => {
    const key = await seedRemoteKey(REMOTE);
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    for (const u of [bob, carol]) await clientOk(u.accessToken, "POST", `/join/${enc(roomId)}`, {});
    await clientOk(alice.accessToken, "PUT", `/profile/${enc(alice.userId)}/displayname`, { displayname: "Alice" });
    await clientOk(alice.accessToken, "PUT", `/profile/${enc(alice.userId)}/avatar_url`, { avatar_url: "mxc://test.local/alice" });
    await clientOk(bob.accessToken, "PUT", `/profile/${enc(bob.userId)}/displayname`, { displayname: "Bob" });
    const bobMember = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.userId)}?format=event`)).event_id as string;
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/redact/${enc(bobMember)}/r1`, {});
    await clientOk(carol.accessToken, "POST", `/rooms/${enc(roomId)}/leave`, {});
    for (let w = 0; w < 3; w++) await remoteJoinWave(REMOTE, key, roomId, w, 20);

    const r = await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`, { token: alice.accessToken });
    expect(r.status).toBe(200);
    const joined = r.body.joined as Record<string, { display_name: string | null; avatar_url: string | null }>;
    expect(Object.keys(joined)).toHaveLength(62);
    expect(joined[alice.userId]).toEqual({ display_name: "Alice", avatar_url: "mxc://test.local/alice" });
    expect(joined[bob.userId]).toEqual({ display_name: null, avatar_url: null });
    expect(joined[carol.userId]).toBeUndefined();
    const left = await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`, { token: carol.accessToken });
    expect([left.status, left.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    expect(joined[`@w2u19:${REMOTE}`]).toEqual({ display_name: null, avatar_url: null });

    const stub = env.ROOMS.get(env.ROOMS.idFromName(roomId));
    const cold = await runInDurableObject(stub, async (_i, state) => {
      const room = new RoomDO(state, env) as unknown as Pick<InstanceType<typeof RoomDO>, "getJoinedMembers">;
      const req = { userId: alice.userId, deviceId: alice.deviceId };
      // (A first call so the instance's start-up statements and the membership check are warm.)
      await room.getJoinedMembers(req);
      const fresh = new RoomDO(state, env) as unknown as Pick<InstanceType<typeof RoomDO>, "getJoinedMembers">;
      const sql = state.storage.sql;
      const exec = sql.exec;
      let statements = 0;
      Object.defineProperty(sql, "exec", { configurable: true, value: (q: string, ...b: SqlStorageValue[]) => (statements++, exec.call(sql, q, ...b)) });
      try {
        const t0 = performance.now();
        const out = await fresh.getJoinedMembers(req);
        return { statements, out, ms: performance.now() - t0 };
      } finally {
        delete (sql as { exec?: unknown }).exec;
      }
    });
    console.log(`cold /joined_members of 62: ${cold.statements} statements`);
    expect(cold.out).toEqual({ ok: true, value: joined });
    expect(cold.statements, `statements: ${cold.statements}`).toBeLessThan(12);
  });
});
