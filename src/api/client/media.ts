// Content repository (spec: Client-Server API "Content repository", authed-content-repo.yaml and
// content-repo.yaml). Two routers:
//   mediaRoutes        → /_matrix/media/{v1,v3,r0}/...   upload, create, and the deprecated
//                         unauthenticated download/thumbnail (frozen, see legacyAllowed) plus the
//                         authenticated legacy config/preview_url;
//   clientMediaRoutes  → /_matrix/client/v1/media/...   authenticated download/thumbnail/config/
//                         preview_url (spec v1.11).
// Storage and processing live in src/services/{media,thumbnails,url-preview}.ts.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, missingParam, notFound, unrecognized } from "../errors";
import { parseValue } from "../validate";
import { requireAuth } from "../middleware/auth";
import { rateLimit, type Limit } from "../middleware/rate-limit";
import { contentDisposition, downloadQuery, isInlineSafe, isValidMediaId, mediaSecurityHeaders, normaliseUploadContentType, thumbnailQuery } from "../../core/media";
import { isValidServerName } from "../../core/ids";
import {
  MAX_MEDIA_WAIT_MS,
  awaitUploaded,
  createPendingMedia,
  getMedia,
  isServerAdmin,
  uploadMedia,
  uploadToPending,
  type MediaRecord,
  type UploadInput,
} from "../../services/media";
import { getThumbnail } from "../../services/thumbnails";
import { previewUrl } from "../../services/url-preview";
import { federationContext } from "../../services/federation/client";
import { fetchRemoteMedia } from "../../services/federation/media";

const MEDIA_LIMITS = {
  uploadPerUser: { perSecond: 1, burst: 30 },
  createPerUser: { perSecond: 1, burst: 30 },
  previewPerUser: { perSecond: 0.5, burst: 10 },
} satisfies Record<string, Limit>;

const filenameQuery = z.object({ filename: z.string().max(1024).optional() });
const previewQuery = z.object({ url: z.string().min(1).max(4096), ts: z.coerce.number().int().optional() });

function uploadInput(c: Context<AppEnv>): UploadInput {
  const { filename } = parseValue(c.req.query(), filenameQuery);
  const lengthHeader = c.req.header("content-length");
  const contentLength = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  return {
    userId: c.var.auth.userId,
    contentType: normaliseUploadContentType(c.req.header("content-type")),
    filename: filename || null,
    body: c.req.raw.body,
    contentLength,
  };
}

function noGuests(c: Context<AppEnv>): void {
  if (c.var.auth.isGuest) throw new MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guests cannot upload media");
}

/** The item named by the path, checked against the spec grammar ("Security considerations":
 *  sanitise both halves of the mxc:// URI) before anything reaches D1 or R2. */
function mediaTarget(c: Context<AppEnv>): { serverName: string; mediaId: string } {
  const serverName = c.req.param("serverName") ?? "";
  const mediaId = c.req.param("mediaId") ?? "";
  if (!isValidServerName(serverName) || !isValidMediaId(mediaId)) throw notFound("Unknown media");
  return { serverName, mediaId };
}

/** Uploads name only our own media IDs. */
function localTarget(c: Context<AppEnv>): { serverName: string; mediaId: string } {
  const t = mediaTarget(c);
  if (t.serverName !== c.var.config.serverName) throw notFound("Unknown media");
  return t;
}

/** Find the media, waiting up to timeout_ms for a pending async upload to arrive (spec:
 *  timeout_ms; 504 M_NOT_YET_UPLOADED when it does not). Another server's media comes from our R2
 *  cache or, the first time, over federation (`remote`; the deprecated unauthenticated endpoints
 *  never fetch). Quarantined media is invisible to all but server admins, cached remote media
 *  included. */
async function findServable(c: Context<AppEnv>, viewer: string | undefined, timeoutMs: number | undefined, remote = false): Promise<MediaRecord> {
  const { serverName, mediaId } = mediaTarget(c);
  let row: MediaRecord;
  if (serverName === c.var.config.serverName) row = await awaitUploaded(c.env, serverName, mediaId, timeoutMs);
  else {
    const cached = await getMedia(c.env, serverName, mediaId);
    if (cached?.uploadedTs != null) row = cached;
    else if (!remote) throw notFound("Unknown media");
    else {
      const wait = Math.min(timeoutMs ?? MAX_MEDIA_WAIT_MS, MAX_MEDIA_WAIT_MS);
      row = await fetchRemoteMedia(federationContext(c.env, c.var.config), serverName, mediaId, { timeoutMs: wait });
    }
  }
  if (row.quarantined && !(viewer && (await isServerAdmin(c.env, viewer)))) throw notFound("Unknown media");
  return row;
}

