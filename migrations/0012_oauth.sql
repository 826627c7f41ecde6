CREATE TABLE `oauth_browser_sessions` (
	`id_hash` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`created_ts` integer NOT NULL,
	`expires_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `oauth_clients` (
	`client_id` text PRIMARY KEY NOT NULL,
	`metadata` text NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `oauth_grants` (
	`id` text PRIMARY KEY NOT NULL,
	`client_id` text NOT NULL,
	`redirect_uri` text NOT NULL,
	`scope` text NOT NULL,
	`device_id` text NOT NULL,
	`state` text,
	`nonce` text,
	`code_challenge` text NOT NULL,
	`response_mode` text NOT NULL,
	`prompt` text,
	`created_ts` integer NOT NULL,
	`expires_ts` integer NOT NULL,
	`user_id` text,
	`code_hash` text,
	`exchanged_ts` integer,
	`session_id` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `oauth_grants_code_hash_unique` ON `oauth_grants` (`code_hash`);--> statement-breakpoint
CREATE TABLE `oauth_refresh_tokens` (
	`token_hash` text PRIMARY KEY NOT NULL,
	`session_id` integer NOT NULL,
	`access_token_hash` text NOT NULL,
	`successor_hash` text,
	`used_ts` integer,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `oauth_refresh_tokens_session` ON `oauth_refresh_tokens` (`session_id`);--> statement-breakpoint
CREATE TABLE `oauth_sessions` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`client_id` text NOT NULL,
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`scope` text NOT NULL,
	`created_ts` integer NOT NULL,
	`revoked_ts` integer
);
--> statement-breakpoint
CREATE INDEX `oauth_sessions_device` ON `oauth_sessions` (`user_id`,`device_id`);