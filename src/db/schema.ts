// D1 schema (drizzle). Server-wide tables; room data lives in the RoomDOs.
import { sqliteTable, text, integer, primaryKey, index, uniqueIndex } from "drizzle-orm/sqlite-core";

export const users = sqliteTable("users", {
  userId: text("user_id").primaryKey(),
  localpart: text("localpart").notNull().unique(),
  /** "pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>", or null for accounts without a password. */
  passwordHash: text("password_hash"),
  admin: integer("admin", { mode: "boolean" }).notNull().default(false),
  isGuest: integer("is_guest", { mode: "boolean" }).notNull().default(false),
  deactivated: integer("deactivated", { mode: "boolean" }).notNull().default(false),
  displayname: text("displayname"),
  avatarUrl: text("avatar_url"),
  createdTs: integer("created_ts").notNull(),
  /** Admin API: a shadow-banned user's room events are silently dropped (Synapse's shadow_ban). */
  shadowBanned: integer("shadow_banned", { mode: "boolean" }).notNull().default(false),
  /** Spec 1.12 account locking / suspension (client admin API `/admin/lock`, `/admin/suspend`). */
  locked: integer("locked", { mode: "boolean" }).notNull().default(false),
  suspended: integer("suspended", { mode: "boolean" }).notNull().default(false),
  /** Deactivated with `erase`: profile and uploaded media removed. */
  erased: integer("erased", { mode: "boolean" }).notNull().default(false),
});

export const devices = sqliteTable(
  "devices",
  {
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    displayName: text("display_name"),
    lastSeenTs: integer("last_seen_ts"),
    lastSeenIp: text("last_seen_ip"),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId] })],
);

/** Access tokens, stored only as SHA-256 hashes. */
export const accessTokens = sqliteTable(
  "access_tokens",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tokenHash: text("token_hash").notNull().unique(),
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    /** ms since epoch; null = never expires (only when refresh tokens were not requested). */
    expiresTs: integer("expires_ts"),
    refreshTokenId: integer("refresh_token_id"),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [index("access_tokens_device").on(t.userId, t.deviceId)],
);

export const refreshTokens = sqliteTable(
  "refresh_tokens",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tokenHash: text("token_hash").notNull().unique(),
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    /** Set once the token was exchanged; a used token no longer works. */
    usedTs: integer("used_ts"),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [index("refresh_tokens_device").on(t.userId, t.deviceId)],
);

/** User-interactive auth sessions (spec: "User-Interactive Authentication API"). */
export const uiaSessions = sqliteTable("uia_sessions", {
  sessionId: text("session_id").primaryKey(),
  /** What the session authorises: "register", "delete_devices", ... with a hash of the request. */
  purpose: text("purpose").notNull(),
  userId: text("user_id"),
  completed: text("completed").notNull().default("[]"),
  createdTs: integer("created_ts").notNull(),
});

export const registrationTokens = sqliteTable("registration_tokens", {
  token: text("token").primaryKey(),
  usesAllowed: integer("uses_allowed"),
  pending: integer("pending").notNull().default(0),
  completed: integer("completed").notNull().default(0),
  expiryTs: integer("expiry_ts"),
});

/** The server's own signing keys. The newest non-expired one signs. */
export const serverSigningKeys = sqliteTable("server_signing_keys", {
  keyId: text("key_id").primaryKey(),
  seed: text("seed").notNull(),
  publicKey: text("public_key").notNull(),
  createdTs: integer("created_ts").notNull(),
  expiredTs: integer("expired_ts"),
});

/** Nonces used by shared-secret registration (replay protection). */
export const registrationNonces = sqliteTable("registration_nonces", {
  nonce: text("nonce").primaryKey(),
  createdTs: integer("created_ts").notNull(),
});

/** Local room aliases (spec: Client-Server API "Room aliases"). Only aliases on this server's
 *  domain live here; `creator` may delete its own alias. */
