// Outbound federation cannot be aimed at internal addresses (workerd; hardening issue item 8).
// Server names come from remote input: the notary's /key/v2/query/{serverName}, the X-Matrix
// origin whose key we fetch, @user:host:port profiles, #alias:host directory lookups, /keys/query.
// Every connection federation makes goes through the URL-preview guard's host check, on any
// port; loopback peers only with FEDERATION_HTTP_LOOPBACK=true. The fake fetch records every URL
// it is asked for: none may name an internal host.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { call, offline, registerUser, type TestUser } from "./helpers";
import { generateSigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { setFederationFetch } from "../../src/services/federation/client";
import { clearDiscoveryCache, resolveServerName } from "../../src/services/federation/discovery";
import { resetKeyFetchThrottle } from "../../src/services/federation/keys";

const enc = encodeURIComponent;
const INTERNAL = ["127.0.0.1:6379", "10.1.2.3:8448", "169.254.169.254:80", "[::1]:22", "[fd00:ec2::254]:80", "localhost:2375", "metadata.google.internal:80", "intranet:8080", "192.168.1.1"];
const asked: string[] = [];
let me: TestUser;

beforeAll(async () => {
  setFederationFetch(async (input) => {
    asked.push(new URL(input instanceof Request ? input.url : String(input)).host);
    throw new Error("offline (test)");
  });
  me = await registerUser();
});
afterAll(() => setFederationFetch(offline));

function internalAsked(): string[] {
  return asked.filter((h) => !h.endsWith("cloudflare-dns.com"));
}

describe("outbound federation to internal addresses", () => {
  it("is never attempted, whatever names the server", async () => {
    clearDiscoveryCache();
    resetKeyFetchThrottle();
    for (const server of INTERNAL) {
      // Notary key query (unauthenticated).
      expect((await call("GET", `/_matrix/key/v2/query/${enc(server)}`)).status).toBeLessThan(500);
      // A request signed by an unknown origin: its key would be fetched.
      const key = await generateSigningKey();
      const uri = "/_matrix/federation/v1/query/profile?user_id=" + enc(me.userId);
      const authorization = await signRequest(key, { method: "GET", uri, origin: server, destination: "test.local" });
      expect((await call("GET", uri, { headers: { authorization } })).status).toBe(401);
      // Profile and directory lookups, device keys of a remote user.
      const profile = await call("GET", `/_matrix/client/v3/profile/${enc(`@x:${server}`)}`, { token: me.accessToken });
      expect(profile.status).toBeGreaterThanOrEqual(400);
      expect(profile.body.errcode).toBeTruthy();
      const dir = await call("GET", `/_matrix/client/v3/directory/room/${enc(`#a:${server}`)}`, { token: me.accessToken });
      expect(dir.status).toBeGreaterThanOrEqual(400);
      await call("POST", "/_matrix/client/v3/keys/query", { token: me.accessToken, body: { device_keys: { [`@x:${server}`]: [] } } });
    }
    expect(internalAsked()).toEqual([]);
  });

  it("still reaches public servers, and loopback peers only in loopback mode", async () => {
    clearDiscoveryCache();
    asked.length = 0;
    await call("GET", `/_matrix/client/v3/profile/${enc("@x:public.test:8448")}`, { token: me.accessToken });
    expect(asked).toContain("public.test:8448");
    const deps = (httpLoopback: boolean) => ({ fetch: offline, now: () => Date.now(), httpLoopback, dnsResolverUrl: "https://dns.test/dns-query" });
    expect((await resolveServerName("localhost:18001", deps(true))).baseUrl).toBe("http://localhost:18001");
    clearDiscoveryCache();
    await expect(resolveServerName("localhost:18001", deps(false))).rejects.toThrow(/refusing/);
    await expect(resolveServerName("127.0.0.1:18001", deps(false))).rejects.toThrow(/refusing/);
    // Loopback mode opens loopback, not the private network.
    await expect(resolveServerName("10.0.0.1:8448", deps(true))).rejects.toThrow(/refusing/);
  });
});
