// Pure content-repository helpers: media IDs, Content-Type / Content-Disposition, image sniffing,
// thumbnail planning, the SSRF guard and Open Graph extraction.
import { describe, expect, it } from "vitest";
import {
  chooseSizeClass,
  contentDisposition,
  isInlineSafe,
  isValidMediaId,
  normaliseUploadContentType,
  planThumbnail,
  sniffImage,
} from "../../src/core/media";
import { checkPreviewTarget, checkPreviewUrl, isBlockedHost, parseIPv6 } from "../../src/core/url-guard";
import { extractOpenGraph } from "../../src/core/opengraph";
import { makeGif, makeImage } from "./media-fixtures";

describe("media IDs and serving headers", () => {
  it("accepts only the spec's media-id alphabet", () => {
    expect(isValidMediaId("AQwafuaFswefuhsfAFAgsw")).toBe(true);
    expect(isValidMediaId("a_b-C9")).toBe(true);
    for (const bad of ["", "..", "a/b", "a%2Fb", "a.b", "ä", "a b", "x".repeat(256)]) expect(isValidMediaId(bad)).toBe(false);
  });

  it("serves inline only the safe list, compared without parameters or case", () => {
    expect(isInlineSafe("image/png")).toBe(true);
    expect(isInlineSafe("Text/Plain; charset=utf-8")).toBe(true);
    expect(isInlineSafe("text/html")).toBe(false);
    expect(isInlineSafe("image/svg+xml")).toBe(false);
    expect(isInlineSafe("application/javascript")).toBe(false);
    expect(isInlineSafe("application/octet-stream")).toBe(false);
  });

  it("keeps well-formed content types and defaults the rest to application/octet-stream", () => {
    expect(normaliseUploadContentType("image/png")).toBe("image/png");
    expect(normaliseUploadContentType("text/plain; charset=utf-8")).toBe("text/plain; charset=utf-8");
    expect(normaliseUploadContentType(undefined)).toBe("application/octet-stream");
    expect(normaliseUploadContentType("")).toBe("application/octet-stream");
    expect(normaliseUploadContentType("not a type")).toBe("application/octet-stream");
    expect(normaliseUploadContentType("text/html\u0000")).toBe("application/octet-stream");
  });

  it("puts the filename in Content-Disposition losslessly and safely", () => {
    expect(contentDisposition("inline")).toBe("inline");
    expect(contentDisposition("attachment", null)).toBe("attachment");
    expect(contentDisposition("inline", "cat.png")).toBe('inline; filename="cat.png"');
    expect(contentDisposition("attachment", "War and Peace.pdf")).toBe('attachment; filename="War and Peace.pdf"');
    // quotes, backslashes, non-ASCII and control characters go into RFC 8187 encoding
    expect(contentDisposition("attachment", 'a"b.txt')).toBe("attachment; filename*=utf-8''a%22b.txt");
    expect(contentDisposition("inline", "日本.png")).toBe("inline; filename*=utf-8''%E6%97%A5%E6%9C%AC.png");
    expect(contentDisposition("attachment", "x\r\nSet-Cookie: a=b")).toBe("attachment; filename*=utf-8''x%0D%0ASet-Cookie%3A%20a%3Db");
    expect(decodeURIComponent("%E6%97%A5%E6%9C%AC.png")).toBe("日本.png");
  });
});

describe("image sniffing", () => {
  it("reads format and size of real PNG, JPEG, WebP and GIF files", () => {
    expect(sniffImage(makeImage("png", 33, 17))).toEqual({ format: "png", width: 33, height: 17, animated: false });
    expect(sniffImage(makeImage("jpeg", 40, 30))).toEqual({ format: "jpeg", width: 40, height: 30, animated: false });
    expect(sniffImage(makeImage("webp", 21, 12))).toEqual({ format: "webp", width: 21, height: 12, animated: false });
    expect(sniffImage(makeGif(10, 8))).toEqual({ format: "gif", width: 10, height: 8, animated: false });
    expect(sniffImage(makeGif(10, 8, 2))?.animated).toBe(true);
  });

  it("refuses what is not an image or is cut short", () => {
    expect(sniffImage(new TextEncoder().encode("<html><script>alert(1)</script>"))).toBeUndefined();
    expect(sniffImage(new Uint8Array(0))).toBeUndefined();
    expect(sniffImage(makeImage("png", 10, 10).subarray(0, 12))).toBeUndefined();
    expect(sniffImage(new Uint8Array([0xff, 0xd8, 0xff, 0xd9]))).toBeUndefined();
  });
});

