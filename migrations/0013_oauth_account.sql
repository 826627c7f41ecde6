CREATE TABLE `oauth_cross_signing_resets` (
	`user_id` text PRIMARY KEY NOT NULL,
	`approved_until_ts` integer NOT NULL
);
