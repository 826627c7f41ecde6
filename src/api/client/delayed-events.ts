// Delayed events (MSC4140, unstable prefix org.matrix.msc4140), in the form Element Call and
// Synapse use:
//   PUT /rooms/{roomId}/send/{type}/{txnId}?org.matrix.msc4140.delay=<ms>   → {"delay_id"}
//   PUT /rooms/{roomId}/state/{type}/{stateKey}?org.matrix.msc4140.delay=<ms> → {"delay_id"}
//   GET  /_matrix/client/unstable/org.matrix.msc4140/delayed_events            → {"delayed_events": [...]}
//   POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{id}       {"action": restart|cancel|send} (authenticated)
//   POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{id}/{action} (unauthenticated: the
//        delay_id is the capability, so an SFU can be given it; MSC4140 "Delegating delayed events")
// Storage and timing: durable-objects/delayed-events.ts (one DelayedEventsDO per user).
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import type { Env } from "../../env";
import type { Config } from "../../config";
import { MatrixError, invalidParam, notFound } from "../errors";
import { requireAuth } from "../middleware/auth";
import { LIMITS, rateLimit } from "../middleware/rate-limit";
import { parseBody } from "../validate";
import type { JsonObject } from "../../core/types";
import { MAX_DELAY_MS, ownerOfDelayId, type DelayedResult } from "../../rpc/delayed-events";
import { delayedStub } from "../../rpc/stubs";

export const DELAY_PARAM = "org.matrix.msc4140.delay";


function unwrapDelayed<T>(c: Context<AppEnv>, r: DelayedResult<T>): T {
  if (r.ok) return r.value;
  const extra: Record<string, unknown> = {};
  if (r.retryAfterMs !== undefined) {
    extra.retry_after_ms = r.retryAfterMs;
    c.header("Retry-After", String(Math.ceil(r.retryAfterMs / 1000)));
  }
  throw new MatrixError(r.status as 400, r.errcode, r.error, extra);
}

/** For /send and /state: when `?org.matrix.msc4140.delay` is present, schedule instead of
 *  sending and return the response; otherwise undefined (send as usual). */
export async function maybeScheduleDelayed(
  c: Context<AppEnv>,
  spec: { roomId: string; type: string; stateKey?: string; content: JsonObject; txnId?: string },
): Promise<Response | undefined> {
  const raw = c.req.query(DELAY_PARAM);
  if (raw === undefined) return undefined;
  if (!/^[0-9]{1,15}$/.test(raw) || Number(raw) <= 0) throw invalidParam(`${DELAY_PARAM} must be a positive integer number of milliseconds`);
  const delay = Number(raw);
  if (delay > MAX_DELAY_MS) {
    throw new MatrixError(400, "M_MAX_DELAY_EXCEEDED", "The requested delay exceeds the allowed maximum.", { max_delay: MAX_DELAY_MS });
  }
  const { userId, deviceId } = c.var.auth;
  const r = await delayedStub(c.env, c.var.config, userId).schedule(userId, {
    roomId: spec.roomId,
    type: spec.type,
    ...(spec.stateKey !== undefined ? { stateKey: spec.stateKey } : {}),
    content: spec.content,
    delay,
    ...(spec.txnId !== undefined ? { txn: `${deviceId}\n${spec.txnId}` } : {}),
  });
  return c.json({ delay_id: unwrapDelayed(c, r).delayId });
}

export const delayedEvents = new Hono<AppEnv>();

const ACTIONS = ["restart", "cancel", "send"] as const;

delayedEvents.get("/delayed_events", requireAuth, async (c) => {
  return c.json({ delayed_events: await delayedStub(c.env, c.var.config, c.var.auth.userId).list() });
});

async function update(c: Context<AppEnv>, delayId: string, action: (typeof ACTIONS)[number], requester?: string) {
  const owner = ownerOfDelayId(delayId);
  if (!owner || (requester !== undefined && owner !== requester)) throw notFound("No such delayed event");
  // MSC4140: management calls SHOULD be rate-limited (resource exhaustion; `send` also floods the
  // room). Counted per owner, with the owner's send budget.
  await rateLimit(c, "delayed", owner, LIMITS.sendPerUser);
  unwrapDelayed(c, await delayedStub(c.env, c.var.config, owner).update(delayId, action));
  return c.json({});
}

delayedEvents.post("/delayed_events/:delayId", requireAuth, async (c) => {
  const b = await parseBody(c, z.object({ action: z.enum(ACTIONS) }));
  return update(c, c.req.param("delayId"), b.action, c.var.auth.userId);
});

delayedEvents.post("/delayed_events/:delayId/:action", async (c) => {
  const action = c.req.param("action") as (typeof ACTIONS)[number];
  if (!ACTIONS.includes(action)) throw new MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request");
  return update(c, c.req.param("delayId"), action);
});
