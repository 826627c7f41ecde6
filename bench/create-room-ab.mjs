// createRoom A/B with the requests interleaved (issue 21): a server from a base tree and one from
// this tree run side by side, and sequential createRooms (empty body, private_chat) alternate
// between them request by request, so the machine's load (other processes on a shared machine)
// falls on both alike; back-to-back runs at load 7–9 did not separate the two, this did.
// Prints each side's p50/p90 and workerd CPU per createRoom (/proc).
//
// node_modules/.bin/node --import tsx bench/create-room-ab.mjs <base tree> [rooms]
//   (the base tree: e.g. `git archive main | tar -x -C /tmp/x-base && ln -s $PWD/node_modules /tmp/x-base/`;
//   TMPDIR=/dev/shm puts both servers' state on tmpfs). Loopback only; both stopped by process group.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { percentile, processGroupCpuMs, registerBenchUser } from "./util.mjs";

const [baseTree, roomsArg] = process.argv.slice(2);
if (!baseTree) throw new Error("usage: bench/create-room-ab.mjs <base tree> [rooms]");
const rooms = Math.min(Number(roomsArg ?? 150), 2000);
const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { startServer: startBase } = await import(path.resolve(baseTree, "test/e2e/harness.ts"));
const { startServer: startAfter } = await import(path.join(here, "test/e2e/harness.ts"));
const vars = { RATE_LIMITS: "off", REGISTRATION: "open" };
const servers = {};
try {
  servers.base = await startBase(vars);
  servers.after = await startAfter(vars);
  const users = {};
  for (const [k, s] of Object.entries(servers)) users[k] = await registerBenchUser(s.baseUrl, `ab${k}${Date.now().toString(36)}`);
  const create = async (k) => {
    const t = performance.now();
    const res = await fetch(`${servers[k].baseUrl}/_matrix/client/v3/createRoom`, {
      method: "POST",
      headers: { authorization: `Bearer ${users[k].token}`, "content-type": "application/json" },
      body: "{}",
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`${k} createRoom: ${res.status} ${JSON.stringify(body)}`);
    return performance.now() - t;
  };
  for (let i = 0; i < 10; i++) for (const k of ["base", "after"]) await create(k); // warm-up
  const times = { base: [], after: [] };
  const cpu = { base: 0, after: 0 };
  for (let i = 0; i < rooms; i++) {
    for (const k of i % 2 ? ["base", "after"] : ["after", "base"]) {
      const c0 = processGroupCpuMs(servers[k].pgid).workerd;
      times[k].push(await create(k));
      cpu[k] += processGroupCpuMs(servers[k].pgid).workerd - c0;
    }
  }
  for (const k of ["base", "after"]) {
    console.log(`${k}: createRoom p50 ${percentile(times[k], 50).toFixed(1)} ms, p90 ${percentile(times[k], 90).toFixed(1)} ms, workerd CPU ${(cpu[k] / rooms).toFixed(2)} ms per createRoom (${rooms} rooms, interleaved per request)`);
  }
} finally {
  for (const s of Object.values(servers)) await s.stop();
}