describe("thumbnail planning", () => {
  it("picks the smallest size class that covers the request, preferring the method", () => {
    expect(chooseSizeClass(32, 32, "crop")).toEqual({ width: 32, height: 32, method: "crop" });
    expect(chooseSizeClass(64, 64, "crop")).toEqual({ width: 96, height: 96, method: "crop" });
    expect(chooseSizeClass(200, 200, "crop")).toEqual({ width: 320, height: 240, method: "scale" });
    expect(chooseSizeClass(100, 100, "scale")).toEqual({ width: 320, height: 240, method: "scale" });
    expect(chooseSizeClass(800, 600, "scale")).toEqual({ width: 800, height: 600, method: "scale" });
    expect(chooseSizeClass(801, 600, "scale")).toBeUndefined();
  });

  it("scale keeps the aspect ratio inside the box; crop fills the box; never upscales", () => {
    const s320 = chooseSizeClass(320, 240, "scale");
    expect(planThumbnail({ width: 1000, height: 1000 }, s320)).toMatchObject({ kind: "resize", width: 240, height: 240 });
    expect(planThumbnail({ width: 1600, height: 900 }, s320)).toMatchObject({ kind: "resize", width: 320, height: 180 });
    expect(planThumbnail({ width: 300, height: 200 }, s320)).toEqual({ kind: "original" });
    const c96 = chooseSizeClass(96, 96, "crop");
    expect(planThumbnail({ width: 400, height: 200 }, c96)).toMatchObject({
      kind: "resize",
      resize: { width: 192, height: 96 },
      crop: { x: 48, y: 0, width: 96, height: 96 },
      width: 96,
      height: 96,
    });
    // one side already smaller than the box: crop without scaling
    expect(planThumbnail({ width: 500, height: 50 }, c96)).toMatchObject({ resize: { width: 500, height: 50 }, width: 96, height: 50 });
    expect(planThumbnail({ width: 90, height: 90 }, c96)).toEqual({ kind: "original" });
    expect(planThumbnail({ width: 5000, height: 5000 }, undefined)).toEqual({ kind: "original" });
  });
});

