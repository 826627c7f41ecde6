// Dehydrated devices (MSC3814, unstable prefix /_matrix/client/unstable/org.matrix.msc3814.v1;
// the endpoints Element's Rust crypto uses):
//   PUT    /dehydrated_device                      store (replacing any previous one) + its keys
//   GET    /dehydrated_device                      {device_id, device_data}
//   DELETE /dehydrated_device                      {device_id}
//   GET    /dehydrated_device/{device_id}/events?from=   (POST with {next_batch} also accepted)
//          the to-device messages that arrived for it, paged; `next_batch` absent when done.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, notFound } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { db } from "../../db";
import { deleteDevice } from "../../services/sessions";
import { userStub } from "../../services/notifier";
import { checkDeviceKeys, deviceExists, type DeviceKeysInput } from "../../services/e2ee/device-keys";
import { forgetDehydratedDevice, getDehydratedDevice, putDehydratedDevice } from "../../services/e2ee/dehydrated-devices";
import { uploadKeysFor, uploadSchema } from "./keys";

export const dehydratedDevice = new Hono<AppEnv>();
dehydratedDevice.use("/dehydrated_device", requireAuth);
dehydratedDevice.use("/dehydrated_device/*", requireAuth);

const putSchema = uploadSchema.extend({
  device_id: z.string().min(1).max(255),
  device_data: z.record(z.string(), z.unknown()),
  initial_device_display_name: z.string().max(512).optional(),
});

dehydratedDevice.put("/dehydrated_device", async (c) => {
  const body = await parseBody(c, putSchema);
  const { userId } = c.var.auth;
  const current = await getDehydratedDevice(c.env, userId);
  if (current?.deviceId !== body.device_id && (await deviceExists(c.env, userId, body.device_id))) {
    throw new MatrixError(400, "M_INVALID_PARAM", "A device with this ID already exists");
  }
  // Keys of the dehydrated device are checked like any device's (signed by its own ed25519
  // key), before anything is stored.
  if (body.device_keys) {
    const err = await checkDeviceKeys(body.device_keys as DeviceKeysInput, userId, body.device_id);
    if (err) throw new MatrixError(400, "M_INVALID_PARAM", err);
  }
  const previous = await putDehydratedDevice(c.env, userId, body.device_id, body.device_data, body.initial_device_display_name);
  await uploadKeysFor(c.env, c.var.config, userId, body.device_id, body);
  if (previous) await deleteDevice(db(c.env), userId, previous, c.env, c.var.config);
  return c.json({ device_id: body.device_id });
});

dehydratedDevice.get("/dehydrated_device", async (c) => {
  const d = await getDehydratedDevice(c.env, c.var.auth.userId);
  if (!d) throw notFound("No dehydrated device available");
  return c.json({ device_id: d.deviceId, device_data: d.deviceData });
});

dehydratedDevice.delete("/dehydrated_device", async (c) => {
  const { userId } = c.var.auth;
  const d = await getDehydratedDevice(c.env, userId);
  if (!d) throw notFound("No dehydrated device available");
  await forgetDehydratedDevice(c.env, userId);
  await deleteDevice(db(c.env), userId, d.deviceId, c.env, c.var.config);
  return c.json({ device_id: d.deviceId });
});

/** One page of the dehydrated device's to-device inbox, read through its sync hub. Passing a
 *  page's `next_batch` back acknowledges (deletes) the messages before it. */
async function events(c: Context<AppEnv>, from: string | undefined) {
  const { userId } = c.var.auth;
  const deviceId = c.req.param("deviceId")!;
  const d = await getDehydratedDevice(c.env, userId);
  if (!d || d.deviceId !== deviceId) throw forbidden("Not your dehydrated device");
  const r = await userStub(c.env, userId, c.var.config).sync({
    userId,
    deviceId,
    since: from,
    timeoutMs: 0,
    fullState: false,
    includeLeave: false,
    threadCounts: false,
  });
  if (!r.ok) throw new MatrixError(r.status, r.errcode, r.error);
  const page = r.value.toDevice;
  return c.json(page.length ? { events: page, next_batch: r.value.nextBatch } : { events: [] });
}

dehydratedDevice.get("/dehydrated_device/:deviceId/events", (c) => events(c, c.req.query("from") || undefined));
dehydratedDevice.post("/dehydrated_device/:deviceId/events", async (c) => {
  const body = await parseBody(c, z.object({ next_batch: z.string().optional() }));
  return events(c, body.next_batch);
});
