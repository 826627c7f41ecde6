// End-to-end encryption (spec: Client-Server API "End-to-End Encryption"). The server never sees
// plaintext; it keeps keys, counts and device lists. Storage functions: src/services/e2ee/.
import { sqliteTable, text, integer, primaryKey, index, uniqueIndex } from "drizzle-orm/sqlite-core";

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
