// URL previews (spec: GET /_matrix/client/v1/media/preview_url): fetch the page server-side behind
// the SSRF guard (src/core/url-guard.ts), extract Open Graph data, store og:image in the media
// repository (the spec wants an mxc:// URI there), keep the answer in D1 (`url_previews`).
import type { Env } from "../env";
import type { MediaConfig } from "../config";
import { MatrixError, forbidden, invalidParam } from "../api/errors";
import { checkPreviewTarget, type PreviewPolicy } from "../core/url-guard";
import { extractOpenGraph } from "../core/opengraph";
import { IMAGE_MIME, sniffImage } from "../core/media";
import { QuotaExceeded, uploadMedia } from "./media";

export const PREVIEW_LIMITS = {
  /** Redirects followed, each target checked again by the guard. */
  maxRedirects: 3,
  /** Whole fetch (headers and body) of one URL, ms. */
  timeoutMs: 8_000,
  /** HTML read for Open Graph tags. */
  maxHtmlBytes: 1024 * 1024,
  /** og:image downloaded into the media repository. */
  maxImageBytes: 5 * 1024 * 1024,
  /** How long an answer is reused (Synapse: an hour by default). */
  cacheMs: 3600_000,
  /** How long answers are kept for `ts` look-ups into the past. */
  historyMs: 7 * 86400_000,
};

export type Fetcher = (input: string, init: RequestInit) => Promise<Response>;

const failed = (msg: string) => new MatrixError(502, "M_UNKNOWN", msg);

/** fetch() with manual redirects: every hop goes through the guard again, so a public URL cannot
 *  redirect us to 127.0.0.1 or 169.254.169.254. */
export async function guardedFetch(
  rawUrl: string,
  accept: string,
  fetcher: Fetcher,
  signal: AbortSignal,
  policy: PreviewPolicy,
): Promise<{ res: Response; url: string }> {
  let url = rawUrl;
  for (let hop = 0; ; hop++) {
    const verdict = checkPreviewTarget(url, policy);
    if (!verdict.ok) throw forbidden(`URL not allowed for previews: ${verdict.reason}`);
    let res: Response;
    try {
      res = await fetcher(verdict.url.toString(), {
        redirect: "manual",
        signal,
        headers: { "User-Agent": "Lattice URL preview (Matrix homeserver)", Accept: accept },
      });
    } catch {
      throw failed("Could not fetch the URL");
    }
    if (res.status >= 300 && res.status < 400 && res.headers.get("location")) {
      await res.body?.cancel();
      if (hop >= PREVIEW_LIMITS.maxRedirects) throw failed("Too many redirects");
      url = new URL(res.headers.get("location")!, verdict.url).toString();
      continue;
    }
    return { res, url: verdict.url.toString() };
  }
}

/** Read at most `max` bytes of a body; `truncate` keeps the first `max` bytes instead of failing.
 *  A body still arriving when the fetch's time-out signal fires fails the read: 502. */
async function readLimited(res: Response, max: number, truncate: boolean): Promise<Uint8Array | undefined> {
  const len = Number(res.headers.get("content-length") ?? "NaN");
  if (!truncate && len > max) {
    await res.body?.cancel();
    return undefined;
  }
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array>;
    try {
      step = await reader.read();
    } catch {
      reader.cancel().catch(() => {});
      throw failed("Could not read the URL's content in time");
    }
    const { done, value } = step;
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= max) {
      await reader.cancel();
      if (!truncate && size > max) return undefined;
      break;
    }
  }
  const out = new Uint8Array(Math.min(size, max));
  let at = 0;
  for (const c of chunks) {
    const part = c.subarray(0, out.length - at);
    out.set(part, at);
    at += part.length;
    if (at >= out.length) break;
  }
  return out;
}

function decodeHtml(bytes: Uint8Array, contentType: string): string {
  const charset = /charset="?([A-Za-z0-9._-]+)/i.exec(contentType)?.[1];
  try {
    return new TextDecoder(charset ?? "utf-8").decode(bytes);
  } catch {
    return new TextDecoder("utf-8").decode(bytes);
  }
}

export function previewPolicy(cfg: MediaConfig): PreviewPolicy {
  return { blocklist: cfg.urlPreviewBlocklist, loopback: cfg.urlPreviewLoopback };
}

export interface PreviewContext {
  env: Env;
  cfg: MediaConfig;
  serverName: string;
  userId: string;
  fetcher?: Fetcher;
}

type Preview = Record<string, string | number>;

async function storeImage(ctx: PreviewContext, imageUrl: string, fetcher: Fetcher, signal: AbortSignal): Promise<Preview> {
  const { res } = await guardedFetch(imageUrl, "image/*", fetcher, signal, previewPolicy(ctx.cfg));
  return storeImageResponse(ctx, res);
}

