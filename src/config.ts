// Configuration: wrangler.toml [vars] and secrets → one typed, validated object.
// Invalid configuration fails every request with a clear message (and `npm start` checks it first).
import { z } from "zod";
import type { Env } from "./env";
import { isValidServerName } from "./core/ids";

export type RegistrationMode = "closed" | "token" | "open";

export interface Config {
  /** Server name from SERVER_NAME, or (when unset) the Host the request arrived on. */
  serverName: string;
  publicBaseUrl: string;
  registration: RegistrationMode;
  registrationSharedSecret?: string;
  rateLimits: boolean;
  signingKey?: string;
  jurisdiction?: DurableObjectJurisdiction;
  locationHint?: DurableObjectLocationHint;
  accessTokenLifetimeMs: number;
}

export class ConfigError extends Error {}

const LOCATION_HINTS = ["wnam", "enam", "sam", "weur", "eeur", "apac", "oc", "afr", "me"] as const;

const schema = z.object({
  SERVER_NAME: z.string().optional(),
  PUBLIC_BASEURL: z.url().optional(),
  REGISTRATION: z.enum(["closed", "token", "open"]).default("closed"),
  REGISTRATION_SHARED_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  RATE_LIMITS: z.enum(["on", "off"]).default("on"),
  SIGNING_KEY: z
    .string()
    .regex(/^ed25519 [A-Za-z0-9_]+ [A-Za-z0-9+/]{43}=?$/, 'must be "ed25519 <key id> <base64 seed>"')
    .optional(),
  DATA_JURISDICTION: z.enum(["eu", "fedramp"]).optional(),
  DATA_LOCATION_HINT: z.enum(LOCATION_HINTS).optional(),
  ACCESS_TOKEN_LIFETIME_MS: z.coerce.number().int().min(60_000).optional(),
});

const cache = new WeakMap<object, Omit<Config, "serverName" | "publicBaseUrl"> & { serverName?: string; publicBaseUrl?: string }>();

function emptyToUndefined(env: Env): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) out[k] = v === "" ? undefined : v;
  return out;
}

/** Parse and validate the environment. Throws ConfigError naming every bad variable. */
export function parseConfig(env: Env, requestUrl?: string): Config {
  let parsed = cache.get(env);
  if (!parsed) {
    const r = schema.safeParse(emptyToUndefined(env));
    if (!r.success) {
      const problems = r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
      throw new ConfigError(`Invalid Lattice configuration: ${problems}`);
    }
    const v = r.data;
    if (v.SERVER_NAME !== undefined && !isValidServerName(v.SERVER_NAME)) {
      throw new ConfigError(`Invalid Lattice configuration: SERVER_NAME: "${v.SERVER_NAME}" is not a valid server name`);
    }
    parsed = {
      serverName: v.SERVER_NAME,
      publicBaseUrl: v.PUBLIC_BASEURL?.replace(/\/+$/, ""),
      registration: v.REGISTRATION,
      registrationSharedSecret: v.REGISTRATION_SHARED_SECRET,
      rateLimits: v.RATE_LIMITS === "on",
      signingKey: v.SIGNING_KEY,
      jurisdiction: v.DATA_JURISDICTION,
      locationHint: v.DATA_LOCATION_HINT,
      accessTokenLifetimeMs: v.ACCESS_TOKEN_LIFETIME_MS ?? 24 * 3600_000,
    };
    cache.set(env, parsed);
  }
  let serverName = parsed.serverName;
  let publicBaseUrl = parsed.publicBaseUrl;
  if (!serverName || !publicBaseUrl) {
    // Development default: the server is named after where it is reached (localhost:<port>).
    const url = new URL(requestUrl ?? "http://localhost:8008/");
    serverName ??= url.host;
    publicBaseUrl ??= `${url.protocol}//${url.host}`;
  }
  return { ...parsed, serverName, publicBaseUrl };
}
