// Federation: this server's signing keys, other servers' keys, inbound deduplication and the
// destinations the SenderDOs queue for.
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

/** The server's own signing keys. The newest non-expired one signs. */
export const serverSigningKeys = sqliteTable("server_signing_keys", {
  keyId: text("key_id").primaryKey(),
  seed: text("seed").notNull(),
  publicKey: text("public_key").notNull(),
  createdTs: integer("created_ts").notNull(),
  expiredTs: integer("expired_ts"),
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

/** Remote servers a SenderDO queues for (written once by the SenderDO when it first gets a
 *  destination), so the admin API can list destinations and ask each for its retry state. */
export const federationDestinations = sqliteTable("federation_destinations", {
  destination: text("destination").primaryKey(),
  firstSeenTs: integer("first_seen_ts").notNull(),
});
