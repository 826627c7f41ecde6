// The server name never comes from the request (hardening issue item 13): without SERVER_NAME
// the Worker refuses every request with a clear error instead of naming itself after the Host
// header (which any client chooses). npm start, the e2e harness and vitest set it explicitly.
import { describe, it, expect } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../src/index";
import { ConfigError, parseConfig } from "../../src/config";

async function fetchWith(vars: Record<string, unknown>, url: string) {
  const ctx = createExecutionContext();
  const res = await worker.fetch(new Request(url), { ...env, ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("SERVER_NAME", () => {
  it("unset: every request is refused with a message naming it, whatever the Host", async () => {
    for (const path of ["/_matrix/client/versions", "/.well-known/matrix/server", "/_matrix/key/v2/server"]) {
      const r = await fetchWith({ SERVER_NAME: undefined }, `http://attacker.example${path}`);
      expect([path, r.status, r.body.errcode]).toEqual([path, 500, "M_UNKNOWN"]);
      expect(String(r.body.error)).toMatch(/SERVER_NAME is not set/);
    }
    expect(() => parseConfig({ ...env, SERVER_NAME: "" } as typeof env)).toThrow(ConfigError);
  });

  it("set: the configured name is used, not the Host", async () => {
    const r = await fetchWith({}, "http://attacker.example/_matrix/key/v2/server");
    expect(r.status).toBe(200);
    expect(r.body.server_name).toBe("test.local");
  });
});