export const roomAliases = sqliteTable(
  "room_aliases",
  {
    alias: text("alias").primaryKey(),
    roomId: text("room_id").notNull(),
    creator: text("creator").notNull(),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [index("room_aliases_room").on(t.roomId)],
);

/** The published room directory (spec: "Published room directory"). A room with no row is
 *  `private`. Listing pages through public rooms in (published_ts, room_id) order. */
export const roomDirectory = sqliteTable(
  "room_directory",
  {
    roomId: text("room_id").primaryKey(),
    visibility: text("visibility", { enum: ["public", "private"] }).notNull(),
    publishedTs: integer("published_ts").notNull(),
  },
  (t) => [index("room_directory_listing").on(t.visibility, t.publishedTs, t.roomId)],
);

/** Rooms this server knows (one RoomDO each). Written by the RoomDO when it creates or joins a
 *  room; lets the Worker answer M_NOT_FOUND without waking a Durable Object. */
export const rooms = sqliteTable("rooms", {
  roomId: text("room_id").primaryKey(),
  roomVersion: text("room_version").notNull(),
  creator: text("creator").notNull(),
  createdTs: integer("created_ts").notNull(),
});

/** Local users' current membership per room, mirrored by the RoomDO after each change of its
 *  current state (for /joined_rooms, profile propagation, and sync's room list). */
export const roomMemberships = sqliteTable(
  "room_memberships",
  {
    roomId: text("room_id").notNull(),
    userId: text("user_id").notNull(),
    membership: text("membership").notNull(),
    eventId: text("event_id").notNull(),
    /** The room's stream position when the membership changed. */
    stream: integer("stream").notNull(),
    updatedTs: integer("updated_ts").notNull(),
    /** POST /forget: hidden from the user until they are a member again. */
    forgotten: integer("forgotten", { mode: "boolean" }).notNull().default(false),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.userId] }), index("room_memberships_user").on(t.userId, t.membership)],
);

// ---------------------------------------------------------------------------------------------
// End-to-end encryption (spec: Client-Server API "End-to-End Encryption"). The server never sees
// plaintext; it keeps keys, counts and device lists. Storage functions: src/services/e2ee/.

/** Device identity keys (`device_keys` of POST /keys/upload), one signed JSON object per device. */
export const deviceKeys = sqliteTable(
  "device_keys",
  {
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    keyJson: text("key_json").notNull(),
    updatedTs: integer("updated_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId] })],
);

/** One-time keys. `id` gives claim order; a claim deletes exactly one row (DELETE … RETURNING). */
export const oneTimeKeys = sqliteTable(
  "one_time_keys",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    algorithm: text("algorithm").notNull(),
    /** Full key ID, "<algorithm>:<key id>". */
    keyId: text("key_id").notNull(),
    keyJson: text("key_json").notNull(),
  },
  (t) => [
    uniqueIndex("one_time_keys_key").on(t.userId, t.deviceId, t.keyId),
    index("one_time_keys_claim").on(t.userId, t.deviceId, t.algorithm, t.id),
  ],
);

/** Fallback keys: one per device and algorithm; `used` once claimed (spec: "One-time and fallback keys"). */
export const fallbackKeys = sqliteTable(
  "fallback_keys",
  {
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    algorithm: text("algorithm").notNull(),
    keyId: text("key_id").notNull(),
    keyJson: text("key_json").notNull(),
    used: integer("used", { mode: "boolean" }).notNull().default(false),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId, t.algorithm] })],
);

/** Cross-signing keys (master, self_signing, user_signing), the latest upload of each. */
export const crossSigningKeys = sqliteTable(
  "cross_signing_keys",
  {
    userId: text("user_id").notNull(),
    keyType: text("key_type").notNull(),
    /** The unpadded-base64 public key (the part after "ed25519:" in the key ID). */
    publicKey: text("public_key").notNull(),
    keyJson: text("key_json").notNull(),
    updatedTs: integer("updated_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.keyType] })],
);

/** Signatures uploaded with POST /keys/signatures/upload, merged into the signed object on query.
 *  `targetKeyId` is a device ID or a cross-signing public key. */
export const crossSigningSignatures = sqliteTable(
  "cross_signing_signatures",
  {
    signerUserId: text("signer_user_id").notNull(),
    signerKeyId: text("signer_key_id").notNull(),
    targetUserId: text("target_user_id").notNull(),
    targetKeyId: text("target_key_id").notNull(),
    signature: text("signature").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.signerUserId, t.signerKeyId, t.targetUserId, t.targetKeyId] }),
    index("cross_signing_signatures_target").on(t.targetUserId, t.targetKeyId),
  ],
);

