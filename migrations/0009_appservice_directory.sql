CREATE TABLE `appservice_room_directory` (
	`appservice_id` text NOT NULL,
	`network_id` text NOT NULL,
	`room_id` text NOT NULL,
	`published_ts` integer NOT NULL,
	PRIMARY KEY(`appservice_id`, `network_id`, `room_id`)
);
--> statement-breakpoint
CREATE INDEX `appservice_room_directory_network` ON `appservice_room_directory` (`network_id`,`published_ts`);