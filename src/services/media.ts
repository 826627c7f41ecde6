// Content repository storage: metadata in D1 (`media`), bytes in R2.
//
// R2 layout (one prefix per origin server, so remote media cached later sits beside local media):
//   media/<server_name>/<media_id>                      the content
//   thumbnails/<server_name>/<media_id>/<W>x<H>-<method> generated thumbnails
import type { Env } from "../env";
import type { MediaConfig } from "../config";
import { MatrixError, forbidden, notFound, tooLarge } from "../api/errors";
import { randomString } from "./crypto-util";
import { readStreamLimited } from "./read-limited";

export interface MediaRecord {
  serverName: string;
  mediaId: string;
  uploader: string | null;
  contentType: string | null;
  filename: string | null;
  size: number | null;
  sha256: string | null;
  r2Key: string;
  createdTs: number;
  uploadedTs: number | null;
  uploadStartedTs: number | null;
  unusedExpiresTs: number | null;
  quarantined: boolean;
  quarantinedBy: string | null;
}

/** A `media` row as D1 returns it (snake_case columns); the admin API reads it directly too. */
export interface MediaRow {
  server_name: string;
  media_id: string;
  uploader: string | null;
  content_type: string | null;
  filename: string | null;
  size: number | null;
  sha256: string | null;
  r2_key: string;
  created_ts: number;
  uploaded_ts: number | null;
  upload_started_ts: number | null;
  unused_expires_ts: number | null;
  quarantined: number;
  quarantined_by: string | null;
}

const fromRow = (r: MediaRow): MediaRecord => ({
  serverName: r.server_name,
  mediaId: r.media_id,
  uploader: r.uploader,
  contentType: r.content_type,
  filename: r.filename,
  size: r.size,
  sha256: r.sha256,
  r2Key: r.r2_key,
  createdTs: r.created_ts,
  uploadedTs: r.uploaded_ts,
  uploadStartedTs: r.upload_started_ts,
  unusedExpiresTs: r.unused_expires_ts,
  quarantined: !!r.quarantined,
  quarantinedBy: r.quarantined_by,
});

export const mediaKey = (serverName: string, mediaId: string) => `media/${serverName}/${mediaId}`;
export const thumbnailPrefix = (serverName: string, mediaId: string) => `thumbnails/${serverName}/${mediaId}/`;

/** A PUT that started this long ago and never finished no longer holds the media ID. */
const STALE_UPLOAD_MS = 15 * 60_000;

export function newMediaId(): string {
  return randomString(24);
}

export async function getMedia(env: Env, serverName: string, mediaId: string): Promise<MediaRecord | null> {
  const row = await env.DB.prepare("SELECT * FROM media WHERE server_name = ? AND media_id = ?").bind(serverName, mediaId).first<MediaRow>();
  return row ? fromRow(row) : null;
}

export async function isServerAdmin(env: Env, userId: string): Promise<boolean> {
  const row = await env.DB.prepare("SELECT admin FROM users WHERE user_id = ?").bind(userId).first<{ admin: number }>();
  return !!row?.admin;
}

/** Bytes a user holds: finished uploads, plus the reservations of uploads in progress (their
 *  `size` is set when the bytes are reserved; an upload silent for STALE_UPLOAD_MS no longer counts). */
const USAGE_SQL = `SELECT COALESCE(SUM(size), 0) FROM media
  WHERE uploader = ?1 AND (uploaded_ts IS NOT NULL OR upload_started_ts >= ?2) AND NOT (server_name = ?3 AND media_id = ?4)`;

