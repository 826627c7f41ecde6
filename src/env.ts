import type { RoomDO } from "../durable-objects/room";
import type { RateLimiterDO } from "../durable-objects/rate-limiter";
import type { UserDO } from "../durable-objects/user";
import type { SenderDO } from "../durable-objects/sender";
import type { PusherDO } from "../durable-objects/pusher";
import type { DelayedEventsDO } from "../durable-objects/delayed-events";
import type { AppserviceSenderDO } from "../durable-objects/appservice-sender";

/** Bindings and variables the Worker receives (wrangler.toml). Parsed into Config by src/config.ts. */
export interface Env {
  DB: D1Database;
  MEDIA: R2Bucket;
  ROOMS: DurableObjectNamespace<RoomDO>;
  RATE_LIMITER: DurableObjectNamespace<RateLimiterDO>;
  /** Sync hubs, one per local user (durable-objects/user.ts). */
  USERS: DurableObjectNamespace<UserDO>;
  FEDERATION_SENDER: DurableObjectNamespace<SenderDO>;
  /** Push delivery queues, one per pusher (durable-objects/pusher.ts). */
  PUSHERS: DurableObjectNamespace<PusherDO>;
  /** Delayed events (MSC4140), one object per local user (durable-objects/delayed-events.ts). */
  DELAYED_EVENTS: DurableObjectNamespace<DelayedEventsDO>;
  /** Application service transaction queues, one per registration (durable-objects/appservice-sender.ts). */
  APPSERVICE_SENDER: DurableObjectNamespace<AppserviceSenderDO>;
  SERVER_NAME?: string;
  /** Localpart of the server notices account (admin API send_server_notice); default "notices". */
  SERVER_NOTICES_LOCALPART?: string;
  PUBLIC_BASEURL?: string;
  REGISTRATION?: string;
  REGISTRATION_SHARED_SECRET?: string;
  GUEST_ACCESS?: string;
  MAX_UPLOAD_BYTES?: string;
  MEDIA_USER_QUOTA_BYTES?: string;
  MEDIA_MAX_PENDING_UPLOADS?: string;
  MEDIA_UNUSED_EXPIRY_MS?: string;
  MEDIA_LEGACY_FREEZE_TS?: string;
  URL_PREVIEWS?: string;
  URL_PREVIEW_BLOCKLIST?: string;
  PREVIEW_HTTP_LOOPBACK?: string;
  RATE_LIMITS?: string;
  USER_DIRECTORY?: string;
  SUPPORT_CONTACTS?: string;
  SUPPORT_PAGE?: string;
  CLIENT_ADDRESS?: string;
  SIGNING_KEY?: string;
  DATA_JURISDICTION?: string;
  DATA_LOCATION_HINT?: string;
  ACCESS_TOKEN_LIFETIME_MS?: string;
  /** "off" disables presence (big servers do): PUT is accepted, nothing is fanned out. */
  PRESENCE?: string;
  FEDERATION_HTTP_LOOPBACK?: string;
  APPSERVICE_HTTP_LOOPBACK?: string;
  TRUSTED_KEY_SERVERS?: string;
  SENDER_AS_NOTARY?: string;
  DNS_RESOLVER_URL?: string;
  OLD_VERIFY_KEYS?: string;
  PUSH_HTTP_LOOPBACK?: string;
  TURN_SHARED_SECRET?: string;
  TURN_URIS?: string;
  TURN_TTL_SECONDS?: string;
  TURN_KEY_ID?: string;
  TURN_KEY_API_TOKEN?: string;
  /** Tests only: where the Cloudflare TURN credentials API is reached (a loopback stand-in). */
  TURN_CLOUDFLARE_API_URL?: string;
  RTC_FOCUS_URL?: string;
}
