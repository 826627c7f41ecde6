CREATE TABLE `federation_inbound_txns` (
	`origin` text NOT NULL,
	`txn_id` text NOT NULL,
	`response` text,
	`received_ts` integer NOT NULL,
	PRIMARY KEY(`origin`, `txn_id`)
);
--> statement-breakpoint
CREATE INDEX `federation_inbound_txns_ts` ON `federation_inbound_txns` (`received_ts`);--> statement-breakpoint
CREATE TABLE `remote_server_keys` (
	`server_name` text NOT NULL,
	`key_id` text NOT NULL,
	`public_key` text NOT NULL,
	`valid_until_ts` integer NOT NULL,
	`expired_ts` integer,
	`fetched_ts` integer NOT NULL,
	`from_server` text NOT NULL,
	`key_json` text NOT NULL,
	PRIMARY KEY(`server_name`, `key_id`)
);
