// Content repository against the real Worker with real R2 and D1 (spec: Client-Server API
// "Content repository"). Images are generated in the test with photon; thumbnails are decoded
// to check their real size and format.
import { describe, it, expect, beforeAll } from "vitest";
import { SELF, env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { PhotonImage } from "@cf-wasm/photon";
import app from "../../src/index";
import { call, registerUser, SERVER, BASE, type TestUser } from "./helpers";
import { makeGif, makeImage } from "../unit/media-fixtures";
import { deleteMedia, quarantineMedia } from "../../src/services/media";
import { MEDIA_CSP } from "../../src/core/media";
import { setFederationFetch } from "../../src/services/federation/client";

type Body = BodyInit | null | undefined;

/** A request with a binary body and optional access token, through SELF (the deployed config) or,
 *  with `vars`, through the app with extra configuration variables. */
async function raw(
  method: string,
  path: string,
  opts: { token?: string; body?: Body; headers?: Record<string, string>; vars?: Record<string, string> } = {},
): Promise<Response> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const init: RequestInit = { method, headers, body: opts.body };
  if (!opts.vars) return SELF.fetch(`${BASE}${path}`, init);
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`${BASE}${path}`, init), { ...env, ...opts.vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

async function upload(token: string, body: Uint8Array | string, contentType?: string, filename?: string, vars?: Record<string, string>): Promise<string> {
  const q = filename !== undefined ? `?filename=${encodeURIComponent(filename)}` : "";
  const res = await raw("POST", `/_matrix/media/v3/upload${q}`, {
    token,
    body,
    headers: contentType ? { "content-type": contentType } : {},
    vars,
  });
  const json = (await res.json()) as { content_uri: string };
  expect(res.status, JSON.stringify(json)).toBe(200);
  expect(json.content_uri).toMatch(new RegExp(`^mxc://${SERVER.replace(".", "\\.")}/[A-Za-z0-9_-]+$`));
  return json.content_uri.split("/").pop()!;
}

const dl = (id: string, suffix = "") => `/_matrix/client/v1/media/download/${SERVER}/${id}${suffix}`;
const thumb = (id: string, q: string) => `/_matrix/client/v1/media/thumbnail/${SERVER}/${id}?${q}`;

function expectSafetyHeaders(res: Response): void {
  expect(res.headers.get("content-security-policy")).toBe(MEDIA_CSP);
  expect(res.headers.get("content-security-policy")).toMatch(/^sandbox;/);
  expect(res.headers.get("x-content-type-options")).toBe("nosniff");
  expect(res.headers.get("cross-origin-resource-policy")).toBe("cross-origin");
}

async function errcode(res: Response): Promise<string> {
  return ((await res.json()) as { errcode: string }).errcode;
}

function decode(bytes: ArrayBuffer): { width: number; height: number; pixel: (x: number, y: number) => number[] } {
  const img = PhotonImage.new_from_byteslice(new Uint8Array(bytes));
  const w = img.get_width();
  const h = img.get_height();
  const px = img.get_raw_pixels();
  img.free();
  return { width: w, height: h, pixel: (x, y) => Array.from(px.subarray((y * w + x) * 4, (y * w + x) * 4 + 3)) };
}

let alice: TestUser;
let bob: TestUser;
beforeAll(async () => {
  // Other servers' media is fetched over federation: here every other server answers 404 (no
  // traffic leaves the test; test/integration/federation-media.test.ts covers real answers).
  setFederationFetch(async () => new Response(JSON.stringify({ errcode: "M_NOT_FOUND", error: "no" }), { status: 404 }));
  [alice, bob] = await Promise.all([registerUser(), registerUser()]);
});

describe("upload and authenticated download", () => {
  it("round-trips binary content byte for byte with the safety headers", async () => {
    const bytes = new Uint8Array(70_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919 + (i >> 8)) & 0xff;
    bytes.set(Array.from({ length: 256 }, (_, i) => i), 0);
    const id = await upload(alice.accessToken, bytes, "application/octet-stream", "data.bin");
    const res = await raw("GET", dl(id), { token: bob.accessToken });
    expect(res.status).toBe(200);
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(bytes);
    expectSafetyHeaders(res);
    expect(res.headers.get("content-type")).toBe("application/octet-stream");
    expect(res.headers.get("content-disposition")).toBe('attachment; filename="data.bin"');
    expect(res.headers.get("content-length")).toBe(String(bytes.length));
  });

  it("serves safe types inline with the upload's filename, or the one in the path", async () => {
    const png = makeImage("png", 20, 10);
    const id = await upload(alice.accessToken, png, "image/png", "cat.png");
    const res = await raw("GET", dl(id), { token: alice.accessToken });
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(res.headers.get("content-disposition")).toBe('inline; filename="cat.png"');
    expectSafetyHeaders(res);
    await res.arrayBuffer();
    const renamed = await raw("GET", dl(id, "/other%20name.png"), { token: alice.accessToken });
    expect(renamed.headers.get("content-disposition")).toBe('inline; filename="other name.png"');
    await renamed.arrayBuffer();
    const utf8 = await upload(alice.accessToken, "hi", "text/plain", "日本.txt");
    const r2 = await raw("GET", dl(utf8), { token: alice.accessToken });
    expect(r2.headers.get("content-disposition")).toBe("inline; filename*=utf-8''%E6%97%A5%E6%9C%AC.txt");
    expect(await r2.text()).toBe("hi");
  });

  it("serves HTML (and anything off the safe list) as an attachment in a CSP sandbox", async () => {
    for (const type of ["text/html", "image/svg+xml", "application/javascript"]) {
      const id = await upload(alice.accessToken, "<script>alert(document.cookie)</script>", type, "x");
      const res = await raw("GET", dl(id), { token: bob.accessToken });
      expect(res.headers.get("content-type")).toBe(type);
      expect(res.headers.get("content-disposition")).toBe('attachment; filename="x"');
      expectSafetyHeaders(res);
      await res.arrayBuffer();
    }
  });

  it("without Content-Type stores application/octet-stream, without filename omits it", async () => {
    const id = await upload(alice.accessToken, new Uint8Array([1, 2, 3]));
    const res = await raw("GET", dl(id), { token: alice.accessToken });
    expect(res.headers.get("content-type")).toBe("application/octet-stream");
    expect(res.headers.get("content-disposition")).toBe("attachment");
    await res.arrayBuffer();
  });

  it("answers byte ranges", async () => {
    const id = await upload(alice.accessToken, "0123456789", "text/plain");
    const res = await raw("GET", dl(id), { token: alice.accessToken, headers: { range: "bytes=2-5" } });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe("bytes 2-5/10");
    expect(await res.text()).toBe("2345");
  });

  it("accepts a chunked upload without Content-Length", async () => {
    const parts = ["chunk-one ", "chunk-two"];
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const p of parts) controller.enqueue(new TextEncoder().encode(p));
        controller.close();
      },
    });
    const res = await raw("POST", "/_matrix/media/v3/upload", { token: alice.accessToken, body: stream, headers: { "content-type": "text/plain" }, vars: {} });
    expect(res.status).toBe(200);
    const id = ((await res.json()) as { content_uri: string }).content_uri.split("/").pop()!;
    const got = await raw("GET", dl(id), { token: alice.accessToken });
    expect(await got.text()).toBe(parts.join(""));
  });

  it("records metadata in D1 (uploader, size, type, sha256)", async () => {
    const id = await upload(alice.accessToken, "hello", "text/plain", "h.txt");
    const row = await env.DB.prepare("SELECT * FROM media WHERE media_id = ?").bind(id).first<Record<string, unknown>>();
    expect(row).toMatchObject({
      server_name: SERVER,
      uploader: alice.userId,
      size: 5,
      content_type: "text/plain",
      filename: "h.txt",
      sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
      r2_key: `media/${SERVER}/${id}`,
      quarantined: 0,
    });
  });
});

