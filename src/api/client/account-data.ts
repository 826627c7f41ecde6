// Client config / account data (spec: module "Client Config"; OpenAPI account-data.yaml) and
// room tags (module "Room Tagging"; tags.yaml). Stored in the user's hub, delivered by /sync.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, badJson, forbidden, invalidParam, notFound } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody, readJsonBody } from "../validate";
import { userStub } from "../../services/notifier";
import { isValidRoomId } from "../../core/ids";
import type { JsonObject } from "../../core/types";

export const accountData = new Hono<AppEnv>();

function ownUser(c: Context<AppEnv>): string {
  const userId = c.req.param("userId")!;
  if (userId !== c.var.auth.userId) throw forbidden("Cannot access another user's account data");
  return userId;
}

function roomParam(c: Context<AppEnv>): string {
  const roomId = c.req.param("roomId")!;
  if (!isValidRoomId(roomId)) throw invalidParam("Invalid room ID");
  return roomId;
}

/** "Cannot set m.fully_read through this API" (405); m.push_rules is the push rules API's. */
function checkSettable(type: string, room: boolean): void {
  if (room && type === "m.fully_read") throw new MatrixError(405, "M_BAD_JSON", "Cannot set m.fully_read through this API.");
  if (!room && type === "m.push_rules") throw new MatrixError(405, "M_BAD_JSON", "Cannot set m.push_rules through this API: use /pushrules.");
}

async function objectBody(c: Context<AppEnv>): Promise<JsonObject> {
  const raw = await readJsonBody(c);
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw badJson("Account data must be a JSON object");
  return raw as JsonObject;
}

accountData.put("/user/:userId/account_data/:type", requireAuth, async (c) => {
  const userId = ownUser(c);
  const type = c.req.param("type");
  checkSettable(type, false);
  await userStub(c.env, userId, c.var.config).setAccountData(userId, null, type, await objectBody(c));
  return c.json({});
});

accountData.get("/user/:userId/account_data/:type", requireAuth, async (c) => {
  const userId = ownUser(c);
  const content = await userStub(c.env, userId, c.var.config).getAccountData(null, c.req.param("type"));
  if (!content) throw notFound("Account data not found");
  return c.json(content);
});

accountData.put("/user/:userId/rooms/:roomId/account_data/:type", requireAuth, async (c) => {
  const userId = ownUser(c);
  const roomId = roomParam(c);
  const type = c.req.param("type");
  checkSettable(type, true);
  await userStub(c.env, userId, c.var.config).setAccountData(userId, roomId, type, await objectBody(c));
  return c.json({});
});

accountData.get("/user/:userId/rooms/:roomId/account_data/:type", requireAuth, async (c) => {
  const userId = ownUser(c);
  const content = await userStub(c.env, userId, c.var.config).getAccountData(roomParam(c), c.req.param("type"));
  if (!content) throw notFound("Account data not found");
  return c.json(content);
});

// Tags: m.tag room account data, {"tags": {tag: {order?}}}.
async function tagsOf(c: Context<AppEnv>, userId: string, roomId: string): Promise<Record<string, JsonObject>> {
  const content = await userStub(c.env, userId, c.var.config).getAccountData(roomId, "m.tag");
  const tags = content?.tags;
  return tags && typeof tags === "object" && !Array.isArray(tags) ? (tags as Record<string, JsonObject>) : {};
}

accountData.get("/user/:userId/rooms/:roomId/tags", requireAuth, async (c) => {
  const userId = ownUser(c);
  return c.json({ tags: await tagsOf(c, userId, roomParam(c)) });
});

const tagBody = z.object({ order: z.number().min(0).max(1).optional() }).loose();

accountData.put("/user/:userId/rooms/:roomId/tags/:tag", requireAuth, async (c) => {
  const userId = ownUser(c);
  const roomId = roomParam(c);
  const tag = c.req.param("tag");
  if (tag.length > 255) throw invalidParam("Tag too long");
  const b = await parseBody(c, tagBody);
  const tags = await tagsOf(c, userId, roomId);
  tags[tag] = b as JsonObject;
  await userStub(c.env, userId, c.var.config).setAccountData(userId, roomId, "m.tag", { tags });
  return c.json({});
});

accountData.delete("/user/:userId/rooms/:roomId/tags/:tag", requireAuth, async (c) => {
  const userId = ownUser(c);
  const roomId = roomParam(c);
  const tags = await tagsOf(c, userId, roomId);
  delete tags[c.req.param("tag")];
  await userStub(c.env, userId, c.var.config).setAccountData(userId, roomId, "m.tag", { tags });
  return c.json({});
});
