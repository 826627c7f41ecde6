// Simplified Sliding Sync (MSC4186): list filters, recency order, windows, required_state.
import { describe, expect, it } from "vitest";
import { computeList, configKey, mergeRequiredState, passesFilters, planRequiredState, wantsState, windowOf, type ListRoom } from "../../src/core/sliding-lists";

const room = (roomId: string, bump: number, extra: Partial<ListRoom> = {}): ListRoom => ({ roomId, membership: "join", bump, isDm: false, ...extra });

describe("lists", () => {
  const rooms = [room("!a", 5), room("!b", 9), room("!c", 1, { isDm: true }), room("!d", 9), room("!e", 7, { membership: "invite", encrypted: true })];

  it("sorts by bump, newest first, ties by room ID, and counts every match", () => {
    const { count, window } = computeList(rooms, undefined, [[0, 10]]);
    expect(count).toBe(5);
    expect(window.map((r) => r.roomId)).toEqual(["!b", "!d", "!e", "!a", "!c"]);
  });

  it("windows by inclusive ranges, clamped, without duplicates", () => {
    const sorted = computeList(rooms, undefined, [[0, 100]]).window;
    expect(windowOf(sorted, [[1, 2]]).map((r) => r.roomId)).toEqual(["!d", "!e"]);
    expect(windowOf(sorted, [[0, 1], [1, 2], [4, 2 ** 31 - 1]]).map((r) => r.roomId)).toEqual(["!b", "!d", "!e", "!c"]);
    expect(windowOf(sorted, [[10, 20]])).toEqual([]);
    expect(windowOf([], [[0, 0]])).toEqual([]);
  });

  it("filters: is_dm, is_invite, is_encrypted, room_types (null = no type), not_room_types, spaces", () => {
    expect(computeList(rooms, { is_dm: true }, [[0, 9]]).window.map((r) => r.roomId)).toEqual(["!c"]);
    expect(computeList(rooms, { is_invite: true }, [[0, 9]]).count).toBe(1);
    expect(computeList(rooms, { is_invite: false }, [[0, 9]]).count).toBe(4);
    expect(computeList(rooms, { is_encrypted: true }, [[0, 9]]).window.map((r) => r.roomId)).toEqual(["!e"]);
    const typed = [room("!s", 1, { roomType: "m.space" }), room("!r", 2, { roomType: null })];
    expect(computeList(typed, { room_types: [null] }, [[0, 9]]).window.map((r) => r.roomId)).toEqual(["!r"]);
    expect(computeList(typed, { not_room_types: ["m.space"] }, [[0, 9]]).window.map((r) => r.roomId)).toEqual(["!r"]);
    expect(computeList(typed, { room_types: ["m.space"] }, [[0, 9]]).window.map((r) => r.roomId)).toEqual(["!s"]);
    expect(passesFilters(room("!x", 1), { spaces: ["!space"] }, new Set(["!x"]))).toBe(true);
    expect(passesFilters(room("!y", 1), { spaces: ["!space"] }, new Set(["!x"]))).toBe(false);
  });
});

describe("required_state", () => {
  const me = "@me:x";
  it("matches *, $ME, $LAZY and exact keys", () => {
    const lazy = new Set(["@bob:x"]);
    const rs: [string, string][] = [["m.room.member", "$LAZY"], ["m.room.member", "$ME"], ["m.room.name", ""], ["m.space.child", "*"]];
    expect(wantsState(rs, me, { type: "m.room.member", state_key: "@bob:x" }, lazy)).toBe(true);
    expect(wantsState(rs, me, { type: "m.room.member", state_key: me }, lazy)).toBe(true);
    expect(wantsState(rs, me, { type: "m.room.member", state_key: "@carol:x" }, lazy)).toBe(false);
    expect(wantsState(rs, me, { type: "m.room.name", state_key: "" }, lazy)).toBe(true);
    expect(wantsState(rs, me, { type: "m.room.topic", state_key: "" }, lazy)).toBe(false);
    expect(wantsState(rs, me, { type: "m.space.child", state_key: "!any" }, lazy)).toBe(true);
    expect(wantsState([["*", "*"]], me, { type: "anything", state_key: "k" }, lazy)).toBe(true);
    expect(wantsState([["*", ""]], me, { type: "m.room.topic", state_key: "" }, lazy)).toBe(true);
    expect(wantsState([["*", ""]], me, { type: "m.room.member", state_key: me }, lazy)).toBe(false);
    // $LAZY means nothing outside m.room.member.
    expect(wantsState([["m.room.topic", "$LAZY"]], me, { type: "m.room.topic", state_key: "@bob:x" }, lazy)).toBe(false);
  });

  it("plans what the RoomDO must load", () => {
    expect(planRequiredState([["m.room.member", "$LAZY"], ["m.room.member", "$ME"]], me)).toMatchObject({ allTypes: false, lazyMembers: true, explicitMembers: false });
    expect(planRequiredState([["m.room.member", "@other:x"]], me).explicitMembers).toBe(true);
    expect(planRequiredState([["*", "*"]], me)).toMatchObject({ allTypes: true, explicitMembers: true });
  });

  it("merges lists' required_state and keys the config regardless of order", () => {
    const a: [string, string][] = [["m.room.name", ""], ["m.room.topic", ""]];
    const b: [string, string][] = [["m.room.topic", ""], ["m.room.avatar", ""]];
    expect(mergeRequiredState([a, b])).toEqual([["m.room.name", ""], ["m.room.topic", ""], ["m.room.avatar", ""]]);
    expect(configKey(a)).toBe(configKey([...a].reverse()));
    expect(configKey(a)).not.toBe(configKey(b));
  });
});
