// Media quota under concurrency (issue 14, item 7): the quota is reserved in D1 by one conditional
// statement before any byte goes to R2, so parallel uploads cannot together exceed it.
import { describe, expect, it } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import app from "../../src/index";
import { BASE, SERVER, registerUser } from "./helpers";
import { storedBytes } from "../../src/services/media";

const QUOTA = 3000;
const vars = { MEDIA_USER_QUOTA_BYTES: String(QUOTA) };

async function send(method: string, path: string, token: string, body?: BodyInit): Promise<{ status: number; json: any }> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${token}` }, body }), { ...env, ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return { status: res.status, json: await res.json() };
}

/** A body without a Content-Length (a chunked upload). */
function chunked(n: number): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      c.enqueue(new Uint8Array(n));
      c.close();
    },
  });
}

describe("media quota under concurrent uploads", () => {
  it("POST /upload: 8 parallel 1000-byte uploads against a 3000-byte quota store at most 3000", async () => {
    const u = await registerUser();
    const rs = await Promise.all(Array.from({ length: 8 }, () => send("POST", "/_matrix/media/v3/upload", u.accessToken, new Uint8Array(1000))));
    const ok = rs.filter((r) => r.status === 200).length;
    expect(ok).toBe(3);
    for (const r of rs.filter((r) => r.status !== 200)) expect(r.json.errcode).toBe("M_FORBIDDEN");
    expect(await storedBytes(env, u.userId)).toBe(3000);
  });

  it("chunked uploads are reserved with their real size before the write", async () => {
    const u = await registerUser();
    const rs = await Promise.all(Array.from({ length: 6 }, () => send("POST", "/_matrix/media/v3/upload", u.accessToken, chunked(1000))));
    expect(rs.filter((r) => r.status === 200)).toHaveLength(3);
    expect(await storedBytes(env, u.userId)).toBe(3000);
  });

  it("create + PUT: parallel PUTs to reserved IDs store at most the quota, and a refused PUT can retry", async () => {
    const u = await registerUser();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const c = await send("POST", "/_matrix/media/v1/create", u.accessToken);
      expect(c.status).toBe(200);
      ids.push(c.json.content_uri.split("/").pop());
    }
    const rs = await Promise.all(ids.map((id) => send("PUT", `/_matrix/media/v3/upload/${SERVER}/${id}`, u.accessToken, new Uint8Array(1000))));
    expect(rs.filter((r) => r.status === 200)).toHaveLength(3);
    expect(await storedBytes(env, u.userId)).toBe(3000);
    // A refused PUT released its claim: the ID is not stuck as "being uploaded" (a 1-byte retry
    // is refused for quota, not with 409), and an empty upload still fits.
    const refused = ids[rs.findIndex((r) => r.status !== 200)];
    const retry = await send("PUT", `/_matrix/media/v3/upload/${SERVER}/${refused}`, u.accessToken, new Uint8Array(1));
    expect(retry.status).toBe(403);
    expect(retry.json.errcode).toBe("M_FORBIDDEN");
    const zero = await send("PUT", `/_matrix/media/v3/upload/${SERVER}/${refused}`, u.accessToken, new Uint8Array(0));
    expect(zero.status).toBe(200);
  });

  it("a reservation left by an upload that died stops counting after 15 minutes and is purged", async () => {
    const u = await registerUser();
    const old = Date.now() - 16 * 60_000;
    await env.DB.prepare(
      "INSERT INTO media (server_name, media_id, uploader, r2_key, created_ts, size, upload_started_ts) VALUES (?, 'diedmidupload', ?, 'media/x/diedmidupload', ?, ?, ?)",
    )
      .bind(SERVER, u.userId, old, QUOTA, old)
      .run();
    expect(await storedBytes(env, u.userId)).toBe(0);
    expect((await send("POST", "/_matrix/media/v3/upload", u.accessToken, new Uint8Array(1000))).status).toBe(200);
    // /create purges it.
    expect((await send("POST", "/_matrix/media/v1/create", u.accessToken)).status).toBe(200);
    expect(await env.DB.prepare("SELECT 1 FROM media WHERE media_id = 'diedmidupload'").first()).toBeNull();
  });
});
