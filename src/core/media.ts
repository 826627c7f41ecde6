// Pure helpers for the content repository (spec: Client-Server API "Content repository"):
// media ID grammar, Content-Type / Content-Disposition for serving, image header sniffing and
// thumbnail size planning. No I/O here; src/services/media.ts and thumbnails.ts do the work.
import { z } from "zod";

/** Spec "Matrix Content (mxc://) URIs": the media-id segment MUST consist of only `A-Za-z0-9`,
 *  `_` and `-`. (Security considerations: whitelisting these characters defeats traversal.) */
const MEDIA_ID_RE = /^[A-Za-z0-9_-]{1,255}$/;
export function isValidMediaId(id: string): boolean {
  return MEDIA_ID_RE.test(id);
}

/** Spec "Serving inline content": the only Content-Types served with `Content-Disposition: inline`. */
export const INLINE_SAFE_TYPES: ReadonlySet<string> = new Set([
  "text/css",
  "text/plain",
  "text/csv",
  "application/json",
  "application/ld+json",
  "image/jpeg",
  "image/gif",
  "image/png",
  "image/apng",
  "image/webp",
  "image/avif",
  "video/mp4",
  "video/webm",
  "video/ogg",
  "video/quicktime",
  "audio/mp4",
  "audio/webm",
  "audio/aac",
  "audio/mpeg",
  "audio/ogg",
  "audio/wave",
  "audio/wav",
  "audio/x-wav",
  "audio/x-pn-wav",
  "audio/flac",
  "audio/x-flac",
]);

/** The spec's recommended policy for served media (Content repository, first section). */
export const MEDIA_CSP =
  "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/** `type/subtype` of a Content-Type, lower-cased, without parameters. */
export function contentTypeEssence(contentType: string): string {
  return contentType.split(";")[0].trim().toLowerCase();
}

export function isInlineSafe(contentType: string): boolean {
  return INLINE_SAFE_TYPES.has(contentTypeEssence(contentType));
}

// RFC 9110 token characters; a media type is token "/" token, optionally with parameters.
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE_RE = new RegExp(`^${TOKEN}/${TOKEN}(\\s*;\\s*${TOKEN}=(${TOKEN}|"[^"\\\\\\x00-\\x1f\\x7f]*"))*$`);

/** The Content-Type to store for an upload: the client's if it is a well-formed media type,
 *  else `application/octet-stream` (spec 1.12: the header is optional with that default). */
export function normaliseUploadContentType(header: string | undefined | null): string {
  const v = header?.trim();
  if (!v || v.length > 255 || !MEDIA_TYPE_RE.test(v)) return "application/octet-stream";
  return v;
}

