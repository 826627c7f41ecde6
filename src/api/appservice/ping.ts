// POST /_matrix/client/v1/appservice/{appserviceId}/ping (spec: Application Service API
// "Pinging"): the appservice asks the homeserver to call its /_matrix/app/v1/ping, proving both
// directions work.
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden } from "../errors";
import { parseBody } from "../validate";
import { requireAuth } from "../middleware/auth";
import { AppserviceCallError, callAppservice } from "../../services/appservice-client";
import { wakeAppserviceQueue } from "../../services/appservice-fanout";

export const appservicePing = new Hono<AppEnv>();

appservicePing.post("/appservice/:appserviceId/ping", requireAuth, async (c) => {
  const service = c.var.auth.appservice;
  if (!service || service.id !== c.req.param("appserviceId")) throw forbidden("This token does not belong to that application service");
  const body = await parseBody(c, z.object({ transaction_id: z.string().max(255).optional() }));
  if (!service.url) throw new MatrixError(400, "M_URL_NOT_SET", "The application service has no URL");
  const started = Date.now();
  try {
    await callAppservice(c.var.config, service, "POST", "/_matrix/app/v1/ping", {
      body: body.transaction_id !== undefined ? { transaction_id: body.transaction_id } : {},
      timeoutMs: 10_000,
    });
  } catch (e) {
    if (!(e instanceof AppserviceCallError)) throw e;
    // Any HTTP answer (older appservice libraries have no ping route and answer 404) shows it is
    // reachable again: deliver its queue now.
    if (e.kind === "status") await wakeAppserviceQueue(c.env, service.id);
    if (e.kind === "timeout") throw new MatrixError(504, "M_CONNECTION_TIMEOUT", e.message);
    if (e.kind === "status") throw new MatrixError(502, "M_BAD_STATUS", e.message, { status: e.status, body: e.body ?? "" });
    throw new MatrixError(502, "M_CONNECTION_FAILED", e.message);
  }
  // It answers: deliver anything queued for it now instead of waiting out a retry backoff.
  await wakeAppserviceQueue(c.env, service.id);
  return c.json({ duration_ms: Date.now() - started });
});
