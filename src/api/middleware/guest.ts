// What guest accounts may call (spec: Client-Server API, module "Guest Access", "Client
// behaviour"). The spec lists the endpoints a guest may use (plus POST /join/{roomIdOrAlias},
// below); every other endpoint that needs an access token answers 403
// M_GUEST_ACCESS_FORBIDDEN. Checked once, where access tokens are resolved (auth.ts), so a new
// route is closed to guests unless it is added here.

const SEG = "[^/]+";

/** [method, path after /_matrix/client/<version>] */
const GUEST_ALLOWED: [string, RegExp][] = [
  // Retrieving events and associated media.
  ["GET", new RegExp(`^/rooms/${SEG}/state$`)],
  ["GET", new RegExp(`^/rooms/${SEG}/context/${SEG}$`)],
  ["GET", new RegExp(`^/rooms/${SEG}/event/${SEG}$`)],
  ["GET", new RegExp(`^/rooms/${SEG}/state/${SEG}(/[^/]*)?$`)],
  ["GET", new RegExp(`^/rooms/${SEG}/messages$`)],
  ["GET", new RegExp(`^/rooms/${SEG}/members$`)],
  ["GET", new RegExp(`^/rooms/${SEG}/initialSync$`)],
  ["GET", /^\/sync$/],
  ["GET", /^\/events$/],
  ["GET", new RegExp(`^/media/download/${SEG}/${SEG}(/${SEG})?$`)],
  ["GET", new RegExp(`^/media/thumbnail/${SEG}/${SEG}$`)],
  // Sending events.
  ["POST", new RegExp(`^/rooms/${SEG}/join$`)],
  // Not in the list, but the same join (same m.room.guest_access check) by ID or alias; it is
  // the one matrix-js-sdk's joinRoom and Sytest's guest tests use, and Synapse allows it.
  ["POST", new RegExp(`^/join/${SEG}$`)],
  ["POST", new RegExp(`^/rooms/${SEG}/leave$`)],
  ["PUT", new RegExp(`^/rooms/${SEG}/send/${SEG}/${SEG}$`)],
  ["PUT", new RegExp(`^/rooms/${SEG}/state/${SEG}(/[^/]*)?$`)],
  ["PUT", new RegExp(`^/sendToDevice/${SEG}/${SEG}$`)],
  // Account maintenance: only the display name among profile fields.
  ["PUT", new RegExp(`^/profile/${SEG}/displayname$`)],
  ["DELETE", new RegExp(`^/profile/${SEG}/displayname$`)],
  ["GET", /^\/devices$/],
  ["GET", new RegExp(`^/devices/${SEG}$`)],
  ["PUT", new RegExp(`^/devices/${SEG}$`)],
  ["GET", /^\/account\/whoami$/],
  // End-to-end encryption.
  ["POST", /^\/keys\/upload$/],
  ["POST", /^\/keys\/query$/],
  ["POST", /^\/keys\/claim$/],
  // Needs no access token at all; one that is sent is only checked for validity.
  ["GET", /^\/publicRooms$/],
];

const CLIENT_PREFIX = /^\/_matrix\/client\/(?:v3|r0|v1)(?=\/)/;

/** Whether a guest may make this request. */
export function guestMayCall(method: string, pathname: string): boolean {
  const m = CLIENT_PREFIX.exec(pathname);
  if (!m) return false;
  const rest = pathname.slice(m[0].length);
  const verb = method === "HEAD" ? "GET" : method;
  return GUEST_ALLOWED.some(([mth, re]) => mth === verb && re.test(rest));
}
