// Push rules (spec: Client-Server API, module "Push Notifications" → "Push Rules", "Predefined
// Rules"), pure: the server-default ruleset, the user's ruleset merged over it, and evaluation of
// one event for one recipient. The UserDO evaluates every event fanned out to it at commit time
// and keeps notification/highlight counts from the resulting actions.
import type { JsonObject, JsonValue } from "./types";
import { globMatches } from "./glob";

export type PushKind = "override" | "content" | "room" | "sender" | "underride";
export const PUSH_KINDS: PushKind[] = ["override", "content", "room", "sender", "underride"];
/** MSC4306 (thread subscriptions) adds the kind `postcontent`, evaluated between `content` and
 *  `room`. It holds only the server-default rules: clients may not add rules to it. Present in a
 *  ruleset only when thread subscriptions are on (THREAD_SUBSCRIPTIONS). */
export type RuleKind = PushKind | "postcontent";
export const EVALUATION_ORDER: RuleKind[] = ["override", "content", "postcontent", "room", "sender", "underride"];
/** MSC4306's push condition kind, under its unstable name. */
export const THREAD_SUBSCRIPTION_CONDITION = "io.element.msc4306.thread_subscription";

export type PushCondition =
  | { kind: "event_match"; key: string; pattern: string }
  | { kind: "event_property_is"; key: string; value: JsonValue }
  | { kind: "event_property_contains"; key: string; value: JsonValue }
  | { kind: "contains_display_name" }
  | { kind: "room_member_count"; is: string }
  | { kind: "sender_notification_permission"; key: string }
  | { kind: typeof THREAD_SUBSCRIPTION_CONDITION; subscribed: boolean }
  | { kind: string; [k: string]: unknown };

export type PushAction = string | { set_tweak: string; value?: JsonValue };

export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: PushAction[];
  conditions?: PushCondition[];
  pattern?: string;
}

export type Ruleset = Record<PushKind, PushRule[]> & { postcontent?: PushRule[] };

/** Which optional parts of the default ruleset are on. */
export interface RuleOptions {
  /** MSC4306 thread subscriptions: the `postcontent` kind and its two rules. */
  threadSubscriptions?: boolean;
}

/** The server-default rules ("Predefined Rules", v1.17: the legacy body-matching rules are gone).
 *  `.m.rule.master` is kept first and always outranks user rules. */
export function defaultRules(userId: string, opts: RuleOptions = {}): Ruleset {
  const notifySound = (sound: string): PushAction[] => ["notify", { set_tweak: "sound", value: sound }];
  const r = (rule_id: string, conditions: PushCondition[], actions: PushAction[], enabled = true): PushRule => ({
    rule_id,
    default: true,
    enabled,
    conditions,
    actions,
  });
  const match = (key: string, pattern: string): PushCondition => ({ kind: "event_match", key, pattern });
  return {
    override: [
      r(".m.rule.master", [], [], false),
      r(".m.rule.suppress_notices", [match("content.msgtype", "m.notice")], []),
      r(".m.rule.invite_for_me", [match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userId)], notifySound("default")),
      r(".m.rule.member_event", [match("type", "m.room.member")], []),
      r(
        ".m.rule.is_user_mention",
        [{ kind: "event_property_contains", key: "content.m\\.mentions.user_ids", value: userId }],
        [...notifySound("default"), { set_tweak: "highlight" }],
      ),
      r(
        ".m.rule.is_room_mention",
        [
          { kind: "event_property_is", key: "content.m\\.mentions.room", value: true },
          { kind: "sender_notification_permission", key: "room" },
        ],
        ["notify", { set_tweak: "highlight" }],
      ),
      r(".m.rule.tombstone", [match("type", "m.room.tombstone"), match("state_key", "")], ["notify", { set_tweak: "highlight" }]),
      r(".m.rule.reaction", [match("type", "m.reaction")], []),
      r(".m.rule.room.server_acl", [match("type", "m.room.server_acl"), match("state_key", "")], []),
      r(".m.rule.suppress_edits", [{ kind: "event_property_is", key: "content.m\\.relates_to.rel_type", value: "m.replace" }], []),
    ],
    content: [],
    room: [],
    sender: [],
    underride: [
      r(".m.rule.call", [match("type", "m.call.invite")], notifySound("ring")),
      r(".m.rule.encrypted_room_one_to_one", [{ kind: "room_member_count", is: "2" }, match("type", "m.room.encrypted")], notifySound("default")),
      r(".m.rule.room_one_to_one", [{ kind: "room_member_count", is: "2" }, match("type", "m.room.message")], notifySound("default")),
      r(".m.rule.message", [match("type", "m.room.message")], ["notify"]),
      r(".m.rule.encrypted", [match("type", "m.room.encrypted")], ["notify"]),
    ],
    // MSC4306 "New Push Rules": after the content rules (keyword mentions still notify and so
    // still cause automatic subscriptions), before the room rules (a muted room's subscribed
    // threads still notify). Unsubscribed thread events stop here without notifying.
    ...(opts.threadSubscriptions
      ? {
          postcontent: [
            r(".io.element.msc4306.rule.unsubscribed_thread", [{ kind: THREAD_SUBSCRIPTION_CONDITION, subscribed: false }], []),
            r(".io.element.msc4306.rule.subscribed_thread", [{ kind: THREAD_SUBSCRIPTION_CONDITION, subscribed: true }], notifySound("default")),
          ],
        }
      : {}),
  };
}

