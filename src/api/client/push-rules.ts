// Push rules (spec: module "Push Notifications" → "Push Rules: API"; OpenAPI pushrules.yaml) and
// GET /notifications (notifications.yaml). The ruleset lives in the user's hub, which evaluates
// it for every event fanned out to it (src/core/push-rules.ts) and keeps the counts /sync shows.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, badJson, invalidParam, notFound } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody, queryLimit } from "../validate";
import { userStub } from "../../services/notifier";
import { roomStub } from "../../services/rooms";
import { PUSH_KINDS, validActions, type PushAction, type PushKind, type RuleKind } from "../../core/push-rules";
import type { JsonObject } from "../../core/types";
import { MAX_GLOB_LENGTH } from "../../core/glob";
import type { HubResult } from "../../rpc/user";

export const pushRules = new Hono<AppEnv>();

function hubOk<T>(r: HubResult<T>): T {
  if (r.ok) return r.value;
  throw new MatrixError(r.status, r.errcode, r.error);
}

function kindParam(c: Context<AppEnv>): RuleKind {
  if (c.req.param("scope") !== "global") throw invalidParam("Only the global scope exists");
  const kind = c.req.param("kind") as RuleKind;
  // postcontent (MSC4306) exists only with thread subscriptions on.
  if (kind === "postcontent" && c.var.config.threadSubscriptions) return kind;
  if (!PUSH_KINDS.includes(kind as PushKind)) throw invalidParam(`Unknown push rule kind ${kind}`);
  return kind;
}

async function findRule(c: Context<AppEnv>) {
  const kind = kindParam(c);
  const ruleId = c.req.param("ruleId")!;
  const rules = await userStub(c.env, c.var.auth.userId, c.var.config).getPushRules(c.var.auth.userId);
  const rule = (rules[kind] ?? []).find((r) => r.rule_id === ruleId);
  if (!rule) throw notFound("No such push rule");
  return { kind, ruleId, rule };
}

pushRules.get("/pushrules/", requireAuth, async (c) => {
  const rules = await userStub(c.env, c.var.auth.userId, c.var.config).getPushRules(c.var.auth.userId);
  return c.json({ global: rules });
});

pushRules.get("/pushrules/global/", requireAuth, async (c) => {
  return c.json(await userStub(c.env, c.var.auth.userId, c.var.config).getPushRules(c.var.auth.userId));
});

pushRules.get("/pushrules/:scope/:kind/:ruleId", requireAuth, async (c) => c.json((await findRule(c)).rule));

// Patterns are globs the hub runs against every event: bound their length (src/core/glob.ts).
const globPattern = z.string().max(MAX_GLOB_LENGTH);
const ruleBody = z.object({
  actions: z.array(z.unknown()),
  conditions: z.array(z.object({ kind: z.string(), pattern: globPattern.optional() }).loose()).optional(),
  pattern: globPattern.optional(),
});

pushRules.put("/pushrules/:scope/:kind/:ruleId", requireAuth, async (c) => {
  const kind = kindParam(c);
  // MSC4306: "servers MUST ensure that clients MUST NOT be able to create custom rules with
  // this push rule kind ... 400 / M_INVALID_PARAM".
  if (kind === "postcontent") throw invalidParam("Rules cannot be added to the postcontent kind");
  const ruleId = c.req.param("ruleId");
  const b = await parseBody(c, ruleBody);
  if (!validActions(b.actions)) throw badJson("Invalid actions");
  // Room and sender rules are named after the room / user they apply to.
  if (kind === "room" && !ruleId.startsWith("!")) throw invalidParam("Room rules are named after the room ID");
  if (kind === "sender" && !ruleId.startsWith("@")) throw invalidParam("Sender rules are named after the user ID");
  if (ruleId.includes("/") || ruleId.includes("\\")) throw invalidParam("rule_id may not contain / or \\");
  const before = c.req.query("before");
  const after = c.req.query("after");
  hubOk(
    await userStub(c.env, c.var.auth.userId, c.var.config).putPushRule(
      c.var.auth.userId,
      kind,
      ruleId,
      { actions: b.actions as PushAction[], conditions: b.conditions as JsonObject[] | undefined, pattern: b.pattern },
      { before, after },
    ),
  );
  return c.json({});
});

pushRules.delete("/pushrules/:scope/:kind/:ruleId", requireAuth, async (c) => {
  const kind = kindParam(c);
  hubOk(await userStub(c.env, c.var.auth.userId, c.var.config).deletePushRule(c.var.auth.userId, kind, c.req.param("ruleId")));
  return c.json({});
});

pushRules.get("/pushrules/:scope/:kind/:ruleId/enabled", requireAuth, async (c) => c.json({ enabled: (await findRule(c)).rule.enabled }));
pushRules.get("/pushrules/:scope/:kind/:ruleId/actions", requireAuth, async (c) => c.json({ actions: (await findRule(c)).rule.actions }));

pushRules.put("/pushrules/:scope/:kind/:ruleId/enabled", requireAuth, async (c) => {
  const kind = kindParam(c);
  const b = await parseBody(c, z.object({ enabled: z.boolean() }));
  hubOk(await userStub(c.env, c.var.auth.userId, c.var.config).setPushRuleAttr(c.var.auth.userId, kind, c.req.param("ruleId"), { enabled: b.enabled }));
  return c.json({});
});

pushRules.put("/pushrules/:scope/:kind/:ruleId/actions", requireAuth, async (c) => {
  const kind = kindParam(c);
  const b = await parseBody(c, z.object({ actions: z.array(z.unknown()) }));
  if (!validActions(b.actions)) throw badJson("Invalid actions");
  hubOk(await userStub(c.env, c.var.auth.userId, c.var.config).setPushRuleAttr(c.var.auth.userId, kind, c.req.param("ruleId"), { actions: b.actions as PushAction[] }));
  return c.json({});
});

// GET /notifications: "events ... that triggered notifications", newest first.
pushRules.get("/notifications", requireAuth, async (c) => {
  const { userId, deviceId } = c.var.auth;
  const from = c.req.query("from");
  if (from !== undefined && !/^\d{1,15}$/.test(from)) throw invalidParam("Invalid from token");
  const limit = queryLimit(c.req.query("limit"), { dflt: 20, max: 100, min: 1 });
  const rows = await userStub(c.env, userId, c.var.config).notifications(userId, {
    from: from === undefined ? undefined : Number(from),
    limit,
    onlyHighlight: c.req.query("only") === "highlight",
  });
  const notifications = (
    await Promise.all(
      rows.map(async (r) => {
        const ev = await roomStub(c.env, c.var.config, r.roomId).getEventForClient({ userId, deviceId }, r.eventId);
        if (!ev.ok) return null;
        return { actions: r.actions, event: ev.value, read: r.read, room_id: r.roomId, ts: r.ts } as JsonObject;
      }),
    )
  ).filter((n): n is JsonObject => n !== null);
  const res: JsonObject = { notifications };
  if (rows.length === Math.min(limit, 100)) res.next_token = String(rows[rows.length - 1].upos);
  return c.json(res);
});
