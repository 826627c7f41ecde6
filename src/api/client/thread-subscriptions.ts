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
import { parseBody } from "../validate";
import { knownRoom, roomStub, unwrap } from "../../services/rooms";
import { userStub } from "../../services/notifier";
import { isValidEventId, isValidRoomId } from "../../core/ids";

/** Mounted at /_matrix/client/unstable/io.element.msc4306. */
export const threadSubscriptions = new Hono<AppEnv>();

// MSC4306 "Unstable amendments": the error codes under their unstable names.
const M_CONFLICTING_UNSUBSCRIPTION = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION";
const M_NOT_IN_THREAD = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD";

threadSubscriptions.use("*", async (c, next) => {
  if (!c.var.config.threadSubscriptions) throw unrecognized();
  await next();
});

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
