// Thumbnail pixel cap against frames larger than the header (issue 14, item 14). A GIF's image
// descriptor states the frame's size independently of the logical screen, and the decoder sizes
// its frame buffer from the descriptor: a 100×100 screen with a 4100×3100 frame passed the cap
// (which read only the screen) and made photon allocate ~51 MB before failing on the missing
// data (152 ms against 1 ms for an honest frame). A JPEG with a second, larger frame header is
// refused by photon's decoder; the sniffer now refuses it too instead of trusting the first.
import { describe, expect, it } from "vitest";
import { SELF } from "cloudflare:test";
import { BASE, SERVER, registerUser } from "./helpers";
import { decodedPixels, sniffImage } from "../../src/core/media";
import { MAX_THUMBNAIL_PIXELS } from "../../src/services/thumbnails";
import { makeGif, makeImage, makeLyingGif, withExtraJpegFrame } from "../unit/media-fixtures";

async function uploadAndThumb(token: string, body: Uint8Array, type: string, q: string): Promise<{ status: number; errcode?: string }> {
  const up = await SELF.fetch(`${BASE}/_matrix/media/v3/upload`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": type }, body });
  expect(up.status).toBe(200);
  const id = ((await up.json()) as { content_uri: string }).content_uri.split("/").pop();
  const res = await SELF.fetch(`${BASE}/_matrix/client/v1/media/thumbnail/${SERVER}/${id}?${q}`, { headers: { authorization: `Bearer ${token}` } });
  const errcode = res.headers.get("content-type")?.includes("json") ? ((await res.json()) as { errcode?: string }).errcode : (await res.arrayBuffer(), undefined);
  return { status: res.status, errcode };
}

describe("frames larger than the header", () => {
  it("a GIF's largest frame counts against the pixel cap", () => {
    const lying = sniffImage(makeLyingGif(100, 100, 4100, 3100))!;
    expect(lying).toMatchObject({ format: "gif", width: 100, height: 100, largestFrame: { width: 4100, height: 3100 } });
    expect(decodedPixels(lying)).toBeGreaterThan(MAX_THUMBNAIL_PIXELS);
    // Honest GIFs (one frame or many, each within the screen) are unchanged.
    expect(sniffImage(makeGif(40, 30))).toEqual({ format: "gif", width: 40, height: 30, animated: false });
    expect(sniffImage(makeGif(40, 30, 3))).toEqual({ format: "gif", width: 40, height: 30, animated: true });
    expect(decodedPixels(sniffImage(makeGif(40, 30))!)).toBe(1200);
  });

  it("a JPEG with a second frame header is not an image we decode", () => {
    const jpeg = makeImage("jpeg", 1000, 800);
    expect(sniffImage(jpeg)).toEqual({ format: "jpeg", width: 1000, height: 800, animated: false });
    expect(sniffImage(withExtraJpegFrame(jpeg, 100, 80, true))).toBeUndefined();
    expect(sniffImage(withExtraJpegFrame(jpeg, 5000, 5000))).toBeUndefined();
  });

  it("thumbnails: the lying GIF answers 413 before decoding; the JPEG 400", async () => {
    const u = await registerUser();
    expect(await uploadAndThumb(u.accessToken, makeLyingGif(100, 100, 4100, 3100), "image/gif", "width=96&height=96&method=crop")).toEqual({ status: 413, errcode: "M_TOO_LARGE" });
    const jpeg = withExtraJpegFrame(makeImage("jpeg", 1000, 800), 100, 80, true);
    expect(await uploadAndThumb(u.accessToken, jpeg, "image/jpeg", "width=96&height=96&method=crop")).toEqual({ status: 400, errcode: "M_UNKNOWN" });
    // An honest image of the same kind still gets its thumbnail.
    expect((await uploadAndThumb(u.accessToken, makeImage("jpeg", 1000, 800), "image/jpeg", "width=96&height=96&method=crop")).status).toBe(200);
  });
});
