CREATE TABLE `blocked_rooms` (
	`room_id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `federation_destinations` (
	`destination` text PRIMARY KEY NOT NULL,
	`first_seen_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `ratelimit_overrides` (
	`user_id` text PRIMARY KEY NOT NULL,
	`messages_per_second` integer NOT NULL,
	`burst_count` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `room_deletions` (
	`delete_id` text PRIMARY KEY NOT NULL,
	`room_id` text NOT NULL,
	`status` text NOT NULL,
	`error` text,
	`result` text DEFAULT '{}' NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `room_deletions_room` ON `room_deletions` (`room_id`);--> statement-breakpoint
ALTER TABLE `users` ADD `shadow_banned` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `users` ADD `locked` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `users` ADD `suspended` integer DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE `users` ADD `erased` integer DEFAULT false NOT NULL;