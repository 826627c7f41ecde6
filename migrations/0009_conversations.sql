CREATE TABLE `profile_fields` (
	`user_id` text NOT NULL,
	`key` text NOT NULL,
	`value_json` text NOT NULL,
	PRIMARY KEY(`user_id`, `key`)
);
--> statement-breakpoint
CREATE TABLE `reports` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`kind` text NOT NULL,
	`reporter` text NOT NULL,
	`room_id` text,
	`event_id` text,
	`target_user_id` text,
	`reason` text,
	`score` integer,
	`received_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `reports_received` ON `reports` (`received_ts`);--> statement-breakpoint
CREATE TABLE `user_directory` (
	`user_id` text PRIMARY KEY NOT NULL,
	`displayname` text,
	`avatar_url` text,
	`search_key` text NOT NULL,
	`is_local` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `user_directory_public_rooms` (
	`room_id` text PRIMARY KEY NOT NULL
);
--> statement-breakpoint
CREATE TABLE `user_directory_rooms` (
	`room_id` text NOT NULL,
	`user_id` text NOT NULL,
	PRIMARY KEY(`room_id`, `user_id`)
);
--> statement-breakpoint
CREATE INDEX `user_directory_rooms_user` ON `user_directory_rooms` (`user_id`);
--> statement-breakpoint
-- Existing local accounts and their joined rooms (later changes keep these current).
INSERT OR IGNORE INTO `user_directory` (`user_id`, `displayname`, `avatar_url`, `search_key`, `is_local`)
  SELECT `user_id`, `displayname`, `avatar_url`, lower(`user_id` || ' ' || coalesce(`displayname`, '')), 1 FROM `users` WHERE `deactivated` = 0 AND `is_guest` = 0;
--> statement-breakpoint
INSERT OR IGNORE INTO `user_directory_rooms` (`room_id`, `user_id`) SELECT `room_id`, `user_id` FROM `room_memberships` WHERE `membership` = 'join';
