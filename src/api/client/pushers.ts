// Pushers (spec: module "Push Notifications" → "Pushers"; OpenAPI pusher.yaml):
// GET /pushers and POST /pushers/set. Delivery: durable-objects/user/push-outbox.ts and pusher.ts.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, invalidParam, missingParam } from "../errors";
import { requireAuth } from "../middleware/auth";
import { parseBody } from "../validate";
import { checkPusherUrl } from "../../core/push-gateway";
import { deletePusher, listPushers, pusherJson, setPusher } from "../../services/pushers";

export const pushersRoutes = new Hono<AppEnv>();

pushersRoutes.get("/pushers", requireAuth, async (c) => {
  const rows = await listPushers(c.env, c.var.auth.userId);
  return c.json({ pushers: rows.map(pusherJson) });
});

const utf8Length = (s: string) => new TextEncoder().encode(s).length;

const setBody = z.object({
  kind: z.string().nullable().optional(),
  // pusher.yaml: app_id "Max length, 64 chars", pushkey "Max length, 512 bytes".
  app_id: z.string().min(1).max(64).optional(),
  pushkey: z.string().min(1).refine((s) => utf8Length(s) <= 512, "must be at most 512 bytes").optional(),
  app_display_name: z.string().max(256).optional(),
  device_display_name: z.string().max(256).optional(),
  profile_tag: z.string().max(256).optional(),
  lang: z.string().max(64).optional(),
  data: z.record(z.string(), z.unknown()).optional(),
  append: z.boolean().optional(),
});

pushersRoutes.post("/pushers/set", requireAuth, async (c) => {
  const b = await parseBody(c, setBody);
  const { userId, deviceId } = c.var.auth;
  const missing = (["kind", "app_id", "pushkey"] as const).filter((k) => b[k] === undefined);
  if (missing.length) throw missingParam(`Missing parameters: ${missing.join(", ")}`);
  if (b.kind === null) {
    await deletePusher(c.env, c.var.config, userId, b.app_id!, b.pushkey!);
    return c.json({});
  }
  const required = (["app_display_name", "device_display_name", "lang", "data"] as const).filter((k) => b[k] === undefined);
  if (required.length) throw missingParam(`Missing parameters: ${required.join(", ")}`);
  // Only HTTP pushers: Lattice sends no email.
  if (b.kind !== "http") throw invalidParam(`Unsupported pusher kind "${b.kind}": only "http" is supported`);
  const data = b.data!;
  const refused = checkPusherUrl(data.url, c.var.config.pushHttpLoopback);
  if (refused) throw new MatrixError(400, data.url === undefined ? "M_MISSING_PARAM" : "M_INVALID_PARAM", refused);
  if (data.format !== undefined && data.format !== "event_id_only") throw invalidParam('data.format must be "event_id_only" or absent');
  const json = JSON.stringify(data);
  if (json.length > 4096) throw invalidParam("data is too large");
  await setPusher(
    c.env,
    c.var.config,
    {
      userId,
      appId: b.app_id!,
      pushkey: b.pushkey!,
      kind: "http",
      appDisplayName: b.app_display_name!,
      deviceDisplayName: b.device_display_name!,
      profileTag: b.profile_tag ?? null,
      lang: b.lang!,
      data: json,
      deviceId,
      pushkeyTs: Date.now(),
    },
    b.append === true,
  );
  return c.json({});
});
