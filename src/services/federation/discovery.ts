// Server discovery (spec: Server-Server API "Server discovery" → "Resolving server names").
//
// Turns a server name into the base URL to send requests to and the Host header to send.
// Workers have no DNS API, so the SRV lookups go through a DNS-over-HTTPS resolver (JSON API).
// A/AAAA/CNAME resolution is left to fetch() itself, which connects by hostname.
//
// Limitation of the platform: a Worker's fetch() connects to the host named in the URL and
// uses that host for TLS/SNI; it cannot connect to an SRV target while presenting another
// name. For SRV results we therefore connect to https://<target>:<port> and send the Host
// header the spec asks for; the peer's certificate must then be valid for the SRV target.
import { parseServerName } from "../../core/ids";
import { isBlockedHost } from "../../core/url-guard";
import { readStreamLimited } from "../read-limited";

export interface ResolvedServer {
  /** The server name that was resolved (what request signatures name as destination). */
  serverName: string;
  /** scheme://host:port to send requests to, without a trailing slash. */
  baseUrl: string;
  /** Value for the Host header (spec: per step). */
  host: string;
}

export interface DiscoveryDeps {
  fetch: typeof fetch;
  now: () => number;
  /** Plain HTTP to localhost:<port> / 127.0.0.1:<port> peers (FEDERATION_HTTP_LOOPBACK). */
  httpLoopback: boolean;
  /** DNS-over-HTTPS JSON endpoint. */
  dnsResolverUrl: string;
  /** Test hook: replaces the DNS-over-HTTPS SRV lookup. */
  srvLookup?: (name: string) => Promise<SrvRecord[] | null>;
}

export interface SrvRecord {
  priority: number;
  weight: number;
  port: number;
  target: string;
}

export const DEFAULT_PORT = 8448;
const WELL_KNOWN_MAX_BYTES = 64 * 1024;
const WELL_KNOWN_MAX_REDIRECTS = 5;
const WELL_KNOWN_TIMEOUT_MS = 10_000;
const DNS_TIMEOUT_MS = 5_000;
// Caching (spec step 3): respect Cache-Control, default 24 h, at most 48 h; errors up to 1 h
// with exponential backoff for repeated failures (we start at 5 min and double).
const WK_DEFAULT_TTL_MS = 24 * 3600_000;
const WK_MAX_TTL_MS = 48 * 3600_000;
const WK_ERROR_TTL_MIN_MS = 5 * 60_000;
const WK_ERROR_TTL_MAX_MS = 3600_000;
const CACHE_MAX_ENTRIES = 1000;

interface WellKnownCacheEntry {
  /** The m.server value, or null when the lookup failed. */
  delegated: string | null;
  expires: number;
  failures: number;
}
const wellKnownCache = new Map<string, WellKnownCacheEntry>();
const resolvedCache = new Map<string, { value: ResolvedServer; expires: number }>();

/** Forget cached discovery results (tests; or after a peer changed its delegation). */
export function clearDiscoveryCache(): void {
  wellKnownCache.clear();
  resolvedCache.clear();
}

function cacheSet<V>(map: Map<string, V>, key: string, value: V): void {
  if (map.size >= CACHE_MAX_ENTRIES && !map.has(key)) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
  map.set(key, value);
}

function isIpLiteral(host: string): boolean {
  return host.startsWith("[") || /^[0-9]{1,3}(\.[0-9]{1,3}){3}$/.test(host);
}

/** Whether `serverName` is a loopback peer reachable over plain HTTP in loopback mode. */
export function isLoopbackServerName(serverName: string): boolean {
  const p = parseServerName(serverName);
  return !!p && p.port !== undefined && ["localhost", "127.0.0.1", "[::1]"].includes(p.host.toLowerCase());
}

/** SSRF guard for everything federation connects to (the server name, each well-known hop, the
 *  delegated name, the SRV target): the URL-preview guard's host check (src/core/url-guard.ts):
 *  no loopback, private, link-local or metadata address, no `localhost`, single-label or
 *  internal name, on any port. Remote input names servers (X-Matrix origins, `@u:host:port`,
 *  room aliases), so without it a request could probe the network a self-hosted server sits
 *  in. Loopback peers (localhost, 127.0.0.1, [::1]) only with FEDERATION_HTTP_LOOPBACK=true.
 *  Like the preview guard it cannot see where DNS sends a public name. */
export function blockedFederationHost(hostname: string, httpLoopback: boolean): string | undefined {
  if (httpLoopback && ["localhost", "127.0.0.1", "[::1]"].includes(hostname.toLowerCase())) return undefined;
  return isBlockedHost(hostname);
}

