CREATE TABLE `access_tokens` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`token_hash` text NOT NULL,
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`expires_ts` integer,
	`refresh_token_id` integer,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `access_tokens_token_hash_unique` ON `access_tokens` (`token_hash`);--> statement-breakpoint
CREATE INDEX `access_tokens_device` ON `access_tokens` (`user_id`,`device_id`);--> statement-breakpoint
CREATE TABLE `devices` (
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`display_name` text,
	`last_seen_ts` integer,
	`last_seen_ip` text,
	`created_ts` integer NOT NULL,
	PRIMARY KEY(`user_id`, `device_id`)
);
--> statement-breakpoint
CREATE TABLE `refresh_tokens` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`token_hash` text NOT NULL,
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`used_ts` integer,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `refresh_tokens_token_hash_unique` ON `refresh_tokens` (`token_hash`);--> statement-breakpoint
CREATE INDEX `refresh_tokens_device` ON `refresh_tokens` (`user_id`,`device_id`);--> statement-breakpoint
CREATE TABLE `registration_nonces` (
	`nonce` text PRIMARY KEY NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `registration_tokens` (
	`token` text PRIMARY KEY NOT NULL,
	`uses_allowed` integer,
	`pending` integer DEFAULT 0 NOT NULL,
	`completed` integer DEFAULT 0 NOT NULL,
	`expiry_ts` integer
);
--> statement-breakpoint
CREATE TABLE `server_signing_keys` (
	`key_id` text PRIMARY KEY NOT NULL,
	`seed` text NOT NULL,
	`public_key` text NOT NULL,
	`created_ts` integer NOT NULL,
	`expired_ts` integer
);
--> statement-breakpoint
CREATE TABLE `uia_sessions` (
	`session_id` text PRIMARY KEY NOT NULL,
	`purpose` text NOT NULL,
	`user_id` text,
	`completed` text DEFAULT '[]' NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `users` (
	`user_id` text PRIMARY KEY NOT NULL,
	`localpart` text NOT NULL,
	`password_hash` text,
	`admin` integer DEFAULT false NOT NULL,
	`is_guest` integer DEFAULT false NOT NULL,
	`deactivated` integer DEFAULT false NOT NULL,
	`displayname` text,
	`avatar_url` text,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `users_localpart_unique` ON `users` (`localpart`);