describe("SSRF guard", () => {
  const blocked = (u: string) => checkPreviewUrl(u).ok === false;

  it("blocks the addresses the issue names", () => {
    for (const u of ["http://127.0.0.1/", "http://[::1]/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/"]) {
      expect(blocked(u), u).toBe(true);
    }
  });

  it("blocks private, special and disguised addresses", () => {
    for (const u of [
      "http://127.1/",
      "http://2130706433/",
      "http://0x7f000001/",
      "http://017700000001/",
      "http://0.0.0.0/",
      "http://172.16.5.4/",
      "http://172.31.255.255/",
      "http://192.168.1.1/",
      "http://100.100.100.200/",
      "http://224.0.0.1/",
      "http://255.255.255.255/",
      "http://[::]/",
      "http://[::ffff:127.0.0.1]/",
      "http://[::ffff:a9fe:a9fe]/",
      "http://[::127.0.0.1]/",
      "http://[64:ff9b::a00:1]/",
      "http://[2002:7f00:1::]/",
      "http://[fe80::1%25eth0]/",
      "http://[fd00:ec2::254]/",
      "http://[ff02::1]/",
      "http://localhost/",
      "http://LOCALHOST./",
      "http://foo.localhost/",
      "http://metadata/",
      "http://metadata.google.internal/computeMetadata/v1/",
      "http://printer.local/",
      "http://router.home.arpa/",
    ]) {
      expect(blocked(u), u).toBe(true);
    }
  });

  it("blocks other schemes, ports and credentials", () => {
    for (const u of ["ftp://example.org/", "file:///etc/passwd", "gopher://example.org/", "http://example.org:8080/", "http://user:pw@example.org/", "not a url", "javascript:alert(1)"]) {
      expect(blocked(u), u).toBe(true);
    }
  });

  it("allows ordinary public URLs and addresses", () => {
    for (const u of ["https://matrix.org/", "http://example.org:80/page", "https://example.org:443/x?y=1", "http://93.184.216.34/", "http://[2606:4700::1111]/", "http://172.32.0.1/"]) {
      expect(checkPreviewUrl(u).ok, u).toBe(true);
    }
  });

  it("honours an extra deny list", () => {
    expect(isBlockedHost("evil.example", ["evil.example"])).toBeTruthy();
    expect(isBlockedHost("a.corp.example", [".corp.example"])).toBeTruthy();
    expect(isBlockedHost("good.example", [".corp.example"])).toBeUndefined();
  });

  it("applies the operator's blocklist and loopback switch (checkPreviewTarget)", () => {
    const policy = { blocklist: ["blocked.example", ".corp.example", "*.ads.example", "https://cdn.example/private/*", "https://q.example/a?b"], loopback: false };
    const ok = (u: string, p = policy) => checkPreviewTarget(u, p).ok;
    for (const u of ["https://blocked.example/", "https://BLOCKED.example./x", "https://corp.example/", "https://a.b.corp.example/", "https://x.ads.example/", "https://cdn.example/private/a.png", "https://q.example/a?b"]) {
      expect(ok(u), u).toBe(false);
    }
    for (const u of ["https://notblocked.example/", "https://www.blocked.example/", "https://notcorp.example/", "https://ads.example/", "https://cdn.example/public/a.png", "https://q.example/ab"]) {
      expect(ok(u), u).toBe(true);
    }
    // Loopback (any port) only when switched on; other private ranges and bad URLs never.
    const loop = { blocklist: [], loopback: true };
    for (const u of ["http://127.0.0.1:8080/", "https://[::1]:8448/x", "http://localhost:3000/"]) {
      expect([ok(u), ok(u, loop)], u).toEqual([false, true]);
    }
    for (const u of ["http://10.0.0.1/", "http://169.254.169.254/", "http://127.0.0.2/", "http://user:pw@127.0.0.1:1/", "ftp://127.0.0.1/"]) {
      expect(ok(u, loop), u).toBe(false);
    }
    expect(checkPreviewTarget("ftp://127.0.0.1/", loop)).toMatchObject({ ok: false, invalid: true });
  });

  it("parses IPv6 forms", () => {
    expect(Array.from(parseIPv6("::1")!)).toEqual([...new Array(15).fill(0), 1]);
    expect(Array.from(parseIPv6("::ffff:1.2.3.4")!.subarray(10))).toEqual([255, 255, 1, 2, 3, 4]);
    expect(parseIPv6("1::2::3")).toBeUndefined();
    expect(parseIPv6("12345::")).toBeUndefined();
    expect(parseIPv6("1:2:3:4:5:6:7:8:9")).toBeUndefined();
  });
});

describe("Open Graph extraction", () => {
  it("reads og: tags, falls back to title/description, resolves image URLs", () => {
    const html = `<!doctype html><html><head>
      <title>  Fallback &amp; title </title>
      <meta name="description" content="desc">
      <meta property="og:title" content="The &quot;real&quot; title">
      <meta content='/img/a.png' property='og:image'>
      <meta property="og:site_name" content="Site">
    </head><body>x</body></html>`;
    expect(extractOpenGraph(html, "https://example.org/post/1")).toEqual({
      "og:title": 'The "real" title',
      "og:image": "https://example.org/img/a.png",
      "og:site_name": "Site",
      "og:description": "desc",
    });
    expect(extractOpenGraph("<title>Only</title>", "https://e.org/")).toEqual({ "og:title": "Only" });
  });
});