function requireAllowedHost(hostname: string, deps: DiscoveryDeps): void {
  const blocked = blockedFederationHost(hostname, deps.httpLoopback);
  if (blocked) throw new Error(`refusing to connect to ${hostname}: ${blocked}`);
}

function hostPort(host: string, port: number | undefined): string {
  return port === undefined ? host : `${host}:${port}`;
}

/** Resolve a server name (spec "Resolving server names", steps 1–6). Throws if the name is invalid. */
export async function resolveServerName(serverName: string, deps: DiscoveryDeps): Promise<ResolvedServer> {
  const parsed = parseServerName(serverName);
  if (!parsed) throw new Error(`invalid server name: ${serverName}`);
  const now = deps.now();
  const hit = resolvedCache.get(serverName);
  if (hit && hit.expires > now) return hit.value;

  requireAllowedHost(parsed.host, deps);
  const value = await resolveUncached(serverName, parsed.host, parsed.port, deps);
  // Where delegation or SRV sent us.
  requireAllowedHost(new URL(value.baseUrl).hostname, deps);
  // The resolved address follows the well-known cache; a short TTL keeps SRV changes visible.
  cacheSet(resolvedCache, serverName, { value, expires: now + 3600_000 });
  return value;
}

async function resolveUncached(serverName: string, host: string, port: number | undefined, deps: DiscoveryDeps): Promise<ResolvedServer> {
  // Development/test: loopback peers over plain HTTP, no discovery.
  if (deps.httpLoopback && isLoopbackServerName(serverName)) {
    return { serverName, baseUrl: `http://${hostPort(host, port)}`, host: hostPort(host, port) };
  }
  // 1. IP literal: that address, given port or 8448; Host = the server name.
  // 2. Hostname with explicit port: resolve by address records; Host = the server name.
  if (isIpLiteral(host) || port !== undefined) {
    return { serverName, baseUrl: `https://${host}:${port ?? DEFAULT_PORT}`, host: serverName };
  }
  // 3. /.well-known/matrix/server
  const delegated = await lookupWellKnown(host, deps);
  if (delegated) {
    const d = parseServerName(delegated)!;
    // 3.1 IP literal; 3.2 hostname with port: Host = delegated name (with port if given).
    if (isIpLiteral(d.host) || d.port !== undefined) {
      return { serverName, baseUrl: `https://${d.host}:${d.port ?? DEFAULT_PORT}`, host: delegated };
    }
    // 3.3 SRV _matrix-fed._tcp, 3.4 (deprecated) _matrix._tcp; Host = delegated hostname.
    const srv = await lookupSrvPair(d.host, deps);
    if (srv) return { serverName, baseUrl: `https://${srv.target}:${srv.port}`, host: d.host };
    // 3.5 address records, port 8448.
    return { serverName, baseUrl: `https://${d.host}:${DEFAULT_PORT}`, host: d.host };
  }
  // 4./5. SRV on the server's own hostname; Host = hostname.
  const srv = await lookupSrvPair(host, deps);
  if (srv) return { serverName, baseUrl: `https://${srv.target}:${srv.port}`, host };
  // 6. address records, port 8448.
  return { serverName, baseUrl: `https://${host}:${DEFAULT_PORT}`, host };
}

async function lookupSrvPair(host: string, deps: DiscoveryDeps): Promise<SrvRecord | null> {
  for (const service of ["_matrix-fed._tcp", "_matrix._tcp"]) {
    const records = await (deps.srvLookup ?? ((n: string) => dohSrv(n, deps)))(`${service}.${host}`).catch(() => null);
    const pick = records && chooseSrv(records);
    if (pick) return pick;
  }
  return null;
}

/** RFC 2782 selection: lowest priority, then weighted random among equal priority. A target of
 *  "." means "service not available". */
export function chooseSrv(records: SrvRecord[], random: () => number = Math.random): SrvRecord | null {
  const usable = records.filter((r) => r.target !== "" && r.target !== "." && r.port > 0 && r.port < 65536);
  if (usable.length === 0) return null;
  const best = Math.min(...usable.map((r) => r.priority));
  const group = usable.filter((r) => r.priority === best);
  const total = group.reduce((s, r) => s + r.weight, 0);
  if (total === 0) return group[0];
  let x = random() * total;
  for (const r of group) {
    x -= r.weight;
    if (x < 0) return r;
  }
  return group[group.length - 1];
}

/** SRV lookup through DNS-over-HTTPS (the JSON API Cloudflare and Google serve). Returns null
 *  when the name has no SRV records. */
