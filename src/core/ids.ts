// Identifier grammar (spec: Appendices, "Identifier Grammar"; room version pages for the
// formats of event IDs and room IDs).
import type { RoomVersion } from "./room-versions";
import { isWellFormedString } from "./canonical-json";

export interface ServerName {
  host: string;
  port?: number;
}

const MAX_ID_BYTES = 255;

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).length;
}

// A "localpart" in the wide sense used by historical user IDs, room ID/alias localparts:
// any non-surrogate code point except ":" and NUL. (JS strings can hold lone surrogates;
// paired surrogates are fine, they encode one astral code point.)
function isOpaqueLocalpart(s: string): boolean {
  return !s.includes(":") && !s.includes("\u0000") && isWellFormedString(s);
}

function isIPv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255);
}

/** IPv6 text form per RFC 3513 §2.2 (hex groups, one optional "::", optional trailing IPv4). */
function isIPv6(s: string): boolean {
  if (s.length < 2 || s.length > 45) return false;
  if (!/^[0-9A-Fa-f:.]+$/.test(s)) return false;
  const halves = s.split("::");
  if (halves.length > 2) return false;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  const all = [...head, ...tail];
  // An embedded IPv4 address may only be the very last piece, and counts as two groups.
  let count = all.length;
  for (let i = 0; i < all.length; i++) {
    const g = all[i];
    if (g.includes(".")) {
      const last = i === all.length - 1 && (halves.length === 1 || tail.length > 0);
      if (!last || !isIPv4(g)) return false;
      count += 1;
    } else if (!/^[0-9A-Fa-f]{1,4}$/.test(g)) {
      return false;
    }
  }
  return halves.length === 2 ? count <= 7 : count === 8;
}

/** Parse `hostname [":" port]`. Returns null if `s` is not a valid server name. */
export function parseServerName(s: string): ServerName | null {
  if (s.length === 0 || s.length > MAX_ID_BYTES) return null;
  let host: string;
  let portText: string | undefined;
  if (s.startsWith("[")) {
    const close = s.indexOf("]");
    if (close < 0) return null;
    host = s.slice(0, close + 1);
    const rest = s.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return null;
      portText = rest.slice(1);
    }
    if (!isIPv6(host.slice(1, -1))) return null;
  } else {
    const colon = s.lastIndexOf(":");
    if (colon >= 0) {
      host = s.slice(0, colon);
      portText = s.slice(colon + 1);
    } else {
      host = s;
    }
    // dns-name = 1*255 (DIGIT / ALPHA / "-" / "."); this also covers IPv4 literals.
    if (!/^[A-Za-z0-9.-]{1,255}$/.test(host)) return null;
    // Something shaped like a dotted quad must be a valid IPv4 address ("IPv4 literals
    // must be a sequence of four decimal numbers in the range 0 to 255").
    if (/^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(host) && !isIPv4(host)) return null;
  }
  if (portText === undefined) return { host };
  if (!/^[0-9]{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;
  return { host, port };
}

export function isValidServerName(s: string): boolean {
  return parseServerName(s) !== null;
}

/** Localpart for *new* users: [a-z0-9._=\-/+]+ . */
export function isValidLocalpart(localpart: string): boolean {
  return /^[a-z0-9._=\-/+]+$/.test(localpart);
}

/** Split `sigil localpart ":" server_name` at the first ":" (localparts never contain one;
 *  server names may, for a port or IPv6). */
function splitId(id: string, sigil: string): { localpart: string; serverName: string } | null {
  if (!id.startsWith(sigil) || utf8Length(id) > MAX_ID_BYTES) return null;
  const colon = id.indexOf(":");
  if (colon < 0) return null;
  const serverName = id.slice(colon + 1);
  if (!isValidServerName(serverName)) return null;
  return { localpart: id.slice(sigil.length, colon), serverName };
}

/** The part after the first `:` of a user ID, room ID, room alias or (v1/v2) event ID: the server
 *  that minted it; "" when there is none. Not validated (see serverOf). */
export function domainOf(id: string): string {
  const i = id.indexOf(":");
  return i < 0 ? "" : id.slice(i + 1);
}

/** The server name of a user ID (historical grammar accepted), or undefined when malformed. */
export function serverOf(userId: string): string | undefined {
  return parseUserId(userId, { historical: true })?.serverName;
}

/** Full user ID; `historical` accepts the wider historical grammar for remote users
 *  (spec "Historical User IDs": any non-surrogate code point except ":" and NUL, even an
 *  empty localpart). Max 255 bytes. */
export function parseUserId(
  id: string,
  opts?: { historical?: boolean },
): { localpart: string; serverName: string } | null {
  const parts = splitId(id, "@");
  if (!parts) return null;
  const ok = opts?.historical ? isOpaqueLocalpart(parts.localpart) : isValidLocalpart(parts.localpart);
  return ok ? parts : null;
}

export function isValidUserId(id: string, opts?: { historical?: boolean }): boolean {
  return parseUserId(id, opts) !== null;
}

// "$" or "!" + unpadded base64 of a SHA-256 hash: 43 characters.
const HASH_ID_URLSAFE = /^[A-Za-z0-9_-]{43}$/;
const HASH_ID_STANDARD = /^[A-Za-z0-9+/]{43}$/;

/** `!opaque:domain` (room versions 1–11) or `!` + 43 URL-safe base64 characters (v12+, the
 *  create event's ID with `!` for `$`). With `rv`, only the format of that version passes. */
export function isValidRoomId(id: string, rv?: RoomVersion): boolean {
  if (!id.startsWith("!")) return false;
  const hashForm = HASH_ID_URLSAFE.test(id.slice(1));
  const domainForm = (() => {
    const parts = splitId(id, "!");
    return parts !== null && parts.localpart !== "" && isOpaqueLocalpart(parts.localpart);
  })();
  if (rv === undefined) return hashForm || domainForm;
  return rv.roomIdFromCreate ? hashForm : domainForm;
}

/** `#localpart:domain`, localpart any non-surrogate code points except ":" and NUL. */
export function isValidRoomAlias(alias: string): boolean {
  const parts = splitId(alias, "#");
  return parts !== null && parts.localpart !== "" && isOpaqueLocalpart(parts.localpart);
}

/** `$opaque:domain` (v1/v2), `$` + 43 standard base64 characters (v3), `$` + 43 URL-safe
 *  base64 characters (v4+). Without `rv`, any of these forms passes. Max 255 bytes. */
export function isValidEventId(id: string, rv?: RoomVersion): boolean {
  if (!id.startsWith("$")) return false;
  const rest = id.slice(1);
  const domainForm = () => {
    const parts = splitId(id, "$");
    return parts !== null && parts.localpart !== "" && isOpaqueLocalpart(parts.localpart);
  };
  switch (rv?.eventIdFormat) {
    case 1:
      return domainForm();
    case 2:
      return HASH_ID_STANDARD.test(rest);
    case 3:
      return HASH_ID_URLSAFE.test(rest);
    default:
      return HASH_ID_STANDARD.test(rest) || HASH_ID_URLSAFE.test(rest) || domainForm();
  }
}
