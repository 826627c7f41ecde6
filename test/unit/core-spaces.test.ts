// Space children: validity, the spec's ordering, summary sanitising, hierarchy tokens.
import { describe, it, expect } from "vitest";
import type { JsonObject } from "../../src/core/types";
import { childVia, decodeHierarchyToken, encodeHierarchyToken, sanitizeSummary, spaceChildren, validOrder } from "../../src/core/spaces";

const child = (id: string, ts: number, content: JsonObject): JsonObject => ({ type: "m.space.child", state_key: id, origin_server_ts: ts, sender: "@a:x", content });

describe("spaceChildren", () => {
  it("orders as the spec's example: valid order first (code points), then timestamp, then room ID", () => {
    const events = [
      child("!c:example.org", 1640141000000, { via: ["example.org"] }),
      child("!e:example.org", 1, { order: "abc", via: ["example.org"] }),
      child("!d:example.org", 1640141000000, { via: ["example.org"] }),
      child("!b:example.org", 1640341000000, { order: " ", via: ["example.org"] }),
      child("!a:example.org", 1640141000000, { order: "aaaa", via: ["example.org"] }),
      child("!f:example.org", 2, { order: "\u00e9", via: ["example.org"] }), // invalid order: treated as none
      child("!g:example.org", 3, { order: "x".repeat(51), via: ["example.org"] }),
    ];
    expect(spaceChildren(events, false).map((c) => c.state_key)).toEqual([
      "!b:example.org",
      "!a:example.org",
      "!e:example.org",
      "!f:example.org",
      "!g:example.org",
      "!c:example.org",
      "!d:example.org",
    ]);
  });

  it("drops children without a usable via or room ID, and filters suggested", () => {
    const events: JsonObject[] = [
      child("!a:x", 1, { via: ["x"], suggested: true }),
      child("!b:x", 2, {}),
      child("!c:x", 3, { via: [] }),
      child("!d:x", 4, { via: [1] }),
      child("not-a-room", 5, { via: ["x"] }),
      child("!e:x", 6, { via: ["x"], suggested: "yes" }),
      { type: "m.room.name", state_key: "!f:x", content: { via: ["x"] } },
    ];
    expect(spaceChildren(events, false).map((c) => c.state_key)).toEqual(["!a:x", "!e:x"]);
    expect(spaceChildren(events, true).map((c) => c.state_key)).toEqual(["!a:x"]);
    expect(childVia({ via: ["a", "b"] })).toEqual(["a", "b"]);
    expect(validOrder("~ ok")).toBe("~ ok");
    expect(validOrder(5)).toBeUndefined();
  });
});

describe("sanitizeSummary", () => {
  it("keeps only spec fields with the right types", () => {
    const s = sanitizeSummary({
      room_id: "!r:x",
      name: "n",
      topic: 5,
      num_joined_members: -3,
      world_readable: "yes",
      guest_can_join: true,
      allowed_room_ids: ["!a:x", "bad", 3],
      children_state: [child("!c:x", 1, { via: ["x"] }), { nonsense: true }],
      extra: "<script>",
    })!;
    expect(s).toEqual({
      room_id: "!r:x",
      name: "n",
      num_joined_members: 0,
      world_readable: false,
      guest_can_join: true,
      allowed_room_ids: ["!a:x"],
      children_state: [child("!c:x", 1, { via: ["x"] })],
    });
    expect(sanitizeSummary({ room_id: "nope" })).toBeUndefined();
    expect(sanitizeSummary(null)).toBeUndefined();
  });
});

describe("hierarchy tokens", () => {
  it("round-trip and reject garbage", () => {
    const t = { root: "!r:x", suggestedOnly: true, maxDepth: 3, offset: 42 };
    expect(decodeHierarchyToken(encodeHierarchyToken(t))).toEqual(t);
    for (const bad of ["", "garbage", btoa("[1,2]"), btoa(JSON.stringify(["!r:x", 1, 3, -1]))]) expect(decodeHierarchyToken(bad)).toBeUndefined();
  });
});