/** Device-list stream: one row each time a user's devices or cross-signing keys change. The
 *  row ID is the device-list stream position (for /keys/changes and sync's device_lists). */
export const deviceListStream = sqliteTable(
  "device_list_stream",
  {
    streamId: integer("stream_id").primaryKey({ autoIncrement: true }),
    userId: text("user_id").notNull(),
    ts: integer("ts").notNull(),
  },
  (t) => [index("device_list_stream_user").on(t.userId, t.streamId)],
);

/** Server-side key backup versions (spec: "Server-side key backups"). Version numbers are never
 *  reused; a deleted version keeps its row with `deleted` set. */
export const keyBackupVersions = sqliteTable(
  "key_backup_versions",
  {
    userId: text("user_id").notNull(),
    version: integer("version").notNull(),
    algorithm: text("algorithm").notNull(),
    authData: text("auth_data").notNull(),
    /** Bumped whenever the keys in the backup change. */
    etag: integer("etag").notNull().default(0),
    deleted: integer("deleted", { mode: "boolean" }).notNull().default(false),
  },
  (t) => [primaryKey({ columns: [t.userId, t.version] })],
);

export const keyBackupKeys = sqliteTable(
  "key_backup_keys",
  {
    userId: text("user_id").notNull(),
    version: integer("version").notNull(),
    roomId: text("room_id").notNull(),
    sessionId: text("session_id").notNull(),
    firstMessageIndex: integer("first_message_index").notNull(),
    forwardedCount: integer("forwarded_count").notNull(),
    isVerified: integer("is_verified", { mode: "boolean" }).notNull(),
    sessionData: text("session_data").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.version, t.roomId, t.sessionId] })],
);

/** Transaction IDs of PUT /sendToDevice already handled (idempotency per device and txnId). */
export const toDeviceTxns = sqliteTable(
  "to_device_txns",
  {
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    txnId: text("txn_id").notNull(),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId, t.txnId] })],
);

/** Dehydrated devices (MSC3814): at most one per user; the device itself is a row of `devices`. */
export const dehydratedDevices = sqliteTable("dehydrated_devices", {
  userId: text("user_id").primaryKey(),
  deviceId: text("device_id").notNull(),
  deviceData: text("device_data").notNull(),
  createdTs: integer("created_ts").notNull(),
});

/** Other servers' signing keys (spec: Server-Server API "Retrieving server keys"), fetched
 *  directly or through a notary. `key_json` is the whole signed key response the key came in,
 *  kept so that we can serve it as a notary (POST /_matrix/key/v2/query) with the origin's own
 *  signature intact. `valid_until_ts` is the response's (capped at fetch + 7 days, as the spec
 *  requires); `expired_ts` is set for keys listed under `old_verify_keys`. */
export const remoteServerKeys = sqliteTable(
  "remote_server_keys",
  {
    serverName: text("server_name").notNull(),
    keyId: text("key_id").notNull(),
    publicKey: text("public_key").notNull(),
    validUntilTs: integer("valid_until_ts").notNull(),
    expiredTs: integer("expired_ts"),
    fetchedTs: integer("fetched_ts").notNull(),
    /** Where we got it: the server itself or the notary's name. */
    fromServer: text("from_server").notNull(),
    keyJson: text("key_json").notNull(),
  },
  (t) => [primaryKey({ columns: [t.serverName, t.keyId] })],
);

/** Inbound federation transactions already processed (PUT /_matrix/federation/v1/send/{txnId}):
 *  a retransmission gets the stored response instead of being applied twice. `response` is null
 *  while the first attempt is still being processed. Old rows are pruned. */