/** Spec 1.11 "Client behaviour" warning: the deprecated unauthenticated endpoints are frozen;
 *  media uploaded before MEDIA_LEGACY_FREEZE_TS stays reachable there, everything else answers
 *  404 M_NOT_FOUND (which content-repo.yaml allows for such media). */
function legacyAllowed(c: Context<AppEnv>, row: MediaRecord): void {
  const freeze = c.var.config.media.legacyFreezeTs;
  if (row.quarantined || row.uploadedTs === null || !(row.uploadedTs < freeze)) {
    throw notFound("Not found: this media is only available through the authenticated /_matrix/client/v1/media endpoints");
  }
}

async function serveDownload(c: Context<AppEnv>, row: MediaRecord): Promise<Response> {
  const contentType = row.contentType ?? "application/octet-stream";
  const rangeHeader = c.req.header("range");
  let obj: R2ObjectBody | null;
  try {
    obj = await c.env.MEDIA.get(row.r2Key, rangeHeader ? { range: c.req.raw.headers } : undefined);
  } catch {
    return c.json({ errcode: "M_UNKNOWN", error: "Requested range not satisfiable" }, 416, { "Content-Range": `bytes */${row.size ?? 0}` });
  }
  if (!obj) throw notFound("Media content is missing");
  const fileName = c.req.param("fileName");
  const headers: Record<string, string> = {
    ...mediaSecurityHeaders(),
    "Content-Type": contentType,
    // GET .../download: inline only for the "Serving inline content" list, attachment otherwise;
    // the upload's filename (or the one in the path) always.
    "Content-Disposition": contentDisposition(isInlineSafe(contentType) ? "inline" : "attachment", fileName ?? row.filename),
    "Cache-Control": "private, max-age=86400",
    "Accept-Ranges": "bytes",
  };
  if (row.sha256) headers.ETag = `"${row.sha256}"`;
  const total = obj.size;
  const r = obj.range as { offset?: number; length?: number; suffix?: number } | undefined;
  if (rangeHeader && r) {
    const offset = r.suffix !== undefined ? Math.max(0, total - r.suffix) : (r.offset ?? 0);
    const length = r.suffix !== undefined ? total - offset : (r.length ?? total - offset);
    headers["Content-Range"] = `bytes ${offset}-${offset + length - 1}/${total}`;
    headers["Content-Length"] = String(length);
    return new Response(obj.body, { status: 206, headers });
  }
  headers["Content-Length"] = String(total);
  return new Response(obj.body, { status: 200, headers });
}

async function serveThumbnail(c: Context<AppEnv>, row: MediaRecord): Promise<Response> {
  const q = parseValue(c.req.query(), thumbnailQuery);
  const thumb = await getThumbnail(c.env, row, { width: q.width, height: q.height, method: q.method });
  const ext = thumb.contentType.split("/")[1];
  return new Response(thumb.body, {
    status: 200,
    headers: {
      ...mediaSecurityHeaders(),
      "Content-Type": thumb.contentType,
      // GET .../thumbnail (1.12): MUST be inline; the type is always an image type from the safe list.
      "Content-Disposition": contentDisposition("inline", `thumbnail.${ext}`),
      "Content-Length": String(thumb.size),
      "Cache-Control": "private, max-age=86400",
    },
  });
}

function configResponse(c: Context<AppEnv>): Response {
  return c.json({ "m.upload.size": c.var.config.media.maxUploadBytes });
}

async function previewResponse(c: Context<AppEnv>): Promise<Response> {
  if (!c.var.config.media.urlPreviews) throw unrecognized("URL previews are disabled on this server");
  if (c.req.query("url") === undefined) throw missingParam("url is required");
  const q = parseValue(c.req.query(), previewQuery);
  await rateLimit(c, "media_preview", c.var.auth.userId, MEDIA_LIMITS.previewPerUser);
  const og = await previewUrl(
    { env: c.env, cfg: c.var.config.media, serverName: c.var.config.serverName, userId: c.var.auth.userId },
    q.url,
    q.ts,
  );
  return c.json(og);
}

