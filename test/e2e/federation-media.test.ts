// Remote media and spaces across two real Lattice servers on loopback (A and B,
// FEDERATION_HTTP_LOOPBACK): a user on B downloads and thumbnails media uploaded on A through B's
// authenticated /_matrix/client/v1/media endpoints (B fetches it over federation as
// multipart/mixed and caches it), and B's client walks a space hosted on A with /hierarchy
// (children B does not hold come from A's federation /hierarchy). Every wait is bounded.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { deflateSync } from "node:zlib";
import { startServer, freePort, type RunningServer } from "./harness";
import { ok, registerUser, type User } from "./client";

let a: RunningServer;
let b: RunningServer;

let alice: User;
let bob: User;

const enc = encodeURIComponent;

const register = (server: RunningServer, username: string) => registerUser(server, username, "pw-fed-media");

const get = (u: User, path: string) => fetch(`${u.server.baseUrl}${path}`, { headers: { authorization: `Bearer ${u.token}` } });

/** A real RGB PNG (Node's zlib for the IDAT), a gradient so resizing has something to do. */
function makePng(width: number, height: number): Uint8Array {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Uint8Array) => {
    let c = 0xffffffff;
    for (const x of buf) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Uint8Array) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    Buffer.from(data).copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const o = y * (width * 3 + 1) + 1 + x * 3;
      raw[o] = (x * 255) / width;
      raw[o + 1] = (y * 255) / height;
      raw[o + 2] = 128;
    }
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return new Uint8Array(Buffer.concat([sig, chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", new Uint8Array(0))]));
}

/** Width and height from a PNG's IHDR (or a JPEG's SOF0/2). */
function imageSize(bytes: Uint8Array): { width: number; height: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes[0] === 0x89 && bytes[1] === 0x50) return { width: v.getUint32(16), height: v.getUint32(20) };
  for (let i = 2; i < bytes.length - 9; ) {
    const marker = bytes[i + 1];
    if (marker === 0xc0 || marker === 0xc2) return { height: v.getUint16(i + 5), width: v.getUint16(i + 7) };
    i += 2 + v.getUint16(i + 2);
  }
  throw new Error("not a PNG or JPEG");
}

async function upload(u: User, bytes: Uint8Array, type: string, filename: string): Promise<string> {
  const r = await fetch(`${u.server.baseUrl}/_matrix/media/v3/upload?filename=${enc(filename)}`, {
    method: "POST",
    headers: { authorization: `Bearer ${u.token}`, "content-type": type },
    body: bytes,
  });
  const json = (await r.json()) as { content_uri: string };
  expect(r.status, JSON.stringify(json)).toBe(200);
  return json.content_uri;
}

beforeAll(async () => {
  const [pa, pb] = [await freePort(), await freePort()];
  [a, b] = await Promise.all([
    startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pa }),
    startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pb }),
  ]);
  [alice, bob] = await Promise.all([register(a, "alice"), register(b, "bob")]);
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

describe("remote media across two servers", () => {
  it("a user on B downloads and thumbnails media uploaded on A, through B", async () => {
    const png = makePng(200, 150);
    const mxc = await upload(alice, png, "image/png", "gradient.png");
    const [, , server, mediaId] = mxc.split("/");
    expect(server).toBe(a.serverName);

    const dl = await get(bob, `/_matrix/client/v1/media/download/${server}/${mediaId}`);
    expect(dl.status).toBe(200);
    expect(dl.headers.get("content-type")).toBe("image/png");
    expect(dl.headers.get("content-disposition")).toBe('inline; filename="gradient.png"');
    expect(dl.headers.get("content-security-policy")).toMatch(/^sandbox;/);
    expect(dl.headers.get("x-content-type-options")).toBe("nosniff");
    expect(Buffer.from(await dl.arrayBuffer()).equals(Buffer.from(png))).toBe(true);

    const th = await get(bob, `/_matrix/client/v1/media/thumbnail/${server}/${mediaId}?width=32&height=32&method=crop`);
    expect(th.status).toBe(200);
    expect(th.headers.get("content-type")).toBe("image/png");
    expect(imageSize(new Uint8Array(await th.arrayBuffer()))).toEqual({ width: 32, height: 32 });

    // A binary file with a download filename in the path, from B's cache the second time.
    const blob = new Uint8Array(300_000).map((_, i) => (i * 131 + (i >> 7)) & 0xff);
    const blobMxc = await upload(alice, blob, "application/octet-stream", "data.bin");
    const blobPath = `/_matrix/client/v1/media/download/${a.serverName}/${blobMxc.split("/")[3]}`;
    for (let i = 0; i < 2; i++) {
      const r = await get(bob, blobPath);
      expect(r.status).toBe(200);
      expect(r.headers.get("content-disposition")).toBe('attachment; filename="data.bin"');
      expect(Buffer.from(await r.arrayBuffer()).equals(Buffer.from(blob))).toBe(true);
    }

    // Unknown media on A: 404 through B. Asking A's federation endpoint unsigned: 401.
    const missing = await get(bob, `/_matrix/client/v1/media/download/${a.serverName}/doesNotExist`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { errcode: string }).errcode).toBe("M_NOT_FOUND");
    const unsigned = await fetch(`${a.baseUrl}/_matrix/federation/v1/media/download/${mediaId}`);
    expect(unsigned.status).toBe(401);
  }, 60_000);
});

describe("spaces across two servers", () => {
  it("B's client sees A's space hierarchy; B can list A's directory", async () => {
    const space = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", name: "A space", creation_content: { type: "m.space" }, visibility: "public" })).room_id;
    const lobby = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", name: "Lobby", topic: "Say hi" })).room_id;
    const secret = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "private_chat", name: "Secret" })).room_id;
    for (const child of [lobby, secret]) await ok(alice, "PUT", `/rooms/${enc(space)}/state/m.space.child/${enc(child)}`, { via: [a.serverName] });

    // B holds the space once bob joins it; its children stay on A only.
    await ok(bob, "POST", `/join/${enc(space)}?via=${enc(a.serverName)}`, {});
    const h = await ok<{ rooms: { room_id: string; name?: string; topic?: string; children_state: unknown[] }[] }>(bob, "GET", `/_matrix/client/v1/rooms/${enc(space)}/hierarchy`);
    expect(h.rooms.map((r) => r.room_id)).toEqual([space, lobby]);
    expect(h.rooms[0].children_state).toHaveLength(2);
    expect(h.rooms[1]).toMatchObject({ name: "Lobby", topic: "Say hi", join_rule: "public", num_joined_members: 1 });

    const dir = await ok<{ chunk: { room_id: string }[] }>(bob, "GET", `/publicRooms?server=${enc(a.serverName)}`);
    expect(dir.chunk.map((r) => r.room_id)).toContain(space);
  }, 60_000);
});