export const federationInboundTxns = sqliteTable(
  "federation_inbound_txns",
  {
    origin: text("origin").notNull(),
    txnId: text("txn_id").notNull(),
    response: text("response"),
    receivedTs: integer("received_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.origin, t.txnId] }), index("federation_inbound_txns_ts").on(t.receivedTs)],
);

/** Media repository metadata (spec: Client-Server API "Content repository"). One row per
 *  `mxc://<server_name>/<media_id>`; the bytes live in R2 under `r2_key`
 *  (`media/<server_name>/<media_id>`, thumbnails under `thumbnails/<server_name>/<media_id>/`), so
 *  remote media cached later fits the same layout. A row with `uploaded_ts` null is a pending
 *  async upload (POST /_matrix/media/v1/create) that expires at `unused_expires_ts`.
 *  Storage functions: src/services/media.ts. */
export const media = sqliteTable(
  "media",
  {
    serverName: text("server_name").notNull(),
    mediaId: text("media_id").notNull(),
    /** Local uploader; null for remote media cached from another server. */
    uploader: text("uploader"),
    contentType: text("content_type"),
    filename: text("filename"),
    size: integer("size"),
    /** Hex SHA-256 of the content. */
    sha256: text("sha256"),
    r2Key: text("r2_key").notNull(),
    /** When the ID was created (upload or /create), ms since epoch. */
    createdTs: integer("created_ts").notNull(),
    /** When the content arrived; null while an async upload is pending. For remote media: when the
     *  cache was populated (what the spec's unauthenticated-media freeze compares against). */
    uploadedTs: integer("uploaded_ts"),
    /** Set while a PUT is writing the content (claims the ID against concurrent PUTs). */
    uploadStartedTs: integer("upload_started_ts"),
    unusedExpiresTs: integer("unused_expires_ts"),
    quarantined: integer("quarantined", { mode: "boolean" }).notNull().default(false),
    quarantinedBy: text("quarantined_by"),
  },
  (t) => [
    primaryKey({ columns: [t.serverName, t.mediaId] }),
    index("media_uploader").on(t.uploader, t.uploadedTs),
    index("media_sha256").on(t.sha256),
  ],
);

// ---------------------------------------------------------------------------------------------
// Remote users' E2EE state (spec: Server-Server API "End-to-End Encryption" and "Device
// Management"). Storage functions: src/services/federation/device-lists.ts.

/** One row per remote user whose device list we cache. `stream_id` is the last device-list
 *  stream ID their server told us (GET /user/devices or m.device_list_update). `stale` is set
 *  when an update arrived whose `prev_id` we had not seen, or a resync failed: the cache must
 *  not be trusted until the next successful GET /user/devices. */
export const remoteDeviceLists = sqliteTable("remote_device_lists", {
  userId: text("user_id").primaryKey(),
  streamId: integer("stream_id"),
  stale: integer("stale", { mode: "boolean" }).notNull().default(false),
  updatedTs: integer("updated_ts").notNull(),
});

/** Cached devices of remote users: the signed `device_keys` object (null when the device has
 *  uploaded none) and display name. */
export const remoteDevices = sqliteTable(
  "remote_devices",
  {
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    keyJson: text("key_json"),
    displayName: text("display_name"),
  },
  (t) => [primaryKey({ columns: [t.userId, t.deviceId] })],
);

/** Cached cross-signing keys of remote users (master and self-signing; the user-signing key is
 *  never shared over federation). From m.signing_key_update, GET /user/devices, /user/keys/query. */
export const remoteCrossSigningKeys = sqliteTable(
  "remote_cross_signing_keys",
  {
    userId: text("user_id").notNull(),
    keyType: text("key_type").notNull(),
    keyJson: text("key_json").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.keyType] })],
);

/** `message_id`s of m.direct_to_device EDUs already delivered, per origin (a message resent in
 *  another transaction is delivered once). Pruned after a week. */
