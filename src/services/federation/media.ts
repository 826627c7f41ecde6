// Remote media over federation (spec: Server-Server API "Content Repository"; Client-Server API
// "Content repository" — "the homeserver ... will use the federation API to fetch remote media").
//
// Fetching: GET /_matrix/federation/v1/media/download/{mediaId} on the media's origin server,
// a multipart/mixed answer read whole up to MAX_UPLOAD_BYTES (plus a little for the envelope)
// and parsed by src/core/multipart.ts; a `Location` part is followed (at most 3 redirects, every
// hop through the URL guard). The bytes are cached in R2 at media/<origin>/<mediaId> with a D1
// row like local media (no uploader), so quarantine, deletion and thumbnails work the same way.
// Thumbnails of remote media are generated here from the cached original (not fetched remotely).
//
// Serving: multipartMediaResponse builds the multipart/mixed answer around an R2 body stream.
import type { FederationContext } from "./client";
import { FederationError, discoveryDeps, federationFetch } from "./client";
import { MatrixError, notFound } from "../../api/errors";
import { dispositionFilename, parseFederationMedia, multipartEnvelope, MultipartError } from "../../core/multipart";
import { normaliseUploadContentType } from "../../core/media";
import { checkPreviewUrl } from "../../core/url-guard";
import { mediaKey, recordRemoteMedia, type MediaRecord } from "../media";
import { randomString } from "../crypto-util";
import { readStreamLimited } from "../read-limited";

/** Room for the JSON part, headers and boundaries around the content. */
const ENVELOPE_SLACK = 64 * 1024;
const MAX_LOCATION_HOPS = 3;
const ERROR_BODY_MAX = 64 * 1024;

const tooLargeRemote = () => new MatrixError(502, "M_TOO_LARGE", "The remote content is too large for this server to serve");
const unavailable = (server: string, why: string) => new MatrixError(502, "M_UNKNOWN", `Could not fetch media from ${server}: ${why}`);

/** Read a body into memory, refusing more than `max` bytes (Content-Length first, then counted). */
export async function readBytesLimited(res: Response, max: number): Promise<Uint8Array> {
  const declared = res.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > max) {
    await res.body?.cancel();
    throw tooLargeRemote();
  }
  if (!res.body) return new Uint8Array(0);
  return readStreamLimited(res.body, max, tooLargeRemote);
}

/** A remote error answer turned into ours: 404 stays 404, "not yet uploaded" stays 504, too
 *  large is 502 M_TOO_LARGE (spec), anything else is 502. */
async function remoteError(server: string, res: Response): Promise<MatrixError> {
  let errcode: string | undefined;
  try {
    const text = new TextDecoder().decode(await readBytesLimited(res, ERROR_BODY_MAX));
    const j = JSON.parse(text) as { errcode?: unknown };
    if (typeof j.errcode === "string") errcode = j.errcode;
  } catch {
    /* not JSON: status alone decides */
  }
  if (res.status === 404) return notFound("Unknown media");
  if (res.status === 504 && errcode === "M_NOT_YET_UPLOADED") return new MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded");
  if (errcode === "M_TOO_LARGE") return tooLargeRemote();
  return unavailable(server, `it answered ${res.status}${errcode ? ` ${errcode}` : ""}`);
}

/** Whether a Location target may be fetched: the URL guard of URL previews (public http(s) on
 *  default ports only), relaxed to loopback peers when federation over loopback HTTP is on. */
function locationAllowed(ctx: FederationContext, url: URL): boolean {
  if (ctx.config.federationHttpLoopback && ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname.toLowerCase())) return true;
  return checkPreviewUrl(url).ok;
}

/** Follow a `Location` part: a plain GET (no X-Matrix), redirects followed by hand. */
async function fetchLocation(ctx: FederationContext, server: string, location: string, max: number, timeoutMs: number) {
  const doFetch = discoveryDeps(ctx).fetch;
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    throw unavailable(server, "its Location is not a URL");
  }
  const signal = AbortSignal.timeout(timeoutMs);
  for (let hop = 0; hop <= MAX_LOCATION_HOPS; hop++) {
    if (!locationAllowed(ctx, url)) throw unavailable(server, "its Location points somewhere we do not fetch from");
    let res: Response;
    try {
      res = await doFetch(url.toString(), { redirect: "manual", signal });
    } catch (e) {
      throw unavailable(server, `fetching its Location failed: ${(e as Error).message}`);
    }
    if (res.status >= 300 && res.status < 400 && res.headers.get("location")) {
      await res.body?.cancel();
      url = new URL(res.headers.get("location")!, url);
      continue;
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      throw res.status === 404 ? notFound("Unknown media") : unavailable(server, `its Location answered ${res.status}`);
    }
    return {
      body: await readBytesLimited(res, max),
      contentType: res.headers.get("content-type") ?? undefined,
      disposition: res.headers.get("content-disposition") ?? undefined,
    };
  }
  throw unavailable(server, "too many redirects");
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Fetch `mxc://server/mediaId` from its origin over federation and cache it (R2 + D1). Returns the
 * new row. Errors: 404 M_NOT_FOUND (the origin does not have it), 504 M_NOT_YET_UPLOADED, 502
 * M_TOO_LARGE (larger than our MAX_UPLOAD_BYTES), 502 M_UNKNOWN (unreachable, malformed answer).
 */
