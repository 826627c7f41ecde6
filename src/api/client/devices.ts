// Device management (spec: Client-Server API "Device management").
import { Hono } from "hono";
import { z } from "zod";
import { and, eq, inArray } from "drizzle-orm";
import type { AppEnv } from "../types";
import { notFound } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { authDictSchema, requireUia } from "./uia";
import { db } from "../../db";
import { devices } from "../../db/schema";
import { deleteDevice } from "../../services/sessions";

export const deviceRoutes = new Hono<AppEnv>();

type DeviceRow = typeof devices.$inferSelect;
const shape = (d: DeviceRow) => ({
  device_id: d.deviceId,
  display_name: d.displayName ?? undefined,
  last_seen_ts: d.lastSeenTs ?? undefined,
  last_seen_ip: d.lastSeenIp ?? undefined,
});

deviceRoutes.get("/devices", requireAuth, async (c) => {
  const rows = await db(c.env).select().from(devices).where(eq(devices.userId, c.var.auth.userId));
  return c.json({ devices: rows.map(shape) });
});

deviceRoutes.get("/devices/:deviceId", requireAuth, async (c) => {
  const [row] = await db(c.env)
    .select()
    .from(devices)
    .where(and(eq(devices.userId, c.var.auth.userId), eq(devices.deviceId, c.req.param("deviceId"))));
  if (!row) throw notFound("Device not found");
  return c.json(shape(row));
});

deviceRoutes.put("/devices/:deviceId", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ display_name: z.string().max(512).optional() }));
  const deviceId = c.req.param("deviceId");
  const r = await db(c.env)
    .update(devices)
    .set({ displayName: body.display_name ?? null })
    .where(and(eq(devices.userId, c.var.auth.userId), eq(devices.deviceId, deviceId)))
    .returning({ deviceId: devices.deviceId });
  if (r.length === 0) throw notFound("Device not found");
  return c.json({});
});

deviceRoutes.delete("/devices/:deviceId", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ auth: authDictSchema.optional() }));
  const { userId } = c.var.auth;
  const deviceId = c.req.param("deviceId");
  const [row] = await db(c.env).select().from(devices).where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
  if (!row) throw notFound("Device not found");
  await requireUia(c, body.auth, { purpose: `delete_device:${userId}:${deviceId}`, flows: [["m.login.password"]], userId });
  await deleteDevice(db(c.env), userId, deviceId, c.env);
  return c.json({});
});

deviceRoutes.post("/delete_devices", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ devices: z.array(z.string()).max(1000), auth: authDictSchema.optional() }));
  const { userId } = c.var.auth;
  const ids = [...new Set(body.devices)].sort();
  await requireUia(c, body.auth, { purpose: `delete_devices:${userId}:${ids.join(",")}`, flows: [["m.login.password"]], userId });
  const d = db(c.env);
  const existing = ids.length
    ? await d.select({ deviceId: devices.deviceId }).from(devices).where(and(eq(devices.userId, userId), inArray(devices.deviceId, ids)))
    : [];
  for (const { deviceId } of existing) await deleteDevice(d, userId, deviceId, c.env);
  return c.json({});
});