describe("errors", () => {
  it("refuses unauthenticated access to every v1 endpoint and to upload", async () => {
    const id = await upload(alice.accessToken, "x", "text/plain");
    for (const [method, path] of [
      ["GET", dl(id)],
      ["GET", dl(id, "/f.txt")],
      ["GET", thumb(id, "width=32&height=32")],
      ["GET", "/_matrix/client/v1/media/config"],
      ["GET", "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fmatrix.org"],
      ["POST", "/_matrix/media/v3/upload"],
      ["POST", "/_matrix/media/v1/create"],
      ["PUT", `/_matrix/media/v3/upload/${SERVER}/${id}`],
      ["GET", "/_matrix/media/v3/config"],
    ]) {
      const res = await raw(method, path, method === "GET" ? {} : { body: "x" });
      expect(res.status, path).toBe(401);
      expect(await errcode(res), path).toBe("M_MISSING_TOKEN");
    }
    const bad = await raw("GET", dl(id), { token: "nope" });
    expect(bad.status).toBe(401);
    expect(await errcode(bad)).toBe("M_UNKNOWN_TOKEN");
  });

  it("unknown IDs, bad IDs and other servers' media are 404 M_NOT_FOUND", async () => {
    for (const path of [
      dl("doesNotExist123"),
      `/_matrix/client/v1/media/download/other.example/abc`,
      `/_matrix/client/v1/media/download/${SERVER}/bad.id`,
      `/_matrix/client/v1/media/download/${SERVER}/a%2F..%2Fb`,
      `/_matrix/client/v1/media/thumbnail/other.example/abc?width=32&height=32`,
    ]) {
      const res = await raw("GET", path, { token: alice.accessToken });
      expect(res.status, path).toBe(404);
      expect(await errcode(res), path).toBe("M_NOT_FOUND");
    }
  });

  it("too large → 413 M_TOO_LARGE (declared or streamed), and /config advertises the limit", async () => {
    const vars = { MAX_UPLOAD_BYTES: "1000" };
    const res = await raw("POST", "/_matrix/media/v3/upload", { token: alice.accessToken, body: new Uint8Array(1001), vars });
    expect(res.status).toBe(413);
    expect(await errcode(res)).toBe("M_TOO_LARGE");
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 3; i++) controller.enqueue(new Uint8Array(400));
        controller.close();
      },
    });
    const res2 = await raw("POST", "/_matrix/media/v3/upload", { token: alice.accessToken, body: chunked, vars });
    expect(res2.status).toBe(413);
    expect(await errcode(res2)).toBe("M_TOO_LARGE");
    expect((await raw("POST", "/_matrix/media/v3/upload", { token: alice.accessToken, body: new Uint8Array(1000), vars })).status).toBe(200);
    for (const path of ["/_matrix/client/v1/media/config", "/_matrix/media/v3/config"]) {
      const cfg = await raw("GET", path, { token: alice.accessToken, vars });
      expect(await cfg.json()).toEqual({ "m.upload.size": 1000 });
    }
    const dflt = await call("GET", "/_matrix/client/v1/media/config", { token: alice.accessToken });
    expect(dflt.body).toEqual({ "m.upload.size": 50 * 1024 * 1024 });
  });

  it("a user over quota gets 403 M_FORBIDDEN", async () => {
    const carol = await registerUser();
    const vars = { MEDIA_USER_QUOTA_BYTES: "1500" };
    expect((await raw("POST", "/_matrix/media/v3/upload", { token: carol.accessToken, body: new Uint8Array(1000), vars })).status).toBe(200);
    const res = await raw("POST", "/_matrix/media/v3/upload", { token: carol.accessToken, body: new Uint8Array(1000), vars });
    expect(res.status).toBe(403);
    expect(await errcode(res)).toBe("M_FORBIDDEN");
  });
});

