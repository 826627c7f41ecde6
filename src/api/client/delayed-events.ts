// Delayed events (MSC4140, unstable prefix org.matrix.msc4140). Three generations of the MSC are
// in use, and each form is served:
//   PUT /rooms/{roomId}/send/{type}/{txnId}?org.matrix.msc4140.delay=<ms>     → {"delay_id"}
//   PUT /rooms/{roomId}/state/{type}/{stateKey}?org.matrix.msc4140.delay=<ms> → {"delay_id"}
//       (Synapse's and matrix-js-sdk 43's form; too long a delay: 400 M_MAX_DELAY_EXCEEDED)
//   PUT /_matrix/client/unstable/org.matrix.msc4140/rooms/{roomId}/delayed_event/{type}/{txnId}
//       {"delay_ms", "state_key"?, "content"} → {"delay_id"} (the MSC's current form; too long a
//       delay: 403 M_FORBIDDEN, as it says)
//   GET  .../delayed_events                     → {"delayed_events": [...]} (Synapse, current MSC),
//        plus "scheduled" and "finalised" (matrix-js-sdk 43), filtered by ?status= and ?delay_id=
//   GET  .../delayed_events/{id}                → one, scheduled or finalised (current MSC)
//   POST .../delayed_events/{id}                {"action": restart|cancel|send} (authenticated)
//   POST .../delayed_events/{id}/{action}       current MSC: authenticated, and then only the
//        owner's; without a token the delay_id is the capability (the earlier revision's
//        delegation to an SFU, which Synapse still serves)
// Storage and timing: durable-objects/delayed-events.ts (one DelayedEventsDO per user).
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import type { Env } from "../../env";
import type { Config } from "../../config";
import { MatrixError, invalidParam, notFound } from "../errors";
import { authenticate, extractAccessToken, requireAuth } from "../middleware/auth";
import { LIMITS, rateLimit } from "../middleware/rate-limit";
import { parseBody } from "../validate";
import type { JsonObject } from "../../core/types";
import { MAX_DELAY_MS, MAX_SCHEDULED, ownerOfDelayId, type DelayedEventItem, type DelayedEventSpec, type DelayedResult } from "../../rpc/delayed-events";
import { knownRoom } from "../../services/rooms";
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
  if (c.req.query(PARENT_PARAM) !== undefined) {
    // An earlier revision's grouping of delayed events; never in Synapse. Refused rather than
    // sending the event at once.
    throw invalidParam(`${PARENT_PARAM} is not supported`);
  }
  if (raw === undefined) return undefined;
  if (!/^[0-9]{1,15}$/.test(raw) || Number(raw) <= 0) throw invalidParam(`${DELAY_PARAM} must be a positive integer number of milliseconds`);
  const delay = Number(raw);
  if (delay > MAX_DELAY_MS) {
    throw new MatrixError(400, "M_MAX_DELAY_EXCEEDED", "The requested delay exceeds the allowed maximum.", { max_delay: MAX_DELAY_MS });
  }
  return c.json({ delay_id: await schedule(c, { ...spec, delay, ...(spec.txnId !== undefined ? { txn: `${c.var.auth.deviceId}\n${spec.txnId}` } : {}) }) });
}

async function schedule(c: Context<AppEnv>, spec: Omit<DelayedEventSpec, "txn"> & { txn?: string }): Promise<string> {
  // Membership changes go through /join, /leave, /invite, ..., which check what the auth rules
  // cannot (events.ts requireSameMembership): not as a delayed state event.
  if (spec.type === "m.room.member" && spec.stateKey !== undefined) throw new MatrixError(403, "M_FORBIDDEN", "Membership cannot be changed by a delayed event");
  const { userId } = c.var.auth;
  const r = await delayedStub(c.env, c.var.config, userId).schedule(userId, {
    roomId: spec.roomId,
    type: spec.type,
    ...(spec.stateKey !== undefined ? { stateKey: spec.stateKey } : {}),
    content: spec.content,
    delay: spec.delay,
    ...(spec.txn !== undefined ? { txn: spec.txn } : {}),
  });
  return unwrapDelayed(c, r).delayId;
}

