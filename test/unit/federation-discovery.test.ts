import { describe, it, expect, beforeEach } from "vitest";
import {
  chooseSrv,
  clearDiscoveryCache,
  isLoopbackServerName,
  parseDohSrv,
  resolveServerName,
  wellKnownTtl,
  type DiscoveryDeps,
  type SrvRecord,
} from "../../src/services/federation/discovery";
import { aclGlobMatches as globMatches, hostWithoutPort, isServerAllowedByAcl } from "../../src/core/server-acl";

type Route = (url: string, init?: RequestInit) => Response | Promise<Response>;

function deps(route: Route, srv: Record<string, SrvRecord[]> = {}, extra: Partial<DiscoveryDeps> = {}) {
  const calls: string[] = [];
  const srvCalls: string[] = [];
  const d: DiscoveryDeps = {
    fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = String(input);
      calls.push(url);
      return route(url, init);
    }) as typeof fetch,
    now: () => 1_000_000,
    httpLoopback: false,
    dnsResolverUrl: "https://dns.example/dns-query",
    srvLookup: async (name) => {
      srvCalls.push(name);
      return srv[name] ?? null;
    },
    ...extra,
  };
  return { d, calls, srvCalls };
}

const notFound: Route = () => new Response("nope", { status: 404 });
const json = (body: unknown, headers: Record<string, string> = {}) => new Response(JSON.stringify(body), { status: 200, headers });

beforeEach(() => clearDiscoveryCache());

