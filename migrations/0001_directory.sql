CREATE TABLE `room_aliases` (
	`alias` text PRIMARY KEY NOT NULL,
	`room_id` text NOT NULL,
	`creator` text NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `room_aliases_room` ON `room_aliases` (`room_id`);--> statement-breakpoint
CREATE TABLE `room_directory` (
	`room_id` text PRIMARY KEY NOT NULL,
	`visibility` text NOT NULL,
	`published_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `room_directory_listing` ON `room_directory` (`visibility`,`published_ts`,`room_id`);