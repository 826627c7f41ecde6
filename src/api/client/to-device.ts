// Send-to-device messaging (spec: module "Send-to-Device messaging",
// PUT /sendToDevice/{eventType}/{txnId}).
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { parseUserId } from "../../core/ids";
import { claimToDeviceTxn, deliverToDevice, releaseToDeviceTxn } from "../../services/e2ee/to-device";
import { type Json } from "../../services/e2ee/common";
import { sendToDevice } from "../../services/federation/edus";
import { pushToDevice } from "../../services/appservice-fanout";

export const toDevice = new Hono<AppEnv>();
toDevice.use("/sendToDevice/*", requireAuth);

// "The messages to send. A map from user ID, to a map from device ID to message body. The
// device ID may also be `*`, meaning all known devices for the user."
const bodySchema = z.object({ messages: z.record(z.string(), z.record(z.string(), z.record(z.string(), z.unknown()))) });

toDevice.put("/sendToDevice/:eventType/:txnId", async (c) => {
  const body = await parseBody(c, bodySchema);
  const { eventType, txnId } = c.req.param();
  const { userId, deviceId } = c.var.auth;
  // Idempotent per (device, txnId): a retried request returns {} without delivering again.
  if (!(await claimToDeviceTxn(c.env, userId, deviceId, txnId))) return c.json({});
  try {
    const remote: Record<string, Record<string, Json>> = {};
    for (const [target, perDevice] of Object.entries(body.messages)) {
      const server = parseUserId(target, { historical: true })?.serverName;
      if (!server) continue;
      // Recipients on other servers: one m.direct_to_device EDU per server (spec: Server-Server
      // API "Send-to-device messaging").
      if (server !== c.var.config.serverName) remote[target] = perDevice as Record<string, Json>;
      else {
        await deliverToDevice(c.env, c.var.config, userId, eventType, target, perDevice as Record<string, Json>);
        await pushToDevice(c.env, c.var.config.serverName, userId, eventType, target, perDevice);
      }
    }
    if (Object.keys(remote).length) await sendToDevice(c.env, c.var.config, userId, eventType, remote);
  } catch (e) {
    // Nothing may be lost: let the client's retry with the same txnId deliver.
    await releaseToDeviceTxn(c.env, userId, deviceId, txnId);
    throw e;
  }
  return c.json({});
});