describe("resolveServerName (spec: Resolving server names)", () => {
  it("1. IP literals: given port or 8448, Host = server name, no lookups", async () => {
    const { d, calls } = deps(notFound);
    expect(await resolveServerName("1.2.3.4", d)).toEqual({ serverName: "1.2.3.4", baseUrl: "https://1.2.3.4:8448", host: "1.2.3.4" });
    expect(await resolveServerName("[2606:4700::1111]:8000", d)).toEqual({ serverName: "[2606:4700::1111]:8000", baseUrl: "https://[2606:4700::1111]:8000", host: "[2606:4700::1111]:8000" });
    expect(calls).toEqual([]);
    // Internal addresses are refused (SSRF guard; loopback only in loopback mode).
    await expect(resolveServerName("[::1]:8000", d)).rejects.toThrow(/refusing/);
    await expect(resolveServerName("10.0.0.1", d)).rejects.toThrow(/refusing/);
  });

  it("2. explicit port: no well-known, Host includes the port", async () => {
    const { d, calls, srvCalls } = deps(notFound);
    expect(await resolveServerName("example.org:1234", d)).toEqual({ serverName: "example.org:1234", baseUrl: "https://example.org:1234", host: "example.org:1234" });
    expect(calls).toEqual([]);
    expect(srvCalls).toEqual([]);
  });

  it("3.1/3.2: well-known delegation to an IP or host with port", async () => {
    const { d } = deps((u) => (u === "https://example.org/.well-known/matrix/server" ? json({ "m.server": "matrix.example.org:443" }) : notFound(u)));
    expect(await resolveServerName("example.org", d)).toEqual({ serverName: "example.org", baseUrl: "https://matrix.example.org:443", host: "matrix.example.org:443" });
    clearDiscoveryCache();
    const ip = deps(() => json({ "m.server": "1.1.1.1" }));
    expect(await resolveServerName("example.org", ip.d)).toEqual({ serverName: "example.org", baseUrl: "https://1.1.1.1:8448", host: "1.1.1.1" });
    // Delegation to an internal address is refused (SSRF guard).
    clearDiscoveryCache();
    const internal = deps(() => json({ "m.server": "10.0.0.1" }));
    await expect(resolveServerName("example.org", internal.d)).rejects.toThrow(/refusing/);
  });

  it("3.3/3.4/3.5: delegated host without port: _matrix-fed SRV, then _matrix SRV, then 8448", async () => {
    const wk = () => json({ "m.server": "matrix.example.org" });
    const a = deps(wk, { "_matrix-fed._tcp.matrix.example.org": [{ priority: 1, weight: 0, port: 4443, target: "fed.example.net" }] });
    expect(await resolveServerName("example.org", a.d)).toEqual({ serverName: "example.org", baseUrl: "https://fed.example.net:4443", host: "matrix.example.org" });
    clearDiscoveryCache();
    const b = deps(wk, { "_matrix._tcp.matrix.example.org": [{ priority: 1, weight: 0, port: 5555, target: "old.example.net" }] });
    expect(await resolveServerName("example.org", b.d)).toEqual({ serverName: "example.org", baseUrl: "https://old.example.net:5555", host: "matrix.example.org" });
    expect(b.srvCalls).toEqual(["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"]);
    clearDiscoveryCache();
    const c = deps(wk);
    expect(await resolveServerName("example.org", c.d)).toEqual({ serverName: "example.org", baseUrl: "https://matrix.example.org:8448", host: "matrix.example.org" });
  });

  it("4/5/6: no well-known: SRV on the hostname, Host = hostname, else 8448", async () => {
    const a = deps(notFound, { "_matrix-fed._tcp.example.org": [{ priority: 0, weight: 0, port: 8449, target: "srv.example.org" }] });
    expect(await resolveServerName("example.org", a.d)).toEqual({ serverName: "example.org", baseUrl: "https://srv.example.org:8449", host: "example.org" });
    clearDiscoveryCache();
    const b = deps(notFound);
    expect(await resolveServerName("example.org", b.d)).toEqual({ serverName: "example.org", baseUrl: "https://example.org:8448", host: "example.org" });
  });

  it("invalid well-known bodies fall through (bad JSON, missing or invalid m.server)", async () => {
    for (const body of ["not json", "{}", JSON.stringify({ "m.server": 5 }), JSON.stringify({ "m.server": "bad host!" })]) {
      clearDiscoveryCache();
      const { d } = deps(() => new Response(body, { status: 200 }));
      expect((await resolveServerName("example.org", d)).baseUrl).toBe("https://example.org:8448");
    }
  });

  it("follows redirects (bounded, no loops, https only) and bounds the size", async () => {
    const hop = deps((u) =>
      u.endsWith("/.well-known/matrix/server") && u.startsWith("https://example.org")
        ? new Response(null, { status: 302, headers: { location: "https://www.example.org/wk" } })
        : json({ "m.server": "m.example.org:443" }),
    );
    expect((await resolveServerName("example.org", hop.d)).baseUrl).toBe("https://m.example.org:443");
    clearDiscoveryCache();
    const loop = deps(() => new Response(null, { status: 301, headers: { location: "https://example.org/.well-known/matrix/server" } }));
    expect((await resolveServerName("example.org", loop.d)).baseUrl).toBe("https://example.org:8448");
    expect(loop.calls.length).toBe(1);
    clearDiscoveryCache();
    const insecure = deps(() => new Response(null, { status: 302, headers: { location: "http://evil.example/x" } }));
    expect((await resolveServerName("example.org", insecure.d)).baseUrl).toBe("https://example.org:8448");
    clearDiscoveryCache();
    const endless = deps((u) => new Response(null, { status: 302, headers: { location: `${u}x` } }));
    expect((await resolveServerName("example.org", endless.d)).baseUrl).toBe("https://example.org:8448");
    expect(endless.calls.length).toBeLessThanOrEqual(6);
    clearDiscoveryCache();
    const huge = deps(() => new Response(JSON.stringify({ "m.server": "m.example.org:443", pad: "x".repeat(100_000) })));
    expect((await resolveServerName("example.org", huge.d)).baseUrl).toBe("https://example.org:8448");
  });

  it("caches well-known results and failures", async () => {
    const ok = deps(() => json({ "m.server": "m.example.org:443" }));
    await resolveServerName("example.org", ok.d);
    await resolveServerName("example.org", ok.d);
    expect(ok.calls.length).toBe(1);
  });

  it("SSRF guard: a well-known redirect or SRV target inside the network is refused", async () => {
    const redirect = deps((u) => (u === "https://example.org/.well-known/matrix/server" ? new Response(null, { status: 302, headers: { location: "https://169.254.169.254/latest" } }) : notFound(u)));
    // The well-known lookup fails (cached as a failure) and discovery falls through to 8448.
    expect((await resolveServerName("example.org", redirect.d)).baseUrl).toBe("https://example.org:8448");
    expect(redirect.calls).not.toContain("https://169.254.169.254/latest");
    clearDiscoveryCache();
    const srv = deps(notFound, { "_matrix-fed._tcp.example.org": [{ priority: 1, weight: 0, port: 6379, target: "redis.internal" }] });
    await expect(resolveServerName("example.org", srv.d)).rejects.toThrow(/refusing/);
  });

  it("loopback mode: plain http to localhost:<port> only", async () => {
    const { d } = deps(notFound, {}, { httpLoopback: true });
    expect((await resolveServerName("localhost:18001", d)).baseUrl).toBe("http://localhost:18001");
    expect((await resolveServerName("127.0.0.1:18002", d)).baseUrl).toBe("http://127.0.0.1:18002");
    expect((await resolveServerName("example.org:18001", d)).baseUrl).toBe("https://example.org:18001");
    clearDiscoveryCache();
    const off = deps(notFound);
    // Outside loopback mode a loopback peer is refused outright (SSRF guard), not tried over https.
    await expect(resolveServerName("localhost:18001", off.d)).rejects.toThrow(/refusing/);
    expect(isLoopbackServerName("localhost")).toBe(false);
    expect(isLoopbackServerName("localhost:1")).toBe(true);
  });

  it("rejects invalid server names", async () => {
    const { d } = deps(notFound);
    await expect(resolveServerName("bad name", d)).rejects.toThrow();
  });
});

