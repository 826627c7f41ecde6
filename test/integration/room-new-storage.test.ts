// A new RoomDO's schema is created by its first statement, not at start: for createRoom that is
// inside the room's one transaction, so the tables and the room are one commit (before, the
// ~35 empty pages of the schema were a commit of their own: one more fsync per createRoom under
// `wrangler dev`, docs/benchmarks.md "createRoom").
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, createRoom, registerUser } from "./helpers";
import type { RoomStub } from "../../src/services/rooms";

const roomObject = (name: string) => env.ROOMS.get(env.ROOMS.idFromName(name));
const hasTable = (sql: SqlStorage, name: string) => sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name).toArray().length > 0;

describe("a new room's storage", () => {
  it("createRoom on a new object: the room and its schema are stored, and the creator syncs it", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, {});
    const stored = await runInDurableObject(roomObject(roomId), async (_inst, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM events WHERE stream IS NOT NULL").one().n);
    expect(stored).toBeGreaterThanOrEqual(5);
    const synced = await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: alice.accessToken });
    expect(synced.body.rooms?.join?.[roomId]).toBeDefined();
  });

  it("a new object writes nothing at start; a read creates the schema and answers", async () => {
    const stub = roomObject("!unknown-read:test.local");
    const before = await runInDurableObject(stub, async (_inst, state) => hasTable(state.storage.sql, "meta"));
    expect(before).toBe(false);
    expect(await (stub as unknown as RoomStub).getMembership("@nobody:test.local")).toBeNull();
    expect(await (stub as unknown as RoomStub).getForwardExtremities()).toEqual([]);
    const after = await runInDurableObject(stub, async (_inst, state) => hasTable(state.storage.sql, "events"));
    expect(after).toBe(true);
  });

  it("a first transaction that rolls back takes the schema with it; the next statement creates it again", async () => {
    const stub = roomObject("!rolled-back:test.local");
    await runInDurableObject(stub, async (inst, state) => {
      const writer = (inst as unknown as { writer: { transact(fn: (tx: { exec(q: string, ...b: unknown[]): unknown }) => void): void } }).writer;
      expect(() =>
        writer.transact((tx) => {
          tx.exec("INSERT INTO forgotten (user_id, member_event_id) VALUES ('@a:test.local', '$e')");
          throw new Error("stop");
        }),
      ).toThrow("stop");
      expect(hasTable(state.storage.sql, "forgotten")).toBe(true);
      expect(state.storage.sql.exec("SELECT count(*) AS n FROM forgotten").one().n).toBe(0);
    });
    expect(await (stub as unknown as RoomStub).getForwardExtremities()).toEqual([]);
  });
});

// The redelivery alarm (durable-objects/room/fanout.ts armIfStillDelivering): createRoom's commit
// does not set it; the answer sets it only if a delivery is still under way.
describe("createRoom and the redelivery alarm", () => {
  it("no alarm once every notice reached its hub (creator only)", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, {});
    const alarm = await runInDurableObject(roomObject(roomId), async (_inst, state) => state.storage.getAlarm());
    expect(alarm).toBeNull();
  });

  it("an alarm when a delivery is still under way at the answer", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, {});
    await runInDurableObject(roomObject(roomId), async (inst, state) => {
      const fanout = (inst as unknown as { fanout: { hubPending: Set<number>; armIfStillDelivering(): void } }).fanout;
      fanout.hubPending.add(1_000_000); // a notice some hub has not confirmed yet
      fanout.armIfStillDelivering();
      fanout.hubPending.delete(1_000_000);
      expect(await state.storage.getAlarm()).not.toBeNull();
    });
  });

  it("with a local invitee: when createRoom answers, the invitee's hub holds the invite or the alarm is set", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { invite: [bob.userId] });
    const hubHasIt = await runInDurableObject(env.USERS.get(env.USERS.idFromName(bob.userId)), async (_i, state) =>
      state.storage.sql.exec("SELECT 1 FROM room_events WHERE room_id = ?", roomId).toArray().length > 0,
    );
    const alarm = await runInDurableObject(roomObject(roomId), async (_inst, state) => state.storage.getAlarm());
    expect(hubHasIt || alarm !== null).toBe(true);
    const synced = await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: bob.accessToken });
    expect(synced.body.rooms?.invite?.[roomId]).toBeDefined();
  });
});