// RFC 8187 attr-char: ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
const ATTR_CHAR_RE = /[A-Za-z0-9!#$&+\-.^_`|~]/;
const PLAIN_FILENAME_RE = /^[\x20-\x7e]*$/;

function encodeRfc8187(value: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(value)) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && ATTR_CHAR_RE.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** `Content-Disposition` for served media. The spec (GET .../download) requires the upload's
 *  filename unchanged: printable ASCII without `"` or `\` goes in `filename="..."`; anything else
 *  (non-ASCII, quotes, control characters) is carried losslessly in `filename*=utf-8''...`
 *  (RFC 6266 §4.3), so nothing a client sends can break out of the header. */
export function contentDisposition(disposition: "inline" | "attachment", filename?: string | null): string {
  if (!filename) return disposition;
  if (PLAIN_FILENAME_RE.test(filename) && !/["\\]/.test(filename)) return `${disposition}; filename="${filename}"`;
  return `${disposition}; filename*=utf-8''${encodeRfc8187(filename)}`;
}

/** Headers sent with every piece of served media (download and thumbnail). */
export function mediaSecurityHeaders(): Record<string, string> {
  return {
    "Content-Security-Policy": MEDIA_CSP,
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "cross-origin",
  };
}

// ---------------------------------------------------------------------------------------------
// Image sniffing: format and dimensions from the first bytes, before anything is decoded, so a
// decompression bomb is refused by its declared size and a non-image never reaches the decoder.

export type ImageFormat = "jpeg" | "png" | "gif" | "webp";
export interface ImageInfo {
  format: ImageFormat;
  width: number;
  height: number;
  animated: boolean;
  /** Set when a frame is larger than the header's canvas (a GIF image descriptor can claim any
   *  size): a decoder sizes that frame's buffer from the frame, not from the header. */
  largestFrame?: { width: number; height: number };
}

/** The most pixels a decoder holds for one frame of this image: what a pixel cap must bound. */
export function decodedPixels(info: ImageInfo): number {
  const frame = info.largestFrame;
  return Math.max(info.width * info.height, frame ? frame.width * frame.height : 0);
}

export const IMAGE_MIME: Record<ImageFormat, string> = {
  jpeg: "image/jpeg",
  png: "image/png",
  gif: "image/gif",
  webp: "image/webp",
};

function ascii(b: Uint8Array, at: number, len: number): string {
  return String.fromCharCode(...b.subarray(at, at + len));
}

function sniffPng(b: Uint8Array, v: DataView): ImageInfo | undefined {
  // 8-byte signature, then the IHDR chunk: length(4) "IHDR"(4) width(4) height(4).
  if (b.length < 24 || ascii(b, 12, 4) !== "IHDR") return undefined;
  const width = v.getUint32(16);
  const height = v.getUint32(20);
  // APNG: an acTL chunk before the first IDAT.
  let animated = false;
  for (let at = 8; at + 8 <= b.length; ) {
    const len = v.getUint32(at);
    const type = ascii(b, at + 4, 4);
    if (type === "acTL") animated = true;
    if (type === "IDAT" || type === "IEND") break;
    at += 12 + len;
  }
  return { format: "png", width, height, animated };
}

function sniffGif(b: Uint8Array, v: DataView): ImageInfo | undefined {
  if (b.length < 13) return undefined;
  const width = v.getUint16(6, true);
  const height = v.getUint16(8, true);
  // A NETSCAPE2.0 looping extension or a second frame marks an animation.
  let animated = ascii(b, 0, Math.min(b.length, 4096)).includes("NETSCAPE2.0");
  // Walk the blocks to every image descriptor: each frame states its own size, and a decoder
  // allocates by it, so a 100×100 screen can carry a 4100×3100 frame. Skipping the data
  // sub-blocks costs one step per 255 bytes; nothing is decompressed.
  const colourTable = (flags: number) => (flags & 0x80 ? 3 << ((flags & 7) + 1) : 0);
  const skipSubBlocks = (at: number) => {
    while (at < b.length) {
      const n = b[at];
      at += 1 + n;
      if (n === 0) break;
    }
    return at;
  };
  let at = 13 + colourTable(b[10]);
  let frames = 0;
  let largest: { width: number; height: number } | undefined;
  while (at < b.length) {
    const block = b[at];
    if (block === 0x21) {
      at = skipSubBlocks(at + 2); // introducer, label, then data sub-blocks
    } else if (block === 0x2c) {
      if (at + 10 > b.length) break;
      const fw = v.getUint16(at + 5, true);
      const fh = v.getUint16(at + 7, true);
      if (fw * fh > (largest ? largest.width * largest.height : width * height)) largest = { width: fw, height: fh };
      frames++;
      at = skipSubBlocks(at + 10 + colourTable(b[at + 9]) + 1); // descriptor, local table, LZW code size
    } else break; // trailer (0x3b) or garbage: decoders stop here too
  }
  if (frames > 1) animated = true;
  return { format: "gif", width, height, animated, ...(largest ? { largestFrame: largest } : {}) };
}

const isSof = (marker: number) => marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;

function sniffJpeg(b: Uint8Array, v: DataView): ImageInfo | undefined {
  let info: ImageInfo | undefined;
  let at = 2;
  while (at + 4 <= b.length) {
    if (b[at] !== 0xff) return info;
    const marker = b[at + 1];
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      at += 2; // markers without a length
      continue;
    }
    if (marker === 0xd9) break; // EOI
    const len = v.getUint16(at + 2);
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision(1) height(2) width(2).
    if (isSof(marker)) {
      // A second frame header could claim a size other than the first (the one the cap would
      // see). Decoders refuse such files; so do we, rather than trust the first.
      if (info || at + 9 > b.length) return undefined;
      info = { format: "jpeg", height: v.getUint16(at + 5), width: v.getUint16(at + 7), animated: false };
    }
    at += 2 + len;
    if (marker === 0xda) {
      if (!info) return undefined; // SOS before any SOF
      // Entropy-coded data: the next marker is an 0xFF followed by neither 0x00 (a stuffed byte)
      // nor a restart marker.
      for (at = b.indexOf(0xff, at); at >= 0 && at + 1 < b.length; at = b.indexOf(0xff, at + 1)) {
        const next = b[at + 1];
        if (next !== 0x00 && !(next >= 0xd0 && next <= 0xd7)) break;
      }
      if (at < 0) break;
    }
  }
  return info;
}

function sniffWebp(b: Uint8Array, v: DataView): ImageInfo | undefined {
  if (b.length < 30) return undefined;
  const chunk = ascii(b, 12, 4);
  if (chunk === "VP8 ") {
    // Lossy bitstream: frame tag(3) start code 9d 01 2a, then 14-bit width and height.
    if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) return undefined;
    return { format: "webp", width: v.getUint16(26, true) & 0x3fff, height: v.getUint16(28, true) & 0x3fff, animated: false };
  }
  if (chunk === "VP8L") {
    // Lossless: signature 0x2f, then width-1 (14 bits) and height-1 (14 bits), little-endian.
    if (b[20] !== 0x2f) return undefined;
    const bits = v.getUint32(21, true);
    return { format: "webp", width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1, animated: false };
  }
  if (chunk === "VP8X") {
    // Extended: flags(1) reserved(3) canvas width-1 (24 bits) canvas height-1 (24 bits).
    const u24 = (at: number) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
    return { format: "webp", width: u24(24) + 1, height: u24(27) + 1, animated: (b[20] & 0x02) !== 0 };
  }
  return undefined;
}

/** Format and pixel size of a JPEG, PNG (incl. APNG), GIF or WebP from its header bytes, or
 *  undefined when the bytes are not one of those. */
export function sniffImage(bytes: Uint8Array): ImageInfo | undefined {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let info: ImageInfo | undefined;
  if (bytes.length >= 8 && bytes[0] === 0x89 && ascii(bytes, 1, 3) === "PNG" && bytes[4] === 0x0d && bytes[5] === 0x0a) {
    info = sniffPng(bytes, v);
  } else if (bytes.length >= 6 && (ascii(bytes, 0, 6) === "GIF87a" || ascii(bytes, 0, 6) === "GIF89a")) {
    info = sniffGif(bytes, v);
  } else if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    info = sniffJpeg(bytes, v);
  } else if (bytes.length >= 12 && ascii(bytes, 0, 4) === "RIFF" && ascii(bytes, 8, 4) === "WEBP") {
    info = sniffWebp(bytes, v);
  }
  if (!info || info.width < 1 || info.height < 1) return undefined;
  return info;
}

// ---------------------------------------------------------------------------------------------
// Thumbnail planning (spec: "Thumbnails").

export type ThumbnailMethod = "crop" | "scale";

/** Query of a download (client and federation alike): how long to wait for a pending upload. */
export const downloadQuery = z.object({ timeout_ms: z.coerce.number().int().min(0).optional() });
/** Query of a thumbnail request: the same parameters on the client and the federation API. */
export const thumbnailQuery = z.object({
  width: z.coerce.number().int().min(1).max(100_000),
  height: z.coerce.number().int().min(1).max(100_000),
  method: z.enum(["crop", "scale"]).default("scale"),
  animated: z.enum(["true", "false"]).optional(),
  timeout_ms: z.coerce.number().int().min(0).optional(),
});
export interface SizeClass {
  width: number;
  height: number;
  method: ThumbnailMethod;
}

/** The sizes the spec says servers SHOULD produce. Only these are generated, which bounds what
 *  one media item can cost in CPU and cached thumbnails. */
export const THUMBNAIL_SIZES: readonly SizeClass[] = [
  { width: 32, height: 32, method: "crop" },
  { width: 96, height: 96, method: "crop" },
  { width: 320, height: 240, method: "scale" },
  { width: 640, height: 480, method: "scale" },
  { width: 800, height: 600, method: "scale" },
];

/** The smallest size class that is at least the requested size in both dimensions ("Servers
 *  MUST NOT return a smaller thumbnail than requested"), preferring the requested method. None
 *  when the request is larger than every class. */
export function chooseSizeClass(width: number, height: number, method: ThumbnailMethod): SizeClass | undefined {
  const ordered = [...THUMBNAIL_SIZES.filter((s) => s.method === method), ...THUMBNAIL_SIZES.filter((s) => s.method !== method)];
  return ordered.find((s) => s.width >= width && s.height >= height);
}

export type ThumbnailPlan =
  | { kind: "original" }
  | {
      kind: "resize";
      sizeClass: SizeClass;
      /** Resize the whole image to this size... */
      resize: { width: number; height: number };
      /** ...then (crop only) cut this centred window out of it. */
      crop?: { x: number; y: number; width: number; height: number };
      /** Final dimensions. */
      width: number;
      height: number;
    };

/** What to do for a thumbnail of a `src`-sized image in `sizeClass`. Never upscales ("Servers
 *  MUST NOT upscale thumbnails under any circumstance"); an image that already fits the class is
 *  served as it is ("When the content is smaller than the requested dimensions, servers should
 *  return the original content"). Scale keeps the aspect ratio and fits inside the class box;
 *  crop fills the box with the class's aspect ratio and cuts the overflow off the centre. */
export function planThumbnail(src: { width: number; height: number }, sizeClass: SizeClass | undefined): ThumbnailPlan {
  if (!sizeClass) return { kind: "original" };
  const { width: W, height: H } = sizeClass;
  if (src.width <= W && src.height <= H) return { kind: "original" };
  if (sizeClass.method === "scale") {
    const f = Math.min(W / src.width, H / src.height);
    const width = Math.max(1, Math.min(W, Math.round(src.width * f)));
    const height = Math.max(1, Math.min(H, Math.round(src.height * f)));
    return { kind: "resize", sizeClass, resize: { width, height }, width, height };
  }
  // crop: scale so that the image covers the box (never above 1: one side may already be smaller)
  const f = Math.min(1, Math.max(W / src.width, H / src.height));
  const rw = Math.max(1, Math.round(src.width * f));
  const rh = Math.max(1, Math.round(src.height * f));
  const width = Math.min(W, rw);
  const height = Math.min(H, rh);
  const crop = { x: Math.floor((rw - width) / 2), y: Math.floor((rh - height) / 2), width, height };
  return { kind: "resize", sizeClass, resize: { width: rw, height: rh }, crop, width, height };
}
