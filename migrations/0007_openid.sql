CREATE TABLE `openid_tokens` (
	`token_hash` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`expires_ts` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `openid_tokens_expires` ON `openid_tokens` (`expires_ts`);