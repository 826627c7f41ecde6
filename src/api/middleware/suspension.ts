// What suspended and locked accounts may not do (spec: Client-Server API "Account moderation").
// Checked where access tokens are resolved (auth.ts), like guest access.

const SEG = "[^/]+";

/** Suspended accounts: the spec's recommended forbidden actions — joining or knocking, sending or
 *  accepting invites, sending messages (redactions stay allowed), changing the profile — and
 *  creating rooms (which sends invites and messages). Answer 403 M_USER_SUSPENDED. */
const SUSPENDED_FORBIDDEN: [string, RegExp][] = [
  ["POST", new RegExp(`^/join/${SEG}$`)],
  ["POST", new RegExp(`^/rooms/${SEG}/join$`)],
  ["POST", new RegExp(`^/knock/${SEG}$`)],
  ["POST", new RegExp(`^/rooms/${SEG}/invite$`)],
  ["POST", /^\/createRoom$/],
  ["PUT", new RegExp(`^/rooms/${SEG}/send/(?!m\\.room\\.redaction/)${SEG}/${SEG}$`)],
  ["PUT", new RegExp(`^/rooms/${SEG}/state/${SEG}(/[^/]*)?$`)],
  ["PUT", new RegExp(`^/profile/${SEG}/${SEG}$`)],
  ["DELETE", new RegExp(`^/profile/${SEG}/${SEG}$`)],
];

const CLIENT_PREFIX = /^\/_matrix\/client\/(?:v3|r0|v1)(?=\/)/;

export function suspendedMayNot(method: string, pathname: string): boolean {
  const m = CLIENT_PREFIX.exec(pathname);
  if (!m) return false;
  const rest = pathname.slice(m[0].length);
  return SUSPENDED_FORBIDDEN.some(([mth, re]) => mth === method && re.test(rest));
}

/** Locked accounts: everything but logging out answers 401 M_USER_LOCKED with soft_logout. */
export function lockedMayCall(method: string, pathname: string): boolean {
  return method === "POST" && /^\/_matrix\/client\/(?:v3|r0)\/logout(\/all)?$/.test(pathname);
}
