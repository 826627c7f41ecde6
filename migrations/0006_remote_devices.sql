CREATE TABLE `federation_inbound_to_device` (
	`origin` text NOT NULL,
	`message_id` text NOT NULL,
	`received_ts` integer NOT NULL,
	PRIMARY KEY(`origin`, `message_id`)
);
--> statement-breakpoint
CREATE INDEX `federation_inbound_to_device_ts` ON `federation_inbound_to_device` (`received_ts`);--> statement-breakpoint
CREATE TABLE `remote_cross_signing_keys` (
	`user_id` text NOT NULL,
	`key_type` text NOT NULL,
	`key_json` text NOT NULL,
	PRIMARY KEY(`user_id`, `key_type`)
);
--> statement-breakpoint
CREATE TABLE `remote_device_lists` (
	`user_id` text PRIMARY KEY NOT NULL,
	`stream_id` integer,
	`stale` integer DEFAULT false NOT NULL,
	`updated_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `remote_devices` (
	`user_id` text NOT NULL,
	`device_id` text NOT NULL,
	`key_json` text,
	`display_name` text,
	PRIMARY KEY(`user_id`, `device_id`)
);