describe("async upload (create + PUT)", () => {
  it("creates an ID, waits for it, refuses others and overwrites", async () => {
    const created = await call("POST", "/_matrix/media/v1/create", { token: alice.accessToken });
    expect(created.status).toBe(200);
    const { content_uri, unused_expires_at } = created.body;
    expect(unused_expires_at).toBeGreaterThan(Date.now() + 23 * 3600_000);
    const id = content_uri.split("/").pop();
    const put = `/_matrix/media/v3/upload/${SERVER}/${id}`;

    const notYet = await raw("GET", dl(id, "?timeout_ms=0"), { token: bob.accessToken });
    expect(notYet.status).toBe(504);
    expect(await errcode(notYet)).toBe("M_NOT_YET_UPLOADED");

    const byBob = await raw("PUT", put, { token: bob.accessToken, body: "x" });
    expect(byBob.status).toBe(403);
    expect(await errcode(byBob)).toBe("M_FORBIDDEN");

    // A download that starts before the content arrives gets it once it does.
    const waiting = raw("GET", dl(id, "?timeout_ms=5000"), { token: bob.accessToken });
    await new Promise((r) => setTimeout(r, 100));
    const ok = await raw("PUT", `${put}?filename=late.txt`, { token: alice.accessToken, body: "late content", headers: { "content-type": "text/plain" } });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({});
    const got = await waiting;
    expect(got.status).toBe(200);
    expect(got.headers.get("content-disposition")).toBe('inline; filename="late.txt"');
    expect(await got.text()).toBe("late content");

    const again = await raw("PUT", put, { token: alice.accessToken, body: "overwrite" });
    expect(again.status).toBe(409);
    expect(await errcode(again)).toBe("M_CANNOT_OVERWRITE_MEDIA");
  });

  it("unknown, expired and other servers' IDs are 404 M_NOT_FOUND", async () => {
    for (const path of [`/_matrix/media/v3/upload/${SERVER}/neverCreated`, `/_matrix/media/v3/upload/other.example/abc`]) {
      const res = await raw("PUT", path, { token: alice.accessToken, body: "x" });
      expect(res.status, path).toBe(404);
      expect(await errcode(res)).toBe("M_NOT_FOUND");
    }
    const created = await call("POST", "/_matrix/media/v1/create", { token: alice.accessToken });
    const id = created.body.content_uri.split("/").pop();
    await env.DB.prepare("UPDATE media SET unused_expires_ts = ? WHERE media_id = ?").bind(Date.now() - 1, id).run();
    const res = await raw("PUT", `/_matrix/media/v3/upload/${SERVER}/${id}`, { token: alice.accessToken, body: "x" });
    expect(res.status).toBe(404);
    expect(await errcode(res)).toBe("M_NOT_FOUND");
    const dlExpired = await raw("GET", dl(id), { token: alice.accessToken });
    expect(dlExpired.status).toBe(404);
  });

  it("limits pending uploads per user with 429 M_LIMIT_EXCEEDED", async () => {
    const dave = await registerUser();
    const vars = { MEDIA_MAX_PENDING_UPLOADS: "2" };
    for (let i = 0; i < 2; i++) expect((await raw("POST", "/_matrix/media/v1/create", { token: dave.accessToken, vars })).status).toBe(200);
    const res = await raw("POST", "/_matrix/media/v1/create", { token: dave.accessToken, vars });
    expect(res.status).toBe(429);
    expect(await errcode(res)).toBe("M_LIMIT_EXCEEDED");
    // another user is not affected
    expect((await raw("POST", "/_matrix/media/v1/create", { token: bob.accessToken, vars })).status).toBe(200);
  });
});