export const federationInboundToDevice = sqliteTable(
  "federation_inbound_to_device",
  {
    origin: text("origin").notNull(),
    messageId: text("message_id").notNull(),
    receivedTs: integer("received_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.origin, t.messageId] }), index("federation_inbound_to_device_ts").on(t.receivedTs)],
);

/** OpenID tokens (spec: Client-Server API "OpenID"): short-lived, stored only as SHA-256 hashes,
 *  exchanged by other services for the user's ID via /_matrix/federation/v1/openid/userinfo. */
export const openidTokens = sqliteTable(
  "openid_tokens",
  {
    tokenHash: text("token_hash").primaryKey(),
    userId: text("user_id").notNull(),
    expiresTs: integer("expires_ts").notNull(),
  },
  (t) => [index("openid_tokens_expires").on(t.expiresTs)],
);

// ---------------------------------------------------------------------------------------------
// User directory (POST /user_directory/search, src/services/user-directory.ts).

/** Users the directory can return: local users (from their global profile) and remote users
 *  seen joined to a room (from their member event). `search_key`: user ID and display name,
 *  lowercased with accents removed. */
export const userDirectory = sqliteTable("user_directory", {
  userId: text("user_id").primaryKey(),
  displayname: text("displayname"),
  avatarUrl: text("avatar_url"),
  searchKey: text("search_key").notNull(),
  isLocal: integer("is_local", { mode: "boolean" }).notNull(),
});

/** Joined members of every room this server is in, local and remote (the RoomDO mirrors its
 *  current state here): "users who share a room". */
export const userDirectoryRooms = sqliteTable(
  "user_directory_rooms",
  {
    roomId: text("room_id").notNull(),
    userId: text("user_id").notNull(),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.userId] }), index("user_directory_rooms_user").on(t.userId)],
);

/** Rooms whose members everyone may find: join_rules public or history world_readable. */
export const userDirectoryPublicRooms = sqliteTable("user_directory_public_rooms", {
  roomId: text("room_id").primaryKey(),
});

// ---------------------------------------------------------------------------------------------
// Reporting content (module "Reporting content"): kept for admins.

export const reports = sqliteTable(
  "reports",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    /** event | room | user */
    kind: text("kind").notNull(),
    reporter: text("reporter").notNull(),
    roomId: text("room_id"),
    eventId: text("event_id"),
    targetUserId: text("target_user_id"),
    reason: text("reason"),
    score: integer("score"),
    receivedTs: integer("received_ts").notNull(),
  },
  (t) => [index("reports_received").on(t.receivedTs)],
);

/** Extended profile fields (spec 1.16 "Profiles": m.tz and custom keys), one JSON value per key;
 *  displayname and avatar_url stay in `users`. */
export const profileFields = sqliteTable(
  "profile_fields",
  {
    userId: text("user_id").notNull(),
    key: text("key").notNull(),
    valueJson: text("value_json").notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.key] })],
);

/** Pushers (spec: module "Push Notifications", POST /pushers/set). Keyed per user by (app_id,
 *  pushkey); `device_id` is the device whose token created it, so deleting or logging out that
 *  device removes it. Each pusher's delivery queue is a PusherDO (durable-objects/pusher.ts). */
export const pushers = sqliteTable(
  "pushers",
  {
    userId: text("user_id").notNull(),
    appId: text("app_id").notNull(),
    pushkey: text("pushkey").notNull(),
    kind: text("kind").notNull(),
    appDisplayName: text("app_display_name").notNull(),
    deviceDisplayName: text("device_display_name").notNull(),
    profileTag: text("profile_tag"),
    lang: text("lang").notNull(),
    /** The pusher's `data` object as JSON (url, format, custom keys). */
    data: text("data").notNull(),
    deviceId: text("device_id").notNull(),
    /** When the pushkey was last set (ms), sent to the gateway as pushkey_ts (seconds). */
    pushkeyTs: integer("pushkey_ts").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.userId, t.appId, t.pushkey] }),
    index("pushers_key").on(t.appId, t.pushkey),
    index("pushers_device").on(t.userId, t.deviceId),
  ],
);

