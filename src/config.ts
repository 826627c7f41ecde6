// Configuration: wrangler.toml [vars] and secrets → one typed, validated object.
// Invalid configuration fails every request with a clear message (and `npm start` checks it first).
import { z } from "zod";
import type { Env } from "./env";
import { isValidServerName } from "./core/ids";

export type RegistrationMode = "closed" | "token" | "open";

export interface MediaConfig {
  /** Largest upload in bytes (advertised as `m.upload.size`). */
  maxUploadBytes: number;
  /** Total bytes one user may have stored; 0 = no quota. */
  userQuotaBytes: number;
  /** Concurrent pending async uploads (POST /_matrix/media/v1/create) per user. */
  maxPendingUploads: number;
  /** How long an unused /create media ID lives, ms. */
  unusedExpiryMs: number;
  /** Unauthenticated /_matrix/media/v3/download|thumbnail serve only media uploaded before this
   *  time (ms since epoch); 0 = never (the spec's "freeze" from the start). */
  legacyFreezeTs: number;
  /** GET .../preview_url fetches pages; off by default. */
  urlPreviews: boolean;
  /** URL_PREVIEW_BLOCKLIST: entries without "://" are host globs (a leading "." means the name and
   *  its subdomains), entries with it are globs over the whole URL. */
  urlPreviewBlocklist: string[];
  /** PREVIEW_HTTP_LOOPBACK=true: previews may fetch http(s)://127.0.0.1|[::1]|localhost on any
   *  port (tests only); every other private address stays refused. */
  urlPreviewLoopback: boolean;
}

export interface Config {
  /** Server name from SERVER_NAME (required: never taken from the request). */
  serverName: string;
  publicBaseUrl: string;
  registration: RegistrationMode;
  registrationSharedSecret?: string;
  /** Guest accounts (spec module "Guest Access"): POST /register?kind=guest. */
  guestAccess: boolean;
  /** Content repository limits and switches (docs/media.md). */
  media: MediaConfig;
  rateLimits: boolean;
  /** POST /user_directory/search: "shared" (users sharing a room, users in public rooms) or
   *  "all" (also every local user). */
  userDirectory: "shared" | "all";
  /** GET /.well-known/matrix/support (404 when neither is set). */
  support: { contacts: { role: string; matrix_id?: string; email_address?: string }[]; supportPage?: string };
  /** Where the client's address comes from: Cloudflare's edge sets CF-Connecting-IP and
   *  overwrites any client value; anywhere else (wrangler dev, self-hosted workerd) a client can
   *  send that header itself, so "none" ignores it and per-address limits are skipped. */
  clientAddressHeader: "cf-connecting-ip" | "none";
  signingKey?: string;
  jurisdiction?: DurableObjectJurisdiction;
  locationHint?: DurableObjectLocationHint;
  accessTokenLifetimeMs: number;
  /** Federation: plain http to peers named localhost:<port> / 127.0.0.1:<port> (dev and tests). */
  federationHttpLoopback: boolean;
  /** PARTIAL_STATE_JOINS=on: join remote rooms with omit_members and complete the state later. */
  partialStateJoins: boolean;
  /** THREAD_SUBSCRIPTIONS=on: MSC4306 thread subscriptions (endpoints, the push rules that
   *  silence unsubscribed threads, `org.matrix.msc4306` in /versions) and MSC4308. */
  threadSubscriptions: boolean;
  /** Application services: plain http to loopback URLs (a bridge on the same machine, tests). */
  appserviceHttpLoopback: boolean;
  /** Ask the server that sent us events (a join's resident) for the keys of their signers that
   *  neither the signer nor trustedKeyServers could give (vouchedKey); off: such events are dropped. */
  senderAsNotary: boolean;
  /** Notary servers asked for keys when a server cannot be reached directly. */
  trustedKeyServers: string[];
  /** DNS-over-HTTPS JSON endpoint for SRV and address lookups (Workers have no DNS API). */
  dnsResolverUrl: string;
  /** Previous signing keys, published under old_verify_keys (key rotation). */
  oldVerifyKeys: { keyId: string; publicKey: string; expiredTs: number }[];
  /** Pushers may point at http://127.0.0.1 / localhost (tests only; PUSH_HTTP_LOOPBACK=true). */
  pushHttpLoopback: boolean;
  /** GET /voip/turnServer: coturn's shared-secret REST scheme or Cloudflare Realtime TURN. */
  turn?:
    | { kind: "shared-secret"; secret: string; uris: string[]; ttlSeconds: number }
    | { kind: "cloudflare"; keyId: string; apiToken: string; ttlSeconds: number; apiUrl: string };
  /** MatrixRTC (MSC4143): the LiveKit focus offered to clients (its JWT service URL). */
  rtcFocusUrl?: string;
}