async function dohSrv(name: string, deps: DiscoveryDeps): Promise<SrvRecord[] | null> {
  const url = new URL(deps.dnsResolverUrl);
  url.searchParams.set("name", name);
  url.searchParams.set("type", "SRV");
  const res = await deps.fetch(url.toString(), {
    headers: { accept: "application/dns-json" },
    signal: AbortSignal.timeout(DNS_TIMEOUT_MS),
  });
  if (!res.ok) return null;
  const text = await readLimited(res, WELL_KNOWN_MAX_BYTES);
  return parseDohSrv(JSON.parse(text));
}

/** Parse a DoH JSON answer: {Status, Answer: [{type: 33, data: "prio weight port target."}]}. */
export function parseDohSrv(body: unknown): SrvRecord[] | null {
  const b = body as { Status?: unknown; Answer?: unknown };
  if (b?.Status !== 0 || !Array.isArray(b.Answer)) return null;
  const out: SrvRecord[] = [];
  for (const a of b.Answer as { type?: unknown; data?: unknown }[]) {
    if (a?.type !== 33 || typeof a.data !== "string") continue;
    const m = /^(\d+)\s+(\d+)\s+(\d+)\s+(\S+?)\.?$/.exec(a.data.trim());
    if (!m) continue;
    const target = m[4];
    if (target !== "." && !/^[A-Za-z0-9.-]{1,253}$/.test(target)) continue;
    out.push({ priority: Number(m[1]), weight: Number(m[2]), port: Number(m[3]), target: target === "" ? "." : target });
  }
  return out.length ? out : null;
}

/** Read at most `max` bytes of a response body as text; throws if it is longer. */
export async function readLimited(res: Response, max: number): Promise<string> {
  const len = Number(res.headers.get("content-length") ?? "0");
  if (len > max) {
    await res.body?.cancel();
    throw new Error("response too large");
  }
  if (!res.body) return "";
  return new TextDecoder().decode(await readStreamLimited(res.body, max, () => new Error("response too large")));
}

/** Cache lifetime from Cache-Control (max-age / no-store), clamped to [0, 48 h]. */
export function wellKnownTtl(cacheControl: string | null): number {
  if (!cacheControl) return WK_DEFAULT_TTL_MS;
  if (/(^|,)\s*(no-store|no-cache)\s*(,|$)/i.test(cacheControl)) return 0;
  const m = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?/i.exec(cacheControl);
  if (!m) return WK_DEFAULT_TTL_MS;
  return Math.min(Number(m[1]) * 1000, WK_MAX_TTL_MS);
}

/** GET https://<host>/.well-known/matrix/server (spec step 3): follows at most 5 redirects
 *  (no loops), reads at most 64 KiB, and caches successes and failures. Returns the validated
 *  m.server value or null. */
export async function lookupWellKnown(host: string, deps: DiscoveryDeps): Promise<string | null> {
  const now = deps.now();
  const cached = wellKnownCache.get(host);
  if (cached && cached.expires > now) return cached.delegated;
  const failures = cached?.delegated === null ? cached.failures : 0;
  try {
    const { delegated, ttl } = await fetchWellKnown(host, deps);
    cacheSet(wellKnownCache, host, { delegated, expires: now + ttl, failures: 0 });
    return delegated;
  } catch {
    const ttl = Math.min(WK_ERROR_TTL_MIN_MS * 2 ** failures, WK_ERROR_TTL_MAX_MS);
    cacheSet(wellKnownCache, host, { delegated: null, expires: now + ttl, failures: failures + 1 });
    return null;
  }
}

async function fetchWellKnown(host: string, deps: DiscoveryDeps): Promise<{ delegated: string; ttl: number }> {
  let url = `https://${host}/.well-known/matrix/server`;
  const seen = new Set<string>();
  for (let hop = 0; hop <= WELL_KNOWN_MAX_REDIRECTS; hop++) {
    if (seen.has(url)) throw new Error("redirect loop");
    seen.add(url);
    requireAllowedHost(new URL(url).hostname, deps);
    const res = await deps.fetch(url, { redirect: "manual", signal: AbortSignal.timeout(WELL_KNOWN_TIMEOUT_MS) });
    if (res.status >= 300 && res.status < 400) {
      const loc = res.headers.get("location");
      await res.body?.cancel();
      if (!loc) throw new Error("redirect without Location");
      const next = new URL(loc, url);
      if (next.protocol !== "https:") throw new Error("redirect away from https");
      url = next.toString();
      continue;
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw new Error(`well-known returned ${res.status}`);
    }
    const body = JSON.parse(await readLimited(res, WELL_KNOWN_MAX_BYTES)) as { "m.server"?: unknown };
    const server = body?.["m.server"];
    if (typeof server !== "string" || !parseServerName(server)) throw new Error("invalid m.server");
    return { delegated: server, ttl: wellKnownTtl(res.headers.get("cache-control")) };
  }
  throw new Error("too many redirects");
}
