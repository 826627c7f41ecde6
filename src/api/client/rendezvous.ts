// MSC4108 rendezvous (QR-code sign-in): an unauthenticated, short-lived mailbox at a URL that two
// devices use to exchange their (end-to-end encrypted) messages while the new device signs in
// with the device authorization grant. The server only stores opaque bodies: create (POST), read
// (GET, If-None-Match → 304), replace (PUT with If-Match, else 412 M_CONCURRENT_WRITE), delete.
// Sessions expire after RENDEZVOUS_TTL_MS; a body is at most 4 KiB (as Synapse).
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { LIMITS, clientAddress, rateLimit } from "../middleware/rate-limit";
import { randomString } from "../../services/crypto-util";

export const RENDEZVOUS_TTL_MS = 2 * 60_000;
const MAX_BODY = 4096;
export const RENDEZVOUS_PREFIX = "/_matrix/client/unstable/org.matrix.msc4108";

export const rendezvous = new Hono<AppEnv>();

interface Row {
  id: string;
  body: string;
  content_type: string;
  etag: string;
  expires_ts: number;
}

async function readBody(c: Context<AppEnv>): Promise<{ body: string; contentType: string }> {
  if (Number(c.req.header("content-length") ?? "0") > MAX_BODY) throw new MatrixError(413, "M_TOO_LARGE", `Rendezvous payloads are limited to ${MAX_BODY} bytes`);
  const bytes = await c.req.arrayBuffer();
  if (bytes.byteLength > MAX_BODY) throw new MatrixError(413, "M_TOO_LARGE", `Rendezvous payloads are limited to ${MAX_BODY} bytes`);
  // Stored as base64 so any content type round-trips byte for byte.
  let bin = "";
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return { body: btoa(bin), contentType: c.req.header("content-type") ?? "application/octet-stream" };
}

function sessionHeaders(c: Context<AppEnv>, row: Pick<Row, "etag" | "expires_ts">): void {
  c.header("ETag", `"${row.etag}"`);
  c.header("Expires", new Date(row.expires_ts).toUTCString());
  c.header("Last-Modified", new Date().toUTCString());
  c.header("Cache-Control", "no-store");
  // Browsers must see the headers the protocol relies on.
  c.header("Access-Control-Expose-Headers", "ETag, Expires, Last-Modified, Location");
}

async function liveSession(c: Context<AppEnv>, id: string): Promise<Row> {
  const row = await c.env.DB.prepare("SELECT * FROM rendezvous_sessions WHERE id = ?").bind(id).first<Row>();
  if (!row || row.expires_ts <= Date.now()) throw new MatrixError(404, "M_NOT_FOUND", "Rendezvous session not found or expired");
  return row;
}

/** If-Match / If-None-Match values: `"etag"`, `W/"etag"` or a list of them. */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((v) => v.trim().replace(/^W\//, "").replace(/^"|"$/g, "") === etag || v.trim() === "*");
}

rendezvous.post("/rendezvous", async (c) => {
  await rateLimit(c, "rendezvous-ip", clientAddress(c), LIMITS.loginPerAddress);
  const { body, contentType } = await readBody(c);
  const now = Date.now();
  await c.env.DB.prepare("DELETE FROM rendezvous_sessions WHERE expires_ts <= ?").bind(now).run();
  const row = { id: randomString(24), etag: randomString(16), expires_ts: now + RENDEZVOUS_TTL_MS };
  await c.env.DB.prepare("INSERT INTO rendezvous_sessions (id, body, content_type, etag, expires_ts) VALUES (?, ?, ?, ?, ?)")
    .bind(row.id, body, contentType, row.etag, row.expires_ts)
    .run();
  const url = `${c.var.config.publicBaseUrl}${RENDEZVOUS_PREFIX}/rendezvous/${row.id}`;
  sessionHeaders(c, row);
  c.header("Location", url);
  return c.json({ url }, 201);
});

rendezvous.get("/rendezvous/:id", async (c) => {
  const row = await liveSession(c, c.req.param("id"));
  sessionHeaders(c, row);
  if (etagMatches(c.req.header("if-none-match"), row.etag)) return c.body(null, 304);
  c.header("Content-Type", row.content_type);
  return c.body(Uint8Array.from(atob(row.body), (ch) => ch.charCodeAt(0)), 200);
});

rendezvous.put("/rendezvous/:id", async (c) => {
  const row = await liveSession(c, c.req.param("id"));
  const ifMatch = c.req.header("if-match");
  if (!ifMatch) throw new MatrixError(400, "M_MISSING_PARAM", "If-Match header is required");
  const { body, contentType } = await readBody(c);
  const etag = randomString(16);
  // Compare-and-swap on the ETag, so of two concurrent writers only one wins.
  const r = await c.env.DB.prepare("UPDATE rendezvous_sessions SET body = ?, content_type = ?, etag = ? WHERE id = ? AND etag = ? AND expires_ts > ?")
    .bind(body, contentType, etag, row.id, etagMatches(ifMatch, row.etag) ? row.etag : "", Date.now())
    .run();
  if (r.meta.changes !== 1) throw new MatrixError(412, "M_CONCURRENT_WRITE", "The session was modified (If-Match does not match its ETag)");
  sessionHeaders(c, { etag, expires_ts: row.expires_ts });
  return c.body(null, 202);
});

rendezvous.delete("/rendezvous/:id", async (c) => {
  const row = await liveSession(c, c.req.param("id"));
  await c.env.DB.prepare("DELETE FROM rendezvous_sessions WHERE id = ?").bind(row.id).run();
  return c.json({});
});