export async function storedBytes(env: Env, userId: string): Promise<number> {
  const row = await env.DB.prepare(`SELECT (${USAGE_SQL}) AS n`)
    .bind(userId, Date.now() - STALE_UPLOAD_MS, "", "")
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/** Spec "Security considerations": too much stored → 403 M_FORBIDDEN. A class of its own so a
 *  URL preview can tell it from a refused image URL. */
export class QuotaExceeded extends MatrixError {
  constructor(quota: number) {
    super(403, "M_FORBIDDEN", `Media quota exceeded: ${quota} bytes per user`);
  }
}

/** An early refusal for a user already over quota (before reading a body of unknown length). The
 *  binding check is the reservation (reserveNew / reserveExisting). */
async function checkQuota(env: Env, cfg: MediaConfig, userId: string, incoming: number): Promise<void> {
  if (cfg.userQuotaBytes === 0) return;
  if ((await storedBytes(env, userId)) + incoming > cfg.userQuotaBytes) throw new QuotaExceeded(cfg.userQuotaBytes);
}

// Reservations: checking the quota and then writing let N concurrent uploads each see room for
// one more. Instead one statement both checks the usage and records `size` on the upload's row
// (D1 runs each statement atomically), before any byte goes to R2; a failed write releases it.

/** Reserve `bytes` for a new item by inserting its row, in progress, if the quota allows. */
async function reserveNew(env: Env, cfg: MediaConfig, serverName: string, mediaId: string, userId: string, bytes: number): Promise<void> {
  const now = Date.now();
  const r = await env.DB.prepare(
    `INSERT INTO media (server_name, media_id, uploader, r2_key, created_ts, size, upload_started_ts)
     SELECT ?3, ?4, ?1, ?5, ?6, ?7, ?6 WHERE ?8 = 0 OR (${USAGE_SQL}) + ?7 <= ?8`,
  )
    .bind(userId, now - STALE_UPLOAD_MS, serverName, mediaId, mediaKey(serverName, mediaId), now, bytes, cfg.userQuotaBytes)
    .run();
  if (r.meta.changes !== 1) throw new QuotaExceeded(cfg.userQuotaBytes);
}

/** Reserve `bytes` on an item from /create whose upload this request claimed at `claimedTs`. */
async function reserveExisting(env: Env, cfg: MediaConfig, serverName: string, mediaId: string, userId: string, claimedTs: number, bytes: number): Promise<void> {
  const r = await env.DB.prepare(
    `UPDATE media SET size = ?5 WHERE server_name = ?3 AND media_id = ?4 AND upload_started_ts = ?6
       AND (?7 = 0 OR (${USAGE_SQL}) + ?5 <= ?7)`,
  )
    .bind(userId, Date.now() - STALE_UPLOAD_MS, serverName, mediaId, bytes, claimedTs, cfg.userQuotaBytes)
    .run();
  if (r.meta.changes !== 1) throw new QuotaExceeded(cfg.userQuotaBytes);
}

function hex(buf: ArrayBuffer): string {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Stream `body` into R2 at `key`, hashing on the way. With a Content-Length the bytes go straight
 *  through (R2 needs a known length: FixedLengthStream); without one (chunked uploads) they are
 *  collected up to `maxBytes` and then written. Too large → 413 M_TOO_LARGE. */
export async function writeContent(
  env: Env,
  key: string,
  body: ReadableStream<Uint8Array> | null,
  contentLength: number | undefined,
  maxBytes: number,
  contentType: string,
  /** Called with the size before anything is written (quota reservations). */
  beforeWrite: (size: number) => Promise<void> = async () => undefined,
): Promise<{ size: number; sha256: string }> {
  const tooBig = () => tooLarge(`Cannot upload files larger than ${maxBytes} bytes`);
  if (contentLength !== undefined && contentLength > maxBytes) throw tooBig();
  const httpMetadata = { contentType };
  if (!body || contentLength === 0) {
    await beforeWrite(0);
    const empty = new Uint8Array(0);
    await env.MEDIA.put(key, empty, { httpMetadata });
    return { size: 0, sha256: hex(await crypto.subtle.digest("SHA-256", empty)) };
  }
  if (contentLength !== undefined) {
    await beforeWrite(contentLength);
    const digest = new crypto.DigestStream("SHA-256");
    const digestWriter = digest.getWriter();
    let size = 0;
    const hashing = new TransformStream<Uint8Array, Uint8Array>({
      async transform(chunk, controller) {
        size += chunk.byteLength;
        if (size > contentLength) throw new Error("body longer than Content-Length");
        await digestWriter.write(chunk);
        controller.enqueue(chunk);
      },
    });
    const fixed = new FixedLengthStream(contentLength);
    const piping = body.pipeThrough(hashing).pipeTo(fixed.writable);
    try {
      await Promise.all([env.MEDIA.put(key, fixed.readable, { httpMetadata }), piping]);
    } catch {
      await env.MEDIA.delete(key).catch(() => undefined);
      throw new MatrixError(400, "M_UNKNOWN", "Upload body did not match its Content-Length");
    }
    await digestWriter.close();
    return { size, sha256: hex(await digest.digest) };
  }
  const all = await readStreamLimited(body, maxBytes, tooBig);
  const size = all.byteLength;
  await beforeWrite(size);
  await env.MEDIA.put(key, all, { httpMetadata });
  return { size, sha256: hex(await crypto.subtle.digest("SHA-256", all)) };
}

export interface UploadInput {
  userId: string;
  contentType: string;
  filename: string | null;
  body: ReadableStream<Uint8Array> | null;
  contentLength: number | undefined;
}

/** Store a finished upload and record it (POST /_matrix/media/v3/upload). */
export async function uploadMedia(env: Env, cfg: MediaConfig, serverName: string, input: UploadInput): Promise<string> {
  if (input.contentLength === undefined) await checkQuota(env, cfg, input.userId, 0);
  const mediaId = newMediaId();
  const key = mediaKey(serverName, mediaId);
  let reserved = false;
  let result: { size: number; sha256: string };
  try {
    result = await writeContent(env, key, input.body, input.contentLength, cfg.maxUploadBytes, input.contentType, async (size) => {
      await reserveNew(env, cfg, serverName, mediaId, input.userId, size);
      reserved = true;
    });
  } catch (e) {
    if (reserved) {
      await env.MEDIA.delete(key).catch(() => undefined);
      await env.DB.prepare("DELETE FROM media WHERE server_name = ? AND media_id = ?").bind(serverName, mediaId).run();
    }
    throw e;
  }
  const now = Date.now();
  await env.DB.prepare(
    `UPDATE media SET content_type = ?, filename = ?, size = ?, sha256 = ?, uploaded_ts = ?, upload_started_ts = NULL,
       unused_expires_ts = NULL WHERE server_name = ? AND media_id = ?`,
  )
    .bind(input.contentType, input.filename, result.size, result.sha256, now, serverName, mediaId)
    .run();
  return mediaId;
}

/** Forget media IDs from /create whose time ran out without content, and the rows of POST
 *  uploads that never finished (the Worker died mid-upload: no /create expiry, started over
 *  STALE_UPLOAD_MS ago). A bounded batch per call. */
export async function purgeExpiredPending(env: Env, now = Date.now()): Promise<void> {
  await env.DB.prepare(
    `DELETE FROM media WHERE rowid IN (SELECT rowid FROM media
       WHERE uploaded_ts IS NULL AND (unused_expires_ts < ? OR (unused_expires_ts IS NULL AND upload_started_ts < ?)) LIMIT 100)`,
  )
    .bind(now, now - STALE_UPLOAD_MS)
    .run();
}

/** POST /_matrix/media/v1/create: reserve a media ID for a later PUT. The spec asks servers to
 *  limit concurrent pending uploads per user with 429 M_LIMIT_EXCEEDED. */
export async function createPendingMedia(env: Env, cfg: MediaConfig, serverName: string, userId: string): Promise<{ mediaId: string; expiresTs: number }> {
  const now = Date.now();
  await purgeExpiredPending(env, now);
  const pending = await env.DB.prepare("SELECT COUNT(*) AS n FROM media WHERE uploader = ? AND uploaded_ts IS NULL AND unused_expires_ts >= ?")
    .bind(userId, now)
    .first<{ n: number }>();
  if ((pending?.n ?? 0) >= cfg.maxPendingUploads) {
    throw new MatrixError(429, "M_LIMIT_EXCEEDED", `Too many pending uploads (at most ${cfg.maxPendingUploads})`, {
      retry_after_ms: cfg.unusedExpiryMs,
    });
  }
  const mediaId = newMediaId();
  const expiresTs = now + cfg.unusedExpiryMs;
  await env.DB.prepare(
    `INSERT INTO media (server_name, media_id, uploader, r2_key, created_ts, unused_expires_ts) VALUES (?, ?, ?, ?, ?, ?)`,
  )
    .bind(serverName, mediaId, userId, mediaKey(serverName, mediaId), now, expiresTs)
    .run();
  return { mediaId, expiresTs };
}

/** PUT /_matrix/media/v3/upload/{serverName}/{mediaId}: content for a reserved ID. Unknown or
 *  expired → 404 M_NOT_FOUND; someone else's → 403 M_FORBIDDEN; already has content (or another
 *  PUT is writing it) → 409 M_CANNOT_OVERWRITE_MEDIA. */
export async function uploadToPending(env: Env, cfg: MediaConfig, serverName: string, mediaId: string, input: UploadInput): Promise<void> {
  const now = Date.now();
  const row = await getMedia(env, serverName, mediaId);
  if (!row || row.uploader === null) throw notFound("Unknown media ID");
  if (row.uploader !== input.userId) throw forbidden("This media ID was created by another user");
  if (row.uploadedTs !== null) throw new MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded");
  if (row.unusedExpiresTs !== null && row.unusedExpiresTs < now) throw notFound("Media ID has expired");
  if (input.contentLength === undefined) await checkQuota(env, cfg, input.userId, 0);
  const claim = await env.DB.prepare(
    `UPDATE media SET upload_started_ts = ? WHERE server_name = ? AND media_id = ? AND uploaded_ts IS NULL
       AND (upload_started_ts IS NULL OR upload_started_ts < ?)`,
  )
    .bind(now, serverName, mediaId, now - STALE_UPLOAD_MS)
    .run();
  if (claim.meta.changes !== 1) throw new MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media is already being uploaded");
  let result: { size: number; sha256: string };
  try {
    result = await writeContent(env, row.r2Key, input.body, input.contentLength, cfg.maxUploadBytes, input.contentType, (size) =>
      reserveExisting(env, cfg, serverName, mediaId, input.userId, now, size),
    );
  } catch (e) {
    await env.MEDIA.delete(row.r2Key).catch(() => undefined);
    await env.DB.prepare("UPDATE media SET upload_started_ts = NULL, size = NULL WHERE server_name = ? AND media_id = ?").bind(serverName, mediaId).run();
    throw e;
  }
  await env.DB.prepare(
    `UPDATE media SET content_type = ?, filename = ?, size = ?, sha256 = ?, uploaded_ts = ?, upload_started_ts = NULL,
       unused_expires_ts = NULL WHERE server_name = ? AND media_id = ?`,
  )
    .bind(input.contentType, input.filename, result.size, result.sha256, Date.now(), serverName, mediaId)
    .run();
}

/** Quarantine (or release) one item: quarantined media answers 404 to everyone but server
 *  admins. For the admin API. Returns false when there is no such media. */
export async function quarantineMedia(env: Env, serverName: string, mediaId: string, by: string | null, quarantined = true): Promise<boolean> {
  const r = await env.DB.prepare("UPDATE media SET quarantined = ?, quarantined_by = ? WHERE server_name = ? AND media_id = ?")
    .bind(quarantined ? 1 : 0, quarantined ? by : null, serverName, mediaId)
    .run();
  return r.meta.changes === 1;
}

/** Delete one item: its content, its thumbnails and its row. For the admin API. */
export async function deleteMedia(env: Env, serverName: string, mediaId: string): Promise<boolean> {
  const row = await getMedia(env, serverName, mediaId);
  if (!row) return false;
  const prefix = thumbnailPrefix(serverName, mediaId);
  for (let cursor: string | undefined; ; ) {
    const list = await env.MEDIA.list({ prefix, cursor });
    if (list.objects.length) await env.MEDIA.delete(list.objects.map((o) => o.key));
    if (!list.truncated) break;
    cursor = list.cursor;
  }
  await env.MEDIA.delete(row.r2Key);
  await env.DB.prepare("DELETE FROM media WHERE server_name = ? AND media_id = ?").bind(serverName, mediaId).run();
  return true;
}

/** timeout_ms for downloads: default 20 s (spec), and we impose that as the maximum too. */
export const MAX_MEDIA_WAIT_MS = 20_000;
const POLL_MS = 250;

/** A finished item, waiting up to `timeoutMs` for a pending async upload to arrive (spec:
 *  timeout_ms; 504 M_NOT_YET_UPLOADED when it does not). Unknown or expired → 404. Quarantine is
 *  the caller's decision (admins may still see it through the client API). */
export async function awaitUploaded(env: Env, serverName: string, mediaId: string, timeoutMs: number | undefined): Promise<MediaRecord> {
  const deadline = Date.now() + Math.min(timeoutMs ?? MAX_MEDIA_WAIT_MS, MAX_MEDIA_WAIT_MS);
  let row = await getMedia(env, serverName, mediaId);
  for (;;) {
    if (!row) throw notFound("Unknown media");
    if (row.uploadedTs !== null) return row;
    if (row.unusedExpiresTs !== null && row.unusedExpiresTs < Date.now()) throw notFound("Unknown media");
    if (Date.now() + POLL_MS > deadline) throw new MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded");
    await new Promise((r) => setTimeout(r, POLL_MS));
    row = await getMedia(env, serverName, mediaId);
  }
}

/** Record remote media fetched over federation, already written to R2 at mediaKey(server, id).
 *  Remote rows have no uploader (which also keeps them out of every user's quota) and a
 *  server_name other than ours. A re-fetch refreshes the metadata but never lifts a quarantine. */
export async function recordRemoteMedia(
  env: Env,
  m: { serverName: string; mediaId: string; contentType: string; filename: string | null; size: number; sha256: string },
): Promise<MediaRecord> {
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO media (server_name, media_id, uploader, content_type, filename, size, sha256, r2_key, created_ts, uploaded_ts)
     VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (server_name, media_id) DO UPDATE SET content_type = excluded.content_type, filename = excluded.filename,
       size = excluded.size, sha256 = excluded.sha256, uploaded_ts = excluded.uploaded_ts`,
  )
    .bind(m.serverName, m.mediaId, m.contentType, m.filename, m.size, m.sha256, mediaKey(m.serverName, m.mediaId), now, now)
    .run();
  return (await getMedia(env, m.serverName, m.mediaId))!;
}
