// Push rule evaluation against the spec's default ruleset (module "Push Notifications").
import { describe, expect, it } from "vitest";
import {
  conditionMatches,
  defaultRules,
  effectiveRules,
  emptyUserRules,
  evaluatePushRules,
  splitPath,
  type PushContext,
} from "../../src/core/push-rules";

const ME = "@me:example.org";
const ctx = (over: Partial<PushContext> = {}): PushContext => ({ userId: ME, displayName: "Me Myself", memberCount: 5, senderPowerLevel: 0, ...over });
const msg = (content: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: "m.room.message",
  sender: "@other:example.org",
  room_id: "!r:example.org",
  event_id: "$e",
  content: { msgtype: "m.text", ...content },
  ...extra,
});
const rules = effectiveRules(ME, emptyUserRules());
const run = (ev: Record<string, unknown>, c = ctx()) => evaluatePushRules(rules, ev as never, c);

describe("default rules", () => {
  it("has the spec's rule IDs in order", () => {
    const d = defaultRules(ME);
    expect(d.override.map((r) => r.rule_id)).toEqual([
      ".m.rule.master",
      ".m.rule.suppress_notices",
      ".m.rule.invite_for_me",
      ".m.rule.member_event",
      ".m.rule.is_user_mention",
      ".m.rule.is_room_mention",
      ".m.rule.tombstone",
      ".m.rule.reaction",
      ".m.rule.room.server_acl",
      ".m.rule.suppress_edits",
    ]);
    expect(d.underride.map((r) => r.rule_id)).toEqual([".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"]);
    expect(d.override[0].enabled).toBe(false);
  });

  it("notifies for group messages, with sound in 1:1 rooms", () => {
    expect(run(msg({ body: "hi" }))).toMatchObject({ ruleId: ".m.rule.message", notify: true, highlight: false });
    expect(run(msg({ body: "hi" }), ctx({ memberCount: 2 }))).toMatchObject({ ruleId: ".m.rule.room_one_to_one", notify: true });
    expect(run({ ...msg({}), type: "m.room.encrypted", content: { algorithm: "x" } }, ctx({ memberCount: 2 })).ruleId).toBe(".m.rule.encrypted_room_one_to_one");
    expect(run({ ...msg({}), type: "m.room.encrypted", content: {} }).ruleId).toBe(".m.rule.encrypted");
  });

  it("never notifies for my own events", () => {
    expect(run(msg({ body: "hi" }, { sender: ME })).notify).toBe(false);
  });

  it("suppresses notices, edits, reactions, member events and ACLs", () => {
    expect(run(msg({ msgtype: "m.notice", body: "bot" })).ruleId).toBe(".m.rule.suppress_notices");
    expect(run(msg({ body: "* x", "m.relates_to": { rel_type: "m.replace", event_id: "$o" } })).notify).toBe(false);
    expect(run({ ...msg({}), type: "m.reaction", content: {} }).notify).toBe(false);
    expect(run({ ...msg({}), type: "m.room.member", state_key: "@x:e", content: { membership: "join" } }).ruleId).toBe(".m.rule.member_event");
    expect(run({ ...msg({}), type: "m.room.server_acl", state_key: "", content: {} }).ruleId).toBe(".m.rule.room.server_acl");
  });

  it("highlights user mentions and permitted room mentions", () => {
    const mention = run(msg({ body: "x", "m.mentions": { user_ids: [ME] } }));
    expect(mention).toMatchObject({ ruleId: ".m.rule.is_user_mention", notify: true, highlight: true });
    const room = msg({ body: "x", "m.mentions": { room: true } });
    expect(run(room).ruleId).toBe(".m.rule.message"); // PL 0 < notifications.room 50
    expect(run(room, ctx({ senderPowerLevel: 50 }))).toMatchObject({ ruleId: ".m.rule.is_room_mention", highlight: true });
    expect(run(room, ctx({ senderPowerLevel: 10, powerLevels: { notifications: { room: 10 } } })).highlight).toBe(true);
  });

  it("notifies invites for me with sound, and tombstones with highlight", () => {
    const inv = run({ type: "m.room.member", state_key: ME, sender: "@o:e", content: { membership: "invite" } });
    expect(inv).toMatchObject({ ruleId: ".m.rule.invite_for_me", notify: true });
    expect(inv.actions).toContainEqual({ set_tweak: "sound", value: "default" });
    expect(run({ type: "m.room.tombstone", state_key: "", sender: "@o:e", content: {} })).toMatchObject({ ruleId: ".m.rule.tombstone", highlight: true });
    // No implicit state_key condition: a non-state tombstone does not match.
    expect(run({ type: "m.room.tombstone", sender: "@o:e", content: {} }).notify).toBe(false);
  });

  it("master rule silences everything when enabled; historical actions are stripped", () => {
    const u = emptyUserRules();
    u.defaults[".m.rule.master"] = { enabled: true };
    expect(evaluatePushRules(effectiveRules(ME, u), msg({ body: "x", "m.mentions": { user_ids: [ME] } }) as never, ctx())).toMatchObject({ ruleId: ".m.rule.master", notify: false });
    const v = emptyUserRules();
    v.rules.sender.push({ rule_id: "@other:example.org", default: false, enabled: true, actions: ["dont_notify"] });
    expect(evaluatePushRules(effectiveRules(ME, v), msg({ body: "x" }) as never, ctx())).toMatchObject({ ruleId: "@other:example.org", actions: [], notify: false });
  });

  it("user rules outrank server-default rules of the same kind, master outranks all", () => {
    const u = emptyUserRules();
    u.rules.override.push({ rule_id: "mine", default: false, enabled: true, conditions: [], actions: ["notify", { set_tweak: "highlight", value: false }] });
    const eff = effectiveRules(ME, u);
    expect(eff.override.map((r) => r.rule_id).slice(0, 2)).toEqual([".m.rule.master", "mine"]);
    expect(evaluatePushRules(eff, msg({ msgtype: "m.notice", body: "n" }) as never, ctx())).toMatchObject({ ruleId: "mine", notify: true, highlight: false });
  });

  it("content and room rules", () => {
    const u = emptyUserRules();
    u.rules.content.push({ rule_id: "tea", default: false, enabled: true, pattern: "tea*", actions: ["notify", { set_tweak: "highlight" }] });
    u.rules.room.push({ rule_id: "!quiet:example.org", default: false, enabled: true, actions: [] });
    const eff = effectiveRules(ME, u);
    expect(evaluatePushRules(eff, msg({ body: "It's time for teapots" }) as never, ctx()).highlight).toBe(true);
    expect(evaluatePushRules(eff, msg({ body: "steam" }) as never, ctx()).highlight).toBe(false);
    expect(evaluatePushRules(eff, msg({ body: "tea" }, { room_id: "!quiet:example.org" }) as never, ctx()).ruleId).toBe("tea");
    expect(evaluatePushRules(eff, msg({ body: "hi" }, { room_id: "!quiet:example.org" }) as never, ctx()).notify).toBe(false);
  });
});

