// End-to-end harness: starts real Lattice servers (`npm start`, i.e. wrangler dev in local mode)
// on free loopback ports with their own state directories, and stops them by process group.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

/** Whether a process of group `pgid` is still running. Zombies do not count (they hold no
 *  port, and an orphan's may linger where PID 1 does not reap): on Linux read from /proc. */
function groupAlive(pgid: number): boolean {
  if (process.platform === "linux") {
    for (const pid of readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")".
        const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(pgrp) === pgid && state !== "Z") return true;
      } catch {}
    }
    return false;
  }
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether 127.0.0.1:port can be listened on now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** Poll `done` every 100 ms for at most `ms`; whether it came true. */
async function within(ms: number, done: () => boolean | Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await done()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stop the process group `child` leads (spawned detached) and wait until nothing of it runs:
 *  SIGTERM, up to 5 s, then SIGKILL, up to 5 s more. Waiting for the leader alone is not enough
 *  (npm start may exit while a workerd that ignores SIGTERM keeps the port). Then wait (up to
 *  5 s) until `port` can be listened on again, and throw if it cannot: a restart on that port
 *  would fail confusingly later. */
export async function stopProcessGroup(child: ChildProcess, port: number): Promise<void> {
  const pgid = child.pid!;
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-pgid, s);
    } catch {}
  };
  signal("SIGTERM");
  if (!(await within(5000, () => !groupAlive(pgid)))) {
    signal("SIGKILL");
    if (!(await within(5000, () => !groupAlive(pgid)))) throw new Error(`process group ${pgid} survived SIGKILL for 5 s`);
  }
  if (!(await within(5000, () => portFree(port)))) throw new Error(`port ${port} still in use after its server's process group ${pgid} exited`);
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
    await stopProcessGroup(child, port);
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
  // (A port taken by someone else is a likely cause: report the start failure, not that.)
  await stop().catch(() => {});
  throw new Error(`Lattice did not start on port ${port}:\n${out}`);
}