describe("SRV and DoH helpers", () => {
  it("chooses lowest priority, weighted among equals, ignores '.'", () => {
    const recs: SrvRecord[] = [
      { priority: 10, weight: 0, port: 1, target: "low.example" },
      { priority: 5, weight: 1, port: 2, target: "a.example" },
      { priority: 5, weight: 3, port: 3, target: "b.example" },
    ];
    expect(chooseSrv(recs, () => 0)!.target).toBe("a.example");
    expect(chooseSrv(recs, () => 0.9)!.target).toBe("b.example");
    expect(chooseSrv([{ priority: 0, weight: 0, port: 0, target: "." }])).toBeNull();
  });

  it("parses DNS-over-HTTPS JSON answers", () => {
    expect(parseDohSrv({ Status: 0, Answer: [{ type: 33, data: "10 5 8448 matrix.example.org." }, { type: 5, data: "x" }] })).toEqual([
      { priority: 10, weight: 5, port: 8448, target: "matrix.example.org" },
    ]);
    expect(parseDohSrv({ Status: 3 })).toBeNull();
    expect(parseDohSrv({ Status: 0, Answer: [{ type: 33, data: "garbage" }] })).toBeNull();
  });

  it("derives well-known cache lifetimes from Cache-Control", () => {
    expect(wellKnownTtl(null)).toBe(24 * 3600_000);
    expect(wellKnownTtl("max-age=60")).toBe(60_000);
    expect(wellKnownTtl("public, max-age=999999999")).toBe(48 * 3600_000);
    expect(wellKnownTtl("no-store")).toBe(0);
  });
});

describe("server ACLs", () => {
  it("glob matching is case-insensitive with * and ?", () => {
    expect(globMatches("*.evil.com", "a.EVIL.com")).toBe(true);
    expect(globMatches("*.evil.com", "evil.com")).toBe(false);
    expect(globMatches("ev?l.com", "evil.com")).toBe(true);
    expect(globMatches("*", "anything")).toBe(true);
    expect(globMatches("a*b*c", "axxbyyc")).toBe(true);
    expect(globMatches("a*b*c", "axxbyy")).toBe(false);
  });

  it("applies the spec's order, ignoring ports", () => {
    expect(isServerAllowedByAcl(null, "x.org")).toBe(true);
    const acl = { allow: ["*"], deny: ["evil.com", "*.evil.com"], allow_ip_literals: false };
    expect(isServerAllowedByAcl(acl, "good.org")).toBe(true);
    expect(isServerAllowedByAcl(acl, "evil.com:8448")).toBe(false);
    expect(isServerAllowedByAcl(acl, "sub.evil.com")).toBe(false);
    expect(isServerAllowedByAcl(acl, "1.2.3.4:80")).toBe(false);
    expect(isServerAllowedByAcl(acl, "[::1]:80")).toBe(false);
    expect(isServerAllowedByAcl({ allow: ["*"] }, "1.2.3.4")).toBe(true);
    expect(isServerAllowedByAcl({ deny: [] }, "good.org")).toBe(false); // no allow: nobody
    expect(isServerAllowedByAcl({ allow: ["good.org"], allow_ip_literals: "no" }, "good.org:1")).toBe(true);
    expect(hostWithoutPort("[::1]:8448")).toBe("[::1]");
  });
});
