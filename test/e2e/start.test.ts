// `npm start` behaviour: persisted signing key across restarts, clear error on bad config.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { startServer, freePort } from "./harness";

describe("npm start", () => {
  it("refuses an invalid configuration with a clear message", async () => {
    const port = await freePort();
    const r = spawnSync(
      process.execPath,
      [path.resolve(import.meta.dirname, "../../scripts/start.mjs"), "--port", String(port), "--persist-to", `/tmp/lattice-badcfg-${port}`, "--var", "REGISTRATION:sometimes"],
      { encoding: "utf8", timeout: 90_000 },
    );
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/Invalid Lattice configuration: REGISTRATION/);
  });

  it("names the server localhost:<port> and keeps its signing key and users across restarts", async () => {
    const stateDir = mkdtempSync(path.join(tmpdir(), "lattice-restart-"));
    const port = await freePort();
    try {
      const first = await startServer({}, { stateDir, port });
      expect(first.serverName).toBe(`localhost:${port}`);
      const key1 = await (await fetch(`${first.baseUrl}/_matrix/key/v2/server`)).json();
      const reg1 = await fetch(`${first.baseUrl}/_matrix/client/v3/register`, { method: "POST", body: JSON.stringify({ username: "keeper", password: "pw" }) });
      const { session } = await reg1.json();
      const reg2 = await fetch(`${first.baseUrl}/_matrix/client/v3/register`, {
        method: "POST",
        body: JSON.stringify({ username: "keeper", password: "pw", auth: { type: "m.login.dummy", session } }),
      });
      expect(reg2.status).toBe(200);
      await first.stop();

      const second = await startServer({}, { stateDir, port });
      const key2 = await (await fetch(`${second.baseUrl}/_matrix/key/v2/server`)).json();
      expect(Object.keys(key2.verify_keys)).toEqual(Object.keys(key1.verify_keys));
      expect(key2.verify_keys).toEqual(key1.verify_keys);
      const login = await fetch(`${second.baseUrl}/_matrix/client/v3/login`, {
        method: "POST",
        body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "keeper" }, password: "pw" }),
      });
      expect(login.status).toBe(200);
      await second.stop();
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

describe("npm run register-user", () => {
  it("creates the first admin through shared-secret registration while registration is closed", async () => {
    const secret = "e2e-shared-secret-0123456789";
    const s = await startServer({ REGISTRATION: "closed", REGISTRATION_SHARED_SECRET: secret });
    try {
      const closed = await fetch(`${s.baseUrl}/_matrix/client/v3/register`, { method: "POST", body: JSON.stringify({ username: "x", password: "y" }) });
      expect(closed.status).toBe(403);
      const r = spawnSync(
        process.execPath,
        [path.resolve(import.meta.dirname, "../../scripts/register-user.mjs"), `@root:${s.serverName}`, "--admin", "--password", "root-pass", "--url", s.baseUrl],
        { encoding: "utf8", timeout: 60_000, env: { ...process.env, REGISTRATION_SHARED_SECRET: secret } },
      );
      expect(r.stderr).toBe("");
      expect(r.stdout).toContain(`Created @root:${s.serverName} (admin)`);
      const login = await fetch(`${s.baseUrl}/_matrix/client/v3/login`, {
        method: "POST",
        body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "root" }, password: "root-pass" }),
      });
      expect(login.status).toBe(200);
      const wrong = spawnSync(
        process.execPath,
        [path.resolve(import.meta.dirname, "../../scripts/register-user.mjs"), "mallory", "--password", "x", "--url", s.baseUrl, "--secret", "not-the-secret-at-all"],
        { encoding: "utf8", timeout: 60_000 },
      );
      expect(wrong.status).toBe(1);
      expect(wrong.stderr).toContain("HMAC incorrect");
    } finally {
      await s.stop();
    }
  });
});
