// Media end to end (issue 6): matrix-js-sdk uploads an image to a real server (`npm start`, so
// the photon WASM module is bundled by wrangler), sends an m.image event, and a second client
// reads the event and downloads the image and a thumbnail through authenticated media.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { PhotonImage } from "@cf-wasm/photon/node";
import { startServer, type RunningServer } from "./harness";
import { registerSdkClient } from "./client";

let server: RunningServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

async function register(name: string): Promise<sdk.MatrixClient> {
  return registerSdkClient(server.baseUrl, `${name}${Date.now()}`, "media-e2e-pw");
}

function testJpeg(width: number, height: number): Uint8Array {
  const px = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) px.set([(i * 13) & 0xff, (i >> 4) & 0xff, 128, 255], i * 4);
  const img = new PhotonImage(px, width, height);
  const bytes = img.get_bytes_jpeg(85);
  img.free();
  return bytes;
}

describe("media with matrix-js-sdk", () => {
  it("uploads an image, sends m.image, the other user downloads it and a thumbnail", async () => {
    const [alice, bob] = await Promise.all([register("alice"), register("bob")]);
    const jpeg = testJpeg(640, 480);
    const { content_uri } = await alice.uploadContent(new Blob([jpeg], { type: "image/jpeg" }), { name: "photo.jpg", type: "image/jpeg" });
    expect(content_uri).toMatch(new RegExp(`^mxc://${server.serverName.replace(/[.:]/g, "\\$&")}/`));

    const { room_id } = await alice.createRoom({ preset: sdk.Preset.PublicChat });
    await bob.joinRoom(room_id);
    const { event_id } = await alice.sendMessage(room_id, {
      msgtype: sdk.MsgType.Image,
      body: "photo.jpg",
      url: content_uri,
      info: { mimetype: "image/jpeg", size: jpeg.byteLength, w: 640, h: 480 },
    } as any);

    const ev = await bob.fetchRoomEvent(room_id, event_id);
    const mxc = ev.content?.url as string;
    expect(mxc).toBe(content_uri);

    const auth = { Authorization: `Bearer ${bob.getAccessToken()}` };
    // useAuthentication=true → /_matrix/client/v1/media/...
    const downloadUrl = bob.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true)!;
    expect(downloadUrl).toContain("/_matrix/client/v1/media/download/");
    const res = await fetch(downloadUrl, { headers: auth });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/jpeg");
    expect(res.headers.get("content-disposition")).toBe('inline; filename="photo.jpg"');
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(jpeg);

    const thumbUrl = bob.mxcUrlToHttp(mxc, 96, 96, "crop", false, true, true)!;
    expect(thumbUrl).toContain("/_matrix/client/v1/media/thumbnail/");
    const t = await fetch(thumbUrl, { headers: auth });
    expect(t.status).toBe(200);
    expect(t.headers.get("content-type")).toBe("image/jpeg");
    const img = PhotonImage.new_from_byteslice(new Uint8Array(await t.arrayBuffer()));
    expect([img.get_width(), img.get_height()]).toEqual([96, 96]);
    img.free();

    // Without the token the authenticated endpoint refuses, and the legacy one is frozen.
    expect((await fetch(downloadUrl)).status).toBe(401);
    const legacy = bob.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, false)!;
    expect(legacy).toContain("/_matrix/media/v3/download/");
    expect((await fetch(legacy)).status).toBe(404);
  });
});
