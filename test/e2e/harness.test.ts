// The harness itself: stop() must leave the server's port free even when a process of its group
// ignores SIGTERM (as a wedged workerd can), so the next server can start on that port.
import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { freePort, portFree, stopProcessGroup } from "./harness";

describe("e2e harness", () => {
  it("stopProcessGroup frees the port when the leader exits on SIGTERM but a group member ignores it", async () => {
    const port = await freePort();
    // The leader (like npm start → wrangler) exits on SIGTERM; its child (like workerd), in the
    // same process group, ignores SIGTERM and holds the port.
    const grandchild = `process.on("SIGTERM", () => {}); require("net").createServer().listen(${port}, "127.0.0.1", () => console.log("listening"));`;
    const leader = `const c = require("child_process").spawn(process.execPath, ["-e", ${JSON.stringify(grandchild)}], { stdio: ["ignore", "inherit", "inherit"] }); setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ["-e", leader], { detached: true, stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("the group member never listened")), 20_000);
      child.stdout!.on("data", (d) => String(d).includes("listening") && (clearTimeout(t), resolve()));
    });
    expect(await portFree(port)).toBe(false);
    const t0 = Date.now();
    try {
      await stopProcessGroup(child, port);
      expect(await portFree(port)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(30_000);
    } finally {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {}
    }
  }, 60_000);
});
