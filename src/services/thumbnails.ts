// Thumbnails (spec: Client-Server API "Thumbnails"): real scale/crop resizing with photon
// (Rust image crate compiled to WASM) for JPEG, PNG, GIF (first frame) and WebP, generated once
// per size class and kept in R2 next to the content.
import { PhotonImage, SamplingFilter, crop as photonCrop, resize as photonResize } from "@cf-wasm/photon";
import type { Env } from "../env";
import { MatrixError, tooLarge } from "../api/errors";
import {
  IMAGE_MIME,
  chooseSizeClass,
  decodedPixels,
  planThumbnail,
  sniffImage,
  type ImageInfo,
  type ThumbnailMethod,
  type ThumbnailPlan,
} from "../core/media";
import { thumbnailPrefix, type MediaRecord } from "./media";

/** Largest source we read for thumbnailing (bytes) and decode (pixels). Decoding holds the
 *  decoded image (3–4 bytes per pixel) and its RGBA copy in WASM memory at once, and WASM memory
 *  never shrinks within an isolate of 128 MB: 4096×3072 (a 12 MP phone photo) peaks near 90 MB.
 *  Larger → 413 M_TOO_LARGE, as the spec's security considerations ask. */
export const MAX_THUMBNAIL_SOURCE_BYTES = 20 * 1024 * 1024;
export const MAX_THUMBNAIL_PIXELS = 4096 * 3072;
const JPEG_QUALITY = 80;

export interface ThumbnailResult {
  body: ReadableStream | Uint8Array;
  contentType: string;
  size: number;
}

const cannotThumbnail = () => new MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content");

/** Resize decoded pixels per plan and encode: JPEG stays JPEG, everything else becomes PNG
 *  (keeps transparency; a GIF or animated WebP gives its first frame). */
export function renderThumbnail(bytes: Uint8Array, info: ImageInfo, plan: Extract<ThumbnailPlan, { kind: "resize" }>): { bytes: Uint8Array; contentType: string } {
  let img: PhotonImage | undefined;
  let resized: PhotonImage | undefined;
  let cropped: PhotonImage | undefined;
  try {
    try {
      img = PhotonImage.new_from_byteslice(bytes);
    } catch {
      // photon panics (a WASM trap) on undecodable input; the module stays usable.
      throw cannotThumbnail();
    }
    resized = photonResize(img, plan.resize.width, plan.resize.height, SamplingFilter.Triangle);
    let out = resized;
    if (plan.crop) {
      const { x, y, width, height } = plan.crop;
      cropped = photonCrop(resized, x, y, x + width, y + height);
      out = cropped;
    }
    if (info.format === "jpeg") return { bytes: out.get_bytes_jpeg(JPEG_QUALITY), contentType: "image/jpeg" };
    return { bytes: out.get_bytes(), contentType: "image/png" };
  } finally {
    cropped?.free();
    resized?.free();
    img?.free();
  }
}

/** The thumbnail for a request, from the R2 cache or made now. When the image already fits the
 *  size class (or the request is larger than every class) the original is returned, never
 *  upscaled. `animated` is accepted but never honoured: photon decodes only the first frame, and
 *  the spec lets a server without animation support behave as if `animated` were false. */
export async function getThumbnail(
  env: Env,
  media: MediaRecord,
  req: { width: number; height: number; method: ThumbnailMethod },
): Promise<ThumbnailResult> {
  const sizeClass = chooseSizeClass(req.width, req.height, req.method);
  const cacheKey = sizeClass ? `${thumbnailPrefix(media.serverName, media.mediaId)}${sizeClass.width}x${sizeClass.height}-${sizeClass.method}` : undefined;
  if (cacheKey) {
    const hit = await env.MEDIA.get(cacheKey);
    if (hit) return { body: hit.body, contentType: hit.httpMetadata?.contentType ?? "image/png", size: hit.size };
  }
  if ((media.size ?? 0) > MAX_THUMBNAIL_SOURCE_BYTES) throw tooLarge("Content is too large to thumbnail");
  const obj = await env.MEDIA.get(media.r2Key);
  if (!obj) throw new MatrixError(404, "M_NOT_FOUND", "Media content is missing");
  const bytes = new Uint8Array(await obj.arrayBuffer());
  const info = sniffImage(bytes);
  if (!info) throw cannotThumbnail();
  // decodedPixels, not the header's size: a GIF frame can be larger than its screen.
  if (decodedPixels(info) > MAX_THUMBNAIL_PIXELS) throw tooLarge("Content is too large to thumbnail");
  const plan = planThumbnail(info, sizeClass);
  if (plan.kind === "original") return { body: bytes, contentType: IMAGE_MIME[info.format], size: bytes.byteLength };
  const out = renderThumbnail(bytes, info, plan);
  await env.MEDIA.put(cacheKey!, out.bytes, {
    httpMetadata: { contentType: out.contentType },
    customMetadata: { width: String(plan.width), height: String(plan.height) },
  });
  return { body: out.bytes, contentType: out.contentType, size: out.bytes.byteLength };
}