// ---------------------------------------------------------------------------------------------
// /_matrix/client/v1/media (authenticated media, spec v1.11)

export const clientMediaRoutes = new Hono<AppEnv>();

clientMediaRoutes.get("/config", requireAuth, (c) => configResponse(c));
clientMediaRoutes.get("/preview_url", requireAuth, (c) => previewResponse(c));

const authedDownload = async (c: Context<AppEnv>) => {
  const q = parseValue(c.req.query(), downloadQuery.passthrough());
  return serveDownload(c, await findServable(c, c.var.auth.userId, q.timeout_ms, true));
};
clientMediaRoutes.get("/download/:serverName/:mediaId", requireAuth, authedDownload);
clientMediaRoutes.get("/download/:serverName/:mediaId/:fileName", requireAuth, authedDownload);

clientMediaRoutes.get("/thumbnail/:serverName/:mediaId", requireAuth, async (c) => {
  const q = parseValue(c.req.query(), thumbnailQuery);
  // Remote media: thumbnails are generated here from the cached original (fetched first).
  return serveThumbnail(c, await findServable(c, c.var.auth.userId, q.timeout_ms, true));
});

// ---------------------------------------------------------------------------------------------
// /_matrix/media: upload and create (still here in v1.11+), and the deprecated endpoints.

export const mediaRoutes = new Hono<AppEnv>();

/** POST /_matrix/media/v3/upload */
const upload = async (c: Context<AppEnv>) => {
  noGuests(c);
  await rateLimit(c, "media_upload", c.var.auth.userId, MEDIA_LIMITS.uploadPerUser);
  const { serverName, media } = c.var.config;
  const mediaId = await uploadMedia(c.env, media, serverName, uploadInput(c));
  return c.json({ content_uri: `mxc://${serverName}/${mediaId}` });
};

/** POST /_matrix/media/v1/create (spec v1.7) */
mediaRoutes.post("/v1/create", requireAuth, async (c) => {
  noGuests(c);
  await rateLimit(c, "media_create", c.var.auth.userId, MEDIA_LIMITS.createPerUser);
  const { serverName, media } = c.var.config;
  const { mediaId, expiresTs } = await createPendingMedia(c.env, media, serverName, c.var.auth.userId);
  return c.json({ content_uri: `mxc://${serverName}/${mediaId}`, unused_expires_at: expiresTs });
});

/** PUT /_matrix/media/v3/upload/{serverName}/{mediaId} (spec v1.7) */
const uploadTo = async (c: Context<AppEnv>) => {
  noGuests(c);
  await rateLimit(c, "media_upload", c.var.auth.userId, MEDIA_LIMITS.uploadPerUser);
  const { serverName, mediaId } = localTarget(c);
  await uploadToPending(c.env, c.var.config.media, serverName, mediaId, uploadInput(c));
  return c.json({});
};

/** Deprecated GET /_matrix/media/v3/download: no authentication, frozen. */
const legacyDownload = async (c: Context<AppEnv>) => {
  const q = parseValue(c.req.query(), downloadQuery.passthrough());
  const row = await findServable(c, undefined, q.timeout_ms);
  legacyAllowed(c, row);
  return serveDownload(c, row);
};

const legacyThumbnail = async (c: Context<AppEnv>) => {
  const q = parseValue(c.req.query(), thumbnailQuery);
  const row = await findServable(c, undefined, q.timeout_ms);
  legacyAllowed(c, row);
  return serveThumbnail(c, row);
};

for (const v of ["v3", "r0"]) {
  mediaRoutes.post(`/${v}/upload`, requireAuth, upload);
  mediaRoutes.put(`/${v}/upload/:serverName/:mediaId`, requireAuth, uploadTo);
  mediaRoutes.get(`/${v}/download/:serverName/:mediaId`, legacyDownload);
  mediaRoutes.get(`/${v}/download/:serverName/:mediaId/:fileName`, legacyDownload);
  mediaRoutes.get(`/${v}/thumbnail/:serverName/:mediaId`, legacyThumbnail);
  // The legacy config and preview_url always required an access token.
  mediaRoutes.get(`/${v}/config`, requireAuth, (c) => configResponse(c));
  mediaRoutes.get(`/${v}/preview_url`, requireAuth, (c) => previewResponse(c));
}
