// OAuth 2.0 client metadata validation (spec: Client-Server API "Client metadata", "Redirect URI
// validation"; RFC 7591 §2, RFC 8252 §7). Pure functions: the registration endpoint and the
// authorization endpoint both rely on them.

export type ApplicationType = "web" | "native";

/** What we keep of a registration: the fields we understood and validated. */
export interface ClientMetadata {
  client_uri: string;
  application_type: ApplicationType;
  redirect_uris: string[];
  grant_types: string[];
  response_types: string[];
  token_endpoint_auth_method: "none";
  client_name?: string;
  logo_uri?: string;
  tos_uri?: string;
  policy_uri?: string;
  /** Localized variants (RFC 7591 §2.2), e.g. "client_name#fr". */
  [localized: `${string}#${string}`]: string;
}

export class ClientMetadataError extends Error {
  constructor(
    /** RFC 7591 §3.2.2: invalid_redirect_uri or invalid_client_metadata. */
    readonly error: "invalid_redirect_uri" | "invalid_client_metadata",
    message: string,
  ) {
    super(message);
  }
}

export const SUPPORTED_GRANT_TYPES = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"];
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);
/** http://host[:port] as written: group 1 the host, group 2 the port (even an empty or default one). */
const LOOPBACK_AUTHORITY = /^http:\/\/(\[[^\]]*\]|[^/?#:]*)(:\d*)?/i;
const URI_FIELDS = ["logo_uri", "tos_uri", "policy_uri"] as const;
const LOCALIZABLE = new Set(["client_name", ...URI_FIELDS]);

function parseUrl(s: unknown): URL | null {
  if (typeof s !== "string") return null;
  try {
    return new URL(s);
  } catch {
    return null;
  }
}

/** Same host as the client URI, or a subdomain of it ("common base" for the authority). */
function hasCommonBase(url: URL, clientUri: URL): boolean {
  return url.hostname === clientUri.hostname || url.hostname.endsWith(`.${clientUri.hostname}`);
}

/** An https URL without user info on the client URI's host or a subdomain (the rule for
 *  client_uri's companions: logo, terms, policy, and web redirect URIs). */
function isHttpsOnBase(url: URL, clientUri: URL): boolean {
  return url.protocol === "https:" && url.username === "" && url.password === "" && hasCommonBase(url, clientUri);
}

/** Reverse-DNS form of a host: example.com → com.example. */
function reverseDns(host: string): string {
  return host.split(".").reverse().join(".");
}

/** Whether `raw` may be registered as a redirect URI of a client of this type and client URI.
 *  null if valid, else why not. */
export function redirectUriProblem(raw: string, applicationType: ApplicationType, clientUri: URL): string | null {
  const url = parseUrl(raw);
  if (!url) return "is not a URI";
  // "In all cases, the redirect URI MUST NOT have a fragment component."
  if (raw.includes("#")) return "must not have a fragment";
  if (url.protocol === "https:") {
    // Web clients, and native clients' claimed https URIs: the same rules.
    return isHttpsOnBase(url, clientUri) ? null : "must be https on the client_uri host (or a subdomain), without user info";
  }
  if (applicationType === "web") return "must use https for a web client";
  if (url.protocol === "http:") {
    // Loopback for native clients: host localhost/127.0.0.1/[::1], no port (any port is
    // accepted at authorization time, RFC 8252 §7.3).
    if (!LOOPBACK_HOSTS.has(url.hostname)) return "http is only allowed on the loopback interface";
    if (LOOPBACK_AUTHORITY.exec(raw)?.[2] !== undefined) return "must not have a port";
    if (url.username !== "" || url.password !== "") return "must not have user info";
    return null;
  }
  // Private-use URI scheme: prefixed with the client URI host in reverse-DNS notation, no authority.
  const scheme = url.protocol.slice(0, -1);
  const prefix = reverseDns(clientUri.hostname);
  if (scheme !== prefix && !scheme.startsWith(`${prefix}.`)) return `scheme must be ${prefix} or start with ${prefix}.`;
  if (raw.slice(scheme.length + 1).startsWith("//")) return "must not have an authority component";
  return null;
}

/** Validate a registration request body (RFC 7591 §2 with the spec's rules). Unknown grant and
 *  response types are ignored (the spec: "The server MUST ignore values that it does not
 *  understand"); unknown fields are dropped. */
export function validateClientMetadata(body: unknown): ClientMetadata {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ClientMetadataError("invalid_client_metadata", "body must be a JSON object");
  const b = body as Record<string, unknown>;
  const clientUri = parseUrl(b.client_uri);
  if (!clientUri || clientUri.protocol !== "https:" || clientUri.username !== "" || clientUri.password !== "") {
    throw new ClientMetadataError("invalid_client_metadata", "client_uri is required and must be an https URL without user info");
  }
  const applicationType = b.application_type ?? "web";
  if (applicationType !== "web" && applicationType !== "native") throw new ClientMetadataError("invalid_client_metadata", "application_type must be web or native");
  const method = b.token_endpoint_auth_method ?? "none";
  if (method !== "none") throw new ClientMetadataError("invalid_client_metadata", "only the token_endpoint_auth_method none (public clients) is supported");

  const strings = (field: string, fallback: string[]): string[] => {
    const v = b[field];
    if (v === undefined) return fallback;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) throw new ClientMetadataError("invalid_client_metadata", `${field} must be an array of strings`);
    return v;
  };
  const redirectUris = strings("redirect_uris", []);
  for (const uri of redirectUris) {
    const problem = redirectUriProblem(uri, applicationType, clientUri);
    if (problem) throw new ClientMetadataError("invalid_redirect_uri", `redirect URI ${uri} ${problem}`);
  }
  // RFC 7591 §2: grant_types defaults to authorization_code, response_types to code.
  const grantTypes = strings("grant_types", ["authorization_code"]).filter((g) => SUPPORTED_GRANT_TYPES.includes(g));
  const responseTypes = strings("response_types", ["code"]).filter((r) => r === "code");
  if (grantTypes.includes("authorization_code") && redirectUris.length === 0) {
    throw new ClientMetadataError("invalid_redirect_uri", "redirect_uris is required for the authorization_code grant");
  }

  const out: ClientMetadata = {
    client_uri: b.client_uri as string,
    application_type: applicationType,
    redirect_uris: [...new Set(redirectUris)],
    grant_types: [...new Set(grantTypes)],
    response_types: [...new Set(responseTypes)],
    token_endpoint_auth_method: "none",
  };
  // Human-readable fields, plain and localized ("client_name#fr").
  for (const [key, value] of Object.entries(b)) {
    const [base, lang] = key.split("#", 2);
    if (!LOCALIZABLE.has(base) || (lang !== undefined && !/^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/.test(lang))) continue;
    if (typeof value !== "string") throw new ClientMetadataError("invalid_client_metadata", `${key} must be a string`);
    if (base === "client_name") {
      if (value.length > 256) throw new ClientMetadataError("invalid_client_metadata", `${key} is too long`);
    } else {
      const url = parseUrl(value);
      // "This URL MUST use the https scheme" and share the client URI's host.
      if (!url || !isHttpsOnBase(url, clientUri)) throw new ClientMetadataError("invalid_client_metadata", `${key} must be an https URL on the client_uri host`);
    }
    (out as unknown as Record<string, string>)[key] = value;
  }
  return out;
}

/** Whether the redirect URI of an authorization request is one of the client's. Exact string
 *  match (RFC 9700 §2.1), except that a registered loopback URI without a port matches the same
 *  URI with any port (spec: "The homeserver MUST then accept any port number during the
 *  authorisation flow"). */
export function matchRedirectUri(requested: string, registered: readonly string[]): boolean {
  if (registered.includes(requested)) return true;
  const m = LOOPBACK_AUTHORITY.exec(requested);
  if (!m || !m[2] || !/^:\d{1,5}$/.test(m[2]) || !LOOPBACK_HOSTS.has(m[1].toLowerCase()) || requested.includes("#")) return false;
  return registered.includes(`http://${m[1]}${requested.slice(m[0].length)}`);
}
