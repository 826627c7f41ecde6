// Extended profile fields (spec 1.16) and /.well-known/matrix/support (issue 16).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../src/index";
import { BASE, call, federationCall, offline, registerUser, seedRemoteKey } from "./helpers";
import { setFederationFetch } from "../../src/services/federation/client";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
const field = (userId: string, key: string) => `${V3}/profile/${enc(userId)}/${enc(key)}`;

beforeAll(() => {
  setFederationFetch(async (input) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.host !== "far.test:8448" || url.pathname !== "/_matrix/federation/v1/query/profile") throw new Error("offline (test)");
    const f = url.searchParams.get("field");
    const full: Record<string, unknown> = { displayname: "Far", "m.tz": "Asia/Tokyo", "org.example.pronouns": { en: "they" } };
    return Response.json(f ? (f in full ? { [f]: full[f] } : {}) : full);
  });
});
afterAll(() => setFederationFetch(offline));

describe("extended profile fields", () => {
  it("PUT/GET/DELETE m.tz and custom keys; the full profile and federation queries include them", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    expect((await call("PUT", field(alice.userId, "m.tz"), { token: alice.accessToken, body: { "m.tz": "Europe/Paris" } })).status).toBe(200);
    const custom = { "org.example.job": { title: "Pilot", years: 3 } };
    expect((await call("PUT", field(alice.userId, "org.example.job"), { token: alice.accessToken, body: custom })).status).toBe(200);
    expect((await call("GET", field(alice.userId, "m.tz"), { token: bob.accessToken })).body).toEqual({ "m.tz": "Europe/Paris" });
    expect((await call("GET", field(alice.userId, "org.example.job"))).body).toEqual(custom);
    const full = await call("GET", `${V3}/profile/${enc(alice.userId)}`);
    expect(full.body).toMatchObject({ "m.tz": "Europe/Paris", ...custom, displayname: expect.any(String) });

    const key = await seedRemoteKey("peer.test");
    const q = await federationCall("peer.test", key, "GET", `/v1/query/profile?user_id=${enc(alice.userId)}`);
    expect(q.body).toMatchObject({ "m.tz": "Europe/Paris", ...custom });
    expect((await federationCall("peer.test", key, "GET", `/v1/query/profile?user_id=${enc(alice.userId)}&field=m.tz`)).body).toEqual({ "m.tz": "Europe/Paris" });

    expect((await call("DELETE", field(alice.userId, "m.tz"), { token: alice.accessToken })).status).toBe(200);
    expect((await call("GET", field(alice.userId, "m.tz"))).status).toBe(404);
    expect((await call("DELETE", field(alice.userId, "m.tz"), { token: alice.accessToken })).status).toBe(200); // already gone: still 200
    // DELETE displayname clears it.
    expect((await call("DELETE", field(alice.userId, "displayname"), { token: alice.accessToken })).status).toBe(200);
    expect((await call("GET", field(alice.userId, "displayname"))).status).toBe(404);

    // Capability.
    expect((await call("GET", `${V3}/capabilities`, { token: alice.accessToken })).body.capabilities["m.profile_fields"]).toEqual({ enabled: true });
  });

  it("refuses bad keys, other users, a missing key in the body, and profiles of 64 KiB or more", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    expect((await call("PUT", field(alice.userId, "Bad-Key"), { token: alice.accessToken, body: { "Bad-Key": 1 } })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("PUT", field(alice.userId, "nodots"), { token: alice.accessToken, body: { nodots: 1 } })).status).toBe(400);
    expect((await call("PUT", field(alice.userId, "org.example.x"), { token: bob.accessToken, body: { "org.example.x": 1 } })).status).toBe(403);
    expect((await call("DELETE", field(alice.userId, "org.example.x"), { token: bob.accessToken })).status).toBe(403);
    expect((await call("PUT", field(alice.userId, "org.example.x"), { token: alice.accessToken, body: { other: 1 } })).body.errcode).toBe("M_MISSING_PARAM");
    expect((await call("PUT", field(alice.userId, "m.tz"), { token: alice.accessToken, body: { "m.tz": 5 } })).status).toBe(400);
    const anon = await call("PUT", field(alice.userId, "org.example.x"), { body: { "org.example.x": 1 } });
    expect(anon.status, JSON.stringify(anon.body)).toBe(401);
    const big = "x".repeat(40 * 1024);
    expect((await call("PUT", field(alice.userId, "org.example.a"), { token: alice.accessToken, body: { "org.example.a": big } })).status).toBe(200);
    const tooBig = await call("PUT", field(alice.userId, "org.example.b"), { token: alice.accessToken, body: { "org.example.b": big } });
    expect(tooBig.status).toBe(400);
    expect(tooBig.body.errcode).toBe("M_PROFILE_TOO_LARGE");
    expect((await call("GET", field(alice.userId, "org.example.b"))).status).toBe(404);
  });

  it("a remote user's fields come from their server", async () => {
    const me = await registerUser();
    const far = "@x:far.test:8448";
    expect((await call("GET", field(far, "m.tz"), { token: me.accessToken })).body).toEqual({ "m.tz": "Asia/Tokyo" });
    expect((await call("GET", `${V3}/profile/${enc(far)}`, { token: me.accessToken })).body).toEqual({ displayname: "Far", "m.tz": "Asia/Tokyo", "org.example.pronouns": { en: "they" } });
    expect((await call("GET", field(far, "org.example.none"), { token: me.accessToken })).status).toBe(404);
  });
});

describe("/.well-known/matrix/support", () => {
  async function get(vars: Record<string, string>) {
    const ctx = createExecutionContext();
    const res = await worker.fetch(new Request(`${BASE}/.well-known/matrix/support`), { ...env, ...vars }, ctx);
    await waitOnExecutionContext(ctx);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }
  it("404 unless configured; contacts grouped by role and the support page", async () => {
    expect((await get({})).status).toBe(404);
    const r = await get({ SUPPORT_CONTACTS: "m.role.admin=@admin:test.local, m.role.admin=admin@example.org,m.role.security=sec@example.org", SUPPORT_PAGE: "https://example.org/help" });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      contacts: [
        { role: "m.role.admin", matrix_id: "@admin:test.local", email_address: "admin@example.org" },
        { role: "m.role.security", email_address: "sec@example.org" },
      ],
      support_page: "https://example.org/help",
    });
    expect((await get({ SUPPORT_CONTACTS: "admin" })).status).toBe(500); // configuration error, named
  });
});
