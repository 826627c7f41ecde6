// Accounts: users, devices, tokens and the login/registration state around them, and profiles.
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
    lastSeenUserAgent: text("last_seen_user_agent"),
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

/** Nonces used by shared-secret registration (replay protection). */
export const registrationNonces = sqliteTable("registration_nonces", {
  nonce: text("nonce").primaryKey(),
  createdTs: integer("created_ts").notNull(),
});

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

/** Short-lived login tokens for m.login.token (MSC3882 POST /login/get_token), hashed. */
export const loginTokens = sqliteTable("login_tokens", {
  tokenHash: text("token_hash").primaryKey(),
  userId: text("user_id").notNull(),
  expiresTs: integer("expires_ts").notNull(),
});

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
