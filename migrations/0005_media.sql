CREATE TABLE `media` (
	`server_name` text NOT NULL,
	`media_id` text NOT NULL,
	`uploader` text,
	`content_type` text,
	`filename` text,
	`size` integer,
	`sha256` text,
	`r2_key` text NOT NULL,
	`created_ts` integer NOT NULL,
	`uploaded_ts` integer,
	`upload_started_ts` integer,
	`unused_expires_ts` integer,
	`quarantined` integer DEFAULT false NOT NULL,
	`quarantined_by` text,
	PRIMARY KEY(`server_name`, `media_id`)
);
--> statement-breakpoint
CREATE INDEX `media_uploader` ON `media` (`uploader`,`uploaded_ts`);--> statement-breakpoint
CREATE INDEX `media_sha256` ON `media` (`sha256`);