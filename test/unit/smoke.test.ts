import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
describe("smoke", () => {
  it("has D1", async () => {
    const r = await env.DB.prepare("select 1 as x").first();
    expect(r).toEqual({ x: 1 });
    const k = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    expect(k).toBeTruthy();
  });
});
