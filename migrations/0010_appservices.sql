CREATE TABLE `appservice_room_directory` (
	`appservice_id` text NOT NULL,
	`network_id` text NOT NULL,
	`room_id` text NOT NULL,
	`published_ts` integer NOT NULL,
	PRIMARY KEY(`appservice_id`, `network_id`, `room_id`)
);
--> statement-breakpoint
CREATE INDEX `appservice_room_directory_network` ON `appservice_room_directory` (`network_id`,`published_ts`);--> statement-breakpoint
CREATE TABLE `appservices` (
	`id` text PRIMARY KEY NOT NULL,
	`url` text,
	`as_token_hash` text NOT NULL,
	`hs_token` text NOT NULL,
	`sender_localpart` text NOT NULL,
	`registration` text NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `appservices_as_token_hash_unique` ON `appservices` (`as_token_hash`);--> statement-breakpoint
CREATE UNIQUE INDEX `appservices_hs_token_unique` ON `appservices` (`hs_token`);--> statement-breakpoint
CREATE UNIQUE INDEX `appservices_sender_localpart_unique` ON `appservices` (`sender_localpart`);