describe("thumbnails", () => {
  let jpegId: string;
  beforeAll(async () => {
    jpegId = await upload(alice.accessToken, makeImage("jpeg", 1200, 900), "image/jpeg", "photo.jpg");
  });

  it("makes every spec size class from a 1 MP JPEG, decodable and of the right size", async () => {
    const expected: Array<[string, number, number]> = [
      ["width=32&height=32&method=crop", 32, 32],
      ["width=96&height=96&method=crop", 96, 96],
      ["width=320&height=240&method=scale", 320, 240],
      ["width=640&height=480&method=scale", 640, 480],
      ["width=800&height=600&method=scale", 800, 600],
      ["width=50&height=50&method=crop", 96, 96], // next class up, never smaller than asked
    ];
    for (const [q, w, h] of expected) {
      const t0 = Date.now();
      const res = await raw("GET", thumb(jpegId, q), { token: bob.accessToken });
      const ms = Date.now() - t0;
      expect(res.status, q).toBe(200);
      expect(res.headers.get("content-type")).toBe("image/jpeg");
      expect(res.headers.get("content-disposition")).toBe('inline; filename="thumbnail.jpeg"');
      expectSafetyHeaders(res);
      const img = decode(await res.arrayBuffer());
      expect([img.width, img.height], q).toEqual([w, h]);
      if (q.includes("800")) console.log(`thumbnail 1200x900 JPEG → 800x600: ${ms} ms (first, uncached)`);
    }
    // crop keeps the centre: the test image's top-left quadrant is green, so the 32x32 crop of a
    // 4:3 image has green in its top-left corner and blue on its right side
    const c = decode(await (await raw("GET", thumb(jpegId, "width=32&height=32&method=crop"), { token: bob.accessToken })).arrayBuffer());
    expect(c.pixel(2, 2)[1]).toBeGreaterThan(200);
    expect(c.pixel(30, 16)[2]).toBeGreaterThan(200);
  });

  it("caches generated thumbnails in R2 and serves the same bytes again", async () => {
    const a = await (await raw("GET", thumb(jpegId, "width=96&height=96&method=crop"), { token: alice.accessToken })).arrayBuffer();
    const cached = await env.MEDIA.list({ prefix: `thumbnails/${SERVER}/${jpegId}/` });
    expect(cached.objects.map((o) => o.key).sort()).toContain(`thumbnails/${SERVER}/${jpegId}/96x96-crop`);
    const t0 = Date.now();
    const b = await (await raw("GET", thumb(jpegId, "width=96&height=96&method=crop"), { token: alice.accessToken })).arrayBuffer();
    console.log(`cached thumbnail: ${Date.now() - t0} ms`);
    expect(new Uint8Array(b)).toEqual(new Uint8Array(a));
  });

  it("thumbnails PNG (as PNG), WebP and GIF (first frame) sources", async () => {
    const png = await upload(alice.accessToken, makeImage("png", 400, 200), "image/png");
    let res = await raw("GET", thumb(png, "width=96&height=96&method=crop"), { token: alice.accessToken });
    expect(res.headers.get("content-type")).toBe("image/png");
    let img = decode(await res.arrayBuffer());
    expect([img.width, img.height]).toEqual([96, 96]);

    const webp = await upload(alice.accessToken, makeImage("webp", 500, 500), "image/webp");
    res = await raw("GET", thumb(webp, "width=320&height=240"), { token: alice.accessToken });
    expect(res.headers.get("content-type")).toBe("image/png");
    img = decode(await res.arrayBuffer());
    expect([img.width, img.height]).toEqual([240, 240]); // scale keeps the aspect ratio

    const gif = await upload(alice.accessToken, makeGif(300, 200, 2), "image/gif");
    res = await raw("GET", thumb(gif, "width=96&height=96&method=crop&animated=true"), { token: alice.accessToken });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/png");
    img = decode(await res.arrayBuffer());
    expect([img.width, img.height]).toEqual([96, 96]);
    // first frame (coloured), not the second (all white)
    expect(img.pixel(5, 5)).not.toEqual([255, 255, 255]);
  });

  it("returns the original when it is already small enough or the request exceeds every class", async () => {
    const small = makeImage("png", 50, 40);
    const id = await upload(alice.accessToken, small, "image/png");
    const res = await raw("GET", thumb(id, "width=96&height=96&method=crop"), { token: alice.accessToken });
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(small);
    const huge = await raw("GET", thumb(jpegId, "width=2000&height=2000"), { token: alice.accessToken });
    const img = decode(await huge.arrayBuffer());
    expect([img.width, img.height]).toEqual([1200, 900]);
  });

  it("refuses non-images, bad parameters, and lies about content types", async () => {
    const text = await upload(alice.accessToken, "just text", "text/plain");
    let res = await raw("GET", thumb(text, "width=32&height=32"), { token: alice.accessToken });
    expect(res.status).toBe(400);
    expect(await errcode(res)).toBe("M_UNKNOWN");
    const fake = await upload(alice.accessToken, "<html>not a png</html>", "image/png");
    res = await raw("GET", thumb(fake, "width=32&height=32"), { token: alice.accessToken });
    expect(res.status).toBe(400);
    // a decompression bomb is refused from its header, before decoding
    const bomb = makeImage("png", 10, 10);
    new DataView(bomb.buffer, bomb.byteOffset).setUint32(16, 20000);
    new DataView(bomb.buffer, bomb.byteOffset).setUint32(20, 20000);
    const bombId = await upload(alice.accessToken, bomb, "image/png");
    res = await raw("GET", thumb(bombId, "width=32&height=32"), { token: alice.accessToken });
    expect(res.status).toBe(413);
    expect(await errcode(res)).toBe("M_TOO_LARGE");
    for (const q of ["width=-1&height=32", "width=32", "width=a&height=b", "width=32&height=32&method=stretch"]) {
      res = await raw("GET", thumb(jpegId, q), { token: alice.accessToken });
      expect(res.status, q).toBe(400);
      expect(await errcode(res)).toBe("M_INVALID_PARAM");
    }
  });
});