/** Application service registrations (spec: Application Service API "Registration"), added at
 *  runtime through /_lattice/admin/v1/appservices. The as_token is stored only as its SHA-256
 *  (it authenticates the appservice like an access token); the hs_token is kept as given because
 *  the homeserver presents it to the appservice. `registration` is the validated registration as
 *  JSON without the as_token. */
export const appservices = sqliteTable("appservices", {
  id: text("id").primaryKey(),
  url: text("url"),
  asTokenHash: text("as_token_hash").notNull().unique(),
  hsToken: text("hs_token").notNull().unique(),
  senderLocalpart: text("sender_localpart").notNull().unique(),
  registration: text("registration").notNull(),
  createdTs: integer("created_ts").notNull(),
});

/** Rooms an application service published in the directory under one of its third-party
 *  networks (PUT /directory/list/appservice/{networkId}/{roomId}); listed by /publicRooms with
 *  `third_party_instance_id`. */
export const appserviceRoomDirectory = sqliteTable(
  "appservice_room_directory",
  {
    appserviceId: text("appservice_id").notNull(),
    networkId: text("network_id").notNull(),
    roomId: text("room_id").notNull(),
    publishedTs: integer("published_ts").notNull(),
  },
  (t) => [primaryKey({ columns: [t.appserviceId, t.networkId, t.roomId] }), index("appservice_room_directory_network").on(t.networkId, t.publishedTs)],
);

// ---------------------------------------------------------------------------------------------
// Admin API (src/api/admin/). Shapes follow Synapse's admin API documentation.

/** Per-user rate-limit overrides (POST /_synapse/admin/v1/users/{userId}/override_ratelimit).
 *  0/0 means "not limited". */
export const ratelimitOverrides = sqliteTable("ratelimit_overrides", {
  userId: text("user_id").primaryKey(),
  messagesPerSecond: integer("messages_per_second").notNull(),
  burstCount: integer("burst_count").notNull(),
});

/** Rooms an admin blocked: local users may not join them (PUT /_synapse/admin/v1/rooms/{roomId}/block). */
export const blockedRooms = sqliteTable("blocked_rooms", {
  roomId: text("room_id").primaryKey(),
  userId: text("user_id").notNull(),
  createdTs: integer("created_ts").notNull(),
});

/** Room deletions (DELETE /_synapse/admin/v2/rooms/{roomId}) and their status. */
export const roomDeletions = sqliteTable(
  "room_deletions",
  {
    deleteId: text("delete_id").primaryKey(),
    roomId: text("room_id").notNull(),
    /** Synapse's values: "shutting_down" | "purging" | "complete" | "failed". */
    status: text("status").notNull(),
    error: text("error"),
    /** JSON: kicked_users, failed_to_kick_users, local_aliases, new_room_id. */
    result: text("result").notNull().default("{}"),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [index("room_deletions_room").on(t.roomId)],
);

/** Remote servers a SenderDO queues for (written once by the SenderDO when it first gets a
 *  destination), so the admin API can list destinations and ask each for its retry state. */
export const federationDestinations = sqliteTable("federation_destinations", {
  destination: text("destination").primaryKey(),
  firstSeenTs: integer("first_seen_ts").notNull(),
});

// OAuth 2.0 API (src/services/oauth/, docs/auth.md). Tokens, codes and browser sessions are
// stored only as SHA-256 hashes, like access tokens.

/** Dynamically registered clients (RFC 7591); `metadata` is the validated registration (JSON). */
export const oauthClients = sqliteTable("oauth_clients", {
  clientId: text("client_id").primaryKey(),
  metadata: text("metadata").notNull(),
  createdTs: integer("created_ts").notNull(),
});

/** Authorization requests in progress, then their one-time code (RFC 6749 §4.1). */
export const oauthGrants = sqliteTable(
  "oauth_grants",
  {
    id: text("id").primaryKey(),
    clientId: text("client_id").notNull(),
    redirectUri: text("redirect_uri").notNull(),
    scope: text("scope").notNull(),
    deviceId: text("device_id").notNull(),
    state: text("state"),
    nonce: text("nonce"),
    codeChallenge: text("code_challenge").notNull(),
    responseMode: text("response_mode").notNull(),
    prompt: text("prompt"),
    createdTs: integer("created_ts").notNull(),
    /** The request (and its code) are worthless after this. */
    expiresTs: integer("expires_ts").notNull(),
    /** Set when the user consented: who, and the code's hash. */
    userId: text("user_id"),
    codeHash: text("code_hash").unique(),
    /** Set when the code was exchanged; a second exchange revokes what the first issued. */
    exchangedTs: integer("exchanged_ts"),
    sessionId: integer("session_id"),
  },
);

/** A signed-in browser on Lattice's own pages (cookie). */
export const oauthBrowserSessions = sqliteTable("oauth_browser_sessions", {
  idHash: text("id_hash").primaryKey(),
  userId: text("user_id").notNull(),
  createdTs: integer("created_ts").notNull(),
  expiresTs: integer("expires_ts").notNull(),
});

/** One OAuth login of a client on a device: its refresh-token chain hangs off it. */
export const oauthSessions = sqliteTable(
  "oauth_sessions",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    clientId: text("client_id").notNull(),
    userId: text("user_id").notNull(),
    deviceId: text("device_id").notNull(),
    scope: text("scope").notNull(),
    createdTs: integer("created_ts").notNull(),
    revokedTs: integer("revoked_ts"),
  },
  (t) => [index("oauth_sessions_device").on(t.userId, t.deviceId)],
);

