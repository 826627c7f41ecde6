// `npm start` behaviour: persisted signing key across restarts, clear error on bad config.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import path from "node:path";
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

  it("names the server localhost:<port> by default", async () => {
    const s = await startServer();
    try {
      expect(s.serverName).toBe(`localhost:${s.port}`);
    } finally {
      await s.stop();
    }
  });
});
