// The user's settings kept in the hub: account data (global and per room), filters
// (POST /user/{userId}/filter), push rules (module "Push Notifications" → "Push Rules: API")
// with the notifications list they produce (GET /notifications), and the ignore list read from
// m.ignored_user_list (module "Ignoring Users").
import type { JsonObject, JsonValue } from "../../src/core/types";
import { effectiveRules, emptyUserRules, defaultRules, type PushAction, type PushKind, type PushRule, type Ruleset, type RuleOptions, type RuleKind, type UserPushRules } from "../../src/core/push-rules";
import type { HubResult, NotificationRow } from "../../src/rpc/user";

/** What the settings module needs from the hub. */
export interface SettingsAccess {
  sql: SqlStorage;
  transaction<T>(fn: () => T): T;
  next(): number;
  wake(): void;
  logRoom(upos: number, roomId: string, stream: number | null): void;
  setMeta(key: string, value: string | number): void;
  getMeta(key: string): string | undefined;
  /** The hub's user (known once any RPC named them). */
  userId(): string;
  /** Optional parts of the default ruleset (THREAD_SUBSCRIPTIONS: MSC4306's postcontent rules). */
  ruleOptions(): RuleOptions;
}

export class Settings {
  private rules?: Ruleset;

  constructor(private a: SettingsAccess) {}

  // -------------------------------------------------------------------------------------------
  // Account data and filters.

  setAccountData(roomId: string | null, type: string, content: JsonObject): void {
    // (Dropped before and after: a rolled-back write leaves nothing cached.)
    if (!roomId && type === "m.ignored_user_list") this.ignoring = undefined;
    this.a.transaction(() => {
      const upos = this.a.next();
      this.a.sql.exec(
        "INSERT INTO account_data (room_id, type, content, upos) VALUES (?, ?, ?, ?) ON CONFLICT(room_id, type) DO UPDATE SET content = excluded.content, upos = excluded.upos",
        roomId ?? "",
        type,
        JSON.stringify(content),
        upos,
      );
      if (roomId) this.a.logRoom(upos, roomId, null);
    });
    if (!roomId && type === "m.ignored_user_list") this.ignoring = undefined;
    this.a.wake();
  }

  getAccountData(roomId: string | null, type: string): JsonObject | null {
    const row = this.a.sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = ? AND type = ?", roomId ?? "", type).toArray()[0];
    return row ? (JSON.parse(row.content) as JsonObject) : null;
  }

  /** Account data of `roomId` ('' = global) that changed in (from, q]. */
  /** Room account data of every room in (from, q], by room, each in accountDataSince's order
   *  (an initial sync: one statement rather than one per room). */
  roomAccountDataByRoom(from: number, q: number): Map<string, JsonObject[]> {
    const out = new Map<string, JsonObject[]>();
    for (const r of this.a.sql.exec<{ room_id: string; type: string; content: string }>(
      "SELECT room_id, type, content FROM account_data WHERE room_id != '' AND upos > ? AND upos <= ? ORDER BY upos",
      from,
      q,
    )) {
      let list = out.get(r.room_id);
      if (!list) out.set(r.room_id, (list = []));
      list.push({ type: r.type, content: JSON.parse(r.content) as JsonObject });
    }
    return out;
  }

  accountDataSince(roomId: string, from: number, q: number): JsonObject[] {
    return this.a.sql
      .exec<{ type: string; content: string }>("SELECT type, content FROM account_data WHERE room_id = ? AND upos > ? AND upos <= ? ORDER BY upos", roomId, from, q)
      .toArray()
      .map((r) => ({ type: r.type, content: JSON.parse(r.content) as JsonObject }));
  }

  createFilter(filter: JsonObject): string {
    const json = JSON.stringify(filter);
    const existing = this.a.sql.exec<{ id: number }>("SELECT id FROM filters WHERE json = ? LIMIT 1", json).toArray()[0];
    if (existing) return String(existing.id);
    return String(this.a.sql.exec<{ id: number }>("INSERT INTO filters (json) VALUES (?) RETURNING id", json).one().id);
  }

