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

describe("delayed events (MSC4140) with nobody connected", () => {
  it("fires after its delay; a restarted one is postponed; a cancelled one never fires", async () => {
    const u = await registerUser(server, name("caller"), "pw-123456");
    const { room_id: roomId } = await ok(u, "POST", "/createRoom", {});
    const enc = encodeURIComponent;
    const U = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";
    const schedule = async (key: string, delay: number) =>
      (await ok(u, "PUT", `/rooms/${enc(roomId)}/state/org.example.call.member/${key}?org.matrix.msc4140.delay=${delay}`, { left: key })).delay_id as string;
    const state = async (key: string) => (await api(u, "GET", `/rooms/${enc(roomId)}/state/org.example.call.member/${key}`)).status;
    const t0 = Date.now();
    const fires = await schedule("fires", 2000);
    const restarted = await schedule("restarted", 2500);
    const cancelled = await schedule("cancelled", 2000);
    await ok(u, "POST", `${U}/${enc(cancelled)}`, { action: "cancel" });
    // Nobody syncs or polls the delayed events from here: only the server's alarm can send them.
    await new Promise((r) => setTimeout(r, 1500));
    await fetch(`${server.baseUrl}${U}/${enc(restarted)}/restart`, { method: "POST", body: "{}" }); // unauthenticated (delegated) restart
    const restartedAt = Date.now();
    // "fires" was due at t0+2s; "restarted" would have been due at t0+2.5s but was pushed to restart+2.5s.
    await until("the delayed event is sent", async () => (await state("fires")) === 200, 10_000);
    if (Date.now() - restartedAt < 2300) expect(await state("restarted")).toBe(404);
    await until("the restarted one is sent after its new time", async () => (await state("restarted")) === 200, 10_000);
    // Had the restart been ignored, it would have been sent ~1 s after the restart.
    expect(Date.now() - restartedAt).toBeGreaterThanOrEqual(2400);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
    await new Promise((r) => setTimeout(r, 1000));
    expect(await state("cancelled")).toBe(404);
    expect((await ok(u, "GET", U)).delayed_events).toEqual([]);
    expect(fires).not.toBe(restarted);
  });
});
