// Test images made on the spot: PNG/JPEG/WebP through photon's encoders, GIF with a tiny
// hand-written encoder (photon cannot write GIF), so tests never depend on binary fixtures.
import { PhotonImage } from "@cf-wasm/photon";

/** RGBA pixels: a left half red / right half blue image with a green top-left quadrant, so crops
 *  and scales can be checked by colour. */
export function testPixels(width: number, height: number): Uint8Array {
  const px = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const left = x < width / 2;
      const top = y < height / 2;
      px[i] = left && !top ? 255 : 0;
      px[i + 1] = left && top ? 255 : 0;
      px[i + 2] = left ? 0 : 255;
      px[i + 3] = 255;
    }
  }
  return px;
}

export function makeImage(format: "png" | "jpeg" | "webp", width: number, height: number): Uint8Array {
  const img = new PhotonImage(testPixels(width, height), width, height);
  try {
    if (format === "png") return img.get_bytes();
    if (format === "jpeg") return img.get_bytes_jpeg(85);
    return img.get_bytes_webp();
  } finally {
    img.free();
  }
}

/** A GIF89a with a 4-colour palette and `frames` frames (the first frame is green/red/blue as
 *  testPixels, later frames are all white), looping if animated. LZW with a clear code every
 *  200 codes so the code width stays at 9 bits... minimum code size 8 keeps it simple. */
export function makeGif(width: number, height: number, frames = 1): Uint8Array {
  const out: number[] = [];
  const u16 = (n: number) => out.push(n & 0xff, n >> 8);
  out.push(...new TextEncoder().encode("GIF89a"));
  u16(width);
  u16(height);
  out.push(0xf7, 0, 0); // global colour table of 256 entries
  const palette = [
    [0, 0, 0],
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 255],
  ];
  for (let i = 0; i < 256; i++) out.push(...(palette[i] ?? [0, 0, 0]));
  if (frames > 1) {
    out.push(0x21, 0xff, 11, ...new TextEncoder().encode("NETSCAPE2.0"), 3, 1, 0, 0, 0);
  }
  const px = testPixels(width, height);
  for (let f = 0; f < frames; f++) {
    out.push(0x21, 0xf9, 4, 0, 10, 0, 0, 0); // graphic control: 0.1 s delay
    out.push(0x2c);
    u16(0);
    u16(0);
    u16(width);
    u16(height);
    out.push(0);
    // indices
    const idx: number[] = [];
    for (let i = 0; i < width * height; i++) {
      if (f > 0) idx.push(4);
      else if (px[i * 4 + 1] === 255) idx.push(2);
      else if (px[i * 4] === 255) idx.push(1);
      else idx.push(3);
    }
    // LZW, minimum code size 8: clear=256, end=257, codes are 9 bits until 512 entries.
    out.push(8);
    const codes: number[] = [];
    for (let i = 0; i < idx.length; i++) {
      if (i % 200 === 0) codes.push(256);
      codes.push(idx[i]);
    }
    codes.push(257);
    const data: number[] = [];
    let acc = 0;
    let bits = 0;
    for (const c of codes) {
      acc |= c << bits;
      bits += 9;
      while (bits >= 8) {
        data.push(acc & 0xff);
        acc >>>= 8;
        bits -= 8;
      }
    }
    if (bits > 0) data.push(acc & 0xff);
    for (let i = 0; i < data.length; i += 255) {
      const block = data.slice(i, i + 255);
      out.push(block.length, ...block);
    }
    out.push(0);
  }
  out.push(0x3b);
  return new Uint8Array(out);
}

/** A GIF whose logical screen says `screenW`×`screenH` but whose one frame (image descriptor) is
 *  `frameW`×`frameH`, with almost no image data (a decoder sizes its frame buffer from the
 *  descriptor before reading any). */
export function makeLyingGif(screenW: number, screenH: number, frameW: number, frameH: number): Uint8Array {
  const out: number[] = [];
  const u16 = (n: number) => out.push(n & 0xff, n >> 8);
  out.push(...new TextEncoder().encode("GIF89a"));
  u16(screenW);
  u16(screenH);
  out.push(0x80, 0, 0); // global colour table of 2 entries
  out.push(0, 0, 0, 255, 255, 255);
  out.push(0x2c);
  u16(0);
  u16(0);
  u16(frameW);
  u16(frameH);
  out.push(0);
  // LZW, minimum code size 2: clear (4), one pixel (1), end (5), 3-bit codes.
  out.push(2, 2, 0x4c, 0x01, 0);
  out.push(0x3b);
  return new Uint8Array(out);
}

/** `jpeg` with a second frame header (SOF0) claiming `width`×`height` inserted right after the
 *  first one (or, with `first`, before it). */
export function withExtraJpegFrame(jpeg: Uint8Array, width: number, height: number, first = false): Uint8Array {
  let at = 2;
  while (at + 4 <= jpeg.length) {
    const marker = jpeg[at + 1];
    const len = (jpeg[at + 2] << 8) | jpeg[at + 3];
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      const sof = jpeg.slice(at, at + 2 + len);
      const fake = sof.slice();
      fake[1] = 0xc0;
      fake[5] = height >> 8;
      fake[6] = height & 0xff;
      fake[7] = width >> 8;
      fake[8] = width & 0xff;
      const cut = first ? at : at + 2 + len;
      const out = new Uint8Array(jpeg.length + fake.length);
      out.set(jpeg.subarray(0, cut), 0);
      out.set(fake, cut);
      out.set(jpeg.subarray(cut), cut + fake.length);
      return out;
    }
    at += 2 + len;
  }
  throw new Error("no SOF in the JPEG");
}
