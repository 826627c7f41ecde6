// Typing notifications (spec: module "Typing Notifications"; OpenAPI client-server/typing.yaml):
// PUT /rooms/{roomId}/typing/{userId}. Fanned out to the hubs of the room's local members, which
// expire the typing state after `timeout` and wake their long-polling syncs.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { forbidden } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody } from "../validate";
import { isLocalUser, knownRoom, roomStub } from "../../services/rooms";
import { fanOutTyping } from "../../services/notifier";
import { sendTyping } from "../../services/federation/edus";
import { pushTyping } from "../../services/appservice-fanout";

export const typing = new Hono<AppEnv>();

/** Longest typing timeout we honour (clients usually send 30 s). */
const MAX_TYPING_MS = 120_000;

const body = z.object({ typing: z.boolean(), timeout: z.number().int().min(0).optional() });

typing.put("/rooms/:roomId/typing/:userId", requireAuth, async (c) => {
  const roomId = c.req.param("roomId");
  const userId = c.req.param("userId");
  if (userId !== c.var.auth.userId) throw forbidden("Cannot set another user's typing state");
  const b = await parseBody(c, body);
  await knownRoom(c.env, roomId);
  const stub = roomStub(c.env, c.var.config, roomId);
  if ((await stub.getMembership(userId)) !== "join") throw forbidden("You are not joined to this room");
  const members = (await stub.getJoinedUserIds()).filter((u) => isLocalUser(c.var.config, u));
  const timeout = b.typing ? Math.min(b.timeout ?? 30_000, MAX_TYPING_MS) : 0;
  await fanOutTyping(c.env, c.var.config, roomId, userId, timeout, members);
  // Other servers in the room get an m.typing EDU (spec: Server-Server API "Typing Notifications").
  c.executionCtx.waitUntil(sendTyping(c.env, c.var.config, roomId, userId, b.typing).catch((e) => console.error("m.typing EDU failed", e)));
  // And appservices that receive ephemeral data (MSC2409).
  c.executionCtx.waitUntil(pushTyping(c.env, c.var.config.serverName, roomId, userId, timeout).catch((e) => console.error("appservice typing failed", e)));
  return c.json({});
});
