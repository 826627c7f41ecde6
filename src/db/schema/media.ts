// Content repository metadata (the bytes live in R2).
import { sqliteTable, text, integer, primaryKey, index } from "drizzle-orm/sqlite-core";

/** Media repository metadata (spec: Client-Server API "Content repository"). One row per
 *  `mxc://<server_name>/<media_id>`; the bytes live in R2 under `r2_key`
 *  (`media/<server_name>/<media_id>`, thumbnails under `thumbnails/<server_name>/<media_id>/`), so
 *  remote media cached later fits the same layout. A row with `uploaded_ts` null is a pending
 *  async upload (POST /_matrix/media/v1/create) that expires at `unused_expires_ts`.
 *  Storage functions: src/services/media.ts. */
export const media = sqliteTable(
  "media",
  {
    serverName: text("server_name").notNull(),
    mediaId: text("media_id").notNull(),
    /** Local uploader; null for remote media cached from another server. */
    uploader: text("uploader"),
    contentType: text("content_type"),
    filename: text("filename"),
    size: integer("size"),
    /** Hex SHA-256 of the content. */
    sha256: text("sha256"),
    r2Key: text("r2_key").notNull(),
    /** When the ID was created (upload or /create), ms since epoch. */
    createdTs: integer("created_ts").notNull(),
    /** When the content arrived; null while an async upload is pending. For remote media: when the
     *  cache was populated (what the spec's unauthenticated-media freeze compares against). */
    uploadedTs: integer("uploaded_ts"),
    /** Set while a PUT is writing the content (claims the ID against concurrent PUTs). */
    uploadStartedTs: integer("upload_started_ts"),
    unusedExpiresTs: integer("unused_expires_ts"),
    quarantined: integer("quarantined", { mode: "boolean" }).notNull().default(false),
    quarantinedBy: text("quarantined_by"),
  },
  (t) => [
    primaryKey({ columns: [t.serverName, t.mediaId] }),
    index("media_uploader").on(t.uploader, t.uploadedTs),
    index("media_sha256").on(t.sha256),
  ],
);
