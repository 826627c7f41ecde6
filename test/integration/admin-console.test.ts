// The admin console's static files: served by the Worker at /_lattice/admin/ with a strict CSP.
import { describe, expect, it } from "vitest";
import { SELF } from "cloudflare:test";
import { BASE } from "./helpers";

describe("admin console files", () => {
  it("serves index.html, app.js and style.css with a strict CSP; unknown files 404", async () => {
    const redirect = await SELF.fetch(`${BASE}/_lattice/admin`, { redirect: "manual" });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("location")).toBe("/_lattice/admin/");
    for (const [path, type] of [
      ["/_lattice/admin/", "text/html"],
      ["/_lattice/admin/app.js", "text/javascript"],
      ["/_lattice/admin/style.css", "text/css"],
    ]) {
      const r = await SELF.fetch(`${BASE}${path}`);
      expect(r.status, path).toBe(200);
      expect(r.headers.get("content-type")).toContain(type);
      const csp = r.headers.get("content-security-policy") ?? "";
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain("unsafe-inline");
      expect(r.headers.get("x-frame-options")).toBe("DENY");
      await r.text();
    }
    const html = await (await SELF.fetch(`${BASE}/_lattice/admin/`)).text();
    expect(html).not.toMatch(/<script>|style=|onclick=/); // nothing inline: the CSP forbids it
    const missing = await SELF.fetch(`${BASE}/_lattice/admin/secrets.txt`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { errcode: string }).errcode).toBe("M_NOT_FOUND");
    // A well-formed name that is not one of the console's files.
    const other = await SELF.fetch(`${BASE}/_lattice/admin/other.js`);
    expect(other.status).toBe(404);
    await other.text();
  });
});