  /** The stored filter as JSON text (or null). */
  getFilter(filterId: string): string | null {
    if (!/^\d{1,15}$/.test(filterId)) return null;
    const row = this.a.sql.exec<{ json: string }>("SELECT json FROM filters WHERE id = ?", Number(filterId)).toArray()[0];
    return row ? row.json : null;
  }

  // -------------------------------------------------------------------------------------------
  // Ignoring users.

  /** The users in my m.ignored_user_list. */
  ignoredUsers(): string[] {
    const list = this.ignoreList();
    return list ? Object.keys(list) : [];
  }

  /** Whether `userId` is in my m.ignored_user_list. */
  ignores(userId: string): boolean {
    const list = this.ignoreList();
    return !!list && typeof list === "object" && !Array.isArray(list) && Object.hasOwn(list, userId);
  }

  /** m.ignored_user_list's ignored_users as stored (null: none), read once: every room notice
   *  asks (setAccountData drops it). */
  private ignoring?: { list: JsonObject | undefined };

  private ignoreList(): JsonObject | undefined {
    if (this.ignoring) return this.ignoring.list;
    const row = this.a.sql.exec<{ content: string }>("SELECT content FROM account_data WHERE room_id = '' AND type = 'm.ignored_user_list'").toArray()[0];
    const list = row ? ((JSON.parse(row.content) as JsonObject).ignored_users as JsonObject | undefined) : undefined;
    this.ignoring = { list };
    return list;
  }

