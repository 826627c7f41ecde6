// SSRF guard for URL previews: decides, from the URL alone, whether the server may fetch it.
//
// A Worker cannot resolve DNS before fetch() (there is no resolver API, and fetch resolves on its
// own), so "resolve, then check the address" is not available. The policy is therefore:
//  - only http(s), only the default ports 80/443, no credentials in the URL;
//  - IP literals (v4 in any of the forms the URL parser accepts, which normalises
//    `http://2130706433/` and `http://0x7f.1/` to 127.0.0.1; v6 in brackets, including
//    IPv4-mapped/compatible/NAT64/6to4 forms) are checked against the blocked ranges below;
//  - host names that name the local machine or an internal network are refused: `localhost`
//    and `*.localhost`, single-label names (`metadata`, `intranet`), and the special-use or
//    conventionally internal suffixes `.local`, `.internal` (`metadata.google.internal`),
//    `.home.arpa`, `.lan`, `.localdomain`, `.corp`, `.intranet`, `.private`.
// What it cannot catch: a public name whose DNS points at a private address (or rebinds to one).
// On Cloudflare's network that traffic cannot reach anything of ours (Workers' fetch does not go to
// private addresses); under self-hosted workerd / `wrangler dev` it could, which docs/media.md says.

import { globMatches } from "./glob";

/** `invalid`: not an http(s) URL at all (the client's mistake: 400), as opposed to one we refuse
 *  to fetch (403). */
export type UrlVerdict = { ok: true; url: URL } | { ok: false; reason: string; invalid?: boolean };

/** IPv4 ranges no preview may fetch (IANA special-purpose registry, RFC 6890 and successors). */
const BLOCKED_V4: ReadonlyArray<[string, number]> = [
  ["0.0.0.0", 8], // "this network"
  ["10.0.0.0", 8], // private
  ["100.64.0.0", 10], // carrier-grade NAT (also Alibaba's metadata 100.100.100.200)
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local, cloud metadata 169.254.169.254
  ["172.16.0.0", 12], // private
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // TEST-NET-1
  ["192.88.99.0", 24], // 6to4 relay anycast
  ["192.168.0.0", 16], // private
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // TEST-NET-2
  ["203.0.113.0", 24], // TEST-NET-3
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, broadcast
];

/** IPv6 ranges no preview may fetch. IPv4-embedding prefixes are handled separately. */
const BLOCKED_V6: ReadonlyArray<[string, number]> = [
  ["::", 128], // unspecified
  ["::1", 128], // loopback
  ["100::", 64], // discard-only
  ["2001::", 23], // IETF protocol assignments (incl. Teredo 2001::/32)
  ["2001:db8::", 32], // documentation
  ["fc00::", 7], // unique local (also AWS metadata fd00:ec2::254)
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated)
  ["ff00::", 8], // multicast
];

const BLOCKED_SUFFIXES = [".localhost", ".local", ".internal", ".home.arpa", ".lan", ".localdomain", ".corp", ".intranet", ".private"];

export function parseIPv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

/** 16 bytes of an IPv6 address (without brackets), or undefined. Accepts `::` compression and a
 *  trailing dotted IPv4 part. */
export function parseIPv6(s: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  if (s.includes(".")) {
    // A trailing dotted IPv4 part (::ffff:127.0.0.1) becomes two hex groups.
    const lastColon = s.lastIndexOf(":");
    const v4 = parseIPv4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string) => (part === "" ? [] : part.split(":"));
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  if ([...head, ...rest].some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  const groups = [...head.map((g) => parseInt(g, 16))];
  const after = rest.map((g) => parseInt(g, 16));
  const missing = 8 - groups.length - after.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...groups, ...new Array(missing).fill(0), ...after];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

function inV4(addr: number, [base, bits]: [string, number]): boolean {
  const b = parseIPv4(base)!;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return ((addr & mask) >>> 0) === ((b & mask) >>> 0);
}

function inV6(addr: Uint8Array, [base, bits]: [string, number]): boolean {
  const b = parseIPv6(base)!;
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((addr[i] & mask) !== (b[i] & mask)) return false;
  }
  return true;
}

export function isBlockedIPv4(addr: number): boolean {
  return BLOCKED_V4.some((r) => inV4(addr, r));
}

