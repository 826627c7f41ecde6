// OAuth 2.0 API (src/services/oauth/, docs/auth.md). Tokens, codes and browser sessions are
// stored only as SHA-256 hashes, like access tokens.
import { sqliteTable, text, integer, index } from "drizzle-orm/sqlite-core";

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

/** MSC4108 rendezvous sessions: a small mailbox two devices exchange QR-login messages through. */
export const rendezvousSessions = sqliteTable("rendezvous_sessions", {
  id: text("id").primaryKey(),
  body: text("body").notNull(),
  contentType: text("content_type").notNull(),
  etag: text("etag").notNull(),
  expiresTs: integer("expires_ts").notNull(),
});