export class ConfigError extends Error {}

const LOCATION_HINTS = ["wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me"] as const;

const schema = z.object({
  SERVER_NAME: z.string().optional(),
  PUBLIC_BASEURL: z.url().optional(),
  REGISTRATION: z.enum(["closed", "token", "open"]).default("closed"),
  REGISTRATION_SHARED_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  GUEST_ACCESS: z.enum(["on", "off"]).default("off"),
  MAX_UPLOAD_BYTES: z.coerce.number().int().min(1).max(5 * 1024 ** 3).default(50 * 1024 * 1024),
  MEDIA_USER_QUOTA_BYTES: z.coerce.number().int().min(0).default(1024 ** 3),
  MEDIA_MAX_PENDING_UPLOADS: z.coerce.number().int().min(1).default(10),
  MEDIA_UNUSED_EXPIRY_MS: z.coerce.number().int().min(60_000).default(24 * 3600_000),
  MEDIA_LEGACY_FREEZE_TS: z.coerce.number().int().min(0).default(0),
  URL_PREVIEWS: z.enum(["on", "off"]).default("off"),
  URL_PREVIEW_BLOCKLIST: z
    .string()
    .transform((s) => s.split(",").map((x) => x.trim()).filter((x) => x !== ""))
    .refine((l) => l.every((x) => x.length <= 255 && !/\s/.test(x)), "must be a comma-separated list of host names (.suffix, * globs) or URL globs")
    .optional(),
  PREVIEW_HTTP_LOOPBACK: z.enum(["true", "false"]).default("false"),
  RATE_LIMITS: z.enum(["on", "off"]).default("on"),
  USER_DIRECTORY: z.enum(["shared", "all"]).default("shared"),
  /** "role=@user:server" or "role=email", comma-separated; one contact per role. */
  SUPPORT_CONTACTS: z
    .string()
    .transform((s) => s.split(",").map((x) => x.trim()).filter((x) => x !== ""))
    .refine((l) => l.every((x) => /^[a-z][a-z0-9_.]*=(@[^\s,=]+:[^\s,=]+|[^\s@,=]+@[^\s@,=]+)$/.test(x)), 'must be comma-separated "role=@user:server" or "role=email" entries')
    .optional(),
  SUPPORT_PAGE: z.url().optional(),
  CLIENT_ADDRESS: z.enum(["cf-connecting-ip", "none"]).default("cf-connecting-ip"),
  SIGNING_KEY: z
    .string()
    .regex(/^ed25519 [A-Za-z0-9_]+ [A-Za-z0-9+/]{43}=?$/, 'must be "ed25519 <key id> <base64 seed>"')
    .optional(),
  DATA_JURISDICTION: z.enum(["eu", "fedramp"]).optional(),
  DATA_LOCATION_HINT: z.enum(LOCATION_HINTS).optional(),
  ACCESS_TOKEN_LIFETIME_MS: z.coerce.number().int().min(60_000).optional(),
  FEDERATION_HTTP_LOOPBACK: z.enum(["true", "false"]).default("false"),
  /** Partial-state ("faster") joins of remote rooms: send_join with omit_members=true, the rest
   *  of the state fetched in the background by the room's alarm (durable-objects/room/partial-sync.ts). */
  PARTIAL_STATE_JOINS: z.enum(["on", "off"]).default("on"),
  /** MSC4306 thread subscriptions (unstable). Off by default, as in Synapse: with it on, replies
   *  in threads a user has not subscribed to stop notifying, which users of clients that never
   *  subscribe would only see as lost notifications. */
  THREAD_SUBSCRIPTIONS: z.enum(["on", "off"]).default("off"),
  APPSERVICE_HTTP_LOOPBACK: z.enum(["true", "false"]).default("false"),
  TRUSTED_KEY_SERVERS: z
    .string()
    .transform((s) => s.split(",").map((x) => x.trim()).filter((x) => x !== ""))
    .refine((l) => l.every(isValidServerName), "must be a comma-separated list of server names")
    .optional(),
  /** The sender of events as a last-resort notary for their signers' keys (see README). */
  SENDER_AS_NOTARY: z.enum(["on", "off"]).default("on"),
  DNS_RESOLVER_URL: z.url().refine((u) => u.startsWith("https://") || u.startsWith("http://"), "must be an http(s) URL").optional(),
  OLD_VERIFY_KEYS: z
    .string()
    .transform((s) => s.split(",").map((x) => x.trim()).filter((x) => x !== ""))
    .refine(
      (l) => l.every((x) => /^ed25519:[A-Za-z0-9_]+ [A-Za-z0-9+/]{43}=? [0-9]{1,15}$/.test(x)),
      'must be a comma-separated list of "ed25519:<key id> <base64 public key> <expired_ts ms>"',
    )
    .optional(),
  PUSH_HTTP_LOOPBACK: z.enum(["true", "false"]).default("false"),
  TURN_SHARED_SECRET: z.string().min(8, "must be at least 8 characters").optional(),
  TURN_URIS: z
    .string()
    .transform((s) => s.split(",").map((x) => x.trim()).filter((x) => x !== ""))
    .refine((l) => l.length > 0 && l.every((u) => /^turns?:[^\s]+$/.test(u)), "must be a comma-separated list of turn: / turns: URIs")
    .optional(),
  TURN_TTL_SECONDS: z.coerce.number().int().min(60).max(7 * 86400).default(86400),
  TURN_KEY_ID: z.string().regex(/^[A-Za-z0-9]+$/, "must be the TURN key ID (hex)").optional(),
  TURN_KEY_API_TOKEN: z.string().min(1).optional(),
  TURN_CLOUDFLARE_API_URL: z.url().optional(),
  RTC_FOCUS_URL: z.url().refine((u) => /^https?:\/\//.test(u), "must be an http(s) URL").optional(),
});

/** SUPPORT_CONTACTS entries grouped by role: a role's Matrix ID and email address in one contact. */
function supportContacts(entries: string[]): Config["support"]["contacts"] {
  const byRole = new Map<string, { role: string; matrix_id?: string; email_address?: string }>();
  for (const e of entries) {
    const [role, value] = [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)];
    const c = byRole.get(role) ?? { role };
    if (value.startsWith("@")) c.matrix_id = value;
    else c.email_address = value;
    byRole.set(role, c);
  }
  return [...byRole.values()];
}

