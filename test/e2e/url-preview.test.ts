// URL previews end to end: a real server (`npm start` with URL_PREVIEWS=on and
// PREVIEW_HTTP_LOOPBACK=true) previews pages from a small web site written here (plain Node HTTP
// on 127.0.0.1) that counts every request, so caching and truncation are seen from outside.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { PhotonImage } from "@cf-wasm/photon/node";
import { freePort, startServer, type RunningServer } from "./harness";
import { registerUser, type Json, type User } from "./client";

function testPng(width: number, height: number): Uint8Array {
  const px = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) px.set([(i * 7) & 0xff, 90, 200, 255], i * 4);
  const img = new PhotonImage(px, width, height);
  const bytes = img.get_bytes();
  img.free();
  return bytes;
}

const png = testPng(64, 48);
const HUGE_LIMIT = 64 * 1024 * 1024;

class Site {
  server!: Server;
  port = 0;
  hits = new Map<string, number>();
  /** Bytes of /huge.html written before the reader went away. */
  hugeWritten = 0;
  hanging: ServerResponse[] = [];

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(this.port, "127.0.0.1", () => r()));
  }
  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? "/").split("?")[0];
    this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
    const html = (body: string) => res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(body);
    switch (path) {
      case "/og.html":
      case "/og-cached.html":
        return html(
          `<!doctype html><html><head><title>Fallback title</title>
          <meta property="og:title" content="An &amp; Open Graph page">
          <meta property="og:description" content="What it is about">
          <meta property="og:site_name" content="Test Site">
          <meta property="og:image" content="/img.png">
          <meta property="og:image:width" content="999">
          </head><body>hello</body></html>`,
        );
      case "/title.html":
        return html(`<html><head><title>  Only a
          title </title><meta name="description" content="Described"></head><body></body></html>`);
      case "/img.png":
        return res.writeHead(200, { "content-type": "image/png" }).end(png);
      case "/file.pdf":
        return res.writeHead(200, { "content-type": "application/pdf" }).end("%PDF-1.4 not really");
      case "/to-og":
        return res.writeHead(302, { location: "/og.html" }).end();
      case "/to-private":
        return res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/" }).end();
      case "/to-private-image.html":
        return html(`<meta property="og:title" content="Inside"><meta property="og:image" content="http://10.0.0.1/secret.png">`);
      case "/hang.html":
        res.writeHead(200, { "content-type": "text/html" });
        res.write("<html><head><title>slow");
        this.hanging.push(res);
        return;
      case "/huge.html": {
        // The tags first, then padding without end (bounded at HUGE_LIMIT): only a reader that
        // stops early gets an answer at all.
        res.writeHead(200, { "content-type": "text/html" });
        this.hugeWritten = 0;
        res.write(`<html><head><meta property="og:title" content="Huge"></head><body>`);
        const chunk = Buffer.alloc(64 * 1024, "<p>padding</p>\n");
        const pump = () => {
          while (this.hugeWritten < HUGE_LIMIT && !res.destroyed) {
            this.hugeWritten += chunk.length;
            if (!res.write(chunk)) return void res.once("drain", pump);
          }
          res.end();
        };
        res.on("close", () => res.destroy());
        return pump();
      }
      default:
        res.writeHead(404).end("no");
    }
  }
  async stop(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

const site = new Site();
let server: RunningServer;
let alice: User;

beforeAll(async () => {
  await site.start();
  server = await startServer({ URL_PREVIEWS: "on", PREVIEW_HTTP_LOOPBACK: "true", URL_PREVIEW_BLOCKLIST: "blocked.example,.ads.example" });
  alice = await registerUser(server, `alice${Date.now()}`, "preview-e2e-pw");
});
afterAll(async () => {
  await server?.stop();
  await site?.stop();
});

async function preview(url: string | undefined, opts: { ts?: number; token?: string | null; legacy?: boolean } = {}): Promise<{ status: number; body: Json }> {
  const q = new URLSearchParams();
  if (url !== undefined) q.set("url", url);
  if (opts.ts !== undefined) q.set("ts", String(opts.ts));
  const path = opts.legacy ? "/_matrix/media/v3/preview_url" : "/_matrix/client/v1/media/preview_url";
  const token = opts.token === undefined ? alice.token : opts.token;
  const r = await fetch(`${server.baseUrl}${path}?${q}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: r.status, body: (await r.json()) as Json };
}

describe("preview_url against a real web server", () => {
  it("an Open Graph page: tags, og:image stored as media and served back by its mxc URI", async () => {
    const { status, body } = await preview(`${site.base}/og.html`);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      "og:title": "An & Open Graph page",
      "og:description": "What it is about",
      "og:site_name": "Test Site",
      "og:image:type": "image/png",
      // The image's real size, not the page's claim.
      "og:image:width": 64,
      "og:image:height": 48,
      "matrix:image:size": png.byteLength,
    });
    const mxc = body["og:image"] as string;
    expect(mxc).toMatch(new RegExp(`^mxc://${server.serverName.replace(/[.:]/g, "\\$&")}/[A-Za-z0-9_-]+$`));
    const dl = await fetch(`${server.baseUrl}/_matrix/client/v1/media/download/${mxc.slice("mxc://".length)}`, {
      headers: { authorization: `Bearer ${alice.token}` },
    });
    expect(dl.status).toBe(200);
    expect(dl.headers.get("content-type")).toBe("image/png");
    expect(new Uint8Array(await dl.arrayBuffer())).toEqual(png);
  });

  it("a page with only <title> and a description meta", async () => {
    const { status, body } = await preview(`${site.base}/title.html`, { legacy: true });
    expect(status).toBe(200);
    expect(body).toEqual({ "og:title": "Only a title", "og:description": "Described" });
  });

  it("a direct image URL is stored as media; other content answers an empty preview", async () => {
    const img = await preview(`${site.base}/img.png?direct`);
    expect(img.status).toBe(200);
    expect(img.body).toMatchObject({ "og:image:type": "image/png", "og:image:width": 64, "matrix:image:size": png.byteLength });
    const pdf = await preview(`${site.base}/file.pdf`);
    expect(pdf).toEqual({ status: 200, body: {} });
  });

  it("a huge page is read only up to the limit", async () => {
    const { status, body } = await preview(`${site.base}/huge.html`);
    expect(status).toBe(200);
    expect(body).toEqual({ "og:title": "Huge" });
    // 1 MiB read, then the connection dropped (socket buffers let a few MiB more out).
    expect(site.hugeWritten).toBeLessThan(HUGE_LIMIT / 4);
  });

  it("redirects are followed, and a redirect to a private address is refused", async () => {
    const ok = await preview(`${site.base}/to-og`);
    expect(ok.status).toBe(200);
    expect(ok.body["og:title"]).toBe("An & Open Graph page");
    const bad = await preview(`${site.base}/to-private`);
    expect(bad.status).toBe(403);
    expect(bad.body.errcode).toBe("M_FORBIDDEN");
    // An og:image inside the network is dropped; the rest of the preview stays.
    const img = await preview(`${site.base}/to-private-image.html`);
    expect(img).toEqual({ status: 200, body: { "og:title": "Inside" } });
  });

  it("the answer is cached: repeated requests (with or without ts) do not fetch again", async () => {
    const url = `${site.base}/og-cached.html`;
    const first = await preview(url);
    expect(first.status).toBe(200);
    expect(site.hits.get("/og-cached.html")).toBe(1);
    const images = site.hits.get("/img.png") ?? 0;
    for (const ts of [undefined, Date.now(), Date.now() + 3600_000, Date.now() - 2 * 86400_000, 0]) {
      const again = await preview(url, { ts });
      expect(again, `ts=${ts}`).toEqual(first);
    }
    expect(site.hits.get("/og-cached.html")).toBe(1);
    expect(site.hits.get("/img.png") ?? 0).toBe(images);
  });

  it("a page that never finishes fails within the time bound", async () => {
    const started = Date.now();
    const { status, body } = await preview(`${site.base}/hang.html`);
    expect(status).toBe(502);
    expect(body.errcode).toBe("M_UNKNOWN");
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it("parameters, the blocklist and authentication", async () => {
    expect(await preview(undefined)).toMatchObject({ status: 400, body: { errcode: "M_MISSING_PARAM" } });
    for (const bad of ["not a url", "ftp://example.com/file", "javascript:alert(1)", "/relative/path"]) {
      expect(await preview(bad), bad).toMatchObject({ status: 400, body: { errcode: "M_INVALID_PARAM" } });
    }
    expect(await preview(`${site.base}/og.html`, { ts: "soon" as unknown as number })).toMatchObject({ status: 400, body: { errcode: "M_INVALID_PARAM" } });
    for (const blocked of ["https://blocked.example/page", "https://www.ads.example/x", "https://ads.example/"]) {
      expect(await preview(blocked), blocked).toMatchObject({ status: 403, body: { errcode: "M_FORBIDDEN" } });
    }
    // Only loopback is opened by PREVIEW_HTTP_LOOPBACK; other private addresses stay closed.
    expect(await preview("http://10.1.2.3/")).toMatchObject({ status: 403, body: { errcode: "M_FORBIDDEN" } });
    expect(await preview(`${site.base}/og.html`, { token: null })).toMatchObject({ status: 401, body: { errcode: "M_MISSING_TOKEN" } });
    expect(await preview(`${site.base}/og.html`, { token: null, legacy: true })).toMatchObject({ status: 401 });
  });
});
