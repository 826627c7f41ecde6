// Calls end to end: Cloudflare Realtime TURN credentials through a loopback stand-in of
// Cloudflare's API (TURN_CLOUDFLARE_API_URL, a test-only variable), MatrixRTC focus discovery
// (RTC_FOCUS_URL), and delayed events (MSC4140) that fire with nobody connected.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import { freePort, startServer, type RunningServer } from "./harness";
import { api, ok, registerUser, until, type Json } from "./client";

let server: RunningServer;
let cf: Server;
const cfRequests: { method: string; url: string; auth: string | undefined; body: Json }[] = [];

beforeAll(async () => {
  const cfPort = await freePort();
  cf = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      cfRequests.push({ method: req.method!, url: req.url!, auth: req.headers.authorization, body: JSON.parse(raw || "{}") });
      res.writeHead(201, { "content-type": "application/json" }).end(
        JSON.stringify({
          iceServers: [
            { urls: ["stun:stun.cloudflare.com:3478"] },
            { urls: ["turn:turn.cloudflare.com:3478?transport=udp", "turns:turn.cloudflare.com:5349?transport=tcp"], username: "cf-user", credential: "cf-pass" },
          ],
        }),
      );
    });
  });
  await new Promise<void>((r) => cf.listen(cfPort, "127.0.0.1", () => r()));
  server = await startServer({
    TURN_KEY_ID: "abc123",
    TURN_KEY_API_TOKEN: "turn-token",
    TURN_TTL_SECONDS: "3600",
    TURN_CLOUDFLARE_API_URL: `http://127.0.0.1:${cfPort}/v1`,
    RTC_FOCUS_URL: "https://livekit-jwt.example.org/",
  });
});
afterAll(async () => {
  await server?.stop();
  cf?.closeAllConnections();
  await new Promise((r) => cf?.close(r));
});

let n = 0;
const name = (p: string) => `${p}${Date.now().toString(36)}${++n}`;

describe("TURN (Cloudflare Realtime) and MatrixRTC discovery", () => {
  it("asks Cloudflare's API for credentials and answers them in the spec's shape", async () => {
    const u = await registerUser(server, name("caller"), "pw-123456");
    const t = await ok(u, "GET", "/voip/turnServer");
    expect(t).toEqual({ username: "cf-user", password: "cf-pass", uris: ["turn:turn.cloudflare.com:3478?transport=udp", "turns:turn.cloudflare.com:5349?transport=tcp"], ttl: 3600 });
    expect(cfRequests.at(-1)).toEqual({ method: "POST", url: "/v1/turn/keys/abc123/credentials/generate-ice-servers", auth: "Bearer turn-token", body: { ttl: 3600 } });
  });

  it("offers the LiveKit focus in rtc/transports and .well-known", async () => {
    const u = await registerUser(server, name("rtc"), "pw-123456");
    const focus = [{ type: "livekit", livekit_service_url: "https://livekit-jwt.example.org" }];
    expect(await ok(u, "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports")).toEqual({ rtc_transports: focus });
    expect(await ok(u, "GET", "/_matrix/client/v1/rtc/transports")).toEqual({ rtc_transports: focus });
    const wk = (await (await fetch(`${server.baseUrl}/.well-known/matrix/client`)).json()) as Json;
    expect(wk["org.matrix.msc4143.rtc_foci"]).toEqual(focus);
  });
});