type ParsedConfig = Omit<Config, "publicBaseUrl"> & { publicBaseUrl?: string };
const cache = new WeakMap<object, ParsedConfig>();
/** The same configuration by the variables' values: under `wrangler dev` every request brings a
 *  new `env` object, and validating it again took ~1.6 ms of every request (bench/send.mjs CPU
 *  profile). Keyed by every variable's value, so a different configuration (tests) parses anew. */
const byValues = new Map<string, ParsedConfig>();

function valuesKey(env: Env): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    // Variables: strings, and JSON values (plain objects, arrays, numbers); bindings are skipped.
    const plain = v !== null && typeof v === "object" && (Array.isArray(v) || Object.getPrototypeOf(v) === Object.prototype);
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean" || plain) parts.push(k, JSON.stringify(v));
  }
  return JSON.stringify(parts);
}

function emptyToUndefined(env: Env): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) out[k] = v === "" ? undefined : v;
  return out;
}

/** Parse and validate the environment. Throws ConfigError naming every bad variable. */
export function parseConfig(env: Env, requestUrl?: string): Config {
  let parsed = cache.get(env);
  let key: string | undefined;
  if (!parsed) {
    key = valuesKey(env);
    parsed = byValues.get(key);
    if (parsed) cache.set(env, parsed);
  }
  if (!parsed) {
    const r = schema.safeParse(emptyToUndefined(env));
    if (!r.success) {
      const problems = r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
      throw new ConfigError(`Invalid Lattice configuration: ${problems}`);
    }
    const v = r.data;
    // Fail closed: a name taken from the request's Host header would let any client name the
    // server (user IDs, signing, federation origin) and Durable Objects would fall back to a
    // default of their own. `npm start`, the e2e harness and the vitest config set it.
    if (v.SERVER_NAME === undefined) {
      throw new ConfigError(
        "Invalid Lattice configuration: SERVER_NAME is not set. Set it in wrangler.toml [vars] (the name in every user and room ID); `npm start` sets localhost:<port>",
      );
    }
    if (!isValidServerName(v.SERVER_NAME)) {
      throw new ConfigError(`Invalid Lattice configuration: SERVER_NAME: "${v.SERVER_NAME}" is not a valid server name`);
    }
    parsed = {
      pushHttpLoopback: v.PUSH_HTTP_LOOPBACK === "true",
      serverName: v.SERVER_NAME,
      publicBaseUrl: v.PUBLIC_BASEURL?.replace(/\/+$/, ""),
      registration: v.REGISTRATION,
      registrationSharedSecret: v.REGISTRATION_SHARED_SECRET,
      guestAccess: v.GUEST_ACCESS === "on",
      media: {
        maxUploadBytes: v.MAX_UPLOAD_BYTES,
        userQuotaBytes: v.MEDIA_USER_QUOTA_BYTES,
        maxPendingUploads: v.MEDIA_MAX_PENDING_UPLOADS,
        unusedExpiryMs: v.MEDIA_UNUSED_EXPIRY_MS,
        legacyFreezeTs: v.MEDIA_LEGACY_FREEZE_TS,
        urlPreviews: v.URL_PREVIEWS === "on",
        urlPreviewBlocklist: v.URL_PREVIEW_BLOCKLIST ?? [],
        urlPreviewLoopback: v.PREVIEW_HTTP_LOOPBACK === "true",
      },
      rateLimits: v.RATE_LIMITS === "on",
      userDirectory: v.USER_DIRECTORY,
      support: { contacts: supportContacts(v.SUPPORT_CONTACTS ?? []), supportPage: v.SUPPORT_PAGE },
      clientAddressHeader: v.CLIENT_ADDRESS,
      signingKey: v.SIGNING_KEY,
      jurisdiction: v.DATA_JURISDICTION,
      locationHint: v.DATA_LOCATION_HINT,
      accessTokenLifetimeMs: v.ACCESS_TOKEN_LIFETIME_MS ?? 24 * 3600_000,
      federationHttpLoopback: v.FEDERATION_HTTP_LOOPBACK === "true",
      partialStateJoins: v.PARTIAL_STATE_JOINS === "on",
      threadSubscriptions: v.THREAD_SUBSCRIPTIONS === "on",
      appserviceHttpLoopback: v.APPSERVICE_HTTP_LOOPBACK === "true",
      trustedKeyServers: v.TRUSTED_KEY_SERVERS ?? [],
      senderAsNotary: v.SENDER_AS_NOTARY === "on",
      dnsResolverUrl: v.DNS_RESOLVER_URL ?? "https://cloudflare-dns.com/dns-query",
      oldVerifyKeys: (v.OLD_VERIFY_KEYS ?? []).map((x) => {
        const [keyId, publicKey, ts] = x.split(" ");
        return { keyId, publicKey: publicKey.replace(/=$/, ""), expiredTs: Number(ts) };
      }),
    };
    if (v.TURN_SHARED_SECRET && v.TURN_KEY_ID) {
      throw new ConfigError("Invalid Lattice configuration: set either TURN_SHARED_SECRET (coturn) or TURN_KEY_ID (Cloudflare TURN), not both");
    }
    if (v.TURN_SHARED_SECRET && !v.TURN_URIS) throw new ConfigError("Invalid Lattice configuration: TURN_URIS: required with TURN_SHARED_SECRET");
    if (!!v.TURN_KEY_ID !== !!v.TURN_KEY_API_TOKEN) throw new ConfigError("Invalid Lattice configuration: TURN_KEY_ID and TURN_KEY_API_TOKEN go together");
    parsed.turn = v.TURN_SHARED_SECRET
      ? { kind: "shared-secret", secret: v.TURN_SHARED_SECRET, uris: v.TURN_URIS!, ttlSeconds: v.TURN_TTL_SECONDS }
      : v.TURN_KEY_ID
        ? {
            kind: "cloudflare",
            keyId: v.TURN_KEY_ID,
            apiToken: v.TURN_KEY_API_TOKEN!,
            ttlSeconds: v.TURN_TTL_SECONDS,
            apiUrl: (v.TURN_CLOUDFLARE_API_URL ?? "https://rtc.live.cloudflare.com/v1").replace(/\/+$/, ""),
          }
        : undefined;
    parsed.rtcFocusUrl = v.RTC_FOCUS_URL?.replace(/\/+$/, "");
    cache.set(env, parsed);
    if (byValues.size >= 16) byValues.clear();
    byValues.set(key!, parsed);
  }
  let publicBaseUrl = parsed.publicBaseUrl;
  if (!publicBaseUrl) {
    // Development default: the base URL is where the server is reached (localhost:<port>).
    const url = new URL(requestUrl ?? `https://${parsed.serverName}/`);
    publicBaseUrl = `${url.protocol}//${url.host}`;
  }
  return { ...parsed, publicBaseUrl };
}
