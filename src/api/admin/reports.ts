// Synapse-compatible event reports (Synapse's docs/admin_api/event_reports.md): list, details,
// delete. The reports themselves are stored by the client reporting endpoints (module "Reporting
// content") in the D1 table `reports` (kind event | room | user); until that table exists on this
// server these endpoints answer 404 M_UNRECOGNIZED.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { invalidParam, notFound, unrecognized } from "../errors";
import { parseValue } from "../validate";
import { paging, requireAdmin } from "./common";
import { roomStub } from "../../services/rooms";

export const adminReports = new Hono<AppEnv>();

interface ReportRow {
  id: number;
  kind: string;
  reporter: string;
  room_id: string | null;
  event_id: string | null;
  target_user_id: string | null;
  reason: string | null;
  score: number | null;
  received_ts: number;
}

async function requireReportsTable(c: Context<AppEnv>): Promise<void> {
  const t = await c.env.DB.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reports'").first();
  if (!t) throw unrecognized("This server does not store event reports");
}

/** Synapse's entry: the report plus the room's name and alias and the reported event's sender. */
async function reportEntry(c: Context<AppEnv>, r: ReportRow, withEvent = false) {
  const stub = r.room_id ? roomStub(c.env, c.var.config, r.room_id) : null;
  const [name, alias, pdu] = await Promise.all([
    stub?.getCurrentStateEvent("m.room.name", "").catch(() => null),
    stub?.getCurrentStateEvent("m.room.canonical_alias", "").catch(() => null),
    r.event_id ? stub?.getPdu(r.event_id).catch(() => null) : null,
  ]);
  const str = (v: unknown) => (typeof v === "string" ? v : null);
  return {
    id: r.id,
    received_ts: r.received_ts,
    room_id: r.room_id,
    name: str((name?.content as Record<string, unknown> | undefined)?.name),
    canonical_alias: str((alias?.content as Record<string, unknown> | undefined)?.alias),
    event_id: r.event_id,
    user_id: r.reporter,
    reason: r.reason,
    score: r.score,
    sender: str(pdu?.pdu.sender),
    ...(withEvent ? { event_json: pdu?.pdu ?? null } : {}),
  };
}

// GET /_synapse/admin/v1/event_reports: newest first by default (dir=b); filters user_id
// (reporter), room_id, event_sender_user_id is not indexed here and is refused.
adminReports.get("/v1/event_reports", async (c) => {
  await requireAdmin(c);
  await requireReportsTable(c);
  const { from, limit } = paging(c, 100, 1000);
  const dir = c.req.query("dir") ?? "b";
  if (dir !== "f" && dir !== "b") throw invalidParam("dir must be f or b");
  const where = ["kind = 'event'"];
  const binds: unknown[] = [];
  for (const [param, col] of [["user_id", "reporter"], ["room_id", "room_id"]] as const) {
    const v = c.req.query(param);
    if (v) {
      where.push(`instr(${col}, ?) > 0`);
      binds.push(v);
    }
  }
  const cond = `WHERE ${where.join(" AND ")}`;
  const total = await c.env.DB.prepare(`SELECT COUNT(*) AS n FROM reports ${cond}`).bind(...binds).first<{ n: number }>();
  const { results } = await c.env.DB.prepare(`SELECT * FROM reports ${cond} ORDER BY received_ts ${dir === "b" ? "DESC" : "ASC"}, id LIMIT ? OFFSET ?`)
    .bind(...binds, limit, from)
    .all<ReportRow>();
  const n = total?.n ?? 0;
  const body: Record<string, unknown> = { event_reports: await Promise.all(results.map((r) => reportEntry(c, r))), total: n };
  if (results.length > 0 && from + results.length < n) body.next_token = from + results.length;
  return c.json(body);
});

function reportId(c: Context<AppEnv>): number {
  return parseValue(c.req.param("reportId"), z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER));
}

adminReports.get("/v1/event_reports/:reportId", async (c) => {
  await requireAdmin(c);
  await requireReportsTable(c);
  const r = await c.env.DB.prepare("SELECT * FROM reports WHERE id = ? AND kind = 'event'").bind(reportId(c)).first<ReportRow>();
  if (!r) throw notFound("Event report not found");
  return c.json(await reportEntry(c, r, true));
});

adminReports.delete("/v1/event_reports/:reportId", async (c) => {
  await requireAdmin(c);
  await requireReportsTable(c);
  const r = await c.env.DB.prepare("DELETE FROM reports WHERE id = ? AND kind = 'event'").bind(reportId(c)).run();
  if (r.meta.changes !== 1) throw notFound("Event report not found");
  return c.json({});
});