  /** The account was deactivated: its account data (global and per room, with the ignore list)
   *  and its own push rules go, as Synapse purges them; spec: erasure should remove "non-event
   *  data associated with the user, such as account data", and a deactivated account cannot
   *  read any of it again. */
  purge(): void {
    this.a.transaction(() => {
      this.a.sql.exec("DELETE FROM account_data");
      this.a.sql.exec("DELETE FROM meta WHERE key = 'push_rules'");
    });
    this.ignoring = undefined;
    this.rules = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Push rules.

  private userRules(): UserPushRules {
    const value = this.a.getMeta("push_rules");
    return value ? (JSON.parse(value) as UserPushRules) : emptyUserRules();
  }

  /** The effective ruleset (server defaults with the user's rules and changes). */
  ruleset(): Ruleset {
    if (!this.rules) this.rules = effectiveRules(this.a.userId(), this.userRules(), this.a.ruleOptions());
    return this.rules;
  }

  private saveRules(u: UserPushRules): void {
    this.a.setMeta("push_rules", JSON.stringify(u));
    this.rules = undefined;
    this.setAccountDataInternal("m.push_rules", { global: this.ruleset() as unknown as JsonValue } as JsonObject);
  }

  /** "m.push_rules" account data mirrors the ruleset so clients see changes through sync. */
  private setAccountDataInternal(type: string, content: JsonObject): void {
    const upos = this.a.next();
    this.a.sql.exec(
      "INSERT INTO account_data (room_id, type, content, upos) VALUES ('', ?, ?, ?) ON CONFLICT(room_id, type) DO UPDATE SET content = excluded.content, upos = excluded.upos",
      type,
      JSON.stringify(content),
      upos,
    );
    this.a.wake();
  }

  putPushRule(
    kind: PushKind,
    ruleId: string,
    body: { actions: PushAction[]; conditions?: JsonObject[]; pattern?: string },
    placement: { before?: string; after?: string },
  ): HubResult<null> {
    if (ruleId.startsWith(".")) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "Server-default rules cannot be replaced" };
    const u = this.userRules();
    const list = u.rules[kind].filter((r) => r.rule_id !== ruleId);
    const old = u.rules[kind].find((r) => r.rule_id === ruleId);
    const rule: PushRule = { rule_id: ruleId, default: false, enabled: old?.enabled ?? true, actions: body.actions };
    if (kind === "override" || kind === "underride") rule.conditions = (body.conditions ?? []) as unknown as PushRule["conditions"];
    if (kind === "content") {
      if (typeof body.pattern !== "string") return { ok: false, status: 400, errcode: "M_MISSING_PARAM", error: "Content rules need a pattern" };
      rule.pattern = body.pattern;
    }
    const anchor = placement.before ?? placement.after;
    let at = placement.before || placement.after ? -1 : (u.rules[kind].findIndex((r) => r.rule_id === ruleId) === -1 ? 0 : u.rules[kind].findIndex((r) => r.rule_id === ruleId));
    if (anchor !== undefined) {
      const i = list.findIndex((r) => r.rule_id === anchor);
      // "before/after ... This must be the ID of an existing rule" of the user's own rules.
      if (i < 0) return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: `No rule ${anchor} to place this rule relative to` };
      at = placement.before !== undefined ? i : i + 1;
    }
    list.splice(Math.min(at, list.length), 0, rule);
    u.rules[kind] = list;
    this.saveRules(u);
    return { ok: true, value: null };
  }

  deletePushRule(userId: string, kind: RuleKind, ruleId: string): HubResult<null> {
    const u = this.userRules();
    if (kind === "postcontent" || !u.rules[kind].some((r) => r.rule_id === ruleId)) {
      if ((defaultRules(userId, this.a.ruleOptions())[kind] ?? []).some((r) => r.rule_id === ruleId)) return { ok: false, status: 400, errcode: "M_INVALID_PARAM", error: "Server-default rules cannot be deleted" };
      return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: "No such push rule" };
    }
    u.rules[kind] = u.rules[kind].filter((r) => r.rule_id !== ruleId);
    this.saveRules(u);
    return { ok: true, value: null };
  }

  /** enabled / actions of a rule (user-defined or server-default). */
  setPushRuleAttr(userId: string, kind: RuleKind, ruleId: string, attr: { enabled?: boolean; actions?: PushAction[] }): HubResult<null> {
    const u = this.userRules();
    // postcontent holds server-default rules only (MSC4306).
    const own = kind === "postcontent" ? undefined : u.rules[kind].find((r) => r.rule_id === ruleId);
    if (own) {
      if (attr.enabled !== undefined) own.enabled = attr.enabled;
      if (attr.actions) own.actions = attr.actions;
    } else if ((defaultRules(userId, this.a.ruleOptions())[kind] ?? []).some((r) => r.rule_id === ruleId)) {
      u.defaults[ruleId] = { ...u.defaults[ruleId], ...attr };
    } else return { ok: false, status: 404, errcode: "M_NOT_FOUND", error: "No such push rule" };
    this.saveRules(u);
    return { ok: true, value: null };
  }

  /** GET /notifications: notifying events, newest first, `from` = an upos to continue below. */
  notifications(q: { from?: number; limit: number; onlyHighlight: boolean }): NotificationRow[] {
    const sql = this.a.sql;
    const rows = sql
      .exec<{ room_id: string; event_id: string; stream: number; ts: number; actions: string; highlight: number; upos: number }>(
        `SELECT room_id, event_id, stream, ts, actions, highlight, upos FROM room_events WHERE notify = 1 AND upos < ? ${q.onlyHighlight ? "AND highlight = 1" : ""}
         ORDER BY upos DESC LIMIT ?`,
        q.from ?? Number.MAX_SAFE_INTEGER,
        q.limit,
      )
      .toArray();
    return rows.map((r) => {
      const mark = sql.exec<{ s: number | null }>("SELECT MAX(stream) AS s FROM read_marks WHERE room_id = ?", r.room_id).one().s ?? -1;
      return { roomId: r.room_id, eventId: r.event_id, stream: r.stream, ts: r.ts, actions: JSON.parse(r.actions), highlight: !!r.highlight, read: r.stream <= mark, upos: r.upos };
    });
  }
}
