// Presence (spec: module "Presence"; OpenAPI presence.yaml): GET/PUT /presence/{userId}/status.
// The user's own hub keeps their presence; changes are fanned out to local users sharing a room
// and, as m.presence EDUs, to the servers sharing one (PUT here, and being online through /sync).
// Remote users' presence is answered from the requester's hub, which received it.
// PRESENCE=off (wrangler var) turns fan-out and sync delivery off, as big servers do.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { forbidden, notFound } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody } from "../validate";
import { fanOutPresence, userStub } from "../../services/notifier";
import { sendPresence } from "../../services/federation/edus";
import { isLocalUser } from "../../services/rooms";
import { presenceEvent } from "../../rpc/user";
import { pushPresence } from "../../services/appservice-fanout";

export const presence = new Hono<AppEnv>();

const body = z.object({ presence: z.enum(["online", "offline", "unavailable"]), status_msg: z.string().max(1024).nullable().optional() });

presence.put("/presence/:userId/status", requireAuth, async (c) => {
  const userId = c.req.param("userId");
  if (userId !== c.var.auth.userId) throw forbidden("Cannot set another user's presence");
  const b = await parseBody(c, body);
  const hub = userStub(c.env, userId, c.var.config);
  const changed = await hub.setPresence(userId, b.presence, b.status_msg === undefined ? undefined : b.status_msg);
  if (changed && c.env.PRESENCE !== "off") {
    const p = await hub.getPresence(userId);
    const state = { presence: b.presence, statusMsg: p?.statusMsg ?? null, lastActiveTs: p?.lastActiveTs ?? Date.now() };
    await fanOutPresence(c.env, c.var.config, userId, state);
    // And to servers sharing a room (spec: Server-Server API "Presence").
    c.executionCtx.waitUntil(sendPresence(c.env, c.var.config, userId, state).catch((e) => console.error("m.presence EDU failed", e)));
    // And appservices that receive ephemeral data (MSC2409).
    c.executionCtx.waitUntil(pushPresence(c.env, c.var.config.serverName, userId, state).catch((e) => console.error("appservice presence failed", e)));
  }
  return c.json({});
});

presence.get("/presence/:userId/status", requireAuth, async (c) => {
  const userId = c.req.param("userId");
  // A remote user's presence is what their server sent (m.presence EDUs), kept in the hubs of
  // the local users sharing a room with them: the requester's own copy.
  if (!isLocalUser(c.var.config, userId)) {
    const p = await userStub(c.env, c.var.auth.userId, c.var.config).getPresence(userId);
    if (!p) throw notFound("No presence of this user has been received");
    return c.json(presenceEvent(userId, p.presence, p.statusMsg, p.lastActiveTs).content as Record<string, unknown>);
  }
  const p = await userStub(c.env, userId, c.var.config).getPresence(userId);
  if (!p) return c.json({ presence: "offline" });
  const ev = presenceEvent(userId, p.presence, p.statusMsg, p.lastActiveTs).content as Record<string, unknown>;
  return c.json(ev);
});