describe("legacy unauthenticated endpoints (frozen)", () => {
  it("/versions tells clients that authenticated media is available (MSC3916)", async () => {
    const res = await call("GET", "/_matrix/client/versions");
    expect(res.body.unstable_features["org.matrix.msc3916.stable"]).toBe(true);
  });

  it("refuse media uploaded after the freeze with 404 M_NOT_FOUND, serve older media", async () => {
    const id = await upload(alice.accessToken, makeImage("png", 200, 200), "image/png", "old.png");
    for (const path of [`/_matrix/media/v3/download/${SERVER}/${id}`, `/_matrix/media/v3/thumbnail/${SERVER}/${id}?width=32&height=32&method=crop`, `/_matrix/media/r0/download/${SERVER}/${id}`]) {
      const res = await raw("GET", path);
      expect(res.status, path).toBe(404);
      expect(await errcode(res)).toBe("M_NOT_FOUND");
    }
    const vars = { MEDIA_LEGACY_FREEZE_TS: String(Date.now() + 3600_000) };
    const res = await raw("GET", `/_matrix/media/v3/download/${SERVER}/${id}`, { vars });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-disposition")).toBe('inline; filename="old.png"');
    expectSafetyHeaders(res);
    await res.arrayBuffer();
    const t = await raw("GET", `/_matrix/media/v3/thumbnail/${SERVER}/${id}?width=32&height=32&method=crop`, { vars });
    expect(t.status).toBe(200);
    expect(decode(await t.arrayBuffer()).width).toBe(32);
  });
});