export const PARENT_PARAM = "org.matrix.msc4140.parent_delay_id";

/** The m.delayed_events capability (unstable name), with this server's limits. */
export const DELAYED_EVENTS_CAPABILITY = { "org.matrix.msc4140.delayed_events": { max_delay_ms: MAX_DELAY_MS, max_scheduled: MAX_SCHEDULED } };

export const delayedEvents = new Hono<AppEnv>();

const ACTIONS = ["restart", "cancel", "send"] as const;

// The MSC's current scheduling form.
const scheduleBody = z.object({
  delay_ms: z.number().int().positive(),
  state_key: z.string().optional(),
  content: z.record(z.string(), z.unknown()),
});

delayedEvents.put("/rooms/:roomId/delayed_event/:eventType/:txnId", requireAuth, async (c) => {
  const roomId = c.req.param("roomId");
  const b = await parseBody(c, scheduleBody);
  if (b.delay_ms > MAX_DELAY_MS) throw new MatrixError(403, "M_FORBIDDEN", `The requested delay exceeds the allowed maximum of ${MAX_DELAY_MS} ms.`);
  await knownRoom(c.env, roomId);
  if (c.var.auth.isGuest && b.state_key !== undefined && c.req.param("eventType") === "m.room.member") {
    throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot send m.room.member events");
  }
  const delayId = await schedule(c, {
    roomId,
    type: c.req.param("eventType"),
    ...(b.state_key !== undefined ? { stateKey: b.state_key } : {}),
    content: b.content as JsonObject,
    delay: b.delay_ms,
    // Its own transaction scope (not the one of /send?delay).
    txn: `delayed_event\n${c.var.auth.deviceId}\n${c.req.param("txnId")}`,
  });
  return c.json({ delay_id: delayId });
});

delayedEvents.get("/delayed_events", requireAuth, async (c) => {
  const stub = delayedStub(c.env, c.var.config, c.var.auth.userId);
  const status = c.req.query("status");
  if (status !== undefined && status !== "scheduled" && status !== "finalised") throw invalidParam("status must be scheduled or finalised");
  const only = c.req.query("delay_id");
  const scheduled = status === "finalised" ? [] : (await stub.list()).filter((e) => only === undefined || e.delay_id === only);
  const finalised = status === "scheduled" ? [] : (await stub.listFinalised()).filter((e) => only === undefined || e.delayed_event.delay_id === only);
  // `delayed_events`: Synapse and the current MSC; `scheduled` / `finalised`: the revision
  // matrix-js-sdk 43 reads (its finalised entries carry origin_server_ts = when finalised).
  return c.json({
    delayed_events: scheduled,
    scheduled,
    finalised: finalised.map(({ finalised_ts, ...f }) => ({ ...f, origin_server_ts: finalised_ts })),
  });
});

delayedEvents.get("/delayed_events/:delayId", requireAuth, async (c) => {
  const delayId = c.req.param("delayId");
  const owner = ownerOfDelayId(delayId);
  const found = owner === c.var.auth.userId ? await delayedStub(c.env, c.var.config, owner).get(delayId) : undefined;
  if (!found) throw notFound("No such delayed event");
  const f = found.finalised;
  const out: DelayedEventItem & JsonObject = { ...found.item } as DelayedEventItem & JsonObject;
  if (f) {
    out.finalised_ts = f.finalised_ts;
    if (f.event_id) out.event_id = f.event_id;
    if (f.error) out.error = f.error;
  }
  return c.json(out);
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
  // With a token: the owner's only (current MSC). Without: the delay_id is the capability.
  const requester = extractAccessToken(c) ? (await authenticate(c)).userId : undefined;
  return update(c, c.req.param("delayId"), action, requester);
});
