// User directory (POST /user_directory/search, src/services/user-directory.ts).
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

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
