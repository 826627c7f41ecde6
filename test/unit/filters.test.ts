// Filter evaluation (spec: "Filtering").
import { describe, expect, it } from "vitest";
import {
  applyEventFields,
  filterEvents,
  matchesEventFilter,
  matchesRoomEventFilter,
  matchesStateFilter,
  parseFilter,
  roomIncluded,
  roomSectionFilter,
  roomSyncFilter,
  timelineLimit,
  ignoredUsers,
} from "../../src/core/filters";

describe("parseFilter", () => {
  it("accepts the spec's example and rejects wrong shapes", () => {
    const ok = parseFilter({
      event_fields: ["type", "content", "sender"],
      event_format: "client",
      presence: { not_senders: ["@alice:example.com"], types: ["m.presence"] },
      room: { ephemeral: { not_rooms: ["!726s6s6q:example.com"], not_senders: ["@spam:example.com"], types: ["m.receipt", "m.typing"] }, state: { not_rooms: ["!726s6s6q:example.com"], types: ["m.room.*"] }, timeline: { limit: 10, not_rooms: ["!726s6s6q:example.com"], not_senders: ["@spam:example.com"], types: ["m.room.message"] } },
    });
    expect(ok.ok).toBe(true);
    expect(parseFilter({ event_format: "xml" }).ok).toBe(false);
    expect(parseFilter({ room: { timeline: { limit: -1 } } }).ok).toBe(false);
    expect(parseFilter([]).ok).toBe(false);
  });
});

describe("event filters", () => {
  it("types with wildcards, not_types wins, senders", () => {
    const f = { types: ["m.room.*"], not_types: ["m.room.member"], not_senders: ["@spam:x"] };
    expect(matchesEventFilter(f, { type: "m.room.message", sender: "@a:x" })).toBe(true);
    expect(matchesEventFilter(f, { type: "m.room.member", sender: "@a:x" })).toBe(false);
    expect(matchesEventFilter(f, { type: "m.presence", sender: "@a:x" })).toBe(false);
    expect(matchesEventFilter(f, { type: "m.room.message", sender: "@spam:x" })).toBe(false);
    expect(matchesEventFilter({ senders: ["@a:x"] }, { type: "m.direct" })).toBe(true); // account data has no sender
    expect(matchesEventFilter({ types: [] }, { type: "m.direct" })).toBe(false);
  });
  it("limit keeps the newest", () => {
    const evs = [1, 2, 3, 4].map((n) => ({ type: "t", n }));
    expect(filterEvents({ limit: 2 }, evs).map((e) => e.n)).toEqual([3, 4]);
  });
  it("room event filters: rooms, contains_url", () => {
    expect(matchesRoomEventFilter({ contains_url: true }, { type: "m.room.message", sender: "@a:x", content: { url: "mxc://a/b" } })).toBe(true);
    expect(matchesRoomEventFilter({ contains_url: false }, { type: "m.room.message", sender: "@a:x", content: { url: "mxc://a/b" } })).toBe(false);
    expect(matchesRoomEventFilter({ not_rooms: ["!a:x"] }, { type: "t", sender: "@a:x", room_id: "!a:x" })).toBe(false);
    expect(matchesStateFilter({ types: ["m.room.name"], rooms: ["!other:x"] }, { type: "m.room.name", sender: "@a:x" })).toBe(true);
  });
  it("room filters: not_rooms takes precedence", () => {
    expect(roomIncluded({ rooms: ["!a:x"], not_rooms: ["!a:x"] }, "!a:x")).toBe(false);
    expect(roomIncluded({ rooms: ["!a:x"] }, "!b:x")).toBe(false);
    expect(roomIncluded(undefined, "!b:x")).toBe(true);
    const evs = [{ type: "m.typing", sender: "" }, { type: "m.receipt", sender: "" }];
    expect(roomSectionFilter({ types: ["m.receipt"] }, "!a:x", evs)).toEqual([{ type: "m.receipt", sender: "" }]);
    expect(roomSectionFilter({ not_rooms: ["!a:x"] }, "!a:x", evs)).toEqual([]);
  });
  it("timeline limit and lazy-loading flags", () => {
    expect(timelineLimit(undefined)).toBe(10);
    expect(timelineLimit({ room: { timeline: { limit: 5000 } } })).toBe(1000);
    expect(roomSyncFilter({ room: { state: { lazy_load_members: true, include_redundant_members: true } } })).toMatchObject({ lazyLoadMembers: true, includeRedundantMembers: true });
    expect(roomSyncFilter(undefined).lazyLoadMembers).toBe(false);
  });
  it("event_fields keeps listed paths", () => {
    const ev = { type: "m.room.message", sender: "@a:x", content: { body: "hi", msgtype: "m.text", "m.x": 1 }, unsigned: { age: 1 } };
    expect(applyEventFields(ev, ["type", "content.body", "content.m\\.x"])).toEqual({ type: "m.room.message", content: { body: "hi", "m.x": 1 } });
    expect(applyEventFields(ev, undefined)).toBe(ev);
  });
  it("ignored users list", () => {
    expect([...ignoredUsers({ ignored_users: { "@a:x": {} } })]).toEqual(["@a:x"]);
    expect(ignoredUsers(undefined).size).toBe(0);
  });
});
