// Push notifications.
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

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