/** Refresh tokens of an OAuth session. A used one keeps its row (usedTs, successorHash) so that
 *  replaying it is detected: the whole session is then revoked (RFC 9700 §4.14.2). */
export const oauthRefreshTokens = sqliteTable(
  "oauth_refresh_tokens",
  {
    tokenHash: text("token_hash").primaryKey(),
    sessionId: integer("session_id").notNull(),
    /** The access token issued with it (access_tokens.token_hash). */
    accessTokenHash: text("access_token_hash").notNull(),
    successorHash: text("successor_hash"),
    usedTs: integer("used_ts"),
    createdTs: integer("created_ts").notNull(),
  },
  (t) => [index("oauth_refresh_tokens_session").on(t.sessionId)],
);

/** `m.oauth` UIA (spec "OAuth authentication"): the user approved, on the account page, replacing
 *  their cross-signing keys from an OAuth session until this time. */
export const oauthCrossSigningResets = sqliteTable("oauth_cross_signing_resets", {
  userId: text("user_id").primaryKey(),
  approvedUntilTs: integer("approved_until_ts").notNull(),
});

/** Device authorization grants (RFC 8628): the device code (hashed) the client polls with and the
 *  user code the user types on the verification page. */
export const oauthDeviceGrants = sqliteTable("oauth_device_grants", {
  deviceCodeHash: text("device_code_hash").primaryKey(),
  userCode: text("user_code").notNull().unique(),
  clientId: text("client_id").notNull(),
  scope: text("scope").notNull(),
  deviceId: text("device_id").notNull(),
  createdTs: integer("created_ts").notNull(),
  expiresTs: integer("expires_ts").notNull(),
  lastPollTs: integer("last_poll_ts"),
  /** pending | approved | denied | exchanged */
  status: text("status").notNull(),
  userId: text("user_id"),
});

/** Short-lived login tokens for m.login.token (MSC3882 POST /login/get_token), hashed. */
export const loginTokens = sqliteTable("login_tokens", {
  tokenHash: text("token_hash").primaryKey(),
  userId: text("user_id").notNull(),
  expiresTs: integer("expires_ts").notNull(),
});

/** MSC4108 rendezvous sessions: a small mailbox two devices exchange QR-login messages through. */
export const rendezvousSessions = sqliteTable("rendezvous_sessions", {
  id: text("id").primaryKey(),
  body: text("body").notNull(),
  contentType: text("content_type").notNull(),
  etag: text("etag").notNull(),
  expiresTs: integer("expires_ts").notNull(),
});
