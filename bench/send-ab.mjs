// Sequential send A/B with the requests interleaved (issue 21, "within 2 ms of the floor"): a
// server from a base tree and one from this tree run side by side (rate limits on, each bench
// user with an admin override so the limiter is asked but never refuses, as bench/send.mjs), and
// whoami (the floor) and a send into a room of 1 member alternate between them request by
// request, so the load of a shared machine falls on both alike (as bench/create-room-ab.mjs).
// Prints each side's p50 of both, send − floor, and workerd CPU per request (/proc, all workerd
// processes of the server: Lattice's and wrangler's proxy, the same on both sides).
//
// node_modules/.bin/node --import tsx bench/send-ab.mjs <base tree> [requests]
//   (TMPDIR=/dev/shm puts both servers' state on tmpfs). Loopback only; both stopped by process group.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { liftSendLimits, percentile, processGroupCpuMs, registerBenchUser } from "./util.mjs";

const [baseTree, nArg] = process.argv.slice(2);
if (!baseTree) throw new Error("usage: bench/send-ab.mjs <base tree> [requests]");
const n = Math.min(Number(nArg ?? 400), 5000);
const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { startServer: startBase } = await import(path.resolve(baseTree, "test/e2e/harness.ts"));
const { startServer: startAfter } = await import(path.join(here, "test/e2e/harness.ts"));
const SECRET = "send-ab-shared-secret-0123456789";
const vars = { RATE_LIMITS: "on", REGISTRATION: "open", REGISTRATION_SHARED_SECRET: SECRET };
const servers = {};
try {
  servers.base = await startBase(vars);
  servers.after = await startAfter(vars);
  const ctx = {};
  for (const [k, s] of Object.entries(servers)) {
    const u = await registerBenchUser(s.baseUrl, `sendab${k}${Date.now().toString(36)}`);
    await liftSendLimits(s.baseUrl, SECRET, [u.userId]);
    const room = await (await fetch(`${s.baseUrl}/_matrix/client/v3/createRoom`, { method: "POST", headers: { authorization: `Bearer ${u.token}` }, body: "{}" })).json();
    ctx[k] = { base: s.baseUrl, token: u.token, room: encodeURIComponent(room.room_id), txn: 0 };
  }
  const call = async (k, kind) => {
    const c = ctx[k];
    const t = performance.now();
    const res =
      kind === "floor"
        ? await fetch(`${c.base}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${c.token}` } })
        : await fetch(`${c.base}/_matrix/client/v3/rooms/${c.room}/send/m.room.message/ab${c.txn++}`, {
            method: "PUT",
            headers: { authorization: `Bearer ${c.token}`, "content-type": "application/json" },
            body: JSON.stringify({ msgtype: "m.text", body: "benchmark" }),
          });
    const body = await res.json();
    if (!res.ok) throw new Error(`${k} ${kind}: ${res.status} ${JSON.stringify(body)}`);
    return performance.now() - t;
  };
  for (let i = 0; i < 30; i++) for (const k of ["base", "after"]) for (const kind of ["floor", "send"]) await call(k, kind); // warm-up
  const times = { base: { floor: [], send: [] }, after: { floor: [], send: [] } };
  const cpu = { base: { floor: 0, send: 0 }, after: { floor: 0, send: 0 } };
  for (let i = 0; i < n; i++) {
    for (const k of i % 2 ? ["base", "after"] : ["after", "base"]) {
      for (const kind of ["floor", "send"]) {
        const c0 = processGroupCpuMs(servers[k].pgid).workerd;
        times[k][kind].push(await call(k, kind));
        cpu[k][kind] += processGroupCpuMs(servers[k].pgid).workerd - c0;
      }
    }
  }
  for (const k of ["base", "after"]) {
    const [f, s] = [percentile(times[k].floor, 50), percentile(times[k].send, 50)];
    const [cf, cs] = [cpu[k].floor / n, cpu[k].send / n];
    console.log(
      `${k}: floor p50 ${f.toFixed(2)} ms, send p50 ${s.toFixed(2)} ms (send − floor ${(s - f).toFixed(2)} ms); workerd CPU floor ${cf.toFixed(2)}, send ${cs.toFixed(2)} ms/request (send − floor ${(cs - cf).toFixed(2)} ms); ${n} each, interleaved per request`,
    );
  }
} finally {
  for (const s of Object.values(servers)) await s.stop();
}
