// D1 schema (drizzle). Server-wide tables; room data lives in the RoomDOs.
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

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
