import type { RoomDO } from "../durable-objects/room";
import type { RateLimiterDO } from "../durable-objects/rate-limiter";

/** Bindings and variables the Worker receives (wrangler.toml). Parsed into Config by src/config.ts. */
export interface Env {
  DB: D1Database;
  MEDIA: R2Bucket;
  ROOMS: DurableObjectNamespace<RoomDO>;
  RATE_LIMITER: DurableObjectNamespace<RateLimiterDO>;
  SERVER_NAME?: string;
  PUBLIC_BASEURL?: string;
  REGISTRATION?: string;
  REGISTRATION_SHARED_SECRET?: string;
  RATE_LIMITS?: string;
  SIGNING_KEY?: string;
  DATA_JURISDICTION?: string;
  DATA_LOCATION_HINT?: string;
  ACCESS_TOKEN_LIFETIME_MS?: string;
}