describe("quarantine and delete", () => {
  it("quarantined media is 404 to users and visible to admins; deleted media is gone", async () => {
    const id = await upload(alice.accessToken, makeImage("png", 300, 300), "image/png");
    await (await raw("GET", thumb(id, "width=32&height=32&method=crop"), { token: alice.accessToken })).arrayBuffer();
    const admin = await registerUser();
    await env.DB.prepare("UPDATE users SET admin = 1 WHERE user_id = ?").bind(admin.userId).run();

    expect(await quarantineMedia(env, SERVER, id, admin.userId)).toBe(true);
    for (const path of [dl(id), thumb(id, "width=32&height=32&method=crop")]) {
      for (const who of [alice, bob]) {
        const res = await raw("GET", path, { token: who.accessToken });
        expect(res.status, path).toBe(404);
        expect(await errcode(res)).toBe("M_NOT_FOUND");
      }
      const res = await raw("GET", path, { token: admin.accessToken });
      expect(res.status, path).toBe(200);
      await res.arrayBuffer();
    }
    // even before the freeze date, quarantined media is not served unauthenticated
    const legacy = await raw("GET", `/_matrix/media/v3/download/${SERVER}/${id}`, { vars: { MEDIA_LEGACY_FREEZE_TS: String(Date.now() + 3600_000) } });
    expect(legacy.status).toBe(404);

    expect(await quarantineMedia(env, SERVER, id, null, false)).toBe(true);
    expect((await raw("GET", dl(id), { token: bob.accessToken })).status).toBe(200);

    expect(await deleteMedia(env, SERVER, id)).toBe(true);
    expect(await env.MEDIA.head(`media/${SERVER}/${id}`)).toBeNull();
    expect((await env.MEDIA.list({ prefix: `thumbnails/${SERVER}/${id}/` })).objects).toHaveLength(0);
    const gone = await raw("GET", dl(id), { token: admin.accessToken });
    expect(gone.status).toBe(404);
    expect(await deleteMedia(env, SERVER, id)).toBe(false);
  });
});

