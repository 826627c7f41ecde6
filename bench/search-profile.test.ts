// Where a 50-room search spends its time (docs/benchmarks.md, "Conversations"): the RPC fan-out
// alone, the rooms' search work called directly, and the whole request. Smaller rooms than
// conversations.test.ts (PER_ROOM messages each) so it runs in a minute.
// Run: BENCH=1 npx vitest run --project workers bench/search-profile.test.ts
import { describe, expect, it } from "vitest";
import { runInDurableObject } from "cloudflare:test";
import { call, registerUser } from "../test/integration/helpers";
import { appendMessages, roomObject, sentences } from "./room-fill";

const V3 = "/_matrix/client/v3";
const ROOMS = 50;
const PER_ROOM = Number(process.env.PER_ROOM ?? 300);
const RUNS = 15;

function p50(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  return `p50 ${s[Math.floor(s.length / 2)].toFixed(1)} ms`;
}
async function timed(fn: () => Promise<unknown>) {
  const out: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

describe("search profile", () => {
  it("splits a 50-room search into fan-out, room work and request", { timeout: 300_000 }, async () => {
    const alice = await registerUser();
    const rooms: string[] = [];
    for (let r = 0; r < ROOMS; r++) rooms.push((await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "private_chat" } })).body.room_id);
    const sentence = sentences();
    await Promise.all(rooms.map((roomId, r) => appendMessages(roomId, alice.userId, sentence, PER_ROOM, `prof${r}`)));
    const search = (term: string) => call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: term } } } });
    expect((await search("zephyr")).status).toBe(200);
    const req = { userId: alice.userId, deviceId: alice.deviceId };
    // As the Worker asks (default keys: all three; a page of 10 plus one).
    const q = (term: string) => ({ term, keys: ["content.body", "content.name", "content.topic"] as never, orderBy: "rank" as const, limit: 11, idsOnly: true });
    const fanOut = (fn: (roomId: string) => Promise<unknown>) => Promise.all(rooms.map(fn));
    console.log(`whoami: ${p50(await timed(() => call("GET", `${V3}/account/whoami`, { token: alice.accessToken })))}`);
    console.log(`50 x getMembership RPC (fan-out floor): ${p50(await timed(() => fanOut((r) => roomObject(r).getMembership(alice.userId))))}`);
    console.log(`50 x searchEvents "nomatchword" RPC: ${p50(await timed(() => fanOut((r) => roomObject(r).searchEvents(req, q("nomatchword")))))}`);
    console.log(`50 x searchEvents "zephyr" RPC: ${p50(await timed(() => fanOut((r) => roomObject(r).searchEvents(req, q("zephyr")))))}`);
    // One room's search work without the RPC: 100 calls inside the object, timed from outside.
    for (const term of ["nomatchword", "zephyr"]) {
      const t = performance.now();
      await runInDurableObject(roomObject(rooms[0]), async (inst) => {
        for (let i = 0; i < 100; i++) await (inst as any).searchEvents(req, q(term));
      });
      console.log(`one room's searchEvents "${term}" in-object: ${((performance.now() - t) / 100).toFixed(2)} ms per call`);
    }
    // The same across all 50 rooms in turn (each room's pages cold again by its next turn).
    for (const term of ["nomatchword", "zephyr"]) {
      const t = performance.now();
      for (let round = 0; round < 3; round++) for (const r of rooms) await runInDurableObject(roomObject(r), async (inst) => (inst as any).searchEvents(req, q(term)));
      const t2 = performance.now();
      for (let round = 0; round < 3; round++) for (const r of rooms) await runInDurableObject(roomObject(r), async () => 0);
      console.log(`50 rooms in turn, searchEvents "${term}": ${((performance.now() - t2 - (t2 - t)) / -150).toFixed(2)} ms per call above an empty runInDurableObject`);
    }
    const t = performance.now();
    await runInDurableObject(roomObject(rooms[0]), async (inst) => {
      for (let i = 0; i < 100; i++) await (inst as any).getMembership(alice.userId);
    });
    console.log(`one room's getMembership in-object: ${((performance.now() - t) / 100).toFixed(2)} ms per call`);
    const enc = encodeURIComponent;
    console.log(`GET joined_members (one RoomDO RPC): ${p50(await timed(() => call("GET", `${V3}/rooms/${enc(rooms[0])}/joined_members`, { token: alice.accessToken })))}`);
    const inOne = (term: string) => call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: term, filter: { rooms: [rooms[0]] } } } } });
    console.log(`POST /search "nomatchword" in one room: ${p50(await timed(() => inOne("nomatchword")))}`);
    console.log(`POST /search "zephyr" in one room: ${p50(await timed(() => inOne("zephyr")))}`);
    console.log(`POST /search "nomatchword": ${p50(await timed(() => search("nomatchword")))}`);
    console.log(`POST /search "zephyr": ${p50(await timed(() => search("zephyr")))}`);
    const recent = () => call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: "zephyr", order_by: "recent" } } } });
    console.log(`POST /search "zephyr" recent: ${p50(await timed(recent))}`);
  });
});
