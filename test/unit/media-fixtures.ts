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
