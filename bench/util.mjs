// Shared helpers for benchmarks (loopback servers only).
import { readdirSync, readFileSync } from "node:fs";
import { execSync, spawn } from "node:child_process";
import { createHmac } from "node:crypto";

/** CPU time (ms) used so far by the processes of process group `pgid` (a server started by the
 *  e2e harness): { workerd, all } (all: wrangler's proxy too). Unlike wall-clock time it barely
 *  moves with the machine's load (Linux /proc). */
export function processGroupCpuMs(pgid) {
  let workerd = 0;
  let all = 0;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(f[2]) !== pgid) continue; // pgrp
    const t = Number(f[11]) + Number(f[12]); // utime, stime
    if (stat.includes("(workerd)")) workerd += t;
    all += t;
  }
  return { workerd: workerd * 10, all: all * 10 }; // USER_HZ = 100
}
export function percentile(values, p) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Register a user through the real UIA flow (needs REGISTRATION=open). */
export async function registerBenchUser(baseUrl, username, password = "bench-password") {
  const url = `${baseUrl}/_matrix/client/v3/register`;
  const first = await (await fetch(url, { method: "POST", body: JSON.stringify({ username, password }) })).json();
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify({ username, password, auth: { type: "m.login.dummy", session: first.session } }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`register ${username}: ${JSON.stringify(body)}`);
  return { userId: body.user_id, token: body.access_token, deviceId: body.device_id, password };
}

/** The workerd processes of process group `pgid` (a server started by the e2e harness). */
export function workerdPidsOf(pgid) {
  return execSync(`ps -o pid=,comm= -g ${pgid}`).toString().split("\n").filter((l) => l.includes("workerd")).map((l) => l.trim().split(/\s+/)[0]);
}

/** The fsync + fdatasync calls (each a storage commit's flush) of process group `pgid`'s workerd
 *  processes while `fn` runs, counted with `perf stat` on the syscall tracepoints (strace slowed
 *  the server ~30×). Returns { result, calls }. */
export async function fsyncsWhile(pgid, fn) {
  const st = spawn("perf", ["stat", "-x", ",", "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync", "-p", workerdPidsOf(pgid).join(",")], { stdio: ["ignore", "ignore", "pipe"] });
  let out = "";
  st.stderr.on("data", (d) => (out += d));
  await new Promise((r) => setTimeout(r, 300)); // attached
  const result = await fn();
  const exited = new Promise((r) => st.once("exit", r));
  st.kill("SIGINT");
  await exited;
  let calls = 0;
  for (const m of out.matchAll(/^(\d+),,syscalls:sys_enter_f(?:data)?sync/gm)) calls += Number(m[1]);
  return { result, calls };
}

/** Lifts the send limit of each of `userIds` far above a benchmark's rate, as an admin registered
 *  with the server's shared secret (REGISTRATION_SHARED_SECRET): the limiter is still asked on
 *  every send, but never refuses (an override of 0/0 would skip it). */
export async function liftSendLimits(baseUrl, sharedSecret, userIds) {
  const name = `benchadmin${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
  const { nonce } = await (await fetch(`${baseUrl}/_synapse/admin/v1/register`)).json();
  const mac = createHmac("sha1", sharedSecret).update(`${nonce}\0${name}\0pw\0admin`).digest("hex");
  const adminRes = await fetch(`${baseUrl}/_synapse/admin/v1/register`, { method: "POST", body: JSON.stringify({ nonce, username: name, password: "pw", admin: true, mac }) });
  const admin = await adminRes.json();
  if (!adminRes.ok) throw new Error(`admin register: ${JSON.stringify(admin)}`);
  for (const userId of userIds) {
    const res = await fetch(`${baseUrl}/_synapse/admin/v1/users/${encodeURIComponent(userId)}/override_ratelimit`, {
      method: "POST",
      headers: { authorization: `Bearer ${admin.access_token}`, "content-type": "application/json" },
      body: JSON.stringify({ messages_per_second: 100000, burst_count: 100000 }),
    });
    if (!res.ok) throw new Error(`override_ratelimit: ${res.status} ${await res.text()}`);
  }
}
