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