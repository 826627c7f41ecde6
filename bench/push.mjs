// Push latency: send → push gateway request (p50/p99), and send latency in a room of N users
// who all have pushers versus the same room before they had any.
//
// Run: node_modules/.bin/node bench/push.mjs [sends] [members]
//   starts `npm start` itself (PUSH_HTTP_LOOPBACK=true) and a push gateway on loopback, in a
//   child process (bench/push-gateway.mjs; a real gateway is another machine), which reports
//   each request's arrival time over IPC. PUSH_GW_INPROC=1 runs the gateway in this process
//   instead (the old mode: its 99 requests per send share the event loop that times the sends).
//   GW_DELAY_MS=2000 makes the gateway answer 2 s late. PORT / GW_PORT pin the server's and the
//   gateway's loopback ports (else free ones are picked).
//   Phase 2 measures 50 back-to-back sends, then sends paced like a busy room (PACE_MS, default
//   "200,500": one send every 200 ms, then one every 500 ms; PACE_SENDS each, default 30), first
//   without pushers, then with N-1; each pacing starts once the previous one's pushes arrived.
//   PACE_MS=0 skips the paced sends.
//   PUSH_PROFILE=<prefix> takes a V8 CPU profile of workerd over the back-to-back sends (without
//   and with pushers, until every push arrived): <prefix>-without.cpuprofile, -with.cpuprofile,
//   and prints busy CPU per send and the time in the push path's functions (run with
//   `node --import tsx`: the profiler helper loads the protocol code).
import { createServer } from "node:http";
import { fork } from "node:child_process";
import { percentile, processGroupCpuMs, registerBenchUser } from "./util.mjs";

const sends = Number(process.argv[2] ?? 100);
const members = Number(process.argv[3] ?? 100);
/** GW_DELAY_MS: the gateway answers this late (a slow gateway must not slow sends). */
const gwDelayMs = Number(process.env.GW_DELAY_MS ?? 0);
const paces = (process.env.PACE_MS ?? "200,500").split(",").map(Number).filter((n) => n > 0);
const paceSends = Number(process.env.PACE_SENDS ?? 30);
const profilePrefix = process.env.PUSH_PROFILE;
/** PUSH_DIRECT=1: requests go to the runtime's own socket, not through wrangler's dev proxy,
 *  which under heavy machine load ends the dev server ("Network connection lost"; see
 *  docs/benchmarks.md). Needs `node --import tsx`, as PUSH_PROFILE does. */
const direct = process.env.PUSH_DIRECT === "1";
const { phaseTimes, profileWhile, runtimePort } = profilePrefix || direct ? await import("./loopback-peers.mjs") : {};
/** Functions of the push path (and the hub's fan-in around it) whose time a profile reports. */
const PUSH_PHASES = ["roomEvents", "applyNotice", "recordEvent", "afterCommit", "drainTo", "postNotify", "enqueue"]; // names only: the Worker is one bundle

const { startServer, freePort } = await import("../test/e2e/harness.ts");
const waiters = new Map(); // event_id → resolve(arrival time)
const arrived = new Map();
let received = 0; // distinct (pushkey, event) notifications
let duplicates = 0; // a notification that arrived again (the queue is at-least-once)
const seen = new Set();
/** One request at the gateway: `t` in this process's performance.now() time. */
function onArrival(id, pushkey, t) {
  const key = `${pushkey} ${id}`;
  if (!id || !seen.has(key)) received++;
  else duplicates++;
  if (id) seen.add(key);
  if (id && !arrived.has(id)) {
    arrived.set(id, t);
    waiters.get(id)?.(t);
  }
}
/** PUSH_GW_INPROC=1: the gateway runs in this process, on the event loop that times the sends
 *  (the bench's mode before 6 Dec 2026 evening: 99 gateway requests per send then compete with
 *  the client reading its send's answer). Default: a child process (bench/push-gateway.mjs),
 *  as a real gateway is another machine; it reports arrivals over IPC with absolute times. */
const gwInProc = process.env.PUSH_GW_INPROC === "1";
const gw = gwInProc ? await inProcessGateway() : await childGateway();
console.log(`push gateway: ${gwInProc ? "in the bench process (PUSH_GW_INPROC=1)" : "a child process"}, port ${gw.port}`);

