// The web admin console at /_lattice/admin/: static files bundled with the Worker
// (src/console/, generated into assets.ts). The page talks only to the admin API; a strict CSP
// allows nothing but this origin's own script, style and API.
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { CONSOLE_FILES } from "../../console/assets";
import { MatrixError } from "../errors";

export const adminConsole = new Hono<AppEnv>();

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};

export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

function serve(name: string): Response {
  const body = CONSOLE_FILES[name];
  if (body === undefined) {
    const e = new MatrixError(404, "M_NOT_FOUND", "No such file");
    return Response.json(e.toJSON(), { status: 404 });
  }
  return new Response(body, {
    headers: {
      "content-type": TYPES[name.split(".").pop()!] ?? "application/octet-stream",
      "content-security-policy": CONSOLE_CSP,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "x-frame-options": "DENY",
      "cache-control": "no-cache",
    },
  });
}

adminConsole.get("/_lattice/admin", (c) => c.redirect("/_lattice/admin/", 301));
adminConsole.get("/_lattice/admin/", () => serve("index.html"));
// One path segment only: /_lattice/admin/v1/... (two or more) is the Lattice admin API (appservices).
adminConsole.get("/_lattice/admin/:file", (c) => serve(c.req.param("file")));
