CREATE TABLE `login_tokens` (
	`token_hash` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`expires_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `oauth_cross_signing_resets` (
	`user_id` text PRIMARY KEY NOT NULL,
	`approved_until_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `oauth_device_grants` (
	`device_code_hash` text PRIMARY KEY NOT NULL,
	`user_code` text NOT NULL,
	`client_id` text NOT NULL,
	`scope` text NOT NULL,
	`device_id` text NOT NULL,
	`created_ts` integer NOT NULL,
	`expires_ts` integer NOT NULL,
	`last_poll_ts` integer,
	`status` text NOT NULL,
	`user_id` text
);
--> statement-breakpoint
CREATE UNIQUE INDEX `oauth_device_grants_user_code_unique` ON `oauth_device_grants` (`user_code`);--> statement-breakpoint
CREATE TABLE `rendezvous_sessions` (
	`id` text PRIMARY KEY NOT NULL,
	`body` text NOT NULL,
	`content_type` text NOT NULL,
	`etag` text NOT NULL,
	`expires_ts` integer NOT NULL
);
