// Resource exhaustion and races (issue 14): registration tokens claimed atomically, password
// guessing through user-interactive auth, registration nonces and UIA sessions bounded and expired.
import { describe, expect, it } from "vitest";
import { call, registerUser, uniqueName, withEnv } from "./helpers";

async function adminToken(): Promise<string> {
  const { sharedSecretMac } = await import("../../src/api/admin/admin");
  const n = await call("GET", "/_synapse/admin/v1/register");
  const name = uniqueName("adm");
  const mac = await sharedSecretMac("test-shared-secret", n.body.nonce, name, "pw", true);
  const r = await call("POST", "/_synapse/admin/v1/register", { body: { nonce: n.body.nonce, username: name, password: "pw", admin: true, mac } });
  return r.body.access_token;
}

describe("registration tokens", () => {
  it("a single-use token creates one account under parallel /register calls", async () => {
    const admin = await adminToken();
    const t = await call("POST", "/_synapse/admin/v1/registration_tokens/new", { token: admin, body: { uses_allowed: 1 } });
    const token = t.body.token as string;
    const N = 8;
    const results = await Promise.all(
      Array.from({ length: N }, () =>
        withEnv({ REGISTRATION: "token" }, "POST", "/_matrix/client/v3/register", {
          username: uniqueName("tok"),
          password: "p",
          auth: { type: "m.login.registration_token", token },
        }),
      ),
    );
    const created = results.filter((r) => r.status === 200);
    expect(created).toHaveLength(1);
    for (const r of results.filter((r) => r.status !== 200)) {
      expect(r.status).toBe(401);
      expect(r.body.errcode).toBe("M_FORBIDDEN");
    }
    const list = await call("GET", "/_synapse/admin/v1/registration_tokens", { token: admin });
    const row = list.body.registration_tokens.find((x: any) => x.token === token);
    expect(row).toMatchObject({ uses_allowed: 1, pending: 0, completed: 1 });
  });

  it("a registration that fails after claiming gives the use back", async () => {
    const admin = await adminToken();
    const t = await call("POST", "/_synapse/admin/v1/registration_tokens/new", { token: admin, body: { uses_allowed: 2 } });
    const token = t.body.token as string;
    // Two parallel requests for the same name: both may claim a use, one account is made, the
    // other request fails with M_USER_IN_USE and its use goes back.
    const username = uniqueName("same");
    const rs = await Promise.all(
      [0, 1].map(() => withEnv({ REGISTRATION: "token" }, "POST", "/_matrix/client/v3/register", { username, password: "p", auth: { type: "m.login.registration_token", token } })),
    );
    expect(rs.filter((r) => r.status === 200)).toHaveLength(1);
    const list = await call("GET", "/_synapse/admin/v1/registration_tokens", { token: admin });
    expect(list.body.registration_tokens.find((x: any) => x.token === token)).toMatchObject({ pending: 0, completed: 1 });
    const valid = await withEnv({ REGISTRATION: "token" }, "GET", `/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
    expect(valid.body).toEqual({ valid: true });
  });
});

describe("user-interactive auth", () => {
  // A stolen access token must not allow unlimited password guesses: each m.login.password stage
  // draws from the same per-account bucket as /login.
  for (const [name, method, path, body] of [
    ["/account/password", "POST", "/_matrix/client/v3/account/password", { new_password: "new pw" }],
    ["/delete_devices", "POST", "/_matrix/client/v3/delete_devices", { devices: ["NOPE"] }],
  ] as const) {
    it(`limits password guesses through ${name}`, async () => {
      const u = await registerUser();
      const statuses: number[] = [];
      let limited: any;
      for (let i = 0; i < 12 && !limited; i++) {
        const r = await withEnv({ RATE_LIMITS: "on" }, method, path, {
          ...body,
          auth: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: `guess ${i}` },
        }, u.accessToken);
        statuses.push(r.status);
        if (r.status === 429) limited = r;
      }
      expect(limited, `statuses: ${statuses.join(",")}`).toBeDefined();
      expect(limited.body.errcode).toBe("M_LIMIT_EXCEEDED");
      expect(limited.body.retry_after_ms).toBeGreaterThan(0);
      // /login for the same account shares the bucket.
      const login = await withEnv({ RATE_LIMITS: "on" }, "POST", "/_matrix/client/v3/login", {
        type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: "guess",
      });
      expect(login.status).toBe(429);
    });
  }
});

describe("short-lived rows are bounded and expire", () => {
  const count = async (table: string) => {
    const { env } = await import("cloudflare:test");
    return (await env.DB.prepare(`SELECT COUNT(*) AS n FROM ${table}`).first<{ n: number }>())!.n;
  };

  it("GET /_synapse/admin/v1/register stores nothing; a nonce works once and for a minute", async () => {
    const before = await count("registration_nonces");
    for (let i = 0; i < 30; i++) expect((await call("GET", "/_synapse/admin/v1/register")).status).toBe(200);
    expect(await count("registration_nonces")).toBe(before);

    const { sharedSecretMac, mintNonce } = await import("../../src/api/admin/admin");
    const register = async (nonce: string, username = uniqueName("n")) =>
      call("POST", "/_synapse/admin/v1/register", { body: { nonce, username, password: "pw", mac: await sharedSecretMac("test-shared-secret", nonce, username, "pw", false) } });
    // Expired, forged (issued under another secret) and altered nonces are refused.
    expect((await register(await mintNonce("test-shared-secret", Date.now() - 61_000))).status).toBe(400);
    expect((await register(await mintNonce("another-secret-of-16"))).status).toBe(400);
    const fresh = (await call("GET", "/_synapse/admin/v1/register")).body.nonce as string;
    expect((await register(fresh.replace(/^./, (ch) => (ch === "a" ? "b" : "a")))).status).toBe(400);
    // A good one works once (the second use is refused even with a correct MAC).
    const name = uniqueName("n");
    expect((await register(fresh, name)).status).toBe(200);
    expect((await register(fresh, name + "x")).status).toBe(400);
  });

  it("expired UIA sessions are deleted", async () => {
    const { env } = await import("cloudflare:test");
    const old = Date.now() - 31 * 60_000;
    for (let i = 0; i < 5; i++) {
      await env.DB.prepare("INSERT INTO uia_sessions (session_id, purpose, completed, created_ts) VALUES (?, 'register', '[]', ?)").bind(`expired${i}`, old).run();
    }
    // Starting any new session sweeps them.
    const r = await call("POST", "/_matrix/client/v3/register", { body: { username: uniqueName(), password: "p" } });
    expect(r.status).toBe(401);
    const left = await env.DB.prepare("SELECT COUNT(*) AS n FROM uia_sessions WHERE session_id LIKE 'expired%'").first<{ n: number }>();
    expect(left!.n).toBe(0);
    expect(await env.DB.prepare("SELECT 1 FROM uia_sessions WHERE session_id = ?").bind(r.body.session).first()).not.toBeNull();
  });
});

describe("user-supplied globs are bounded", () => {
  const long = "*".repeat(256);
  it("push rule patterns over 255 characters are refused", async () => {
    const u = await registerUser();
    const r = await call("PUT", "/_matrix/client/v3/pushrules/global/content/longglob", { token: u.accessToken, body: { actions: ["notify"], pattern: long } });
    expect([r.status, r.body.errcode]).toEqual([400, "M_BAD_JSON"]);
    const c = await call("PUT", "/_matrix/client/v3/pushrules/global/override/longglob", {
      token: u.accessToken,
      body: { actions: ["notify"], conditions: [{ kind: "event_match", key: "type", pattern: long }] },
    });
    expect([c.status, c.body.errcode]).toEqual([400, "M_BAD_JSON"]);
    const ok = await call("PUT", "/_matrix/client/v3/pushrules/global/content/shortglob", { token: u.accessToken, body: { actions: ["notify"], pattern: "*".repeat(255) } });
    expect(ok.status).toBe(200);
  });

  it("filter type patterns over 255 characters are refused (/filter and /messages)", async () => {
    const u = await registerUser();
    const f = await call("POST", `/_matrix/client/v3/user/${encodeURIComponent(u.userId)}/filter`, { token: u.accessToken, body: { room: { timeline: { types: [long] } } } });
    expect(f.status).toBe(400);
    const room = await call("POST", "/_matrix/client/v3/createRoom", { token: u.accessToken, body: {} });
    const m = await call("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/messages?dir=b&filter=${encodeURIComponent(JSON.stringify({ types: [long] }))}`, { token: u.accessToken });
    expect([m.status, m.body.errcode]).toEqual([400, "M_INVALID_PARAM"]);
    // A hostile pattern within the bound answers at once (it froze the room's Durable Object).
    const t0 = Date.now();
    const h = await call("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(room.body.room_id)}/messages?dir=b&filter=${encodeURIComponent(JSON.stringify({ types: ["*".repeat(40) + "!"] }))}`, { token: u.accessToken });
    expect(h.status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});
