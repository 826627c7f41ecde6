// The shared glob matcher (spec: Appendices "Glob-style matching") and the filters and push rules
// that run user-supplied globs through it.
import { describe, expect, it } from "vitest";
import { globMatches, MAX_GLOB_LENGTH } from "../../src/core/glob";
import { matchesEventFilter, matchesRoomEventFilter, parseFilter } from "../../src/core/filters";
import { roomEventFilterSchema } from "../../src/core/room-event-filter";
import { conditionMatches } from "../../src/core/push-rules";

describe("globMatches", () => {
  it("matches * and ? over the whole value", () => {
    expect(globMatches("m.room.*", "m.room.message")).toBe(true);
    expect(globMatches("m.room.*", "m.roomy")).toBe(false);
    expect(globMatches("*", "")).toBe(true);
    expect(globMatches("", "")).toBe(true);
    expect(globMatches("", "a")).toBe(false);
    expect(globMatches("a*b*c", "axxbyyc")).toBe(true);
    expect(globMatches("a*b*c", "axxbyy")).toBe(false);
    expect(globMatches("a?c", "abc")).toBe(true);
    expect(globMatches("a?c", "ac")).toBe(false);
    expect(globMatches("a?c", "a🙂c")).toBe(true);
    expect(globMatches("A*", "abc")).toBe(false);
    expect(globMatches("A*", "abc", { ignoreCase: true })).toBe(true);
    // Filters define only `*`.
    expect(globMatches("a?c", "abc", { questionMark: false })).toBe(false);
    expect(globMatches("a?c", "a?c", { questionMark: false })).toBe(true);
  });

  it("matches between word boundaries for content.body", () => {
    const w = (p: string, v: string) => globMatches(p, v, { ignoreCase: true, wordBoundary: true });
    expect(w("cake", "I like cake!")).toBe(true);
    expect(w("cake", "cakes")).toBe(false);
    expect(w("cake", "cheesecake")).toBe(false);
    expect(w("ca*", "some cakes")).toBe(true);
    expect(w("c?ke", "CAKE")).toBe(true);
    expect(w("a*z", "a b c z")).toBe(true);
    expect(w("a*z", "a b c zz")).toBe(true); // "a b c zz": `*` spans "b c z"
    expect(w("a*z", "xa b z")).toBe(false);
  });

  it("refuses patterns over the length bound", () => {
    expect(globMatches("*".repeat(MAX_GLOB_LENGTH + 1), "x")).toBe(false);
    expect(globMatches("*".repeat(MAX_GLOB_LENGTH), "x")).toBe(true);
  });

  // Hostile patterns: runs of stars before a character the value lacks. As `.*` regexes these
  // backtracked exponentially (12 stars took ~360 ms in the room's Durable Object, 14 several
  // seconds); here each check is at most value × pattern steps.
  it("runs hostile patterns in linear time (filters and push rules)", () => {
    const long = "m.room.message.with.a.rather.long.custom.type.name";
    const body = "word ".repeat(13_000); // ~64 KiB, the largest event body
    // The first case already takes seconds as a regex; the others would never finish.
    for (const [stars, type] of [[16, "m.room.message"], [40, long], [MAX_GLOB_LENGTH - 1, long]] as const) {
      const pattern = "*".repeat(stars) + "!";
      const spread = "*a".repeat(Math.floor((stars - 1) / 2)) + "!";
      const t0 = performance.now();
      expect(matchesRoomEventFilter({ types: [pattern, spread] }, { type, sender: "@a:x" })).toBe(false);
      expect(matchesEventFilter({ types: [pattern, spread] }, { type })).toBe(false);
      expect(conditionMatches({ kind: "event_match", key: "type", pattern: spread }, { type }, ctx)).toBe(false);
      expect(conditionMatches({ kind: "event_match", key: "content.body", pattern: spread }, { content: { body } }, ctx)).toBe(false);
      const ms = performance.now() - t0;
      expect(ms, `${stars} stars took ${ms.toFixed(1)} ms`).toBeLessThan(1000);
    }
  });

  it("filters refuse type patterns over the bound", () => {
    const long = "*".repeat(MAX_GLOB_LENGTH + 1);
    expect(roomEventFilterSchema.safeParse({ types: [long] }).success).toBe(false);
    expect(roomEventFilterSchema.safeParse({ not_types: [long] }).success).toBe(false);
    expect(parseFilter({ room: { timeline: { types: [long] } } }).ok).toBe(false);
    expect(parseFilter({ room: { timeline: { types: ["m.*"] } } }).ok).toBe(true);
  });
});

const ctx = { userId: "@me:x", memberCount: 2, senderPowerLevel: 0 };
