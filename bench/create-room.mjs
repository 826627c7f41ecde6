// createRoom latency alone (issue 21: "createRoom p50 under 8 ms"): sequential
// `POST /createRoom` with an empty body (private_chat), as bench/send.mjs measures it, after a
// warm-up. Also counts the server's fsync-family calls per createRoom when strace is available
// (CR_STRACE=1: `strace -f -c` on the server's workerd processes) and takes a V8 CPU profile of
// the Worker isolate while the rooms are created (CR_PROFILE=<file.cpuprofile>). When it starts
// the server it also prints the server's CPU time per createRoom (robust to the machine's load).
//
// node bench/create-room.mjs [rooms] [--port N] [--public]     (starts a server; TMPDIR=/dev/shm for tmpfs;
//   with CR_PROFILE run it as `node --import tsx bench/create-room.mjs`; --public: each room
//   public_chat, visibility public, with its own room_alias_name, as a client's "public room")
// node bench/create-room.mjs http://127.0.0.1:PORT [rooms]   (a running `npm start`)
import { spawn } from "node:child_process";
import { fsyncsWhile, percentile, processGroupCpuMs, registerBenchUser, workerdPidsOf } from "./util.mjs";

const args = process.argv.slice(2);
const portAt = args.indexOf("--port");
const port = portAt >= 0 ? Number(args.splice(portAt, 2)[1]) : undefined;
const publicAt = args.indexOf("--public");
const publicRooms = publicAt >= 0 && args.splice(publicAt, 1).length > 0;
let roomCount = 0;
let baseUrl = args[0]?.startsWith("http") ? args.shift() : undefined;
const rooms = Number(args[0] ?? 60);
let server;
if (!baseUrl) {
  const { startServer } = await import("../test/e2e/harness.ts");
  server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open" }, { port });
  baseUrl = server.baseUrl;
}

async function createRoom(token, body = publicRooms ? { preset: "public_chat", visibility: "public", room_alias_name: `crbench${tag}-${roomCount++}` } : {}) {
  const res = await fetch(`${baseUrl}/_matrix/client/v3/createRoom`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`createRoom: ${res.status} ${JSON.stringify(json)}`);
  return json.room_id;
}

/** strace -f -c on every workerd process of the server, while `fn` runs: fsync-family calls.
 *  CR_FSYNCS=1 counts them with `perf stat` instead (as bench/send.mjs --fsyncs: strace slows
 *  the server many times over). */
async function countFsyncs(fn) {
  if (process.env.CR_FSYNCS && server) {
    const { result, calls } = await fsyncsWhile(server.pgid, fn);
    return [result, calls];
  }
  if (!process.env.CR_STRACE || !server) return [await fn(), undefined];
  const pids = workerdPidsOf(server.pgid);
  const st = spawn("strace", ["-f", "-c", "-e", "trace=fsync,fdatasync", ...pids.flatMap((p) => ["-p", p])], { stdio: ["ignore", "ignore", "pipe"] });
  let out = "";
  st.stderr.on("data", (d) => (out += d));
  await new Promise((r) => setTimeout(r, 500));
  const result = await fn();
  const exited = new Promise((r) => st.once("exit", r));
  st.kill("SIGINT");
  await exited;
  const calls = [...out.matchAll(/^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  return [result, calls];
}

/** CPU time (ms) used so far by the server's processes: [workerd, all (wrangler's proxy too)]. */
function serverCpuMs() {
  if (!server) return [0, 0];
  const { workerd, all } = processGroupCpuMs(server.pgid);
  return [workerd, all];
}

const tag = Date.now().toString(36);
try {
  const user = await registerBenchUser(baseUrl, `createbench${tag}`);
  for (let i = 0; i < 10; i++) await createRoom(user.token); // warm-up (isolate, caches)
  const run = async () => {
    const times = [];
    for (let i = 0; i < rooms; i++) {
      const t = performance.now();
      await createRoom(user.token);
      times.push(performance.now() - t);
    }
    return times;
  };
  let times, fsyncs;
  const cpu0 = serverCpuMs();
  if (process.env.CR_PROFILE && server) {
    const { profileWhile } = await import("./loopback-peers.mjs");
    [times, fsyncs] = await profileWhile(server, process.env.CR_PROFILE, () => countFsyncs(run));
  } else [times, fsyncs] = await countFsyncs(run);
  const cpu = serverCpuMs().map((x, i) => (x - cpu0[i]) / rooms);
  const fsyncText = fsyncs === undefined ? "" : `, ${(fsyncs / rooms).toFixed(2)} fsync-family calls per createRoom`;
  const cpuText = server ? `, server CPU per createRoom ${cpu[0].toFixed(1)} ms workerd / ${cpu[1].toFixed(1)} ms with wrangler's proxy` : "";
  console.log(`createRoom (${publicRooms ? "public_chat, visibility public, an alias" : "private_chat, empty body"}): p50 ${percentile(times, 50).toFixed(1)} ms, p90 ${percentile(times, 90).toFixed(1)} ms (${rooms} rooms)${cpuText}${fsyncText}`);
} finally {
  await server?.stop();
}
