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
import { markDeviceListChanged } from "../../services/e2ee/device-list-changes";

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

// PUT /devices/{deviceId}: "If not given, the display name is unchanged." A new name is a
// device-list change for the users sharing a room with the owner (and the owner's other
// devices): the name is part of what /keys/query returns (`unsigned.device_display_name`), and
// /sync `device_lists.changed` lists "users who have updated their device identity". Synapse
// does the same.
deviceRoutes.put("/devices/:deviceId", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ display_name: z.string().max(512).optional() }));
  const { userId } = c.var.auth;
  const deviceId = c.req.param("deviceId");
  const d = db(c.env);
  const [row] = await d.select().from(devices).where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
  if (!row) throw notFound("Device not found");
  if (body.display_name === undefined || body.display_name === row.displayName) return c.json({});
  await d
    .update(devices)
    .set({ displayName: body.display_name })
    .where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
  await markDeviceListChanged(c.env, c.var.config, userId, { devices: [deviceId] });
  return c.json({});
});

deviceRoutes.delete("/devices/:deviceId", requireAuth, async (c) => {
  const body = await parseBody(c, z.object({ auth: authDictSchema.optional() }));
  const { userId } = c.var.auth;
  const deviceId = c.req.param("deviceId");
  const [row] = await db(c.env).select().from(devices).where(and(eq(devices.userId, userId), eq(devices.deviceId, deviceId)));
  if (!row) throw notFound("Device not found");
  await requireUia(c, body.auth, { purpose: `delete_device:${userId}:${deviceId}`, flows: [["m.login.password"]], userId });
  await deleteDevice(db(c.env), userId, deviceId, c.env, c.var.config);
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
  for (const { deviceId } of existing) await deleteDevice(d, userId, deviceId, c.env, c.var.config);
  return c.json({});
});
