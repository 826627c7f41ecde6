// A device's last_seen_ts / last_seen_ip (spec: Client-Server API "Device management", GET
// /devices: "May be a few minutes out of date, for efficiency reasons") follow the requests made
// with its access token, batched: the token lookup reads the stored time, and only when it is
// older than LAST_SEEN_INTERVAL_MS is one UPDATE run, after the response (waitUntil).
import { describe, expect, it } from "vitest";
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { BASE, registerUser, withEnv, type TestUser } from "./helpers";
import { registerAdmin } from "./admin-helpers";
import { LAST_SEEN_INTERVAL_MS } from "../../src/api/middleware/auth";

const V3 = "/_matrix/client/v3";

/** A D1 binding that records the SQL of every statement prepared through it. */
function countingDb(log: string[]): D1Database {
  const db = env.DB;
  return new Proxy(db, {
    get(target, prop) {
      if (prop === "prepare") return (sql: string) => (log.push(sql), target.prepare(sql));
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** One request through the Worker, waiting for its background work (waitUntil) too; the SQL of
 *  every D1 statement it ran, in the response and after it. */
async function request(u: TestUser, path: string, headers: Record<string, string> = {}, overrides: Record<string, string> = {}) {
  const app = (await import("../../src/index")).default;
  const ctx = createExecutionContext();
  const statements: string[] = [];
  const res = await app.fetch(
    new Request(`${BASE}${path}`, { headers: { authorization: `Bearer ${u.accessToken}`, ...headers } }),
    { ...env, ...overrides, DB: countingDb(statements) },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return { status: res.status, body: (await res.json()) as any, statements };
}

async function device(u: TestUser) {
  return (await env.DB.prepare("SELECT last_seen_ts, last_seen_ip FROM devices WHERE user_id = ? AND device_id = ?")
    .bind(u.userId, u.deviceId)
    .first<{ last_seen_ts: number | null; last_seen_ip: string | null }>())!;
}

/** Pretend the device was last seen `ago` ms back. */
async function seenAgo(u: TestUser, ago: number, ip: string | null = null) {
  await env.DB.prepare("UPDATE devices SET last_seen_ts = ?, last_seen_ip = ? WHERE user_id = ? AND device_id = ?")
    .bind(Date.now() - ago, ip, u.userId, u.deviceId)
    .run();
}

describe("device last seen", () => {
  it("a request once the stored time is older than the interval records the time and CF-Connecting-IP; /devices shows them", async () => {
    const u = await registerUser();
    await seenAgo(u, LAST_SEEN_INTERVAL_MS + 60_000);
    const before = Date.now();
    const r = await request(u, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.20", "x-forwarded-for": "203.0.113.9" });
    expect(r.status).toBe(200);
    const d = await device(u);
    expect(d.last_seen_ts).toBeGreaterThanOrEqual(before);
    expect(d.last_seen_ip).toBe("198.51.100.20");
    const list = await request(u, `${V3}/devices`);
    expect(list.body.devices).toEqual([expect.objectContaining({ device_id: u.deviceId, last_seen_ts: d.last_seen_ts, last_seen_ip: "198.51.100.20" })]);
    const whois = await request(u, `${V3}/admin/whois/${encodeURIComponent(u.userId)}`);
    expect(whois.body.devices[u.deviceId].sessions[0].connections).toEqual([{ ip: "198.51.100.20", last_seen: d.last_seen_ts, user_agent: "" }]);
  });

  it("a second request within the interval changes nothing and runs no extra statement", async () => {
    const u = await registerUser();
    await seenAgo(u, LAST_SEEN_INTERVAL_MS + 60_000, "198.51.100.21");
    const stale = await request(u, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.22" });
    const seen = await device(u);
    const fresh = await request(u, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.23" });
    console.log(`whoami D1 statements: fresh ${fresh.statements.length}, stale ${stale.statements.length}\n${stale.statements.join("\n")}`);
    expect(seen.last_seen_ip).toBe("198.51.100.22");
    expect(fresh.status).toBe(200);
    expect(await device(u)).toEqual(seen);
    // The stale request paid exactly one statement more (the UPDATE, after the response); the
    // fresh one none: the stored time comes with the token lookup.
    expect(stale.statements.length).toBe(fresh.statements.length + 1);
    expect(fresh.statements.filter((s) => /UPDATE devices/i.test(s))).toEqual([]);
  });

  it("never takes the address from X-Forwarded-For: without CF-Connecting-IP the time advances and the address stays", async () => {
    const u = await registerUser();
    await seenAgo(u, LAST_SEEN_INTERVAL_MS + 60_000, "198.51.100.24");
    const before = Date.now();
    await request(u, `${V3}/account/whoami`, { "x-forwarded-for": "203.0.113.10" });
    const d = await device(u);
    expect(d.last_seen_ts).toBeGreaterThanOrEqual(before);
    expect(d.last_seen_ip).toBe("198.51.100.24");
  });

  it("with CLIENT_ADDRESS=none a client-sent CF-Connecting-IP is not recorded", async () => {
    const u = await registerUser();
    await seenAgo(u, LAST_SEEN_INTERVAL_MS + 60_000);
    const before = Date.now();
    await request(u, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.25" }, { CLIENT_ADDRESS: "none" });
    const d = await device(u);
    expect(d.last_seen_ts).toBeGreaterThanOrEqual(before);
    expect(d.last_seen_ip).toBeNull();
  });

  it("records the address on the first request after login, even within the interval", async () => {
    const u = await registerUser();
    const atLogin = (await device(u)).last_seen_ts;
    await request(u, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.26" });
    const d = await device(u);
    expect(d.last_seen_ip).toBe("198.51.100.26");
    expect(d.last_seen_ts).toBeGreaterThanOrEqual(atLogin!);
  });

  it("a guest's device is tracked like any other", async () => {
    const r = await withEnv({ GUEST_ACCESS: "on" }, "POST", `${V3}/register?kind=guest`, {});
    expect(r.status).toBe(200);
    const g = { userId: r.body.user_id, accessToken: r.body.access_token, deviceId: r.body.device_id, password: "" };
    await seenAgo(g, LAST_SEEN_INTERVAL_MS + 60_000);
    const before = Date.now();
    expect((await request(g, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.27" }, { GUEST_ACCESS: "on" })).status).toBe(200);
    expect(await device(g)).toEqual({ last_seen_ts: expect.any(Number), last_seen_ip: "198.51.100.27" });
    expect((await device(g)).last_seen_ts).toBeGreaterThanOrEqual(before);
  });

  it("records the User-Agent (at most 512 characters) with the time; whois and the admin device API show it", async () => {
    const [u, admin] = await Promise.all([registerUser(), registerAdmin()]);
    await seenAgo(u, LAST_SEEN_INTERVAL_MS + 60_000);
    const ua = "Element/1.11.90 (Linux; matrix-js-sdk)";
    await request(u, `${V3}/account/whoami`, { "cf-connecting-ip": "198.51.100.28", "user-agent": ua });
    const seen = await device(u);
    const whois = await request(u, `${V3}/admin/whois/${encodeURIComponent(u.userId)}`);
    expect(whois.body.devices[u.deviceId].sessions[0].connections).toEqual([{ ip: "198.51.100.28", last_seen: seen.last_seen_ts, user_agent: ua }]);
    const list = await request(admin, `/_synapse/admin/v2/users/${encodeURIComponent(u.userId)}/devices`);
    expect(list.body.devices).toEqual([expect.objectContaining({ device_id: u.deviceId, last_seen_ip: "198.51.100.28", last_seen_user_agent: ua })]);
    const one = await request(admin, `/_synapse/admin/v2/users/${encodeURIComponent(u.userId)}/devices/${encodeURIComponent(u.deviceId)}`);
    expect(one.body.last_seen_user_agent).toBe(ua);

    // Within the interval a new agent waits for the next refresh; after it, a long one is cut.
    await request(u, `${V3}/account/whoami`, { "user-agent": "Other/2" });
    expect((await request(admin, `/_synapse/admin/v2/users/${encodeURIComponent(u.userId)}/devices`)).body.devices[0].last_seen_user_agent).toBe(ua);
    await seenAgo(u, LAST_SEEN_INTERVAL_MS + 60_000, "198.51.100.28");
    await request(u, `${V3}/account/whoami`, { "user-agent": "x".repeat(2000) });
    expect((await request(admin, `/_synapse/admin/v2/users/${encodeURIComponent(u.userId)}/devices`)).body.devices[0].last_seen_user_agent).toBe("x".repeat(512));
  });

  it("records the User-Agent on the first request after login, even within the interval", async () => {
    const u = await registerUser();
    await request(u, `${V3}/account/whoami`, { "user-agent": "FirstClient/1" });
    const whois = await request(u, `${V3}/admin/whois/${encodeURIComponent(u.userId)}`);
    expect(whois.body.devices[u.deviceId].sessions[0].connections[0].user_agent).toBe("FirstClient/1");
  });
});
