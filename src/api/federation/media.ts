// Federation content repository (spec: Server-Server API "Content Repository",
// content_repository.yaml, v1.11):
//   GET /_matrix/federation/v1/media/download/{mediaId}?timeout_ms=
//   GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width=&height=&method=&animated=&timeout_ms=
// Both answer multipart/mixed: `{}` metadata, then the content (we always send the bytes, never a
// Location). Only this server's own media is served (the path names no server); quarantined media
// is 404 to every server. X-Matrix authentication comes from federationAuthed.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../types";
import { notFound } from "../errors";
import { parseValue } from "../validate";
import { contentDisposition, downloadQuery, isInlineSafe, isValidMediaId, thumbnailQuery } from "../../core/media";
import { awaitUploaded, type MediaRecord } from "../../services/media";
import { getThumbnail } from "../../services/thumbnails";
import { multipartMediaResponse } from "../../services/federation/media";

export const federationMedia = new Hono<AppEnv>();


/** Our own finished, unquarantined media, waiting for a pending upload up to timeout_ms. */
async function servable(c: Context<AppEnv>, timeoutMs: number | undefined): Promise<MediaRecord> {
  const mediaId = c.req.param("mediaId") ?? "";
  if (!isValidMediaId(mediaId)) throw notFound("Unknown media");
  const row = await awaitUploaded(c.env, c.var.config.serverName, mediaId, timeoutMs);
  if (row.quarantined) throw notFound("Unknown media");
  return row;
}

function waitUntil(c: Context<AppEnv>): ((p: Promise<unknown>) => void) | undefined {
  try {
    const ctx = c.executionCtx;
    return (p) => ctx.waitUntil(p);
  } catch {
    return undefined;
  }
}

federationMedia.get("/v1/media/download/:mediaId", async (c) => {
  const q = parseValue(c.req.query(), downloadQuery.passthrough());
  const row = await servable(c, q.timeout_ms);
  const obj = await c.env.MEDIA.get(row.r2Key);
  if (!obj) throw notFound("Media content is missing");
  const contentType = row.contentType ?? "application/octet-stream";
  return multipartMediaResponse(
    obj.body,
    obj.size,
    {
      "Content-Type": contentType,
      "Content-Disposition": contentDisposition(isInlineSafe(contentType) ? "inline" : "attachment", row.filename),
    },
    waitUntil(c),
  );
});

federationMedia.get("/v1/media/thumbnail/:mediaId", async (c) => {
  const q = parseValue(c.req.query(), thumbnailQuery);
  const row = await servable(c, q.timeout_ms);
  const thumb = await getThumbnail(c.env, row, { width: q.width, height: q.height, method: q.method });
  const ext = thumb.contentType.split("/")[1];
  return multipartMediaResponse(
    thumb.body,
    thumb.size,
    { "Content-Type": thumb.contentType, "Content-Disposition": contentDisposition("inline", `thumbnail.${ext}`) },
    waitUntil(c),
  );
});