async function inProcessGateway() {
  const port = Number(process.env.GW_PORT ?? 0) || (await freePort());
  const server = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      const t = performance.now();
      const n = JSON.parse(raw).notification;
      onArrival(n?.event_id, n?.devices?.[0]?.pushkey, t);
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end('{"rejected":[]}'), gwDelayMs);
    });
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return {
    port,
    cpuMs: async () => 0, // counted in this process's
    stop: async () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function childGateway() {
  const port = Number(process.env.GW_PORT ?? 0) || (await freePort());
  const child = fork(new URL("./push-gateway.mjs", import.meta.url), [String(port), String(gwDelayMs)], { stdio: "inherit" });
  let cpuWaiter = null;
  const listening = new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`push gateway exited (${code})`)));
    child.on("message", (m) => {
      if (m.listening) resolve();
      else if (m.arrivals) for (const [id, pushkey, at] of m.arrivals) onArrival(id, pushkey, at - performance.timeOrigin);
      else if (m.cpu !== undefined) cpuWaiter?.(m.cpu);
    });
  });
  await listening;
  return {
    port,
    cpuMs: () => new Promise((r) => {
      cpuWaiter = r;
      child.send("cpu");
    }),
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.send("stop");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
      if (child.exitCode === null) child.kill();
    },
  };
}
const gwPort = gw.port;
const server = await startServer({ RATE_LIMITS: "off", REGISTRATION: "open", PUSH_HTTP_LOOPBACK: "true" }, { port: Number(process.env.PORT ?? 0) || undefined });
let baseUrl = server.baseUrl;
if (direct) {
  const port = runtimePort(server);
  if (!port) throw new Error("PUSH_DIRECT: the runtime's port was not found in wrangler's log");
  baseUrl = `http://127.0.0.1:${port}`;
  console.log(`PUSH_DIRECT: requests go to the runtime's port ${port}, not through the dev proxy`);
}

/** CPU time (ms) used so far by the server's processes (workerd does the work). */
const serverCpuMs = () => processGroupCpuMs(server.pgid).all;
/** CPU time (ms) of this process (the gateway and the client). */
const benchCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** A kept-alive connection the runtime closed or reset just as a request went out ("other side
 *  closed", ECONNRESET; seen under heavy machine load): sent again, a few times at most (sends
 *  carry a transaction ID, so a repeat is the same event). */
async function retrying(fn) {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= 3 || !["UND_ERR_SOCKET", "ECONNRESET"].includes(e?.cause?.code)) throw e;
      console.warn(`(${e.cause.code}: sent again)`);
    }
  }
}
const register = (name) => retrying(() => registerBenchUser(baseUrl, name));