describe("preview_url", () => {
  it("is switched off by default", async () => {
    const res = await raw("GET", "/_matrix/client/v1/media/preview_url?url=https%3A%2F%2Fmatrix.org%2F", { token: alice.accessToken });
    expect(res.status).toBe(404);
    expect(await errcode(res)).toBe("M_UNRECOGNIZED");
  });

  it("when on, refuses loopback URLs before fetching anything", async () => {
    const vars = { URL_PREVIEWS: "on" };
    for (const url of ["http://127.0.0.1:1/", "http://127.0.0.1/", "http://[::1]/", "http://localhost/"]) {
      const res = await raw("GET", `/_matrix/client/v1/media/preview_url?url=${encodeURIComponent(url)}`, { token: alice.accessToken, vars });
      expect(res.status, url).toBe(403);
      expect(await errcode(res)).toBe("M_FORBIDDEN");
    }
    const missing = await raw("GET", "/_matrix/client/v1/media/preview_url", { token: alice.accessToken, vars });
    expect(missing.status).toBe(400);
  });

  it("when on: missing url M_MISSING_PARAM, a non-http(s) url or bad ts M_INVALID_PARAM, no token 401", async () => {
    const vars = { URL_PREVIEWS: "on" };
    for (const base of ["/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"]) {
      const missing = await raw("GET", base, { token: alice.accessToken, vars });
      expect([missing.status, await errcode(missing)], base).toEqual([400, "M_MISSING_PARAM"]);
      for (const q of ["url=ftp%3A%2F%2Fexample.com%2F", "url=not%20a%20url", "url=https%3A%2F%2Fexample.com%2F&ts=soon"]) {
        const bad = await raw("GET", `${base}?${q}`, { token: alice.accessToken, vars });
        expect([bad.status, await errcode(bad)], q).toEqual([400, "M_INVALID_PARAM"]);
      }
      const anon = await raw("GET", `${base}?url=https%3A%2F%2Fexample.com%2F`, { vars });
      expect([anon.status, await errcode(anon)]).toEqual([401, "M_MISSING_TOKEN"]);
    }
  });
});
