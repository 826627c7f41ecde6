// Application services.
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

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
