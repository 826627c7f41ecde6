// State groups (durable-objects/room/state.ts, written by room/writer.ts newGroup): the state at every event stays exact when it is read
// back from storage — deltas, full snapshots, and the deltas a resolved fork stores — and the
// snapshot policy writes storage in proportion to the state that changed, not to the state's
// size times the number of groups.
import { describe, expect, it, beforeAll } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import type { PDU, JsonObject } from "../../src/core/types";
import { getRoomVersion } from "../../src/core/room-versions";
import { hashAndSignEvent, roomIdFromCreateEventId } from "../../src/core/event-hashes";
import type { SigningKey } from "../../src/core/signing";
import { getServerSigningKey } from "../../src/services/server-key";
import { parseConfig } from "../../src/config";
import type { RoomStub } from "../../src/services/rooms";

const SERVER = "test.local";
const rv = getRoomVersion("12")!;
const alice = "@alice:test.local";
/** State events that add a key, then state events that replace earlier keys' events. */
const GROW = 400;
const REPLACE = 200;

let key: SigningKey;
let stub: RoomStub;
let roomId: string;
const roomObject = () => env.ROOMS.get(env.ROOMS.idFromName(roomId));

/** Every event we sent, with the state after it that we expect (type|state_key → event ID). */
const expected = new Map<string, Map<string, string>>();
const order: string[] = [];

async function stateAfter(eventId: string): Promise<Map<string, string>> {
  // /context with limit 0: the event alone, and the state after it in full.
  const r = await stub.getContext({ userId: alice }, eventId, 0);
  if (!r.ok) throw new Error(r.error);
  return new Map(r.value.state.map((e) => [`${e.type}|${e.state_key}`, e.event_id as string]));
}

async function send(type: string, stateKey: string, content: JsonObject, state: Map<string, string>): Promise<string> {
  const r = await stub.createLocalEvent({ type, state_key: stateKey, sender: alice, content });
  if (!r.ok) throw new Error(r.error);
  state.set(`${type}|${stateKey}`, r.value.eventId);
  expected.set(r.value.eventId, new Map(state));
  order.push(r.value.eventId);
  return r.value.eventId;
}

/** Forget every state group held in memory, so the next reads rebuild them from storage. */
async function dropGroupCache(): Promise<void> {
  await runInDurableObject(roomObject(), async (inst) => {
    // The group cache, its entry count and base references, and the resolution memo
    // (durable-objects/room/state.ts StateStore.clear).
    (inst as unknown as { state: { clear(): void } }).state.clear();
  });
}

beforeAll(async () => {
  key = await getServerSigningKey(env, { ...parseConfig(env), serverName: SERVER });
  const create = await hashAndSignEvent(
    { type: "m.room.create", state_key: "", sender: alice, content: { room_version: "12" }, depth: 1, prev_events: [], auth_events: [], origin_server_ts: Date.now() } as unknown as PDU,
    rv,
    SERVER,
    key,
  );
  roomId = roomIdFromCreateEventId(create.eventId);
  stub = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
  const r = await stub.createRoom({
    serverName: SERVER,
    roomId,
    roomVersion: "12",
    createPdu: create.pdu,
    events: [
      { type: "m.room.member", state_key: alice, sender: alice, content: { membership: "join" } },
      { type: "m.room.power_levels", state_key: "", sender: alice, content: {} },
      { type: "m.room.join_rules", state_key: "", sender: alice, content: { join_rule: "invite" } },
    ],
  });
  expect(r.ok, JSON.stringify(r)).toBe(true);
});

describe("state groups", () => {
  it("state at every event is exact when rebuilt from storage, with bounded storage", { timeout: 180_000 }, async () => {
    const last = order.length ? order[order.length - 1] : (await stub.getForwardExtremities())[0];
    const state = await stateAfter(last);
    // Grow the state one key at a time, then replace earlier keys' events (deltas that do not
    // grow the state).
    for (let i = 0; i < GROW; i++) await send("org.lattice.test", `k${i}`, { i }, state);
    for (let i = 0; i < REPLACE; i++) await send("org.lattice.test", `k${(i * 7) % GROW}`, { i, again: true }, state);

    // A fork: two events on the same tip (admitted as if from elsewhere), then a local event
    // that cites both; its state is the resolution of the two (no conflict: union).
    const [tip] = await stub.getForwardExtremities();
    const tipDepth = (await stub.getPdu(tip))!.pdu.depth;
    const auth = [state.get("m.room.power_levels|")!, state.get(`m.room.member|${alice}`)!];
    const branch = async (type: string, content: JsonObject) => {
      const { pdu, eventId } = await hashAndSignEvent(
        { room_id: roomId, sender: alice, type, state_key: "", content, depth: tipDepth + 1, prev_events: [tip], auth_events: auth, origin_server_ts: Date.now() } as unknown as PDU,
        rv,
        SERVER,
        key,
      );
      expect((await stub.admit(pdu, SERVER)).status).toBe("accepted");
      const s = new Map(state);
      s.set(`${type}|`, eventId);
      expected.set(eventId, s);
      order.push(eventId);
      return eventId;
    };
    const a = await branch("m.room.topic", { topic: "a" });
    const b = await branch("m.room.name", { name: "b" });
    state.set("m.room.topic|", a);
    state.set("m.room.name|", b);
    for (let i = 0; i < 20; i++) await send("org.lattice.test", `k${i}`, { i, merged: true }, state);

    // Read back: as served right after writing, then from storage only, newest first (long
    // chains of deltas) and in a shuffled order (ancestors cached at random).
    for (const id of order) expect(await stateAfter(id), id).toEqual(expected.get(id));
    await dropGroupCache();
    for (const id of [...order].reverse()) expect(await stateAfter(id), id).toEqual(expected.get(id));
    await dropGroupCache();
    const shuffled = [...order];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    for (const id of shuffled) expect(await stateAfter(id), id).toEqual(expected.get(id));

    // Storage: every delta entry is written once, and full snapshots cost at most about twice
    // the entries that changed. (A full snapshot every 64 groups wrote 3,201 rows here, growing
    // with the state's size times the number of events.)
    const rows = await runInDurableObject(roomObject(), async (_inst, st) => ({
      entries: st.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM state_group_entries").one().n,
      snapshots: st.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM state_groups WHERE parent IS NULL").one().n,
    }));
    const changes = order.length + 5;
    expect(rows.entries).toBeLessThanOrEqual(3 * changes);
    expect(rows.snapshots).toBeGreaterThan(1);
  });
});
