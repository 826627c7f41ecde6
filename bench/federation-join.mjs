// Federated join of a large room: server A hosts a room with N joined members and S extra state
// events; a user on server B joins it (make_join → send_join → B validates the whole state and
// auth chain: signatures, hashes, auth rules → seeds its RoomDO), then sees the room in /sync.
//
//   node_modules/.bin/node --import tsx bench/federation-join.mjs [members=1000] [extraState=0] [--local]
//     [--state DIR [--port N]]
//
// With --state DIR, A's state (and the fake server's port and key) is kept in DIR and the set-up
// resumes where it stopped (checkpoints every 500 members / 2,000 state events); a later run
// with the same DIR only measures B's join (B is new each run). Without it all state is temporary.
//
// FJ_JOIN_ONLY=1 stops after the join (profiles, before/after pairs) without the minutes of
// background sync after it.
// "joinMs" is the client's POST /join; "fullySyncedMs" until B's /joined_members equals A's
// (with partial-state joins, FJ_PARTIAL=on by default, the members arrive in the background).
//
// Starts two loopback Lattice servers (FEDERATION_HTTP_LOOPBACK) itself. How the members get in:
//  - default: a third, fake homeserver run by this script on loopback (it serves its signing key
//    and accepts transactions) joins its users through A's real federation endpoints, make_join
//    and v2/send_join?omit_members=true, FJ_WIDTH (16) in flight. No debug path on the server: every member
//    event is signed by the fake server and goes through A's admit pipeline like any remote join.
//  - --local: members are local users of A, registered through the real UIA flow (PBKDF2) and
//    joined through the client API; slow (about 2 users/s here), so only for small N.
//  - extra state: A's room creator sets S `org.lattice.bench` state events (distinct state keys)
//    through the client API, 8 in flight, after the members.
// The set-up's requests go to A's workerd runtime socket directly (FJ_DIRECT=0: through
// `wrangler dev`'s proxy, which under hours of sustained load exited the whole dev server when a
// relayed connection was lost); B's join and /sync are measured through the proxies as usual.
// Progress (every 500 members / 2,000 state events) goes to stderr: time per event, load average.
// `tsx` is needed to import the protocol code (src/core) for signing.
// `wrangler dev` reloads the Worker whenever a file in the tree changes; for long runs use a
// quiet copy: `git archive HEAD | tar -x -C /tmp/lb && ln -s $PWD/node_modules /tmp/lb/ && cd /tmp/lb`.
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import path from "node:path";
import { registerBenchUser } from "./util.mjs";
import { profileWhile, runtimeCpuMs, runtimePort, startFakeHomeserver } from "./loopback-peers.mjs";

const argv = process.argv.slice(2);
function option(name) {
  const i = argv.indexOf(name);
  return i < 0 ? undefined : argv.splice(i, 2)[1];
}
const stateDir = option("--state");
const fixedPort = option("--port");
const args = argv.filter((a) => !a.startsWith("--"));
const LOCAL = argv.includes("--local");
const N = Number(args[0] ?? 1000);
const S = Number(args[1] ?? 0);
/** Remote member joins in flight (the RoomDO admits them one at a time; overlapping requests
 *  hides request and storage-commit latency). */
const WIDTH = Number(process.env.FJ_WIDTH ?? 16);
const { startServer } = await import("../test/e2e/harness.ts");
const { signRequest } = await import("../src/core/x-matrix.ts");
const { hashAndSignEvent } = await import("../src/core/event-hashes.ts");
const { getRoomVersion } = await import("../src/core/room-versions.ts");
const enc = encodeURIComponent;

