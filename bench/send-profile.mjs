// CPU profile of the Worker's isolate (wrangler's inspector) during sequential sends into a room
// of 1 member, and during as many whoami requests (the floor), printed side by side by sample
// count (each sample the interval; the time-weighted view puts time spent blocked in fsync on the
// next sample). Usage: node --import tsx bench/send-profile.mjs [requests] [--rate-limits on|off] [--out DIR]
import { startServer } from "../test/e2e/harness.ts";
import { profileWhile } from "./loopback-peers.mjs";
import { registerBenchUser } from "./util.mjs";

const args = process.argv.slice(2);
const opt = (n, d) => (args.includes(n) ? args.splice(args.indexOf(n), 2)[1] : d);
const rateLimits = opt("--rate-limits", "off");
const out = opt("--out", "/tmp");
// --perf: a native profile (`perf record -g` of the server's workerd processes) of each phase
// instead, in DIR/<phase>.perf (read with `perf report -i FILE --no-children --sort dso,sym`).
const perf = args.includes("--perf") && args.splice(args.indexOf("--perf"), 1).length > 0;
const n = Number(args[0] ?? 300);
const SHARED_SECRET = "send-bench-shared-secret-0123456789";
const server = await startServer({ RATE_LIMITS: rateLimits, REGISTRATION: "open", REGISTRATION_SHARED_SECRET: SHARED_SECRET });
const base = server.baseUrl;
async function api(method, path, token, body) {
  const res = await fetch(`${base}/_matrix/client/v3${path}`, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

// --interval US: the sampler's interval in µs (default 500; 100 gives a finer per-step split).
const SAMPLE_MS = Number(opt("--interval", 500)) / 1000;

/** Self samples per function, and inclusive samples for each function name (a frame counted once
 *  per sample), both per request in ms (samples × interval / requests). */
function summarise(profile, requests) {
  const byId = new Map(profile.nodes.map((x) => [x.id, x]));
  const parent = new Map();
  for (const x of profile.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  const interval = SAMPLE_MS; // workerd samples only while the isolate runs: each sample ~ the interval
  const self = new Map();
  const incl = new Map();
  let busy = 0;
  for (const id of profile.samples) {
    const f = byId.get(id).callFrame;
    if (f.functionName === "(idle)") continue;
    busy++;
    const k = `${f.functionName || "(anon)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
    self.set(k, (self.get(k) ?? 0) + 1);
    const seen = new Set();
    for (let p = id; p !== undefined; p = parent.get(p)) {
      const g = byId.get(p).callFrame;
      const name = `${g.functionName || "(anon)"} ${g.url.split("/").pop()}:${g.lineNumber + 1}`;
      if (seen.has(name)) continue;
      seen.add(name);
      incl.set(name, (incl.get(name) ?? 0) + 1);
    }
  }
  const per = (s) => ((s * interval) / requests).toFixed(3);
  console.log(`  busy ${per(busy)} ms/request (${busy} samples of ~${interval} ms)`);
  console.log("  self:");
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`    ${per(v)}  ${k}`);
  console.log("  inclusive:");
  for (const [k, v] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, 60)) console.log(`    ${per(v)}  ${k}`);
}

try {
  const u = await registerBenchUser(base, `sendprof${Date.now().toString(36)}`);
  if (rateLimits === "on") {
    // As bench/send.mjs: an override so high that the limiter is asked but never refuses.
    const { createHmac } = await import("node:crypto");
    const name = `sendprofadmin${Date.now().toString(36)}`;
    const { nonce } = await (await fetch(`${base}/_synapse/admin/v1/register`)).json();
    const mac = createHmac("sha1", SHARED_SECRET).update(`${nonce}\0${name}\0pw\0admin`).digest("hex");
    const admin = await (await fetch(`${base}/_synapse/admin/v1/register`, { method: "POST", body: JSON.stringify({ nonce, username: name, password: "pw", admin: true, mac }) })).json();
    const r = await fetch(`${base}/_synapse/admin/v1/users/${encodeURIComponent(u.userId)}/override_ratelimit`, { method: "POST", headers: { authorization: `Bearer ${admin.access_token}` }, body: JSON.stringify({ messages_per_second: 100000, burst_count: 100000 }) });
    if (!r.ok) throw new Error(`override: ${await r.text()}`);
  }
  const { room_id } = await api("POST", "/createRoom", u.token, { preset: "public_chat" });
  let txn = 0;
  const send = () => api("PUT", `/rooms/${encodeURIComponent(room_id)}/send/m.room.message/p${txn++}`, u.token, { msgtype: "m.text", body: "benchmark" });
  for (let i = 0; i < 30; i++) await send();
  for (let i = 0; i < 30; i++) await api("GET", "/account/whoami", u.token);
  for (const [name, fn] of [["whoami", () => api("GET", "/account/whoami", u.token)], ["send", send]]) {
    if (perf) {
      const { execSync, spawn } = await import("node:child_process");
      const pids = execSync(`ps -o pid=,comm= -g ${server.pgid}`).toString().split("\n").filter((l) => /workerd/.test(l)).map((l) => l.trim().split(/\s+/)[0]);
      const st = spawn("perf", ["record", "-g", "-F", "2999", "-o", `${out}/${name}.perf`, "-p", pids.join(",")], { stdio: "ignore" });
      await new Promise((r) => setTimeout(r, 500));
      for (let i = 0; i < n; i++) await fn();
      const exited = new Promise((r) => st.once("exit", r));
      st.kill("SIGINT");
      await exited;
      console.log(`${name}: ${out}/${name}.perf`);
      continue;
    }
    let profile;
    await profileWhile(
      server,
      `${out}/${name}.cpuprofile`,
      async () => {
        for (let i = 0; i < n; i++) await fn();
      },
      SAMPLE_MS * 1000,
    );
    const { readFileSync } = await import("node:fs");
    profile = JSON.parse(readFileSync(`${out}/${name}.cpuprofile`, "utf8"));
    console.log(`${name} (${n} sequential, RATE_LIMITS=${rateLimits}):`);
    summarise(profile, n);
  }
  // The bundle the profile's line numbers refer to (wrangler deletes it when it stops).
  const { readdirSync, statSync, copyFileSync } = await import("node:fs");
  const dirs = readdirSync(".wrangler/tmp").filter((d) => d.startsWith("dev-")).map((d) => `.wrangler/tmp/${d}`);
  const newest = dirs.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (newest) copyFileSync(`${newest}/index.js`, `${out}/index.js`);
} finally {
  await server.stop();
}