/** What the user changed: their own rules per kind (in priority order), and overrides of the
 *  `enabled` flag / `actions` of server-default rules. Stored as JSON in the UserDO. */
export interface UserPushRules {
  rules: Record<PushKind, PushRule[]>;
  defaults: Record<string, { enabled?: boolean; actions?: PushAction[] }>;
}

export function emptyUserRules(): UserPushRules {
  return { rules: { override: [], content: [], room: [], sender: [], underride: [] }, defaults: {} };
}

/** The effective ruleset (GET /pushrules/): per kind, `.m.rule.master` first, then user-defined
 *  rules, then the remaining server-default rules ("server-default rules ... operate at a lower
 *  priority than user-defined rules, except for .m.rule.master"). */
export function effectiveRules(userId: string, user: UserPushRules, opts: RuleOptions = {}): Ruleset {
  const d = defaultRules(userId, opts);
  const out = {} as Ruleset;
  for (const kind of EVALUATION_ORDER) {
    const base = d[kind];
    if (!base) continue;
    const defaults = base.map((rule) => {
      const o = user.defaults[rule.rule_id];
      return o ? { ...rule, ...(o.enabled !== undefined ? { enabled: o.enabled } : {}), ...(o.actions ? { actions: o.actions } : {}) } : rule;
    });
    const master = defaults.filter((r) => r.rule_id === ".m.rule.master");
    const rest = defaults.filter((r) => r.rule_id !== ".m.rule.master");
    out[kind] = kind === "postcontent" ? rest : [...master, ...(user.rules[kind] ?? []), ...rest];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

/** What a condition may consult besides the event. */
export interface PushContext {
  userId: string;
  /** The recipient's display name in the room (for contains_display_name). */
  displayName?: string;
  /** Number of joined members (room_member_count). */
  memberCount: number;
  /** The sender's power level and the room's m.room.power_levels content, if any. */
  senderPowerLevel: number;
  powerLevels?: JsonObject;
  /** MSC4306: for an event in a thread, whether the recipient is subscribed to that thread;
   *  undefined for an event in no thread. */
  threadSubscribed?: boolean;
}

/** "Dot-separated property paths": `.` separates, `\.` is a literal dot, `\\` a backslash. */
export function splitPath(key: string): string[] {
  const parts: string[] = [];
  let cur = "";
  for (let i = 0; i < key.length; i++) {
    const ch = key[i];
    if (ch === "\\" && (key[i + 1] === "." || key[i + 1] === "\\")) {
      cur += key[++i];
    } else if (ch === ".") {
      parts.push(cur);
      cur = "";
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}

function lookup(ev: JsonObject, key: string): JsonValue | undefined {
  let cur: JsonValue | undefined = ev;
  for (const p of splitPath(key)) {
    if (cur === null || typeof cur !== "object" || Array.isArray(cur) || !Object.hasOwn(cur, p)) return undefined;
    cur = (cur as JsonObject)[p];
  }
  return cur;
}

const isScalar = (v: unknown): v is string | number | boolean | null =>
  v === null || typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER);

/** The power level the `notifications` key requires (m.room.power_levels: room defaults to 50). */
export function notificationPowerLevel(pl: JsonObject | undefined, key: string): number {
  const n = (pl?.notifications as JsonObject | undefined)?.[key];
  if (typeof n === "number") return n;
  if (typeof n === "string" && /^-?\d+$/.test(n)) return Number(n);
  return 50;
}

export function conditionMatches(c: PushCondition, ev: JsonObject, ctx: PushContext): boolean {
  switch (c.kind) {
    case "event_match": {
      const { key, pattern } = c as { key?: unknown; pattern?: unknown };
      if (typeof key !== "string" || typeof pattern !== "string") return false;
      const v = lookup(ev, key);
      // "If the property ... is completely absent ..., or does not have a string value, then the
      // condition will not match, even if pattern is *."
      if (typeof v !== "string") return false;
      // content.body: "must match any substring ... which starts and ends at a word boundary".
      return globMatches(pattern, v, { ignoreCase: true, wordBoundary: key === "content.body" });
    }
    case "event_property_is": {
      const { key, value } = c as { key?: unknown; value?: unknown };
      if (typeof key !== "string" || !isScalar(value)) return false;
      const v = lookup(ev, key);
      return isScalar(v) && v === value;
    }
    case "event_property_contains": {
      const { key, value } = c as { key?: unknown; value?: unknown };
      if (typeof key !== "string" || !isScalar(value)) return false;
      const v = lookup(ev, key);
      return Array.isArray(v) && v.some((x) => isScalar(x) && x === value);
    }
    case "contains_display_name": {
      const body = (ev.content as JsonObject | undefined)?.body;
      if (typeof body !== "string" || !ctx.displayName) return false;
      // A literal, whole-word, case-insensitive match (display names may contain `*` or `?`).
      return wordContains(body, ctx.displayName);
    }
    case "room_member_count": {
      const is = (c as { is?: unknown }).is;
      if (typeof is !== "string") return false;
      const m = /^(==|<=|>=|<|>)?(\d+)$/.exec(is);
      if (!m) return false;
      const n = Number(m[2]);
      const count = ctx.memberCount;
      switch (m[1] ?? "==") {
        case "==":
          return count === n;
        case "<":
          return count < n;
        case ">":
          return count > n;
        case "<=":
          return count <= n;
        case ">=":
          return count >= n;
      }
      return false;
    }
    case "sender_notification_permission": {
      const key = (c as { key?: unknown }).key;
      if (typeof key !== "string") return false;
      return ctx.senderPowerLevel >= notificationPowerLevel(ctx.powerLevels, key);
    }
    case THREAD_SUBSCRIPTION_CONDITION: {
      // MSC4306: holds iff the event is part of a thread and the recipient's subscription to it
      // is `subscribed`.
      const subscribed = (c as { subscribed?: unknown }).subscribed;
      if (typeof subscribed !== "boolean" || ctx.threadSubscribed === undefined) return false;
      return ctx.threadSubscribed === subscribed;
    }
    default:
      // "Unrecognised conditions MUST NOT match any events."
      return false;
  }
}

/** Case-insensitive whole-word containment of a literal (display names may contain glob chars). */
function wordContains(body: string, needle: string): boolean {
  const b = body.toLowerCase();
  const n = needle.toLowerCase();
  let i = b.indexOf(n);
  const word = (ch: string | undefined) => ch !== undefined && /[A-Za-z0-9_]/.test(ch);
  while (i >= 0) {
    if (!word(b[i - 1]) && !word(b[i + n.length])) return true;
    i = b.indexOf(n, i + 1);
  }
  return false;
}

function ruleMatches(kind: RuleKind, rule: PushRule, ev: JsonObject, ctx: PushContext): boolean {
  if (!rule.enabled) return false;
  switch (kind) {
    case "override":
    case "postcontent":
    case "underride":
      return (rule.conditions ?? []).every((c) => conditionMatches(c, ev, ctx));
    case "content":
      return typeof rule.pattern === "string" && conditionMatches({ kind: "event_match", key: "content.body", pattern: rule.pattern }, ev, ctx);
    case "room":
      return ev.room_id === rule.rule_id;
    case "sender":
      return ev.sender === rule.rule_id;
  }
}

export interface PushOutcome {
  /** The matching rule, if any. */
  ruleId?: string;
  /** Actions with the historical `dont_notify` / `coalesce` stripped. */
  actions: PushAction[];
  notify: boolean;
  highlight: boolean;
}

/** Evaluate the ruleset for one event and one recipient: the first matching rule (kinds in
 *  priority order) decides. "Homeservers MUST NOT notify ... for events that the user has sent
 *  themselves." */
export function evaluatePushRules(rules: Ruleset, ev: JsonObject, ctx: PushContext): PushOutcome {
  if (ev.sender === ctx.userId) return { actions: [], notify: false, highlight: false };
  for (const kind of EVALUATION_ORDER) {
    for (const rule of rules[kind] ?? []) {
      if (!ruleMatches(kind, rule, ev, ctx)) continue;
      const actions = rule.actions.filter((a) => a !== "dont_notify" && a !== "coalesce");
      return { ruleId: rule.rule_id, actions, notify: actions.includes("notify"), highlight: highlightOf(actions) };
    }
  }
  return { actions: [], notify: false, highlight: false };
}

/** "If a highlight tweak is given with no value, its value is defined to be true." */
function highlightOf(actions: PushAction[]): boolean {
  for (const a of actions) {
    if (typeof a === "object" && a.set_tweak === "highlight") return a.value === undefined ? true : a.value === true;
  }
  return false;
}

/** Validate user-supplied actions (PUT .../actions and rule bodies). */
export function validActions(actions: unknown): actions is PushAction[] {
  if (!Array.isArray(actions)) return false;
  return actions.every(
    (a) =>
      a === "notify" ||
      a === "dont_notify" ||
      a === "coalesce" ||
      (typeof a === "object" && a !== null && !Array.isArray(a) && typeof (a as { set_tweak?: unknown }).set_tweak === "string"),
  );
}
