// Server ACLs (spec: Client-Server API "Server Access Control Lists (ACLs) for rooms", the
// m.room.server_acl event schema, and Server-Server API "Server Access Control Lists"). Pure.
import { globMatches } from "./glob";

/** Glob-style matching, case-insensitive as server ACLs require (the shared matcher). No length
 *  bound on the pattern: ignoring a long `deny` entry would fail open, and the value (a host
 *  name, at most 255 characters) bounds the work instead. */
export function aclGlobMatches(pattern: string, value: string): boolean {
  return globMatches(pattern, value, { ignoreCase: true, maxLength: Infinity });
}

/** The host of a server name without its port ("evil.com:8448" → "evil.com", "[::1]:80" → "[::1]"). */
export function hostWithoutPort(serverName: string): string {
  if (serverName.startsWith("[")) {
    const close = serverName.indexOf("]");
    return close >= 0 ? serverName.slice(0, close + 1) : serverName;
  }
  const colon = serverName.lastIndexOf(":");
  return colon >= 0 ? serverName.slice(0, colon) : serverName;
}

function isIpLiteral(host: string): boolean {
  return host.startsWith("[") || /^[0-9]{1,3}(\.[0-9]{1,3}){3}$/.test(host);
}

/** Whether `serverName` may take part in a room whose current m.room.server_acl content is
 *  `acl` (undefined/null: the room has no ACL). Rules in the spec's order:
 *  1. no ACL → allow; 2. IP literal and allow_ip_literals === false → deny;
 *  3. matches deny → deny; 4. matches allow → allow; 5. otherwise deny. */
export function isServerAllowedByAcl(acl: Record<string, unknown> | null | undefined, serverName: string): boolean {
  if (!acl) return true;
  const host = hostWithoutPort(serverName);
  // "Defaults to true if missing or otherwise not a boolean."
  if (acl.allow_ip_literals === false && isIpLiteral(host)) return false;
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
  if (list(acl.deny).some((g) => aclGlobMatches(g, host))) return false;
  return list(acl.allow).some((g) => aclGlobMatches(g, host));
}