async function api(method, path, token, body) {
  const res = await retrying(() => fetch(`${baseUrl}/_matrix/client/v3${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  }));
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}
const pusher = (pushkey) => ({
  kind: "http",
  app_id: "bench",
  pushkey,
  app_display_name: "bench",
  device_display_name: "bench",
  lang: "en",
  data: { url: `http://127.0.0.1:${gwPort}/_matrix/push/v1/notify`, format: "event_id_only" },
});

try {
  const tag = Date.now().toString(36);
  let txn = 0;
  const send = async (u, roomId) => {
    const t = performance.now();
    const { event_id } = await api("PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/p${tag}-${txn++}`, u.token, { msgtype: "m.text", body: "bench" });
    return { eventId: event_id, t, sendMs: performance.now() - t };
  };

  // 1. Send → gateway, a two-person room, one pusher.
  const a = await register(`pushbencha${tag}`);
  const b = await register(`pushbenchb${tag}`);
  await api("POST", "/pushers/set", b.token, pusher(`b-${tag}`));
  const { room_id: dm } = await api("POST", "/createRoom", a.token, { preset: "private_chat", invite: [b.userId] });
  await api("POST", `/join/${encodeURIComponent(dm)}`, b.token, {});
  const lat = [];
  for (let i = 0; i < sends + 10; i++) {
    const { eventId, t } = await send(a, dm);
    const at = arrived.get(eventId) ?? (await new Promise((r) => waiters.set(eventId, r)));
    if (i >= 10) lat.push(at - t); // first 10: warm-up
  }
  console.log(`send → gateway (${sends} sends, 1 pusher): p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms`);

  // 2. Send latency in a room of `members` users, without and then with pushers.
  const users = [];
  for (let i = 0; i < members; i++) users.push(await register(`pushbench${tag}m${i}`));
  const { room_id: big } = await api("POST", "/createRoom", users[0].token, { preset: "public_chat" });
  for (const u of users.slice(1)) await api("POST", `/rooms/${encodeURIComponent(big)}/join`, u.token, {});
  const measure = async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) out.push((await send(users[0], big)).sendMs);
    return out;
  };
  /** `n` sends, one started every `every` ms (not waiting for the previous one's answer, as
   *  a busy room's senders would not): their latencies. */
  const paced = async (n, every) => {
    const t0 = performance.now();
    const all = [];
    for (let i = 0; i < n; i++) {
      const wait = t0 + i * every - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      all.push(send(users[0], big).then((x) => x.sendMs));
    }
    return Promise.all(all);
  };
  /** Each pacing starts from a quiet server: after its sends, the bench waits for their pushes
   *  (`pushers`: how many each send makes) and a second more, so one pacing's fan-out and pushes
   *  do not land in the next one's sends. */
  const pacedAll = async (pushers) => {
    const out = {};
    for (const every of paces) {
      const start = received;
      const c = serverCpuMs();
      out[every] = await paced(paceSends, every);
      if (pushers) await waitFor(start + paceSends * pushers);
      await settle();
      out[every].cpu = (serverCpuMs() - c) / paceSends;
    }
    return out;
  };
  /** Run `fn`, under a CPU profile of workerd when PUSH_PROFILE is set. */
  const profiled = async (name, fn) => {
    if (!profilePrefix) return fn();
    const r = await profileWhile(server, `${profilePrefix}-${name}.cpuprofile`, fn);
    const { busyMs, phases } = phaseTimes(PUSH_PHASES);
    const per = (ms) => (ms / 50).toFixed(2);
    console.log(`profile ${name}: busy ${per(busyMs)} ms per send; per send, callees included: ${Object.entries(phases).map(([k, v]) => `${k.split(" ")[0]} ${per(v)}`).join(", ")}`);
    return r;
  };
  await measure(10);
  // CPU per send (server processes; this process = gateway + client), from the first send until
  // its background work is done: less sensitive to other load on the machine than latency.
  const settle = () => new Promise((r) => setTimeout(r, 1000));
  const waitFor = async (expected) => {
    const deadline = Date.now() + 300_000;
    while (received < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  };
  let c0 = serverCpuMs();
  let b0 = benchCpuMs();
  let g0 = await gw.cpuMs();
  const without = await profiled("without", async () => {
    const r = await measure(50);
    await settle();
    return r;
  });
  const cpuWithout = { server: (serverCpuMs() - c0) / 50, bench: (benchCpuMs() - b0) / 50, gw: ((await gw.cpuMs()) - g0) / 50 };
  const pacedWithout = await pacedAll(0);
  for (const [i, u] of users.slice(1).entries()) await api("POST", "/pushers/set", u.token, pusher(`m${i}-${tag}`));
  await measure(2); // the first hand-over to each pusher's queue
  await new Promise((r) => setTimeout(r, 2000));
  const before = received;
  c0 = serverCpuMs();
  b0 = benchCpuMs();
  g0 = await gw.cpuMs();
  const withP = await profiled("with", async () => {
    const r = await measure(50);
    await waitFor(before + 50 * (members - 1));
    await settle();
    return r;
  });
  const cpuWith = { server: (serverCpuMs() - c0) / 50, bench: (benchCpuMs() - b0) / 50, gw: ((await gw.cpuMs()) - g0) / 50 };
  const deliveredB2b = received - before;
  const beforePaced = received;
  const pacedWith = await pacedAll(members - 1);
  const pacedExpected = paces.length * paceSends * (members - 1);
  await waitFor(beforePaced + pacedExpected);
  const p = (xs) => `${percentile(xs, 50).toFixed(1)} / ${percentile(xs, 99).toFixed(1)}`;
  console.log(`room of ${members}, 50 back-to-back sends: send p50/p99 without pushers ${p(without)} ms, with ${members - 1} pushers ${p(withP)} ms; pushes delivered ${deliveredB2b} of ${50 * (members - 1)}`);
  for (const every of paces) {
    console.log(`room of ${members}, ${paceSends} sends one every ${every} ms: send p50/p99 without pushers ${p(pacedWithout[every])} ms, with ${members - 1} pushers ${p(pacedWith[every])} ms; server CPU per send ${pacedWithout[every].cpu.toFixed(1)} → ${pacedWith[every].cpu.toFixed(1)} ms`);
  }
  if (paces.length) console.log(`room of ${members}, paced sends: pushes delivered ${received - beforePaced} of ${pacedExpected}`);
  console.log(`notifications that arrived twice (at-least-once), whole run: ${duplicates}`);
  const cpu = (c) => `${c.server.toFixed(1)} / ${c.bench.toFixed(1)}${gwInProc ? "" : ` / ${c.gw.toFixed(1)}`}`;
  console.log(`room of ${members}: CPU per send (server / bench process${gwInProc ? " incl. gateway" : " / gateway process"}) without pushers ${cpu(cpuWithout)} ms, with ${members - 1} pushers ${cpu(cpuWith)} ms`);
} finally {
  await server.stop();
  await gw.stop();
}