export function isBlockedIPv6(addr: Uint8Array): boolean {
  if (BLOCKED_V6.some((r) => inV6(addr, r))) return true;
  const v4at = (i: number) => ((addr[i] << 24) | (addr[i + 1] << 16) | (addr[i + 2] << 8) | addr[i + 3]) >>> 0;
  const zero = (from: number, to: number) => addr.subarray(from, to).every((x) => x === 0);
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated): judge the IPv4 address.
  if (zero(0, 10) && ((addr[10] === 0xff && addr[11] === 0xff) || (addr[10] === 0 && addr[11] === 0))) return isBlockedIPv4(v4at(12));
  // 64:ff9b::/96 (NAT64) embeds an IPv4 address in the last 32 bits.
  if (inV6(addr, ["64:ff9b::", 96]) || inV6(addr, ["64:ff9b:1::", 48])) return isBlockedIPv4(v4at(12));
  // 2002::/16 (6to4) embeds one in bits 16..48.
  if (addr[0] === 0x20 && addr[1] === 0x02) return isBlockedIPv4(v4at(2));
  return false;
}

/** Is this host (as URL.hostname gives it: IPv6 in brackets) an address or name we must not
 *  fetch? `extraBlocked` adds exact names or `.suffix` entries. */
export function isBlockedHost(hostname: string, extraBlocked: readonly string[] = []): string | undefined {
  let host = hostname.toLowerCase();
  if (host.endsWith(".")) host = host.slice(0, -1);
  if (host.startsWith("[") && host.endsWith("]")) {
    const v6 = parseIPv6(host.slice(1, -1).split("%")[0]);
    if (!v6) return "unparseable IPv6 address";
    return isBlockedIPv6(v6) ? "address in a blocked IPv6 range" : undefined;
  }
  const v4 = parseIPv4(host);
  if (v4 !== undefined) return isBlockedIPv4(v4) ? "address in a blocked IPv4 range" : undefined;
  if (/^[0-9.]+$/.test(host) || /^0x/i.test(host)) return "numeric host that is not a plain IPv4 address";
  if (host === "" || host === "localhost") return "local host name";
  if (!host.includes(".")) return "single-label host name";
  if (BLOCKED_SUFFIXES.some((s) => host.endsWith(s))) return "internal host name";
  for (const e of extraBlocked) {
    const x = e.toLowerCase();
    if (x.startsWith(".") ? host.endsWith(x) || host === x.slice(1) : host === x) return "host on the deny list";
  }
  return undefined;
}

/** The whole decision for one URL. Called for the requested URL and again for every redirect
 *  target. */
export function checkPreviewUrl(raw: string | URL, extraBlocked: readonly string[] = []): UrlVerdict {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: "not a valid URL", invalid: true };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return { ok: false, reason: "only http and https URLs are previewed", invalid: true };
  if (url.username || url.password) return { ok: false, reason: "URLs with credentials are not previewed" };
  if (url.port !== "" && url.port !== "80" && url.port !== "443") return { ok: false, reason: "only the default ports are previewed" };
  const blocked = isBlockedHost(url.hostname, extraBlocked);
  if (blocked) return { ok: false, reason: blocked };
  return { ok: true, url };
}

/** The operator's preview settings (URL_PREVIEW_BLOCKLIST, PREVIEW_HTTP_LOOPBACK). */
export interface PreviewPolicy {
  /** Host entries (`name`, `.suffix` = the name and its subdomains, `*` globs) and, with "://",
   *  globs over the whole URL. */
  blocklist: readonly string[];
  /** Admit http(s) to 127.0.0.1, [::1] and localhost on any port (tests only). */
  loopback: boolean;
}

const LOOPBACK_HOSTS = ["127.0.0.1", "[::1]", "localhost"];

/** Does a blocklist entry name this URL? */
export function onPreviewBlocklist(url: URL, blocklist: readonly string[]): boolean {
  const host = url.hostname.toLowerCase().replace(/\.$/, "");
  return blocklist.some((e) => {
    // `?` is part of URLs, so only `*` is a wildcard here.
    if (e.includes("://")) return globMatches(e, url.toString(), { questionMark: false });
    const x = e.toLowerCase();
    if (x.startsWith(".")) return host === x.slice(1) || host.endsWith(x);
    return globMatches(x, host, { questionMark: false });
  });
}

/** checkPreviewUrl under the operator's policy: loopback targets first (only when allowed), then
 *  the built-in guard, then the blocklist. Used for the requested URL and every later hop. */
export function checkPreviewTarget(raw: string | URL, policy: PreviewPolicy): UrlVerdict {
  let verdict = checkPreviewUrl(raw);
  if (!verdict.ok && policy.loopback && !verdict.invalid) {
    const url = new URL(raw);
    if (LOOPBACK_HOSTS.includes(url.hostname.toLowerCase()) && !url.username && !url.password) verdict = { ok: true, url };
  }
  if (verdict.ok && onPreviewBlocklist(verdict.url, policy.blocklist)) return { ok: false, reason: "on this server's URL preview blocklist" };
  return verdict;
}
