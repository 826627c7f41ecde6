CREATE TABLE `cross_signing_keys` (
	`user_id` text NOT NULL,
	`key_type` text NOT NULL,
	`public_key` text NOT NULL,
	`key_json` text NOT NULL,
	`updated_ts` integer NOT NULL,
	PRIMARY KEY(`user_id`, `key_type`)
);
--> statement-breakpoint
CREATE TABLE `cross_signing_signatures` (
	`signer_user_id` text NOT NULL,
	`signer_key_id` text NOT NULL,
	`target_user_id` text NOT NULL,
	`target_key_id` text NOT NULL,
	`signature` text NOT NULL,
	PRIMARY KEY(`signer_user_id`, `signer_key_id`, `target_user_id`, `target_key_id`)
);
--> statement-breakpoint
CREATE INDEX `cross_signing_signatures_target` ON `cross_signing_signatures` (`target_user_id`,`target_key_id`);--> statement-breakpoint
CREATE TABLE `dehydrated_devices` (
	`user_id` text PRIMARY KEY NOT NULL,
	`device_id` text NOT NULL,
	`device_data` text NOT NULL,
	`created_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `device_keys` (
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`key_json` text NOT NULL,
	`updated_ts` integer NOT NULL,
	PRIMARY KEY(`user_id`, `device_id`)
);
--> statement-breakpoint
CREATE TABLE `device_list_stream` (
	`stream_id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`user_id` text NOT NULL,
	`ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `device_list_stream_user` ON `device_list_stream` (`user_id`,`stream_id`);--> statement-breakpoint
CREATE TABLE `fallback_keys` (
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`algorithm` text NOT NULL,
	`key_id` text NOT NULL,
	`key_json` text NOT NULL,
	`used` integer DEFAULT false NOT NULL,
	PRIMARY KEY(`user_id`, `device_id`, `algorithm`)
);
--> statement-breakpoint
CREATE TABLE `key_backup_keys` (
	`user_id` text NOT NULL,
	`version` integer NOT NULL,
	`room_id` text NOT NULL,
	`session_id` text NOT NULL,
	`first_message_index` integer NOT NULL,
	`forwarded_count` integer NOT NULL,
	`is_verified` integer NOT NULL,
	`session_data` text NOT NULL,
	PRIMARY KEY(`user_id`, `version`, `room_id`, `session_id`)
);
--> statement-breakpoint
CREATE TABLE `key_backup_versions` (
	`user_id` text NOT NULL,
	`version` integer NOT NULL,
	`algorithm` text NOT NULL,
	`auth_data` text NOT NULL,
	`etag` integer DEFAULT 0 NOT NULL,
	`deleted` integer DEFAULT false NOT NULL,
	PRIMARY KEY(`user_id`, `version`)
);
--> statement-breakpoint
CREATE TABLE `one_time_keys` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`algorithm` text NOT NULL,
	`key_id` text NOT NULL,
	`key_json` text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `one_time_keys_key` ON `one_time_keys` (`user_id`,`device_id`,`key_id`);--> statement-breakpoint
CREATE INDEX `one_time_keys_claim` ON `one_time_keys` (`user_id`,`device_id`,`algorithm`,`id`);--> statement-breakpoint
CREATE TABLE `to_device_txns` (
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`txn_id` text NOT NULL,
	`created_ts` integer NOT NULL,
	PRIMARY KEY(`user_id`, `device_id`, `txn_id`)
);
