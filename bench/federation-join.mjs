// Federated join of a large room: server A hosts a room with N joined members (and S extra
// state events); a user on server B joins it (make_join → send_join → B validates the whole
// state and auth chain: signatures, hashes, auth rules → seeds its RoomDO), then sees the room.
//
//   node bench/federation-join.mjs [members=1000] [extraState=0]
// Starts two loopback servers (FEDERATION_HTTP_LOOPBACK) itself. Members are registered through
// the real UIA flow and joined with 8 in flight, which is what dominates set-up time.
import { registerBenchUser } from "./util.mjs";

const N = Number(process.argv[2] ?? 1000);
const S = Number(process.argv[3] ?? 0);
const { startServer } = await import("../test/e2e/harness.ts");
const vars = { RATE_LIMITS: "off", REGISTRATION: "open", FEDERATION_HTTP_LOOPBACK: "true" };
const [a, b] = await Promise.all([startServer(vars), startServer(vars)]);

/** wrangler dev reloads the worker when files in the tree change ("Your worker restarted
 *  mid-request", 503): retry those. */
async function api(base, method, path, token, body, attempt = 0) {
  try {
    return await apiOnce(base, method, path, token, body);
  } catch (e) {
    if (attempt >= 3 || !/ 503 |Network/.test(String(e))) throw e;
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

async function pool(items, width, fn) {
  let i = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

try {
  const tag = Date.now().toString(36);
  const owner = await registerBenchUser(a.baseUrl, `fjowner${tag}`);
  const { room_id: roomId } = await api(a.baseUrl, "POST", "/createRoom", owner.token, { preset: "public_chat", name: "big" });
  const t0 = performance.now();
  await pool([...Array(N - 1).keys()], 2, async (i) => {
    let u;
    for (let attempt = 0; !u; attempt++) {
      try {
        u = await registerBenchUser(a.baseUrl, `fj${tag}m${i}`);
      } catch (e) {
        if (attempt >= 3) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await api(a.baseUrl, "POST", `/rooms/${encodeURIComponent(roomId)}/join`, u.token, {});
  });
  await pool([...Array(S).keys()], 8, async (i) => {
    await api(a.baseUrl, "PUT", `/rooms/${encodeURIComponent(roomId)}/state/bench.state/k${i}`, owner.token, { i });
  });
  const setup = performance.now() - t0;
  const joiner = await registerBenchUser(b.baseUrl, `fjjoiner${tag}`);
  const t1 = performance.now();
  await api(b.baseUrl, "POST", `/join/${encodeURIComponent(roomId)}?via=${encodeURIComponent(a.serverName)}`, joiner.token, {});
  const joined = performance.now() - t1;
  // The joining user sees the room: it is in their sync with its name and member count.
  let seen;
  for (let i = 0; i < 100 && !seen; i++) {
    const s = await api(b.baseUrl, "GET", "/sync?timeout=0", joiner.token);
    if (s.rooms?.join?.[roomId]) seen = performance.now() - t1;
  }
  const members = await api(b.baseUrl, "GET", `/rooms/${encodeURIComponent(roomId)}/joined_members`, joiner.token);
  console.log(JSON.stringify({
    members: N,
    extraState: S,
    setupMs: Math.round(setup),
    joinMs: Math.round(joined),
    joinToSyncMs: seen === undefined ? null : Math.round(seen),
    membersSeenOnB: Object.keys(members.joined).length,
  }));
} finally {
  await Promise.all([a.stop(), b.stop()]);
}
