// Rooms mirrored from the RoomDOs, aliases and the published room directory.
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

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
