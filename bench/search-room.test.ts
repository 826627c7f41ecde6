// One room's share of a search (docs/benchmarks.md, "Search profile"): a 2,000-message room's
// searchEvents (phase 1: positions; phase 2: two hits serialised, with event_context) and the
// SQL the fast paths replaced, each timed inside the object. The machine is shared, so each
// line is the min and median over 12 batches of 25 calls (the min moves least with the load);
// the before/now query pairs alternate over three rounds.
// Run: BENCH=1 npx vitest run --project workers bench/search-room.test.ts
import { describe, it } from "vitest";
import { runInDurableObject } from "cloudflare:test";
import { call, registerUser } from "../test/integration/helpers";
import { appendMessages, roomObject, sentences } from "./room-fill";

const V3 = "/_matrix/client/v3";
const PER_ROOM = 2000;

describe("one room's search", () => {
  it("searchEvents and its queries, in-object", { timeout: 300_000 }, async () => {
    const alice = await registerUser();
    const roomId = (await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "private_chat" } })).body.room_id;
    await appendMessages(roomId, alice.userId, sentences(), PER_ROOM, "one");
    const req = { userId: alice.userId, deviceId: alice.deviceId };
    const q = (term: string, orderBy = "rank") => ({ term, keys: ["content.body", "content.name", "content.topic"], orderBy, limit: 11, idsOnly: true });
    await runInDurableObject(roomObject(roomId), async (inst: any, state) => {
      const sql = state.storage.sql;
      // The clock only moves on I/O here: a storage read before each reading of it.
      const time = async (name: string, fn: () => unknown) => {
        for (let i = 0; i < 5; i++) await fn();
        const per: number[] = [];
        for (let b = 0; b < 12; b++) {
          await state.storage.get("x");
          const t = performance.now();
          for (let i = 0; i < 25; i++) await fn();
          await state.storage.get("x");
          per.push((performance.now() - t) / 25);
        }
        per.sort((x, y) => x - y);
        console.log(`${name}: min ${per[0].toFixed(2)} ms, median ${per[6].toFixed(2)} ms`);
      };
      const M = '"zephyr"*';
      const K = ["content.body", "content.name", "content.topic"];
      const MAX = Number.MAX_SAFE_INTEGER;
      await time(`searchEvents "zephyr" rank (phase 1)`, () => inst.searchEvents(req, q("zephyr")));
      await time(`searchEvents "zephyr" recent (phase 1)`, () => inst.searchEvents(req, q("zephyr", "recent")));
      await time(`searchEvents "nomatchword" (phase 1)`, () => inst.searchEvents(req, q("nomatchword")));
      const two = (await inst.searchEvents(req, q("zephyr"))).value.hits.slice(0, 2).map((h: { eventId: string }) => h.eventId);
      await time(`searchEvents, 2 hits serialised with event_context 5/5 + profiles (phase 2)`, () => inst.searchEvents(req, { ...q("zephyr"), idsOnly: false, fetch: two, context: { before: 5, after: 5, includeProfile: true } }));
      // Before/now pairs alternate, three rounds.
      for (let round = 1; round <= 3; round++) {
        await time("before: count, COUNT(DISTINCT event_id) with the key filter", () => sql.exec(`SELECT COUNT(DISTINCT event_id) FROM search_fts WHERE search_fts MATCH ? AND key IN (?,?,?)`, M, ...K).toArray());
        await time("now: count, COUNT(*) of the index", () => sql.exec(`SELECT COUNT(*) FROM search_fts WHERE search_fts MATCH ?`, M).toArray());
        await time("before: rank, every match joined to events by event_id", () => sql.exec(`SELECT s.event_id, s.source, bm25(search_fts) AS score FROM search_fts s JOIN events e ON e.event_id = s.event_id WHERE search_fts MATCH ? AND s.key IN (?,?,?) AND e.stream IS NOT NULL AND e.stream <= ? ORDER BY score ASC, e.stream DESC LIMIT 42`, M, ...K, MAX).toArray());
        await time("now: rank on the index alone", () => sql.exec(`SELECT s.event_id, s.source, t.score FROM (SELECT rowid AS rid, bm25(search_fts) AS score FROM search_fts WHERE search_fts MATCH ? ORDER BY score ASC, rowid DESC LIMIT 42) t JOIN search_fts s ON s.rowid = t.rid ORDER BY t.score ASC, t.rid DESC`, M).toArray());
        await time("before: recent, every match joined to events", () => sql.exec(`SELECT s.event_id, s.source FROM search_fts s JOIN events e ON e.event_id = s.event_id WHERE search_fts MATCH ? AND s.key IN (?,?,?) AND e.stream IS NOT NULL AND e.stream <= ? ORDER BY e.origin_server_ts DESC, e.event_id DESC LIMIT 42`, M, ...K, MAX).toArray());
        await time("now: recent, events newest first against the match set", () => sql.exec(`SELECT e.event_id FROM events e WHERE e.stream IS NOT NULL AND e.event_id IN (SELECT event_id FROM search_fts WHERE search_fts MATCH ?) ORDER BY e.origin_server_ts DESC, e.event_id DESC LIMIT 42`, M).toArray());
      }
    });
  });
});