/** What a kept set-up (--state) remembers between runs. */
const savedPath = stateDir && path.join(stateDir, "bench-federation-join.json");
if (stateDir) mkdirSync(stateDir, { recursive: true });
const saved = savedPath && existsSync(savedPath) ? JSON.parse(readFileSync(savedPath, "utf8")) : undefined;
if (saved && (saved.members !== N || saved.extraState !== S)) throw new Error(`${stateDir} holds a set-up of ${saved.members} members and ${saved.extraState} state events`);
const progress = saved ?? { members: N, extraState: S, membersDone: 0, stateDone: 0, membersMs: 0, stateMs: 0 };
const save = () => savedPath && writeFileSync(savedPath, JSON.stringify(progress, null, 1));

/** Where a join's CPU goes, by function (FJ_PROFILE, FJ_PROFILE_A): B's parse and digest, the
 *  signature checks, auth and storage of the state, the join's own admit; A's template, auth
 *  chain, PDU texts and fan-out facts. Async functions lose their callers after an await, so
 *  each step is named by the function doing the work itself. */
const JOIN_STEPS_B = ["sendJoinAnswer", "digestPdu", "parseReceived", "verifyBytes", "flushOutlierRows", "decideAndPersist", "admitInner", "(garbage collector)"];
const JOIN_STEPS_A = ["fedTemplate", "groupState", "fanOutFacts", "authChainIds", "wireJson", "admitInner"];
function profileSteps(file, steps) {
  const p = JSON.parse(readFileSync(file, "utf8"));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out = Object.fromEntries([["busy", 0], ...steps.map((x) => [x, 0])]);
  p.samples.forEach((id, i) => {
    const ms = (p.timeDeltas[i + 1] ?? 0) / 1000;
    if (ms > 20 || byId.get(id).callFrame.functionName === "(idle)") return;
    out.busy += ms;
    const hit = new Set();
    for (let x = id; x !== undefined; x = parent.get(x)) if (steps.includes(byId.get(x).callFrame.functionName)) hit.add(byId.get(x).callFrame.functionName);
    for (const h of hit) out[h] += ms;
  });
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Math.round(v)]));
}

const vars = { RATE_LIMITS: "off", REGISTRATION: "open", FEDERATION_HTTP_LOOPBACK: "true" };
const aPort = saved?.port ?? (fixedPort ? Number(fixedPort) : undefined);
/** A kept set-up lives in DIR/filling until it is complete, then in DIR/filled; each measuring
 *  run starts A on a fresh copy of DIR/filled (DIR/run), so earlier runs' joiners (whose server is
 *  gone) are not in the room and every run measures the same room, on a cold A. */
const stateOf = (name) => (stateDir ? { stateDir: path.join(stateDir, name), port: progress.port ?? aPort } : {});
const setUpComplete = () => progress.membersDone >= N - 1 && progress.stateDone >= S;
function freshRunCopy() {
  rmSync(path.join(stateDir, "run"), { recursive: true, force: true });
  cpSync(path.join(stateDir, "filled"), path.join(stateDir, "run"), { recursive: true });
}
if (stateDir && setUpComplete()) freshRunCopy();
// FJ_PARTIAL=off: B joins with the full state (send_join without omit_members), as before
// partial-state joins; default on (B asks omit_members, answers, fetches the members after).
const partialJoins = process.env.FJ_PARTIAL ?? "on";
/** A and B; when one fails to start (a free port taken meanwhile by another runtime's socket on
 *  this shared machine), the other is stopped, not left behind, and both are tried again. */
async function startBoth(attempt = 0) {
  const started = await Promise.allSettled([startServer(vars, stateOf(stateDir && setUpComplete() ? "run" : "filling")), startServer({ ...vars, PARTIAL_STATE_JOINS: partialJoins })]);
  if (started.every((x) => x.status === "fulfilled")) return started.map((x) => x.value);
  await Promise.all(started.filter((x) => x.status === "fulfilled").map((x) => x.value.stop()));
  if (attempt >= 2) throw started.find((x) => x.status === "rejected").reason;
  return startBoth(attempt + 1);
}
let [a, b] = await startBoth();
progress.port = a.port;
let setupBase = process.env.FJ_DIRECT === "0" ? a.baseUrl : await runtimeUrl(a);
// Interrupted: stop the servers (their own process groups) rather than leave them running.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    void Promise.all([a.stop(), b.stop()]).finally(() => process.exit(130));
  });
}

