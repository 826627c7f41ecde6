// OAuth 2.0 scopes for Matrix (spec: Client-Server API "Scope", "Allocated scope tokens").

export const SCOPE_API = "urn:matrix:client:api:*";
const DEVICE_PREFIX = "urn:matrix:client:device:";

export interface MatrixScope {
  /** The device the tokens belong to (created or reused). */
  deviceId: string;
  /** The scope tokens, normalised (deduplicated, in request order). */
  tokens: string[];
}

/** Parse a requested scope. It must grant the full Client-Server API and allocate exactly one
 *  device ("There MUST be exactly one urn:matrix:client:device:<device_id> token"); other tokens
 *  (e.g. openid) are refused, since we cannot honour them. null with the reason if invalid. */
export function parseScope(scope: string | undefined): MatrixScope | string {
  if (!scope) return "scope is required";
  // RFC 6749 §3.3: space-delimited tokens of %x21 / %x23-5B / %x5D-7E.
  const tokens = [...new Set(scope.split(" ").filter((t) => t !== ""))];
  if (!tokens.every((t) => /^[\x21\x23-\x5b\x5d-\x7e]+$/.test(t))) return "scope has characters outside RFC 6749 §3.3";
  const devices = tokens.filter((t) => t.startsWith(DEVICE_PREFIX));
  if (devices.length !== 1) return "scope must contain exactly one urn:matrix:client:device:<device_id>";
  if (!tokens.includes(SCOPE_API)) return `scope must contain ${SCOPE_API}`;
  const unknown = tokens.find((t) => t !== SCOPE_API && !t.startsWith(DEVICE_PREFIX));
  if (unknown) return `scope token ${unknown} is not supported`;
  const deviceId = devices[0].slice(DEVICE_PREFIX.length);
  // "The homeserver MAY reject a request for a device_id that is not long enough or contains
  // characters outside the unreserved list": we do, so device IDs stay URL- and log-safe.
  if (!/^[A-Za-z0-9\-._~]{10,255}$/.test(deviceId)) return "device_id must be 10 to 255 unreserved characters (RFC 3986 §2.3)";
  return { deviceId, tokens };
}
