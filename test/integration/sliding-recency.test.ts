// The hub's recency index (durable-objects/sliding-recency.ts) against the pure list semantics
// (src/core/sliding-lists.ts computeList: filter, recency order with room ID tie-break,
// windows): random rooms in a real hub's SQLite, random filters, ranges, newly-left rooms and
// ignored inviters; the SQL answer must equal the model's.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { initRecency, listWindow, roomsByIds } from "../../durable-objects/sliding-recency";
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

describe("recency index upgrade", () => {
  it("a hub whose sliding_rooms predates the index gets the columns, and rows for every room, once", async () => {
    const stub = env.USERS.get(env.USERS.idFromName("@recency-upgrade:test.local"));
    await runInDurableObject(stub, async (_inst, state) => {
      const sql = state.storage.sql;
      // Back to the version-1 shape: (room_id, bump, encrypted, rtype), bump 0 for a room known
      // only by its type, no row at all for another.
      for (const i of ["sliding_rooms_recency", "sliding_rooms_dm", "sliding_rooms_membership"]) sql.exec(`DROP INDEX ${i}`);
      for (const c of ["membership", "inviter", "is_dm"]) sql.exec(`ALTER TABLE sliding_rooms DROP COLUMN ${c}`);
      sql.exec("DELETE FROM sliding_meta");
      sql.exec("INSERT INTO rooms (room_id, membership, member_stream, stream, inviter) VALUES ('!a:test.local', 'join', 1, 5, NULL), ('!b:test.local', 'invite', 2, 2, '@x:test.local'), ('!c:test.local', 'join', 3, 3, NULL)");
      sql.exec("INSERT INTO room_log (upos, room_id, stream) VALUES (101, '!a:test.local', 5), (102, '!b:test.local', 2), (103, '!c:test.local', 3)");
      sql.exec("INSERT INTO sliding_rooms (room_id, bump, encrypted, rtype) VALUES ('!a:test.local', 7, 1, ''), ('!c:test.local', 0, 0, 'm.space')");
      initRecency(sql);
      const rows = sql
        .exec<{ room_id: string; bump: number; membership: string; inviter: string | null; encrypted: number; rtype: string | null }>(
          "SELECT room_id, bump, membership, inviter, encrypted, rtype FROM sliding_rooms ORDER BY room_id",
        )
        .toArray();
      expect(rows).toEqual([
        { room_id: "!a:test.local", bump: 7, membership: "join", inviter: null, encrypted: 1, rtype: "" },
        { room_id: "!b:test.local", bump: 102, membership: "invite", inviter: "@x:test.local", encrypted: 0, rtype: null },
        { room_id: "!c:test.local", bump: 103, membership: "join", inviter: null, encrypted: 0, rtype: "m.space" },
      ]);
      const w = listWindow(sql, { newlyLeft: [], ignored: [] }, undefined, [[0, 9]]);
      expect(w.window.map((r) => r.roomId)).toEqual(["!c:test.local", "!b:test.local", "!a:test.local"]);
      // Once: a second call leaves it alone.
      sql.exec("UPDATE sliding_rooms SET bump = 1 WHERE room_id = '!c:test.local'");
      initRecency(sql);
      expect(sql.exec<{ bump: number }>("SELECT bump FROM sliding_rooms WHERE room_id = '!c:test.local'").one().bump).toBe(1);
    });
  });
});
