// End-to-end harness: starts real Lattice servers (`npm start`, i.e. wrangler dev in local mode)
// on free loopback ports with their own state directories, and stops them by process group.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "../..");

export interface RunningServer {
  baseUrl: string;
  serverName: string;
  port: number;
  output: () => string;
  stop: () => Promise<void>;
  /** The server's process group (npm start, wrangler, workerd): benchmarks read its CPU time. */
  pgid: number;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export async function startServer(
  vars: Record<string, string> = {},
  opts: { stateDir?: string; port?: number } = {},
): Promise<RunningServer> {
  const port = opts.port ?? (await freePort());
  // A caller-supplied state directory is kept (restart tests); a temporary one is removed.
  const state = opts.stateDir ?? mkdtempSync(path.join(tmpdir(), "lattice-e2e-"));
  const allVars = { REGISTRATION: "open", RATE_LIMITS: "off", ...vars };
  const args = [path.join(root, "scripts/start.mjs"), "--port", String(port), "--persist-to", state];
  for (const [k, v] of Object.entries(allVars)) args.push("--var", `${k}:${v}`);
  // Own process group (detached) so stop() reaches wrangler and workerd too.
  const child: ChildProcess = spawn(process.execPath, args, { cwd: root, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const baseUrl = `http://127.0.0.1:${port}`;
  const stop = async () => {
    // E2E_SERVER_LOG_DIR=<dir> keeps each server's output (wrangler + Worker logs) for debugging.
    if (process.env.E2E_SERVER_LOG_DIR) writeFileSync(path.join(process.env.E2E_SERVER_LOG_DIR, `server-${port}.log`), out);
    if (child.exitCode === null) {
      try {
        process.kill(-child.pid!, "SIGTERM");
      } catch {}
      const exited = new Promise((r) => child.once("exit", r));
      const t = setTimeout(() => {
        try {
          process.kill(-child.pid!, "SIGKILL");
        } catch {}
      }, 5000);
      await exited;
      clearTimeout(t);
    }
    if (!opts.stateDir) rmSync(state, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      const r = await fetch(`${baseUrl}/_matrix/key/v2/server`);
      if (r.ok) {
        const body = (await r.json()) as { server_name: string };
        return { baseUrl, serverName: body.server_name, port, output: () => out, stop, pgid: child.pid! };
      }
    } catch {}
    await new Promise((r) => setTimeout(r, 250));
  }
  await stop();
  throw new Error(`Lattice did not start on port ${port}:\n${out}`);
}
