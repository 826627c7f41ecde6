// Admin: content reports (module "Reporting content", kept for admins) and the admin API's own
// state (src/api/admin/). Shapes follow Synapse's admin API documentation.
import { sqliteTable, text, integer, index } from "drizzle-orm/sqlite-core";

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
