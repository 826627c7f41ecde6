// The hub's recency index (durable-objects/sliding-recency.ts) against the pure list semantics
// (src/core/sliding-lists.ts computeList: filter, recency order with room ID tie-break,
// windows): random rooms in a real hub's SQLite, random filters, ranges, newly-left rooms and
// ignored inviters; the SQL answer must equal the model's.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { listWindow, roomsByIds } from "../../durable-objects/sliding-recency";
import { computeList, type ListFilters, type ListRoom, type Range, type SlidingMembership } from "../../src/core/sliding-lists";

function prng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
}

describe("recency index = list semantics", () => {
  it("300 random requests over 80 random rooms give the model's counts and windows", async () => {
    const stub = env.USERS.get(env.USERS.idFromName("@recency-model:test.local"));
    await runInDurableObject(stub, async (_inst, state) => {
      const sql = state.storage.sql;
      const rnd = prng(42);
      const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
      const memberships: SlidingMembership[] = ["join", "join", "join", "invite", "knock", "leave", "ban"];
      const types = [null, "", "m.space", "org.example.type"];
      const inviters = ["@a:x", "@b:x", "@c:x"];
      const rooms: (ListRoom & { inviter: string | null })[] = [];
      for (let i = 0; i < 80; i++) {
        const roomId = `!r${i.toString().padStart(2, "0")}:test.local`;
        const membership = pick(memberships);
        const rtype = pick(types);
        const r = {
          roomId,
          membership,
          // Ties on purpose: the order must fall back to the room ID.
          bump: Math.floor(rnd() * 40),
          isDm: rnd() < 0.3,
          encrypted: rnd() < 0.4,
          roomType: rtype === null ? undefined : rtype === "" ? null : rtype,
          inviter: membership === "invite" ? pick(inviters) : null,
        };
        rooms.push(r);
        sql.exec("INSERT INTO rooms (room_id, membership, member_stream, stream, inviter) VALUES (?, ?, 1, ?, ?)", roomId, membership, i, r.inviter);
        sql.exec(
          "INSERT INTO sliding_rooms (room_id, bump, encrypted, rtype, membership, inviter, is_dm) VALUES (?, ?, ?, ?, ?, ?, ?)",
          roomId,
          r.bump,
          r.encrypted ? 1 : 0,
          rtype,
          membership,
          r.inviter,
          r.isDm ? 1 : 0,
        );
      }
      const left = rooms.filter((r) => r.membership === "leave" || r.membership === "ban").map((r) => r.roomId);
      const typeChoices: (string | null)[][] = [[null], ["m.space"], [null, "org.example.type"], ["m.space", "org.example.type"], []];
      for (let n = 0; n < 300; n++) {
        const f: ListFilters = {};
        if (rnd() < 0.3) f.is_dm = rnd() < 0.5;
        if (rnd() < 0.3) f.is_invite = rnd() < 0.5;
        if (rnd() < 0.3) f.is_encrypted = rnd() < 0.5;
        if (rnd() < 0.3) f.room_types = pick(typeChoices);
        if (rnd() < 0.3) f.not_room_types = pick(typeChoices);
        let inSpaces: string[] | undefined;
        if (rnd() < 0.2) {
          f.spaces = ["!space:test.local"];
          inSpaces = rooms.filter(() => rnd() < 0.3).map((r) => r.roomId);
        }
        const ranges: Range[] = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => {
          const a = Math.floor(rnd() * 50);
          return [a, a + Math.floor(rnd() * 30)] as Range;
        });
        const newlyLeft = left.filter(() => rnd() < 0.3);
        const ignored = inviters.filter(() => rnd() < 0.3);
        const candidates = rooms.filter(
          (r) => (r.membership === "join" || r.membership === "invite" || r.membership === "knock" || newlyLeft.includes(r.roomId)) && !(r.membership === "invite" && ignored.includes(r.inviter!)),
        );
        const want = computeList(candidates, Object.keys(f).length ? f : undefined, ranges, inSpaces ? new Set(inSpaces) : undefined);
        const got = listWindow(sql, { newlyLeft, ignored }, Object.keys(f).length ? f : undefined, ranges, inSpaces);
        const label = JSON.stringify({ n, f, ranges, newlyLeft, ignored });
        expect(got.count, label).toBe(want.count);
        expect(got.window.map((r) => r.roomId), label).toEqual(want.window.map((r) => r.roomId));
        // Subscriptions: any candidate by ID, nothing else.
        const ids = rooms.filter(() => rnd() < 0.1).map((r) => r.roomId);
        const subs = roomsByIds(sql, { newlyLeft, ignored }, ids).map((r) => r.roomId).sort();
        expect(subs, label).toEqual(candidates.filter((r) => ids.includes(r.roomId)).map((r) => r.roomId).sort());
      }
    });
  });
});
