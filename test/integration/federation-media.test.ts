// Federation media in workerd (spec: Server-Server API "Content Repository"):
//  - serving GET /_matrix/federation/v1/media/download|thumbnail as multipart/mixed (X-Matrix
//    required, unknown/quarantined/pending media);
//  - fetching another server's media for a local client through /_matrix/client/v1/media, with
//    the remote server simulated by a fake federation fetch (no traffic leaves the test).
import { describe, it, expect, beforeAll, afterEach } from "vitest";
import { SELF, env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { PhotonImage } from "@cf-wasm/photon";
import app from "../../src/index";
import { BASE, SERVER, offline, registerUser, seedRemoteKey, type TestUser } from "./helpers";
import { makeImage } from "../unit/media-fixtures";
import type { SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { setFederationFetch } from "../../src/services/federation/client";
import { multipartEnvelope, parseFederationMedia } from "../../src/core/multipart";
import { MEDIA_CSP } from "../../src/core/media";
import { getMedia, quarantineMedia } from "../../src/services/media";

const REMOTE = "remote.test";
let remoteKey: SigningKey;
let alice: TestUser;

async function fedGet(path: string, opts: { sign?: boolean } = {}): Promise<Response> {
  const uri = `/_matrix/federation${path}`;
  const headers: Record<string, string> = {};
  if (opts.sign !== false) headers.authorization = await signRequest(remoteKey, { method: "GET", uri, origin: REMOTE, destination: SERVER });
  return SELF.fetch(`${BASE}${uri}`, { headers });
}

async function upload(token: string, body: Uint8Array | string, contentType: string, filename?: string): Promise<string> {
  const q = filename ? `?filename=${encodeURIComponent(filename)}` : "";
  const res = await SELF.fetch(`${BASE}/_matrix/media/v3/upload${q}`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": contentType }, body });
  expect(res.status).toBe(200);
  return ((await res.json()) as { content_uri: string }).content_uri.split("/").pop()!;
}

/** A client request, through SELF or (with vars) through the app with extra configuration. */
async function clientGet(path: string, token: string, vars?: Record<string, string>): Promise<Response> {
  const req = new Request(`${BASE}${path}`, { headers: { authorization: `Bearer ${token}` } });
  if (!vars) return SELF.fetch(req);
  const ctx = createExecutionContext();
  const res = await app.fetch(req, { ...env, ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

const errcode = async (res: Response) => ((await res.json()) as { errcode: string }).errcode;

function decode(bytes: ArrayBuffer | Uint8Array) {
  const img = PhotonImage.new_from_byteslice(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  const out = { width: img.get_width(), height: img.get_height() };
  img.free();
  return out;
}

beforeAll(async () => {
  setFederationFetch(offline);
  remoteKey = await seedRemoteKey(REMOTE);
  alice = await registerUser();
});

afterEach(() => setFederationFetch(offline));

describe("serving GET /_matrix/federation/v1/media/download/{mediaId}", () => {
  it("answers multipart/mixed: {} metadata, then the bytes with type and disposition", async () => {
    const bytes = new Uint8Array(50_000).map((_, i) => (i * 7 + (i >> 9)) & 0xff);
    bytes.set(new TextEncoder().encode("\r\n--\r\n"), 10);
    const id = await upload(alice.accessToken, bytes, "application/octet-stream", "blob.bin");
    const res = await fedGet(`/v1/media/download/${id}`);
    expect(res.status).toBe(200);
    const ct = res.headers.get("content-type")!;
    expect(ct).toMatch(/^multipart\/mixed; boundary=[A-Za-z0-9]+$/);
    const buf = new Uint8Array(await res.arrayBuffer());
    expect(Number(res.headers.get("content-length"))).toBe(buf.length);
    // The raw shape, as the spec describes it.
    const text = new TextDecoder("latin1").decode(buf.subarray(0, 200));
    const boundary = ct.split("boundary=")[1];
    expect(text.startsWith(`--${boundary}\r\nContent-Type: application/json\r\n\r\n{}\r\n--${boundary}\r\n`)).toBe(true);
    const parsed = parseFederationMedia(ct, buf);
    expect(parsed.kind).toBe("bytes");
    if (parsed.kind !== "bytes") return;
    expect(parsed.metadata).toEqual({});
    expect(parsed.contentType).toBe("application/octet-stream");
    expect(parsed.filename).toBe("blob.bin");
    expect(Array.from(parsed.body)).toEqual(Array.from(bytes));
  });

  it("requires a valid X-Matrix signature (401)", async () => {
    const id = await upload(alice.accessToken, "hello", "text/plain");
    const res = await fedGet(`/v1/media/download/${id}`, { sign: false });
    expect(res.status).toBe(401);
    expect(await errcode(res)).toBe("M_UNAUTHORIZED");
    const forged = await SELF.fetch(`${BASE}/_matrix/federation/v1/media/download/${id}`, {
      headers: { authorization: `X-Matrix origin="${REMOTE}",destination="${SERVER}",key="${remoteKey.keyId}",sig="AAAA"` },
    });
    expect(forged.status).toBe(401);
  });

  it("unknown, malformed and quarantined media are 404 M_NOT_FOUND; pending is 504 M_NOT_YET_UPLOADED", async () => {
    for (const path of ["/v1/media/download/doesNotExist", "/v1/media/download/bad.id", "/v1/media/thumbnail/doesNotExist?width=32&height=32"]) {
      const res = await fedGet(path);
      expect(res.status, path).toBe(404);
      expect(await errcode(res)).toBe("M_NOT_FOUND");
    }
    const id = await upload(alice.accessToken, makeImage("png", 64, 64), "image/png");
    expect(await quarantineMedia(env, SERVER, id, alice.userId)).toBe(true);
    for (const path of [`/v1/media/download/${id}`, `/v1/media/thumbnail/${id}?width=32&height=32`]) {
      const res = await fedGet(path);
      expect(res.status, path).toBe(404);
      expect(await errcode(res)).toBe("M_NOT_FOUND");
    }
    const created = await SELF.fetch(`${BASE}/_matrix/media/v1/create`, { method: "POST", headers: { authorization: `Bearer ${alice.accessToken}` } });
    const pending = ((await created.json()) as { content_uri: string }).content_uri.split("/").pop()!;
    const res = await fedGet(`/v1/media/download/${pending}?timeout_ms=0`);
    expect(res.status).toBe(504);
    expect(await errcode(res)).toBe("M_NOT_YET_UPLOADED");
  });

  it("serves thumbnails as multipart/mixed with a real resized image", async () => {
    const id = await upload(alice.accessToken, makeImage("jpeg", 400, 300), "image/jpeg");
    const res = await fedGet(`/v1/media/thumbnail/${id}?width=96&height=96&method=crop`);
    expect(res.status).toBe(200);
    const parsed = parseFederationMedia(res.headers.get("content-type"), new Uint8Array(await res.arrayBuffer()));
    expect(parsed.kind).toBe("bytes");
    if (parsed.kind !== "bytes") return;
    expect(parsed.contentType).toBe("image/jpeg");
    expect(decode(parsed.body)).toEqual({ width: 96, height: 96 });
    const bad = await fedGet(`/v1/media/thumbnail/${id}?width=0&height=10`);
    expect(bad.status).toBe(400);
  });
});

// ---------------------------------------------------------------------------------------------

/** A fake remote.test: well-known 404 (so port 8448), media served from `store`. */
function fakeRemote(store: Record<string, () => Response | Promise<Response>>, seen: string[] = []): typeof fetch {
  return async (input, init) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input.toString() : input.url);
    seen.push(url.toString());
    if (url.pathname.startsWith("/.well-known/")) return new Response("", { status: 404 });
    const handler = store[url.host + url.pathname];
    if (!handler) return new Response(JSON.stringify({ errcode: "M_NOT_FOUND", error: "nope" }), { status: 404 });
    if (url.pathname.startsWith("/_matrix/federation/")) {
      const auth = new Headers(init?.headers).get("authorization") ?? "";
      if (!auth.startsWith("X-Matrix ") || !auth.includes(`origin="${SERVER}"`) || !auth.includes(`destination="${REMOTE}"`)) {
        return new Response(JSON.stringify({ errcode: "M_UNAUTHORIZED" }), { status: 401 });
      }
    }
    return handler();
  };
}

function multipart(body: Uint8Array, headers: Record<string, string>): Response {
  const e = multipartEnvelope("remoteBoundary42", {}, headers);
  const all = new Uint8Array(e.head.length + body.length + e.tail.length);
  all.set(e.head);
  all.set(body, e.head.length);
  all.set(e.tail, e.head.length + body.length);
  return new Response(all, { headers: { "content-type": e.contentType } });
}

const remotePath = (id: string) => `${REMOTE}:8448/_matrix/federation/v1/media/download/${id}`;
const clientDl = (id: string, server = REMOTE) => `/_matrix/client/v1/media/download/${server}/${id}`;

describe("remote media for local clients", () => {
  it("fetches over federation once, caches in R2 + D1, serves with the safe headers", async () => {
    const bytes = new Uint8Array(5000).map((_, i) => (i * 13) & 0xff);
    const seen: string[] = [];
    setFederationFetch(fakeRemote({ [remotePath("remoteBlob1")]: () => multipart(bytes, { "Content-Type": "text/html", "Content-Disposition": `attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html` }) }, seen));
    const res = await clientGet(clientDl("remoteBlob1"), alice.accessToken);
    expect(res.status).toBe(200);
    expect(Array.from(new Uint8Array(await res.arrayBuffer()))).toEqual(Array.from(bytes));
    expect(res.headers.get("content-security-policy")).toBe(MEDIA_CSP);
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("cross-origin-resource-policy")).toBe("cross-origin");
    // text/html from a remote server is never inline either.
    expect(res.headers.get("content-disposition")).toBe("attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html");
    const row = await getMedia(env, REMOTE, "remoteBlob1");
    expect(row).toMatchObject({ serverName: REMOTE, uploader: null, size: 5000, r2Key: `media/${REMOTE}/remoteBlob1`, quarantined: false });
    expect(await env.MEDIA.head(`media/${REMOTE}/remoteBlob1`)).not.toBeNull();
    const fetches = seen.filter((u) => u.includes("/media/download/")).length;
    expect(fetches).toBe(1);
    // Second time: from the cache, and ranges work as for local media.
    const again = await SELF.fetch(`${BASE}${clientDl("remoteBlob1")}`, { headers: { authorization: `Bearer ${alice.accessToken}`, range: "bytes=0-9" } });
    expect(again.status).toBe(206);
    expect(Array.from(new Uint8Array(await again.arrayBuffer()))).toEqual(Array.from(bytes.subarray(0, 10)));
    expect(seen.filter((u) => u.includes("/media/download/")).length).toBe(1);
  });

  it("thumbnails remote images locally from the cached original", async () => {
    setFederationFetch(fakeRemote({ [remotePath("remoteImg1")]: () => multipart(makeImage("png", 300, 200), { "Content-Type": "image/png" }) }));
    const res = await clientGet(`/_matrix/client/v1/media/thumbnail/${REMOTE}/remoteImg1?width=32&height=32&method=crop`, alice.accessToken);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(decode(await res.arrayBuffer())).toEqual({ width: 32, height: 32 });
    const listed = await env.MEDIA.list({ prefix: `thumbnails/${REMOTE}/remoteImg1/` });
    expect(listed.objects.map((o) => o.key)).toEqual([`thumbnails/${REMOTE}/remoteImg1/32x32-crop`]);
  });

  it("follows a Location part (and refuses one pointing at a private address)", async () => {
    const bytes = new TextEncoder().encode("from the cdn");
    setFederationFetch(
      fakeRemote({
        [remotePath("viaCdn")]: () => multipart(new Uint8Array(0), { Location: "https://cdn.remote.test/blob/viaCdn" }),
        "cdn.remote.test/blob/viaCdn": () => new Response(bytes, { headers: { "content-type": "text/plain", "content-disposition": 'inline; filename="cdn.txt"' } }),
        [remotePath("viaPrivate")]: () => multipart(new Uint8Array(0), { Location: "http://169.254.169.254/latest/meta-data" }),
      }),
    );
    const res = await clientGet(clientDl("viaCdn"), alice.accessToken);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("from the cdn");
    expect(res.headers.get("content-disposition")).toBe('inline; filename="cdn.txt"');
    const priv = await clientGet(clientDl("viaPrivate"), alice.accessToken);
    expect(priv.status).toBe(502);
    expect(await getMedia(env, REMOTE, "viaPrivate")).toBeNull();
  });

  it("maps remote failures: 404 → 404, garbage → 502, too large → 502 M_TOO_LARGE, unreachable → 502", async () => {
    setFederationFetch(
      fakeRemote({
        [remotePath("garbage")]: () => new Response("not multipart", { headers: { "content-type": "text/plain" } }),
        [remotePath("truncated")]: () => new Response("--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\r\nabc", { headers: { "content-type": "multipart/mixed; boundary=b" } }),
        [remotePath("big")]: () => multipart(new Uint8Array(5000), { "Content-Type": "application/octet-stream" }),
        [remotePath("pending")]: () => new Response(JSON.stringify({ errcode: "M_NOT_YET_UPLOADED", error: "wait" }), { status: 504 }),
      }),
    );
    const missing = await clientGet(clientDl("nothingHere"), alice.accessToken);
    expect(missing.status).toBe(404);
    expect(await errcode(missing)).toBe("M_NOT_FOUND");
    for (const id of ["garbage", "truncated"]) {
      const r = await clientGet(clientDl(id), alice.accessToken);
      expect(r.status, id).toBe(502);
      expect(await errcode(r)).toBe("M_UNKNOWN");
    }
    const big = await clientGet(clientDl("big"), alice.accessToken, { MAX_UPLOAD_BYTES: "1000" });
    expect(big.status).toBe(502);
    expect(await errcode(big)).toBe("M_TOO_LARGE");
    const pending = await clientGet(clientDl("pending"), alice.accessToken);
    expect(pending.status).toBe(504);
    expect(await errcode(pending)).toBe("M_NOT_YET_UPLOADED");
    setFederationFetch(offline);
    const down = await clientGet(clientDl("unreachable"), alice.accessToken);
    expect(down.status).toBe(502);
    for (const id of ["nothingHere", "garbage", "truncated", "big", "pending", "unreachable"]) expect(await getMedia(env, REMOTE, id)).toBeNull();
  });

  it("quarantine applies to cached remote media (404 to users, visible to admins); legacy endpoints never fetch", async () => {
    setFederationFetch(fakeRemote({ [remotePath("toQuarantine")]: () => multipart(new TextEncoder().encode("bad"), { "Content-Type": "text/plain" }) }));
    expect((await clientGet(clientDl("toQuarantine"), alice.accessToken)).status).toBe(200);
    const admin = await registerUser();
    await env.DB.prepare("UPDATE users SET admin = 1 WHERE user_id = ?").bind(admin.userId).run();
    expect(await quarantineMedia(env, REMOTE, "toQuarantine", admin.userId)).toBe(true);
    const res = await clientGet(clientDl("toQuarantine"), alice.accessToken);
    expect(res.status).toBe(404);
    expect(await errcode(res)).toBe("M_NOT_FOUND");
    expect((await clientGet(clientDl("toQuarantine"), admin.accessToken)).status).toBe(200);
    // Unauthenticated legacy download of remote media: 404, and no federation request.
    const seen: string[] = [];
    setFederationFetch(fakeRemote({}, seen));
    const legacy = await SELF.fetch(`${BASE}/_matrix/media/v3/download/${REMOTE}/somethingElse`);
    expect(legacy.status).toBe(404);
    expect(seen).toEqual([]);
  });

  it("refuses malformed server names and media IDs before any lookup", async () => {
    const seen: string[] = [];
    setFederationFetch(fakeRemote({}, seen));
    for (const p of [clientDl("a.b"), clientDl("ok", "bad_server!"), `/_matrix/client/v1/media/download/${REMOTE}/a%2F..%2Fb`]) {
      const r = await clientGet(p, alice.accessToken);
      expect(r.status, p).toBe(404);
    }
    expect(seen).toEqual([]);
  });
});
