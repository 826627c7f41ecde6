// Issue 16 benchmarks (docs/benchmarks.md), in workerd with real D1 and Durable Objects:
//   search over 100,000 messages in 50 rooms; /relations of an event with 1,000 reactions;
//   user_directory/search over 10,000 users.
// The rooms are real (created through the API); their messages, reactions and the directory's
// users are written straight into the RoomDO's SQLite and D1 (sending 100,000 events through
// the API takes hours on this machine), shaped as the write path stores them. The timed
// requests go through the Worker (SELF) as a client's would. Prints p50/p95.
// Run: BENCH=1 npx vitest run --project workers bench/conversations.test.ts (outside npm test)
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, type TestUser } from "../test/integration/helpers";
import { appendEvents, appendMessages, sentences, WORDS } from "./room-fill";

const V3 = "/_matrix/client/v3";
const V1 = "/_matrix/client/v1";
const enc = encodeURIComponent;
const ROOMS = 50;
const PER_ROOM = 2_000;
const REACTIONS = 1_000;
const USERS = 10_000;
const RUNS = 20;

function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const p = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  // min too: on a shared machine it moves least with the load.
  return `p50 ${p(0.5).toFixed(1)} ms, p95 ${p(0.95).toFixed(1)} ms, min ${s[0].toFixed(1)} ms (${xs.length} runs)`;
}
async function timed(fn: () => Promise<unknown>, runs = RUNS) {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}
describe("conversations benchmarks", () => {
  let alice: TestUser;

  it("search: 100,000 messages in 50 rooms", { timeout: 300_000 }, async () => {
    alice = await registerUser();
    // Baseline on this machine now: an authenticated request doing one token lookup.
    console.log(`baseline GET /account/whoami: ${stats(await timed(() => call("GET", `${V3}/account/whoami`, { token: alice.accessToken })))}`);
    const rooms: string[] = [];
    for (let r = 0; r < ROOMS; r++) {
      const res = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "private_chat" } });
      rooms.push(res.body.room_id);
    }
    const sentence = sentences();
    await Promise.all(rooms.map((roomId, r) => appendMessages(roomId, alice.userId, sentence, PER_ROOM, `r${r}`)));

    const search = (term: string, order_by = "rank") => call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: term, order_by } } } });
    const t0 = performance.now();
    const first = await search("zephyr");
    const firstMs = performance.now() - t0;
    expect(first.status).toBe(200);
    expect(first.body.search_categories.room_events.count).toBeGreaterThan(1000);
    console.log(`search, first (indexes ${ROOMS * PER_ROOM} events in ${ROOMS} rooms): ${firstMs.toFixed(0)} ms`);
    console.log(`search "zephyr" rank (${first.body.search_categories.room_events.count} matches): ${stats(await timed(() => search("zephyr")))}`);
    console.log(`search "zephyr" recent: ${stats(await timed(() => search("zephyr", "recent")))}`);
    console.log(`search "quartz river" rank: ${stats(await timed(() => search("quartz river")))}`);
    console.log(`search "nomatch" rank: ${stats(await timed(() => search("nomatchword")))}`);
    const oneRoom = () => call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: "zephyr", filter: { rooms: [rooms[0]] } } } } });
    console.log(`search "zephyr" in one room (${PER_ROOM} messages): ${stats(await timed(oneRoom))}`);
    const ctx = () => call("POST", `${V3}/search`, { token: alice.accessToken, body: { search_categories: { room_events: { search_term: "zephyr", event_context: { before_limit: 5, after_limit: 5, include_profile: true } } } } });
    console.log(`search "zephyr" with event_context 5/5 + profiles: ${stats(await timed(ctx))}`);
  });

  it("relations: an event with 1,000 reactions", { timeout: 120_000 }, async () => {
    alice ??= await registerUser();
    const res = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "private_chat" } });
    const roomId = res.body.room_id;
    const root = (await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/root`, { token: alice.accessToken, body: { msgtype: "m.text", body: "react to me" } })).body.event_id;
    await appendEvents(roomId, alice.userId, (i) => ({ type: "m.reaction", content: { "m.relates_to": { rel_type: "m.annotation", event_id: root, key: `k${i % 50}` } } }), REACTIONS, "react");
    const page = () => call("GET", `${V1}/rooms/${enc(roomId)}/relations/${enc(root)}/m.annotation?limit=100`, { token: alice.accessToken });
    expect((await page()).body.chunk.length).toBe(100);
    console.log(`relations/m.annotation, limit=100 of ${REACTIONS}: ${stats(await timed(page))}`);
    const all = async () => {
      let from: string | undefined;
      let n = 0;
      for (let i = 0; i < 20; i++) {
        const r = await call("GET", `${V1}/rooms/${enc(roomId)}/relations/${enc(root)}?limit=100${from ? `&from=${enc(from)}` : ""}`, { token: alice.accessToken });
        n += r.body.chunk.length;
        from = r.body.next_batch;
        if (!from) break;
      }
      expect(n).toBe(REACTIONS);
    };
    console.log(`relations, all ${REACTIONS} in pages of 100: ${stats(await timed(all, 5))}`);
    const ev = () => call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(root)}`, { token: alice.accessToken });
    console.log(`/event of the root (bundling with ${REACTIONS} annotations): ${stats(await timed(ev))}`);
  });

  it("user_directory/search over 10,000 users", { timeout: 120_000 }, async () => {
    alice ??= await registerUser();
    const res = await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "public_chat" } });
    const roomId = res.body.room_id;
    const stmts: D1PreparedStatement[] = [];
    for (let i = 0; i < USERS; i++) {
      const userId = `@dirbench${i}:remote${i % 20}.example`;
      const name = `${WORDS[i % WORDS.length]} ${WORDS[(i * 7) % WORDS.length]} ${i}`;
      stmts.push(env.DB.prepare("INSERT INTO user_directory (user_id, displayname, avatar_url, search_key, is_local) VALUES (?, ?, NULL, ?, 0)").bind(userId, name, `${userId} ${name}`.toLowerCase()));
      stmts.push(env.DB.prepare("INSERT INTO user_directory_rooms (room_id, user_id) VALUES (?, ?)").bind(roomId, userId));
    }
    for (let i = 0; i < stmts.length; i += 500) await env.DB.batch(stmts.slice(i, i + 500));
    const searcher = await registerUser();
    const find = (term: string) => call("POST", `${V3}/user_directory/search`, { token: searcher.accessToken, body: { search_term: term, limit: 10 } });
    expect((await find("zephyr")).body.results.length).toBe(10);
    console.log(`user_directory/search "zephyr" (${USERS} users in a public room): ${stats(await timed(() => find("zephyr")))}`);
    console.log(`user_directory/search "dirbench9999": ${stats(await timed(() => find("dirbench9999")))}`);
    console.log(`user_directory/search "nomatch": ${stats(await timed(() => find("nomatchword")))}`);
  });
});
