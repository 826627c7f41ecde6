// The federation client: discovery, X-Matrix signing, bounded timeouts and response sizes.
// Every outbound Server-Server request goes through `federationRequest`.
//
// Usage:
//   const r = await federationRequest(ctx, "example.org", "GET", "/_matrix/federation/v1/query/profile",
//     { query: { user_id: "@a:example.org" } });
//   r.body  // parsed JSON; non-2xx answers throw FederationError with status and errcode
import type { Env } from "../../env";
import type { Config } from "../../config";
import { getServerSigningKey } from "../server-key";
import { signRequest } from "../../core/x-matrix";
import { isValidServerName } from "../../core/ids";
import { isLoopbackServerName, readLimited, resolveServerName, type DiscoveryDeps, type SrvRecord } from "./discovery";

export interface FederationContext {
  env: Env;
  config: Config;
  /** Injectable for tests; defaults to the global fetch. */
  fetch?: typeof fetch;
  /** Injectable SRV lookup for tests (DNS-over-HTTPS otherwise). */
  srvLookup?: (name: string) => Promise<SrvRecord[] | null>;
}

export interface FederationRequestOptions {
  /** JSON body (PUT/POST). Signed as `content`. */
  body?: unknown;
  query?: Record<string, string | number | boolean | (string | number)[] | undefined>;
  /** Sign with X-Matrix (default true; /_matrix/key/v2/server is fetched unsigned). */
  signed?: boolean;
  /** Whole-request deadline. Default 30 s. */
  timeoutMs?: number;
  /** Largest response body accepted. Default 8 MiB. */
  maxBytes?: number;
  /** A 2xx answer is handed back as its text only (`body` undefined), not parsed: for a large
   *  answer its consumer parses itself (a send_join answer, parsed by the RoomDO). */
  textOnly?: boolean;
}

export class FederationError extends Error {
  constructor(
    message: string,
    /** HTTP status from the peer, or undefined for network/timeout/parse failures. */
    public readonly status?: number,
    public readonly errcode?: string,
    public readonly body?: unknown,
  ) {
    super(message);
    this.name = "FederationError";
  }
  /** The peer could not be reached or answered garbage (as opposed to a deliberate 4xx). */
  get unreachable(): boolean {
    return this.status === undefined || this.status >= 500;
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_BYTES = 8 * 1024 * 1024;

let fetchOverride: typeof fetch | undefined;
/** Test hook: route every federation request (and discovery) through `fn` in this isolate. */
export function setFederationFetch(fn: typeof fetch | undefined): void {
  fetchOverride = fn;
}

export function federationContext(env: Env, config: Config): FederationContext {
  return { env, config };
}

export function discoveryDeps(ctx: FederationContext): DiscoveryDeps {
  return {
    fetch: ctx.fetch ?? fetchOverride ?? ((input, init) => fetch(input, init)),
    now: () => Date.now(),
    httpLoopback: ctx.config.federationHttpLoopback,
    dnsResolverUrl: ctx.config.dnsResolverUrl,
    srvLookup: ctx.srvLookup,
  };
}

/** Build "/path?query" exactly as it will be sent (and signed). */
export function buildUri(path: string, query?: FederationRequestOptions["query"]): string {
  if (!query) return path;
  const parts: string[] = [];
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined) continue;
    for (const item of Array.isArray(v) ? v : [v]) parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(item))}`);
  }
  return parts.length ? `${path}?${parts.join("&")}` : path;
}

/** Send one signed request to `destination` and hand back the raw Response (any status), for
 *  answers that are not JSON (federation media is multipart/mixed). The caller reads the body
 *  with its own size limit. Network failures throw FederationError. */
export async function federationFetch(
  ctx: FederationContext,
  destination: string,
  method: "GET" | "PUT" | "POST" | "DELETE",
  path: string,
  opts: FederationRequestOptions & { accept?: string } = {},
): Promise<Response> {
  const { config } = ctx;
  if (!isValidServerName(destination)) throw new FederationError(`invalid destination ${destination}`);
  if (destination === config.serverName) throw new FederationError("refusing to federate with ourselves");
  const deps = discoveryDeps(ctx);
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  let target;
  try {
    target = await resolveServerName(destination, deps);
  } catch (e) {
    throw new FederationError(`cannot resolve ${destination}: ${(e as Error).message}`);
  }
  const base = new URL(target.baseUrl);
  // HTTPS only, except plain HTTP to loopback peers when explicitly enabled.
  if (base.protocol !== "https:" && !(base.protocol === "http:" && config.federationHttpLoopback && isLoopbackServerName(destination))) {
    throw new FederationError(`refusing plain HTTP to ${destination}`);
  }
  const uri = buildUri(path, opts.query);
  const headers: Record<string, string> = { accept: opts.accept ?? "application/json" };
  // Host per the discovery step. (Workers may ignore it for cross-zone requests; see discovery.ts.)
  if (target.host !== base.host) headers.host = target.host;
  let bodyText: string | undefined;
  if (opts.body !== undefined) {
    bodyText = JSON.stringify(opts.body);
    headers["content-type"] = "application/json";
  }
  if (opts.signed !== false) {
    const key = await getServerSigningKey(ctx.env, config);
    headers.authorization = await signRequest(key, {
      method,
      uri,
      origin: config.serverName,
      destination,
      content: opts.body,
    });
  }
  try {
    return await deps.fetch(`${target.baseUrl}${uri}`, { method, headers, body: bodyText, redirect: "manual", signal: timeout });
  } catch (e) {
    throw new FederationError(`request to ${destination} failed: ${(e as Error).message}`);
  }
}

/** Make one request to `destination`. Resolves with the parsed JSON of a 2xx answer; throws
 *  FederationError otherwise (with `status`/`errcode` when the peer answered). */
export async function federationRequest<T = unknown>(
  ctx: FederationContext,
  destination: string,
  method: "GET" | "PUT" | "POST" | "DELETE",
  path: string,
  opts: FederationRequestOptions = {},
): Promise<{ status: number; body: T; text: string }> {
  const res = await federationFetch(ctx, destination, method, path, opts);
  let text: string;
  try {
    text = await readLimited(res, opts.maxBytes ?? DEFAULT_MAX_BYTES);
  } catch (e) {
    throw new FederationError(`reading the answer from ${destination} failed: ${(e as Error).message}`, res.status);
  }
  if (opts.textOnly && res.status >= 200 && res.status < 300) return { status: res.status, body: undefined as T, text };
  let json: unknown;
  try {
    json = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new FederationError(`${destination} answered ${res.status} with non-JSON`, res.status);
  }
  if (res.status < 200 || res.status >= 300) {
    const errcode = (json as { errcode?: unknown })?.errcode;
    const error = (json as { error?: unknown })?.error;
    throw new FederationError(
      `${destination} answered ${res.status}${typeof errcode === "string" ? ` ${errcode}` : ""}${typeof error === "string" ? `: ${error}` : ""}`,
      res.status,
      typeof errcode === "string" ? errcode : undefined,
      json,
    );
  }
  // (`text`: the answer as it came, for a caller that hands a large answer on whole.)
  return { status: res.status, body: json as T, text };
}