export async function fetchRemoteMedia(
  ctx: FederationContext,
  server: string,
  mediaId: string,
  opts: { timeoutMs?: number } = {},
): Promise<MediaRecord> {
  const max = ctx.config.media.maxUploadBytes;
  const waitMs = opts.timeoutMs ?? 20_000;
  const deadline = waitMs + 30_000;
  let res: Response;
  try {
    res = await federationFetch(ctx, server, "GET", `/_matrix/federation/v1/media/download/${encodeURIComponent(mediaId)}`, {
      query: { timeout_ms: waitMs },
      timeoutMs: deadline,
      accept: "multipart/mixed, application/json",
    });
  } catch (e) {
    throw unavailable(server, e instanceof FederationError ? e.message : String(e));
  }
  if (res.status !== 200) throw await remoteError(server, res);
  const raw = await readBytesLimited(res, max + ENVELOPE_SLACK);
  let answer;
  try {
    answer = parseFederationMedia(res.headers.get("content-type"), raw);
  } catch (e) {
    if (e instanceof MultipartError) throw unavailable(server, `malformed multipart answer: ${e.message}`);
    throw e;
  }
  let body: Uint8Array;
  let contentType: string | undefined;
  let filename: string | undefined;
  if (answer.kind === "location") {
    // "When Location is present, servers SHOULD NOT cache the URL": we fetch it now and cache the
    // bytes, never the URL.
    const got = await fetchLocation(ctx, server, answer.location, max, deadline);
    body = got.body;
    contentType = got.contentType;
    filename = dispositionFilename(got.disposition);
  } else {
    body = answer.body;
    contentType = answer.contentType;
    filename = answer.filename;
  }
  if (body.byteLength > max) throw tooLargeRemote();
  const type = normaliseUploadContentType(contentType);
  await ctx.env.MEDIA.put(mediaKey(server, mediaId), body, { httpMetadata: { contentType: type } });
  return recordRemoteMedia(ctx.env, {
    serverName: server,
    mediaId,
    contentType: type,
    filename: filename !== undefined ? filename.slice(0, 1024) : null,
    size: body.byteLength,
    sha256: await sha256Hex(body),
  });
}

/**
 * A multipart/mixed answer for GET /_matrix/federation/v1/media/download|thumbnail: `{}` metadata,
 * then the content with `partHeaders`. The body is streamed between the envelope's head and tail
 * through a FixedLengthStream, so the answer carries an exact Content-Length.
 */
export function multipartMediaResponse(
  body: ReadableStream<Uint8Array> | Uint8Array,
  size: number,
  partHeaders: Record<string, string>,
  waitUntil?: (p: Promise<unknown>) => void,
): Response {
  const env = multipartEnvelope(randomString(32), {}, partHeaders);
  const headers = { "Content-Type": env.contentType, "Content-Length": String(env.head.length + size + env.tail.length) };
  if (body instanceof Uint8Array) {
    const all = new Uint8Array(env.head.length + body.length + env.tail.length);
    all.set(env.head, 0);
    all.set(body, env.head.length);
    all.set(env.tail, env.head.length + body.length);
    return new Response(all, { status: 200, headers });
  }
  const fixed = new FixedLengthStream(env.head.length + size + env.tail.length);
  const pump = (async () => {
    const w = fixed.writable.getWriter();
    try {
      await w.write(env.head);
      const r = body.getReader();
      for (;;) {
        const { done, value } = await r.read();
        if (done) break;
        await w.write(value);
      }
      await w.write(env.tail);
      await w.close();
    } catch (e) {
      await w.abort(e).catch(() => undefined);
    }
  })();
  waitUntil?.(pump);
  return new Response(fixed.readable, { status: 200, headers });
}