describe("conditions", () => {
  const ev = { type: "m.room.topic", state_key: "", sender: "@a:b", content: { topic: "Lunch plans", "m.federate": true, alt_aliases: ["#somewhere:example.org", "#myroom:example.com"], n: 3, body: "An example event." } };
  it("event_match: whole value, case-insensitive, strings only", () => {
    expect(conditionMatches({ kind: "event_match", key: "content.topic", pattern: "lunc?*" }, ev, ctx())).toBe(true);
    expect(conditionMatches({ kind: "event_match", key: "content.topic", pattern: "lunc" }, ev, ctx())).toBe(false);
    expect(conditionMatches({ kind: "event_match", key: "content.n", pattern: "*" }, ev, ctx())).toBe(false);
    expect(conditionMatches({ kind: "event_match", key: "content.missing", pattern: "*" }, ev, ctx())).toBe(false);
  });
  it("event_match on content.body matches at word boundaries", () => {
    const m = (pattern: string, body: string) => conditionMatches({ kind: "event_match", key: "content.body", pattern }, { content: { body } }, ctx());
    expect(m("ex*ple", "An example event.")).toBe(true);
    expect(m("ex*ple", "exple")).toBe(true);
    expect(m("ex*ple", "An exciting triple-whammy")).toBe(true);
    expect(m("ample", "An example event.")).toBe(false);
  });
  it("event_property_is and event_property_contains with escaped dots", () => {
    expect(conditionMatches({ kind: "event_property_is", key: "content.m\\.federate", value: true }, ev, ctx())).toBe(true);
    expect(conditionMatches({ kind: "event_property_is", key: "content.m\\.federate", value: "true" }, ev, ctx())).toBe(false);
    expect(conditionMatches({ kind: "event_property_is", key: "content.n", value: 3 }, ev, ctx())).toBe(true);
    expect(conditionMatches({ kind: "event_property_contains", key: "content.alt_aliases", value: "#myroom:example.com" }, ev, ctx())).toBe(true);
    expect(conditionMatches({ kind: "event_property_contains", key: "content.alt_aliases", value: ":example.com" }, ev, ctx())).toBe(false);
    expect(splitPath("content.m\\.relates_to.rel_type")).toEqual(["content", "m.relates_to", "rel_type"]);
    expect(splitPath("a\\\\b.c")).toEqual(["a\\b", "c"]);
  });
  it("room_member_count operators", () => {
    const c = (is: string, n: number) => conditionMatches({ kind: "room_member_count", is }, {}, ctx({ memberCount: n }));
    expect(c("2", 2)).toBe(true);
    expect(c("==2", 3)).toBe(false);
    expect(c("<3", 2)).toBe(true);
    expect(c(">=3", 3)).toBe(true);
    expect(c(">3", 3)).toBe(false);
    expect(c("<=1", 2)).toBe(false);
    expect(c("abc", 2)).toBe(false);
  });
  it("contains_display_name as a whole word; unknown conditions never match", () => {
    expect(conditionMatches({ kind: "contains_display_name" }, { content: { body: "hi me myself!" } }, ctx())).toBe(true);
    expect(conditionMatches({ kind: "contains_display_name" }, { content: { body: "hi me myselfie" } }, ctx())).toBe(false);
    expect(conditionMatches({ kind: "org.unknown" }, ev, ctx())).toBe(false);
  });
  it("globs", () => {
    const glob = (pattern: string, value: string) => conditionMatches({ kind: "event_match", key: "type", pattern }, { type: value }, ctx());
    expect(glob("a?c*", "ABCdef")).toBe(true);
    expect(glob("a.c", "abc")).toBe(false);
  });
});
