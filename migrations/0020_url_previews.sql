-- URL preview answers (GET /_matrix/client/v1/media/preview_url), one row per fetch, kept for a
-- week so the `ts` parameter can pick the answer that was current at that time.
CREATE TABLE `url_previews` (
	`url` text NOT NULL,
	`fetched_ts` integer NOT NULL,
	`expires_ts` integer NOT NULL,
	`og` text NOT NULL,
	PRIMARY KEY(`url`, `fetched_ts`)
);
