CREATE TABLE `room_memberships` (
	`room_id` text NOT NULL,
	`user_id` text NOT NULL,
	`membership` text NOT NULL,
	`event_id` text NOT NULL,
	`stream` integer NOT NULL,
	`updated_ts` integer NOT NULL,
	`forgotten` integer DEFAULT false NOT NULL,
	PRIMARY KEY(`room_id`, `user_id`)
);
--> statement-breakpoint
CREATE INDEX `room_memberships_user` ON `room_memberships` (`user_id`,`membership`);--> statement-breakpoint
CREATE TABLE `rooms` (
	`room_id` text PRIMARY KEY NOT NULL,
	`room_version` text NOT NULL,
	`creator` text NOT NULL,
	`created_ts` integer NOT NULL
);
