// URL previews with a fake fetch (no traffic leaves the test): Open Graph extraction, og:image
// stored as local media, every redirect hop re-checked by the SSRF guard, caching.
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { previewUrl, type Fetcher } from "../../src/services/url-preview";
import { parseConfig } from "../../src/config";
import { MatrixError } from "../../src/api/errors";
import { makeImage } from "./media-fixtures";

const cfg = parseConfig(env).media;
const base = { env, cfg, serverName: "test.local", userId: "@previewer:test.local" };

function fakeWeb(pages: Record<string, () => Response>): { fetcher: Fetcher; requested: string[] } {
  const requested: string[] = [];
  const fetcher: Fetcher = async (url, init) => {
    requested.push(url);
    expect(init.redirect).toBe("manual");
    const page = pages[url];
    if (!page) return new Response("not found", { status: 404 });
    return page();
  };
  return { fetcher, requested };
}

const html = (body: string) => () => new Response(body, { headers: { "content-type": "text/html; charset=utf-8" } });
const redirect = (to: string) => () => new Response(null, { status: 302, headers: { location: to } });

async function rejection(p: Promise<unknown>): Promise<MatrixError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof MatrixError) return e;
    throw e;
  }
  throw new Error("expected a MatrixError");
}

describe("previewUrl", () => {
  it("returns Open Graph data and stores og:image as local media", async () => {
    const png = makeImage("png", 64, 48);
    const { fetcher, requested } = fakeWeb({
      "https://blog.example/post": html(
        `<html><head><title>T</title><meta property="og:title" content="Post"><meta property="og:image" content="/i.png"></head></html>`,
      ),
      "https://blog.example/i.png": () => new Response(png, { headers: { "content-type": "image/png" } }),
    });
    const og = await previewUrl({ ...base, fetcher }, "https://blog.example/post");
    expect(og).toMatchObject({
      "og:title": "Post",
      "og:image:type": "image/png",
      "og:image:width": 64,
      "og:image:height": 48,
      "matrix:image:size": png.byteLength,
    });
    const mediaId = String(og["og:image"]).replace(/^mxc:\/\/test\.local\//, "");
    const stored = await env.MEDIA.get(`media/test.local/${mediaId}`);
    expect(new Uint8Array(await stored!.arrayBuffer())).toEqual(png);
    expect(requested).toEqual(["https://blog.example/post", "https://blog.example/i.png"]);

    // cached: no second fetch
    const again = await previewUrl({ ...base, fetcher }, "https://blog.example/post");
    expect(again).toEqual(og);
    expect(requested).toHaveLength(2);
  });

  it("stores og:image against the requesting user's media quota", async () => {
    const png = makeImage("png", 64, 48);
    const { fetcher, requested } = fakeWeb({
      "https://quota.example/post": html(`<meta property="og:title" content="Q"><meta property="og:image" content="/i.png">`),
      "https://quota.example/i.png": () => new Response(png, { headers: { "content-type": "image/png" } }),
      "https://quota.example/direct.png": () => new Response(png, { headers: { "content-type": "image/png" } }),
    });
    const small = { ...base, userId: "@quota-previewer:test.local", cfg: { ...cfg, userQuotaBytes: png.byteLength - 1 }, fetcher };
    for (const u of ["https://quota.example/post", "https://quota.example/direct.png"]) {
      const e = await rejection(previewUrl(small, u));
      expect([e.status, e.errcode]).toEqual([403, "M_FORBIDDEN"]);
    }
    // Nothing was cached from the refused attempt: a user with room gets the image.
    const og = await previewUrl({ ...small, userId: "@roomy:test.local", cfg: { ...cfg, userQuotaBytes: png.byteLength } }, "https://quota.example/post");
    expect(og["og:image"]).toMatch(/^mxc:\/\/test\.local\//);
    expect(requested.filter((r) => r === "https://quota.example/post")).toHaveLength(2);
  });

  it("re-checks redirect targets and never fetches a blocked one", async () => {
    const { fetcher, requested } = fakeWeb({
      "https://short.example/x": redirect("http://169.254.169.254/latest/meta-data/"),
      "https://short.example/y": redirect("http://[::1]:8008/_matrix/client/versions"),
    });
    for (const u of ["https://short.example/x", "https://short.example/y"]) {
      const e = await rejection(previewUrl({ ...base, fetcher }, u));
      expect(e.status).toBe(403);
      expect(e.errcode).toBe("M_FORBIDDEN");
    }
    expect(requested).toEqual(["https://short.example/x", "https://short.example/y"]);
  });

  it("drops an og:image that points inside, keeping the rest of the preview", async () => {
    const { fetcher, requested } = fakeWeb({
      "https://p.example/": html(`<meta property="og:title" content="T"><meta property="og:image" content="http://10.0.0.1/secret.png">`),
    });
    expect(await previewUrl({ ...base, fetcher }, "https://p.example/")).toEqual({ "og:title": "T" });
    expect(requested).toEqual(["https://p.example/"]);
  });

  it("stops after too many redirects and reports failures as 502", async () => {
    const { fetcher } = fakeWeb({
      "https://loop.example/1": redirect("/2"),
      "https://loop.example/2": redirect("/3"),
      "https://loop.example/3": redirect("/4"),
      "https://loop.example/4": redirect("/5"),
    });
    expect((await rejection(previewUrl({ ...base, fetcher }, "https://loop.example/1"))).status).toBe(502);
    expect((await rejection(previewUrl({ ...base, fetcher }, "https://loop.example/missing"))).status).toBe(502);
  });

  it("refuses blocked URLs without fetching", async () => {
    const { fetcher, requested } = fakeWeb({});
    for (const u of ["http://127.0.0.1/", "http://[::1]/", "http://10.0.0.1/", "http://169.254.169.254/", "http://[fd00::1]/"]) {
      expect((await rejection(previewUrl({ ...base, fetcher }, u))).errcode).toBe("M_FORBIDDEN");
    }
    expect(requested).toEqual([]);
  });
});

describe("previewUrl cache and ts (D1 url_previews)", () => {
  const url = "https://history.example/page";
  const row = (fetched: number, og: object) =>
    env.DB.prepare("INSERT INTO url_previews (url, fetched_ts, expires_ts, og) VALUES (?, ?, ?, ?)").bind(url, fetched, fetched + 3600_000, JSON.stringify(og)).run();

  it("ts picks the answer that was fresh then, else a newer one; now fetches once", async () => {
    const now = Date.now();
    const t0 = now - 3 * 86400_000;
    const t1 = now - 86400_000;
    await row(t0, { "og:title": "v1" });
    await row(t1, { "og:title": "v2" });
    const { fetcher, requested } = fakeWeb({ [url]: html(`<title>v3</title>`) });
    const at = (ts?: number) => previewUrl({ ...base, fetcher }, url, ts);
    expect(await at(t0 + 600_000)).toEqual({ "og:title": "v1" });
    // Expired by then: the next newer answer, not a fetch.
    expect(await at(t0 + 2 * 3600_000)).toEqual({ "og:title": "v2" });
    // Older than anything kept: the oldest answer.
    expect(await at(t0 - 86400_000)).toEqual({ "og:title": "v1" });
    expect(requested).toEqual([]);
    // Now: the newest answer is stale, so one fetch; later and future ts reuse it.
    expect(await at()).toEqual({ "og:title": "v3" });
    expect(await at(now + 86400_000)).toEqual({ "og:title": "v3" });
    expect(await at(t1 + 2 * 3600_000)).toEqual({ "og:title": "v3" });
    expect(requested).toEqual([url]);
  });

  it("answers older than the history window are swept when new ones are stored", async () => {
    const old = "https://swept.example/";
    await env.DB.prepare("INSERT INTO url_previews (url, fetched_ts, expires_ts, og) VALUES (?, ?, ?, '{}')").bind(old, 1000, 2000).run();
    const { fetcher } = fakeWeb({ "https://fresh.example/": html(`<title>fresh</title>`) });
    await previewUrl({ ...base, fetcher }, "https://fresh.example/");
    const left = await env.DB.prepare("SELECT COUNT(*) AS n FROM url_previews WHERE url = ?").bind(old).first<{ n: number }>();
    expect(left!.n).toBe(0);
  });

  it("the blocklist and PREVIEW_HTTP_LOOPBACK apply to every hop", async () => {
    const policyCfg = { ...cfg, urlPreviewBlocklist: [".tracker.example", "https://cdn.example/private/*"] };
    const { fetcher, requested } = fakeWeb({
      "https://ok.example/a": redirect("https://www.tracker.example/x"),
      "https://ok.example/b": html(`<meta property="og:title" content="B"><meta property="og:image" content="https://cdn.example/private/i.png">`),
      "https://ok.example/c": redirect("http://127.0.0.1:8080/"),
    });
    const ctx = { ...base, cfg: policyCfg, fetcher };
    expect((await rejection(previewUrl(ctx, "https://ok.example/a"))).errcode).toBe("M_FORBIDDEN");
    expect(await previewUrl(ctx, "https://ok.example/b")).toEqual({ "og:title": "B" });
    expect((await rejection(previewUrl(ctx, "https://cdn.example/private/other"))).errcode).toBe("M_FORBIDDEN");
    // Loopback is refused unless switched on (and then only loopback).
    expect((await rejection(previewUrl(ctx, "https://ok.example/c"))).errcode).toBe("M_FORBIDDEN");
    expect(requested).toEqual(["https://ok.example/a", "https://ok.example/b", "https://ok.example/c"]);
    const loop = fakeWeb({ "http://127.0.0.1:8080/": html(`<title>local</title>`) });
    const loopCtx = { ...base, cfg: { ...cfg, urlPreviewLoopback: true }, fetcher: loop.fetcher };
    expect(await previewUrl(loopCtx, "http://127.0.0.1:8080/")).toEqual({ "og:title": "local" });
    expect((await rejection(previewUrl(loopCtx, "http://10.0.0.1:8080/"))).errcode).toBe("M_FORBIDDEN");
  });

  it("a URL that is not http(s) is the client's mistake: 400 M_INVALID_PARAM", async () => {
    const { fetcher, requested } = fakeWeb({});
    for (const u of ["not a url", "ftp://example.com/", "javascript:alert(1)", "data:text/html,<title>x</title>"]) {
      const e = await rejection(previewUrl({ ...base, fetcher }, u));
      expect([e.status, e.errcode], u).toEqual([400, "M_INVALID_PARAM"]);
    }
    expect(requested).toEqual([]);
  });
});
