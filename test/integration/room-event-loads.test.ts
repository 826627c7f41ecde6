// EventStore's bulk reads (durable-objects/room/events.ts prefetch/loadMany): a cold room reads
// many events in a statement per ~10,000 IDs (jsonBatches), not one per 90.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { RoomDO } from "../../durable-objects/room";
import { clientOk, registerUser } from "./helpers";

const enc = encodeURIComponent;

describe("EventStore bulk reads", () => {
  it("prefetch of 250 events (with redactions in the room) from a cold instance: a few statements, the same events", async () => {
    const alice = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    const ids: string[] = [];
    for (let i = 0; i < 250; i++) ids.push((await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/l${i}`, { msgtype: "m.text", body: `m${i}` })).event_id);
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/redact/${enc(ids[7])}/r1`, {});
    const stub = env.ROOMS.get(env.ROOMS.idFromName(roomId));
    const r = await runInDurableObject(stub, async (_i, state) => {
      const room = new RoomDO(state, env) as unknown as { events: { readBatch<T>(fn: () => T): T; prefetch(ids: string[]): void; cached(id: string): { ev: { event_id: string } } | undefined; redactionOf(se: unknown): unknown } };
      // (A first read so the instance's start-up statements are not counted.)
      room.events.prefetch([ids[0]]);
      const sql = state.storage.sql;
      const exec = sql.exec;
      let statements = 0;
      Object.defineProperty(sql, "exec", { configurable: true, value: (q: string, ...b: SqlStorageValue[]) => (statements++, exec.call(sql, q, ...b)) });
      try {
        const redacted = room.events.readBatch(() => {
          room.events.prefetch(ids);
          return ids.filter((id) => room.events.redactionOf(room.events.cached(id)!) !== undefined);
        });
        return { statements, cached: ids.filter((id) => room.events.cached(id)?.ev.event_id === id).length, redacted };
      } finally {
        delete (sql as { exec?: unknown }).exec;
      }
    });
    console.log(`prefetch of 250 events: ${r.statements} statements`);
    expect(r.cached).toBe(250);
    expect(r.redacted).toEqual([ids[7]]);
    expect(r.statements).toBeLessThanOrEqual(4);
  });
});
