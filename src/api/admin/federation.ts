// Synapse-compatible federation destinations (Synapse's docs/admin_api/federation.md): the
// servers our SenderDOs queue for, with their retry state, and resetting a failing connection.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { invalidParam, notFound } from "../errors";
import { dirQuery, paging, requireAdmin } from "./common";
import { isValidServerName } from "../../core/ids";
import { senderStub } from "../../services/federation/sender";
import type { SenderStatus } from "../../rpc/sender";

export const adminFederation = new Hono<AppEnv>();

/** Synapse's destination shape, plus Lattice's queue facts (queued, down). */
function destinationEntry(destination: string, s: SenderStatus) {
  return {
    destination,
    retry_last_ts: s.failures ? s.lastAttemptTs ?? 0 : 0,
    retry_interval: s.failures && s.nextAttemptTs && s.lastAttemptTs ? Math.max(0, s.nextAttemptTs - s.lastAttemptTs) : 0,
    failure_ts: s.failureTs,
    last_successful_stream_ordering: null,
    queued: s.queued,
    down: s.down,
    sent_txns: s.sentTxns,
  };
}

adminFederation.get("/v1/federation/destinations", async (c) => {
  await requireAdmin(c);
  const { from, limit } = paging(c, 100, 500);
  const orderBy = c.req.query("order_by") ?? "destination";
  if (!["destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"].includes(orderBy)) throw invalidParam("Unknown value for order_by");
  const dir = dirQuery(c);
  const term = c.req.query("destination");
  const where = term ? "WHERE instr(lower(destination), lower(?)) > 0" : "";
  const binds = term ? [term] : [];
  const total = await c.env.DB.prepare(`SELECT COUNT(*) AS n FROM federation_destinations ${where}`).bind(...binds).first<{ n: number }>();
  // Retry state lives in the SenderDOs; ordering by it sorts the page asked for.
  const { results } = await c.env.DB.prepare(`SELECT destination FROM federation_destinations ${where} ORDER BY destination ${dir} LIMIT ? OFFSET ?`)
    .bind(...binds, limit, from)
    .all<{ destination: string }>();
  const entries = await Promise.all(results.map(async (r) => destinationEntry(r.destination, await senderStub(c.env, c.var.config, r.destination).status())));
  if (orderBy !== "destination") {
    const k = orderBy as keyof ReturnType<typeof destinationEntry>;
    entries.sort((a, b) => ((a[k] ?? 0) < (b[k] ?? 0) ? -1 : (a[k] ?? 0) > (b[k] ?? 0) ? 1 : 0) * (dir === "ASC" ? 1 : -1));
  }
  const n = total?.n ?? 0;
  const body: Record<string, unknown> = { destinations: entries, total: n };
  if (entries.length > 0 && from + entries.length < n) body.next_token = String(from + entries.length);
  return c.json(body);
});

async function knownDestination(c: Context<AppEnv>): Promise<string> {
  const d = c.req.param("destination") ?? "";
  if (!isValidServerName(d)) throw invalidParam("Invalid server name");
  if (!(await c.env.DB.prepare("SELECT 1 FROM federation_destinations WHERE destination = ?").bind(d).first())) throw notFound("Unknown destination");
  return d;
}

adminFederation.get("/v1/federation/destinations/:destination", async (c) => {
  await requireAdmin(c);
  const d = await knownDestination(c);
  return c.json(destinationEntry(d, await senderStub(c.env, c.var.config, d).status()));
});

// POST .../reset_connection: forget the backoff and retry now (SenderDO.wake).
adminFederation.post("/v1/federation/destinations/:destination/reset_connection", async (c) => {
  await requireAdmin(c);
  const d = await knownDestination(c);
  await senderStub(c.env, c.var.config, d).wake();
  return c.json({});
});
