// URL previews (spec: GET /_matrix/client/v1/media/preview_url): fetch the page server-side behind
// the SSRF guard (src/core/url-guard.ts), extract Open Graph data, store og:image in the media
// repository (the spec wants an mxc:// URI there), cache the answer in R2.
import type { Env } from "../env";
import type { MediaConfig } from "../config";
import { MatrixError, forbidden } from "../api/errors";
import { checkPreviewUrl } from "../core/url-guard";
import { extractOpenGraph } from "../core/opengraph";
import { IMAGE_MIME, sniffImage } from "../core/media";
import { sha256Hex } from "./crypto-util";
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
  /** How long an answer is reused. */
  cacheMs: 3600_000,
};

export type Fetcher = (input: string, init: RequestInit) => Promise<Response>;

const failed = (msg: string) => new MatrixError(502, "M_UNKNOWN", msg);

/** fetch() with manual redirects: every hop goes through the guard again, so a public URL cannot
 *  redirect us to 127.0.0.1 or 169.254.169.254. */
export async function guardedFetch(rawUrl: string, accept: string, fetcher: Fetcher, signal: AbortSignal): Promise<{ res: Response; url: string }> {
  let url = rawUrl;
  for (let hop = 0; ; hop++) {
    const verdict = checkPreviewUrl(url);
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

/** Read at most `max` bytes of a body; `truncate` keeps the first `max` bytes instead of failing. */
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
    const { done, value } = await reader.read();
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

export interface PreviewContext {
  env: Env;
  cfg: MediaConfig;
  serverName: string;
  userId: string;
  fetcher?: Fetcher;
}

type Preview = Record<string, string | number>;

async function storeImage(ctx: PreviewContext, imageUrl: string, fetcher: Fetcher, signal: AbortSignal): Promise<Preview> {
  const { res } = await guardedFetch(imageUrl, "image/*", fetcher, signal);
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

/** The preview for `rawUrl`: cached, or fetched now. */
export async function previewUrl(ctx: PreviewContext, rawUrl: string): Promise<Preview> {
  const verdict = checkPreviewUrl(rawUrl);
  if (!verdict.ok) throw forbidden(`URL not allowed for previews: ${verdict.reason}`);
  const url = verdict.url.toString();
  const cacheKey = `url-previews/${await sha256Hex(url)}`;
  const cached = await ctx.env.MEDIA.get(cacheKey);
  if (cached) {
    const entry = (await cached.json()) as { ts: number; og: Preview };
    if (entry.ts + PREVIEW_LIMITS.cacheMs > Date.now()) return entry.og;
  }
  const fetcher = ctx.fetcher ?? ((input, init) => fetch(input, init));
  const signal = AbortSignal.timeout(PREVIEW_LIMITS.timeoutMs);
  const { res, url: finalUrl } = await guardedFetch(url, "text/html,application/xhtml+xml,image/*;q=0.8", fetcher, signal);
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
    await res.body?.cancel();
  }
  await ctx.env.MEDIA.put(cacheKey, JSON.stringify({ ts: Date.now(), og }), { httpMetadata: { contentType: "application/json" } });
  return og;
}
