// Thread subscriptions (MSC4306, unstable prefix io.element.msc4306), behind
// THREAD_SUBSCRIPTIONS=on (off: these paths answer 404 M_UNRECOGNIZED like any unknown one):
//   GET|PUT|DELETE /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
// The subscriptions live in the user's sync hub (durable-objects/user/thread-subscriptions.ts),
// where the push rules read them; the RoomDO answers whether the user may see the thread root
// and the cause event of an automatic subscription, and where they sit in the room's stream.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam, notFound, unrecognized } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody, queryLimit } from "../validate";
import { knownRoom, roomStub, unwrap } from "../../services/rooms";
import { userStub } from "../../services/notifier";
import { isValidEventId, isValidRoomId } from "../../core/ids";

/** Mounted at /_matrix/client/unstable/io.element.msc4306. */
export const threadSubscriptions = new Hono<AppEnv>();

// MSC4306 "Unstable amendments": the error codes under their unstable names.
const M_CONFLICTING_UNSUBSCRIPTION = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION";
const M_NOT_IN_THREAD = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD";

/** Off (THREAD_SUBSCRIPTIONS unset): both prefixes answer as unknown paths. */
const enabled = async (c: Context<AppEnv>, next: () => Promise<void>) => {
  if (!c.var.config.threadSubscriptions) throw unrecognized();
  await next();
};

threadSubscriptions.use("*", enabled);

/** The room and thread root of the path, checked: the root must exist and be visible to the
 *  user ("If the thread does not exist, or if the user does not have access to it, returns
 *  404/M_NOT_FOUND"). Returns the room's stream position now too. */
async function threadOf(c: Context<AppEnv>) {
  const roomId = c.req.param("roomId")!;
  const rootId = c.req.param("threadRootId")!;
  if (!isValidRoomId(roomId)) throw invalidParam("Invalid room ID");
  if (!isValidEventId(rootId)) throw invalidParam("Invalid event ID");
  await knownRoom(c.env, roomId);
  const room = roomStub(c.env, c.var.config, roomId);
  const req = { userId: c.var.auth.userId, deviceId: c.var.auth.deviceId };
  const root = await room.threadEventInfo(req, rootId);
  if (!root.ok) throw notFound("No such thread root");
  return { roomId, rootId, room, req, roomStream: root.value.roomStream };
}

const SUBSCRIPTION_PATH = "/rooms/:roomId/thread/:threadRootId/subscription";

threadSubscriptions.get(SUBSCRIPTION_PATH, requireAuth, async (c) => {
  const { roomId, rootId } = await threadOf(c);
  const sub = await userStub(c.env, c.var.auth.userId, c.var.config).getThreadSubscription(c.var.auth.userId, roomId, rootId);
  if (!sub) throw notFound("Not subscribed to this thread");
  return c.json({ automatic: sub.automatic });
});

const putBody = z.object({
  // "If the subscription was made automatically by a client, this is the ID of the latest
  // event that caused the automatic subscription. If ... made manually, this field is omitted."
  automatic: z
    .string()
    .refine((id) => isValidEventId(id), "automatic must be an event ID")
    .nullish(),
});

threadSubscriptions.put(SUBSCRIPTION_PATH, requireAuth, async (c) => {
  const body = await parseBody(c, putBody);
  const { roomId, rootId, room, req } = await threadOf(c);
  let causeStream: number | null | undefined;
  if (body.automatic) {
    const cause = unwrap(await room.threadEventInfo(req, body.automatic));
    if (cause.threadRoot !== rootId) throw new MatrixError(400, M_NOT_IN_THREAD, "The cause event is not in this thread");
    causeStream = cause.stream;
  }
  const outcome = await userStub(c.env, c.var.auth.userId, c.var.config).subscribeThread(c.var.auth.userId, roomId, rootId, causeStream);
  // "Server-side automatic subscription ordering": the user unsubscribed after the room had
  // received the cause event, so the automatic subscription is skipped.
  if (outcome === "conflicting_unsubscription") {
    throw new MatrixError(409, M_CONFLICTING_UNSUBSCRIPTION, "Automatic subscription obsoleted by an unsubscription");
  }
  return c.json({});
});

threadSubscriptions.delete(SUBSCRIPTION_PATH, requireAuth, async (c) => {
  const { roomId, rootId, roomStream } = await threadOf(c);
  await userStub(c.env, c.var.auth.userId, c.var.config).unsubscribeThread(c.var.auth.userId, roomId, rootId, roomStream);
  return c.json({});
});

/** MSC4308's companion endpoint, mounted at /_matrix/client/unstable/io.element.msc4308:
 *  GET /thread_subscriptions?dir=b[&from][&to][&limit] pages back through the user's thread
 *  subscription changes (from a sliding-sync `prev_batch`, or from now). */
export const threadSubscriptionsPagination = new Hono<AppEnv>();

threadSubscriptionsPagination.use("*", enabled);

/** "Servers may impose a smaller limit than requested" (Synapse: 512). */
const MAX_PAGE = 512;

threadSubscriptionsPagination.get("/thread_subscriptions", requireAuth, async (c) => {
  const dir = c.req.query("dir");
  if (dir === undefined) throw new MatrixError(400, "M_MISSING_PARAM", "dir is required");
  // "dir (string, required): always b (backward)".
  if (dir !== "b") throw invalidParam("dir must be b");
  const limit = queryLimit(c.req.query("limit"), { dflt: 100, max: MAX_PAGE, min: 1 });
  const from = c.req.query("from");
  const to = c.req.query("to");
  if ((from !== undefined && from.length > 100) || (to !== undefined && to.length > 100)) throw invalidParam("token too long");
  const { userId, deviceId } = c.var.auth;
  const r = await userStub(c.env, userId, c.var.config).threadSubscriptionPage(userId, { deviceId, from, to, limit });
  if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
  return c.json(r.value);
});