// -- the fake member server --------------------------------------------------------------------
const { name: fname, port: fakePort, key: fkey, server: fake } = await startFakeHomeserver({ port: saved?.fakePort, seed: saved?.fakeSeed });
Object.assign(progress, { fakePort, fakeSeed: fkey.seed });

/** Set-up requests go to the workerd runtime behind the dev proxy (see runtimePort). */
function runtimeUrl(server) {
  const port = runtimePort(server);
  if (port) {
    process.stderr.write(`set-up requests go to the runtime at 127.0.0.1:${port}\n`);
    return `http://127.0.0.1:${port}`;
  }
  process.stderr.write("runtime socket not found in wrangler's log: set-up goes through the dev proxy\n");
  return server.baseUrl;
}

async function fedRequest(method, path, body) {
  const authorization = await signRequest(fkey, { method, uri: path, origin: fname, destination: a.serverName, content: body });
  const res = await fetch(`${setupBase}${path}`, {
    method,
    headers: { authorization, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** One member of the fake server joins through A's federation API. */
async function remoteMemberJoins(roomId, i) {
  const userId = `@m${i}:${fname}`;
  const t = await fedRequest("GET", `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(userId)}?ver=12`);
  const { pdu, eventId } = await hashAndSignEvent({ ...t.event, origin_server_ts: Date.now() }, getRoomVersion(t.room_version), fname, fkey);
  await fedRequest("PUT", `/_matrix/federation/v2/send_join/${enc(roomId)}/${enc(eventId)}?omit_members=true`, pdu);
}

// -- client API ---------------------------------------------------------------------------------
/** wrangler dev reloads the worker when files in the tree change ("Your worker restarted
 *  mid-request", 503): retry those. */
async function api(base, method, path, token, body, attempt = 0) {
  try {
    return await apiOnce(base, method, path, token, body);
  } catch (e) {
    // Also a kept-alive connection the runtime closed as the request went out ("fetch failed").
    if (attempt >= 3 || !/ 503 |Network|fetch failed/.test(String(e))) throw e;
    await new Promise((r) => setTimeout(r, 1000));
    return api(base, method, path, token, body, attempt + 1);
  }
}

async function apiOnce(base, method, path, token, body) {
  const res = await fetch(`${base}/_matrix/client/v3${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
  }
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** How long `server` took to answer its last request starting with `prefix`, from wrangler's
 *  log line ("[wrangler:info] PUT /path 200 OK (123ms)"); null if not logged. */
function servedMs(server, prefix) {
  const lines = server.output().split("\n").filter((l) => l.includes(`] ${prefix}`));
  const m = /\((\d+)ms\)/.exec(lines.at(-1) ?? "");
  return m ? Number(m[1]) : null;
}

async function pool(items, width, fn) {
  let i = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (i < items.length) await fn(items[i++]);
    }),
  );
}

async function withRetry(fn, what) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      // Up to ~30 s: enough to ride out a `wrangler dev` reload (state persists across it).
      if (attempt >= 7) throw new Error(`${what}: ${e.message}`);
      await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
    }
  }
}

try {
  const tag = Date.now().toString(36);
  progress.owner ??= await registerBenchUser(a.baseUrl, `fjowner${tag}`);
  const owner = progress.owner;
  progress.roomId ??= (await api(a.baseUrl, "POST", "/createRoom", owner.token, { preset: "public_chat", name: "big", room_version: "12" })).room_id;
  const roomId = progress.roomId;
  save();
  if (saved) process.stderr.write(`${setUpComplete() ? "measuring on" : "resuming"} ${stateDir}: ${progress.membersDone} members and ${progress.stateDone} state events are in\n`);
  const t0 = performance.now();
  let done = 0;
  let mark = { n: 0, t: t0 };
  /** Every `every` set-up events: time per event over the last ones, and the load average. */
  const step = (what, every) => {
    done++;
    if (done % every !== 0) return;
    const now = performance.now();
    process.stderr.write(`  ${what} ${done}: ${((now - mark.t) / (done - mark.n)).toFixed(1)} ms each, ${Math.round((now - t0) / 1000)} s in, load ${loadavg()[0].toFixed(1)}\n`);
    mark = { n: done, t: now };
  };
  /** Items below the checkpoint are all done (the lowest one still in flight bounds it); a
   *  resumed run redoes at most the ones that were in flight, which is harmless (a member joins
   *  again, a state event is set again). */
  const checkpointed = (key, every, fn) => {
    const inFlight = new Set();
    return async (i) => {
      inFlight.add(i);
      await fn(i);
      inFlight.delete(i);
      if ((i + 1) % every === 0) {
        progress[key] = Math.max(progress[key], inFlight.size ? Math.min(...inFlight) : i + 1);
        save();
      }
    };
  };
  const memberItems = [...Array(N - 1).keys()].slice(progress.membersDone);
  await pool(memberItems, LOCAL ? 2 : WIDTH, checkpointed("membersDone", 500, async (i) => {
    if (LOCAL) {
      const u = await withRetry(() => registerBenchUser(a.baseUrl, `fj${tag}m${i}`), "register");
      await api(a.baseUrl, "POST", `/rooms/${enc(roomId)}/join`, u.token, {});
    } else {
      await withRetry(() => remoteMemberJoins(roomId, i), `member ${i}`);
    }
    step("members", 500);
  }));
  if (memberItems.length) {
    Object.assign(progress, { membersDone: N - 1, membersMs: progress.membersMs + (performance.now() - t0) });
    save();
  }
  const t0State = performance.now();
  done = 0;
  mark = { n: 0, t: t0State };
  const stateItems = [...Array(S).keys()].slice(progress.stateDone);
  await pool(stateItems, 8, checkpointed("stateDone", 2000, async (i) => {
    await withRetry(() => api(setupBase, "PUT", `/rooms/${enc(roomId)}/state/org.lattice.bench/k${i}`, owner.token, { i }), `state event ${i}`);
    step("state events", 2000);
  }));
  if (stateItems.length) {
    Object.assign(progress, { stateDone: S, stateMs: progress.stateMs + (performance.now() - t0State) });
    save();
  }
  if (stateDir && existsSync(path.join(stateDir, "filling"))) {
    // The set-up just completed: keep it, and measure on a copy (see stateOf).
    await a.stop();
    renameSync(path.join(stateDir, "filling"), path.join(stateDir, "filled"));
    freshRunCopy();
    a = await startServer(vars, stateOf("run"));
    process.stderr.write(`set-up complete and kept in ${stateDir}/filled; A restarted on a copy\n`);
  }
  const loadAtJoin = loadavg().map((x) => Number(x.toFixed(1)));
  // FJ_B_DIRECT=1: B's client requests go to its workerd runtime, not through wrangler's dev
  // proxy, which under load (average ~20) exited B's dev server right after the join answered.
  const bBase = process.env.FJ_B_DIRECT === "1" ? runtimeUrl(b) : b.baseUrl;
  const joiner = await registerBenchUser(bBase, `fjjoiner${tag}`);
  // B learns A's signing key before the clock starts (B's notary endpoint fetches and caches
  // it), as a server already federating with A has it: under load A's cold start dropped B's key
  // fetch in the middle of the join, and every event A signed then failed verification.
  await fetch(`${bBase}/_matrix/key/v2/query/${enc(a.serverName)}`).then((r) => r.text());
  const cpu0 = [runtimeCpuMs(a), runtimeCpuMs(b)];
  const t1 = performance.now();
  const join = () => api(bBase, "POST", `/join/${enc(roomId)}?via=${enc(a.serverName)}`, joiner.token, {});
  // FJ_PROFILE=FILE: a CPU profile of B's Worker during the join (bench/loopback-peers.mjs);
  // FJ_PROFILE_A=FILE: of A's (make_join and send_join), during the same join.
  const joinB = () => (process.env.FJ_PROFILE ? profileWhile(b, process.env.FJ_PROFILE, join) : join());
  await (process.env.FJ_PROFILE_A ? profileWhile(a, process.env.FJ_PROFILE_A, joinB) : joinB());
  const joined = performance.now() - t1;
  // With the profiles: the join's steps (ms of samples under each function, callees included;
  // a sample longer than 20 ms is a wait the isolate was not running in, left out).
  if (process.env.FJ_PROFILE) process.stderr.write(`B's steps (profiled ms): ${JSON.stringify(profileSteps(process.env.FJ_PROFILE, JOIN_STEPS_B))}\n`);
  if (process.env.FJ_PROFILE_A) process.stderr.write(`A's steps (profiled ms): ${JSON.stringify(profileSteps(process.env.FJ_PROFILE_A, JOIN_STEPS_A))}\n`);
  // CPU the runtimes used during the join (A: make_join and send_join; B: the rest), which on a
  // shared machine varies less than the wall time.
  const cpu1 = [runtimeCpuMs(a), runtimeCpuMs(b)];
  const cpuOf = (i) => (cpu0[i] === null || cpu1[i] === null ? null : cpu1[i] - cpu0[i]);
  // The join's own numbers at once (stderr): the waits after it (fully synced, agreement) can
  // run for minutes on a loaded machine, and a run stopped during them still recorded these.
  process.stderr.write(`joined: ${JSON.stringify({ joinMs: Math.round(joined), joinCpuMsOnA: cpuOf(0), joinCpuMsOnB: cpuOf(1), makeJoinOnAMs: servedMs(a, "GET /_matrix/federation/v1/make_join/"), sendJoinOnAMs: servedMs(a, "PUT /_matrix/federation/v2/send_join/"), load: loadavg()[0] })}\n`);
  // FJ_JOIN_ONLY=1: stop here (profiles and join pairs, without the minutes of background sync).
  if (process.env.FJ_JOIN_ONLY === "1") throw Object.assign(new Error("FJ_JOIN_ONLY"), { joinOnly: true });
  // The joining user sees the room: it is in their sync (lazy-loaded members, as Element asks).
  const lazy = encodeURIComponent(JSON.stringify({ room: { state: { lazy_load_members: true }, timeline: { limit: 10 } } }));
  let seen;
  let seenRoom;
  for (let i = 0; i < 100 && !seen; i++) {
    const s = await api(bBase, "GET", `/sync?timeout=0&filter=${lazy}`, joiner.token);
    if (s.rooms?.join?.[roomId]) {
      seen = performance.now() - t1;
      seenRoom = s.rooms.join[roomId];
    } else await new Promise((r) => setTimeout(r, 100));
  }
  // Fully synced: B holds every member A has. /joined_members waits (bounded) while B's copy is
  // partial, so this is the time until the background fetch completed (or the full join's gap
  // was filled), from the join request.
  const membersOnA0 = Object.keys((await api(a.baseUrl, "GET", `/rooms/${enc(roomId)}/joined_members`, owner.token)).joined).length;
  let fullySyncedMs = null;
  for (let i = 0; i < 240 && fullySyncedMs === null; i++) {
    const now = await api(bBase, "GET", `/rooms/${enc(roomId)}/joined_members`, joiner.token);
    if (Object.keys(now.joined).length === membersOnA0) fullySyncedMs = Math.round(performance.now() - t1);
    else {
      if (i % 10 === 0) process.stderr.write(`  ${Math.round((performance.now() - t1) / 1000)} s: ${Object.keys(now.joined).length} of ${membersOnA0} members on B\n`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  // A full initial sync (no filter: every member event) for the joiner.
  const t2 = performance.now();
  const full = await api(bBase, "GET", "/sync?timeout=0", joiner.token);
  const fullSyncMs = performance.now() - t2;
  const members = await api(bBase, "GET", `/rooms/${enc(roomId)}/joined_members`, joiner.token);
  const membersOnA = await api(a.baseUrl, "GET", `/rooms/${enc(roomId)}/joined_members`, owner.token);
  // Joins A accepted on branches B's join did not cite reach B afterwards (A merges its forward
  // extremities after a new server's join; B fetches the gap): until B agrees with A, up to 60 s.
  const onA = Object.keys(membersOnA.joined).length;
  let agreedMs = Object.keys(members.joined).length === onA ? 0 : null;
  for (let i = 0; i < 120 && agreedMs === null; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await api(bBase, "GET", `/rooms/${enc(roomId)}/joined_members`, joiner.token);
    if (Object.keys(now.joined).length === onA) agreedMs = Math.round(performance.now() - t1);
  }
  console.log(
    JSON.stringify({
      members: N,
      extraState: S,
      seeding: LOCAL ? "local users (client API)" : "remote users (make_join/send_join from a fake server)",
      membersSetupMs: Math.round(progress.membersMs),
      stateSetupMs: Math.round(progress.stateMs),
      setupMs: Math.round(progress.membersMs + progress.stateMs),
      keptSetUp: stateDir ?? null,
      loadAverageAtJoin: loadAtJoin,
      partialStateJoins: partialJoins,
      joinMs: Math.round(joined),
      fullySyncedMs,
      joinToSyncMs: seen === undefined ? null : Math.round(seen),
      joinedMemberCountInSync: seenRoom?.summary?.["m.joined_member_count"] ?? null,
      stateEventsInLazySync: seenRoom?.state?.events?.length ?? null,
      fullInitialSyncMs: Math.round(fullSyncMs),
      stateEventsInFullSync: full.rooms?.join?.[roomId]?.state?.events?.length ?? null,
      // Where the join's time went: A's share, as wrangler's proxy logged A's side of it.
      makeJoinOnAMs: servedMs(a, "GET /_matrix/federation/v1/make_join/"),
      sendJoinOnAMs: servedMs(a, "PUT /_matrix/federation/v2/send_join/"),
      // B's share of the join: the rest of it (checking and storing the state A sent).
      bShareMs: Math.round(joined) - (servedMs(a, "GET /_matrix/federation/v1/make_join/") ?? 0) - (servedMs(a, "PUT /_matrix/federation/v2/send_join/") ?? 0),
      joinCpuMsOnA: cpuOf(0),
      joinCpuMsOnB: cpuOf(1),
      membersOnA: Object.keys(membersOnA.joined).length,
      membersSeenOnB: Object.keys(members.joined).length,
      membersAgreeAfterJoinMs: agreedMs,
      loadAverageAtEnd: loadavg().map((x) => Number(x.toFixed(1))),
    }),
  );
} catch (e) {
  if (!e.joinOnly) {
    // What the servers said (a crashed or restarted isolate shows here).
    console.error(`A's output (tail):\n${a.output().slice(-4000)}\nB's output (tail):\n${b.output().slice(-2000)}`);
    throw e;
  }
} finally {
  // FJ_LOGS=DIR: both servers' output (wrangler's request log, warnings) for a closer look.
  if (process.env.FJ_LOGS) {
    mkdirSync(process.env.FJ_LOGS, { recursive: true });
    writeFileSync(path.join(process.env.FJ_LOGS, "a.log"), a.output());
    writeFileSync(path.join(process.env.FJ_LOGS, "b.log"), b.output());
  }
  await Promise.all([a.stop(), b.stop(), new Promise((r) => fake.close(r))]);
}
