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

// MSC4306 thread subscriptions: the io.element.msc4306.thread_subscription condition and the
// postcontent rules (on only with THREAD_SUBSCRIPTIONS).
describe("thread subscriptions (MSC4306)", () => {
  const cond = (subscribed: unknown) => ({ kind: "io.element.msc4306.thread_subscription", subscribed });
  const reply = msg({ body: "in thread", "m.relates_to": { rel_type: "m.thread", event_id: "$root" } });
  const mainline = msg({ body: "hello" });

  it("the condition holds only for an event in a thread with the recipient's subscription state as asked", () => {
    expect(conditionMatches(cond(true), reply as never, ctx({ threadSubscribed: true }))).toBe(true);
    expect(conditionMatches(cond(false), reply as never, ctx({ threadSubscribed: true }))).toBe(false);
    expect(conditionMatches(cond(false), reply as never, ctx({ threadSubscribed: false }))).toBe(true);
    expect(conditionMatches(cond(true), reply as never, ctx({ threadSubscribed: false }))).toBe(false);
    // Not in a thread: neither.
    expect(conditionMatches(cond(true), mainline as never, ctx())).toBe(false);
    expect(conditionMatches(cond(false), mainline as never, ctx())).toBe(false);
    // A malformed `subscribed` never matches.
    for (const bad of [undefined, "true", 1, null]) expect(conditionMatches(cond(bad), reply as never, ctx({ threadSubscribed: true }))).toBe(false);
  });

  it("postcontent exists only when on, between content and room", () => {
    expect(defaultRules(ME).postcontent).toBeUndefined();
    expect(effectiveRules(ME, emptyUserRules()).postcontent).toBeUndefined();
    const on = effectiveRules(ME, emptyUserRules(), { threadSubscriptions: true });
    expect(Object.keys(on)).toEqual(["override", "content", "postcontent", "room", "sender", "underride"]);
    expect(on.postcontent!.map((r) => r.rule_id)).toEqual([".io.element.msc4306.rule.unsubscribed_thread", ".io.element.msc4306.rule.subscribed_thread"]);
  });

  it("unsubscribed threads stay quiet, subscribed ones notify over a muted room; mentions and keywords still notify", () => {
    const user = emptyUserRules();
    // The room is muted (a room rule without actions) and the user has a keyword.
    user.rules.room.push({ rule_id: "!r:example.org", default: false, enabled: true, actions: [] });
    user.rules.content.push({ rule_id: "kw", default: false, enabled: true, actions: ["notify", { set_tweak: "highlight" }], pattern: "cake" });
    const on = effectiveRules(ME, user, { threadSubscriptions: true });
    const run = (ev: Record<string, unknown>, sub?: boolean) => evaluatePushRules(on, ev as never, ctx({ threadSubscribed: sub }));
    expect(run(reply, false)).toMatchObject({ ruleId: ".io.element.msc4306.rule.unsubscribed_thread", notify: false });
    expect(run(reply, true)).toMatchObject({ ruleId: ".io.element.msc4306.rule.subscribed_thread", notify: true, highlight: false });
    // Main timeline: the muted room decides, as before.
    expect(run(mainline)).toMatchObject({ ruleId: "!r:example.org", notify: false });
    // A mention (override) and a keyword (content) come first.
    const mention = msg({ body: "hi", "m.relates_to": { rel_type: "m.thread", event_id: "$root" }, "m.mentions": { user_ids: [ME] } });
    expect(run(mention, false)).toMatchObject({ ruleId: ".m.rule.is_user_mention", notify: true, highlight: true });
    const keyword = msg({ body: "any cake?", "m.relates_to": { rel_type: "m.thread", event_id: "$root" } });
    expect(run(keyword, false)).toMatchObject({ ruleId: "kw", notify: true });
    // Off: thread replies follow the room's rules as before.
    const off = effectiveRules(ME, emptyUserRules());
    expect(evaluatePushRules(off, reply as never, ctx({ threadSubscribed: false }))).toMatchObject({ ruleId: ".m.rule.message", notify: true });
  });
});