/** Keep an image the preview points at as local media (only real JPEG/PNG/GIF/WebP, sniffed). */
async function storeImageResponse(ctx: PreviewContext, res: Response): Promise<Preview> {
  if (!res.ok) {
    await res.body?.cancel();
    return {};
  }
  const bytes = await readLimited(res, Math.min(PREVIEW_LIMITS.maxImageBytes, ctx.cfg.maxUploadBytes), false);
  const info = bytes && sniffImage(bytes);
  if (!bytes || !info) return {};
  const contentType = IMAGE_MIME[info.format];
  const body = new Blob([bytes]).stream();
  // Stored as the requesting user's media, so it counts against their quota like an upload.
  const mediaId = await uploadMedia(ctx.env, ctx.cfg, ctx.serverName, {
    userId: ctx.userId,
    contentType,
    filename: null,
    body,
    contentLength: bytes.byteLength,
  });
  return {
    "og:image": `mxc://${ctx.serverName}/${mediaId}`,
    "og:image:type": contentType,
    "og:image:width": info.width,
    "og:image:height": info.height,
    "matrix:image:size": bytes.byteLength,
  };
}

// The cache (D1 `url_previews`, one row per fetch). D1 rather than the Cache API: the Cache API is
// per data centre and may evict at any time, so the same URL would be fetched again from every
// location, and it cannot answer "the answer current at time ts" (spec: `ts` is "the preferred
// point in time to return a preview for. The server may return a newer version if it does not have
// the requested version available"). Like Synapse's history-aware cache: the newest answer fetched
// at or before `ts` if it was still fresh then, else the oldest answer fetched after `ts`.

interface CachedPreview {
  og: string;
  expires_ts: number;
}

async function cachedPreview(env: Env, url: string, ts: number): Promise<Preview | undefined> {
  const before = await env.DB.prepare("SELECT og, expires_ts FROM url_previews WHERE url = ? AND fetched_ts <= ? ORDER BY fetched_ts DESC LIMIT 1")
    .bind(url, ts)
    .first<CachedPreview>();
  if (before && before.expires_ts > ts) return JSON.parse(before.og) as Preview;
  // A newer version: for a past `ts` whose answer we no longer (or never) had. Without it, every
  // request for an old message's URL would fetch again.
  const after = await env.DB.prepare("SELECT og, expires_ts FROM url_previews WHERE url = ? AND fetched_ts > ? ORDER BY fetched_ts ASC LIMIT 1")
    .bind(url, ts)
    .first<CachedPreview>();
  return after ? (JSON.parse(after.og) as Preview) : undefined;
}

/** Rows swept per store: rowid order is fetch order, so the oldest rows are looked at first. */
const SWEEP_BATCH = 100;

async function storePreview(env: Env, url: string, og: Preview): Promise<void> {
  const now = Date.now();
  await env.DB.batch([
    env.DB.prepare("INSERT OR REPLACE INTO url_previews (url, fetched_ts, expires_ts, og) VALUES (?, ?, ?, ?)").bind(
      url,
      now,
      now + PREVIEW_LIMITS.cacheMs,
      JSON.stringify(og),
    ),
    env.DB.prepare(
      `DELETE FROM url_previews WHERE rowid IN (SELECT rowid FROM url_previews ORDER BY rowid LIMIT ${SWEEP_BATCH}) AND expires_ts < ?`,
    ).bind(now - PREVIEW_LIMITS.historyMs),
  ]);
}

/** The preview for `rawUrl` as of `ts` (default now): cached, or fetched now. */
export async function previewUrl(ctx: PreviewContext, rawUrl: string, ts?: number): Promise<Preview> {
  const policy = previewPolicy(ctx.cfg);
  const verdict = checkPreviewTarget(rawUrl, policy);
  if (!verdict.ok) {
    if (verdict.invalid) throw invalidParam(`url: ${verdict.reason}`);
    throw forbidden(`URL not allowed for previews: ${verdict.reason}`);
  }
  const url = verdict.url.toString();
  const now = Date.now();
  const cached = await cachedPreview(ctx.env, url, Math.min(ts ?? now, now));
  if (cached) return cached;
  const fetcher = ctx.fetcher ?? ((input, init) => fetch(input, init));
  const signal = AbortSignal.timeout(PREVIEW_LIMITS.timeoutMs);
  const { res, url: finalUrl } = await guardedFetch(url, "text/html,application/xhtml+xml,image/*;q=0.8", fetcher, signal, policy);
  if (!res.ok) {
    await res.body?.cancel();
    throw failed(`The URL answered ${res.status}`);
  }
  const type = (res.headers.get("content-type") ?? "").toLowerCase();
  let og: Preview = {};
  if (type.startsWith("text/html") || type.startsWith("application/xhtml+xml")) {
    const html = decodeHtml((await readLimited(res, PREVIEW_LIMITS.maxHtmlBytes, true))!, type);
    const tags = extractOpenGraph(html, finalUrl);
    const image = tags["og:image"];
    for (const [k, v] of Object.entries(tags)) if (!k.startsWith("og:image")) og[k] = v;
    if (image) {
      try {
        og = { ...og, ...(await storeImage(ctx, image, fetcher, signal)) };
      } catch (e) {
        // A blocked or broken image leaves the preview without one; a user over quota gets the
        // 403 (and nothing is cached, so others still get the image).
        if (e instanceof QuotaExceeded) throw e;
      }
    }
  } else if (type.startsWith("image/")) {
    og = await storeImageResponse(ctx, res);
  } else {
    // Not a page: the spec's answer "may be empty" (Synapse answers 502 for such types).
    await res.body?.cancel();
  }
  await storePreview(ctx.env, url, og);
  return og;
}
