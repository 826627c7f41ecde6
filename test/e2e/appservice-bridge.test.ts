// A bridge built on matrix-appservice-bridge 11 (the library most JavaScript bridges use) against
// a real Lattice (`npm start`, APPSERVICE_HTTP_LOOPBACK=true). The "remote network" is a plain
// Node echo service: whatever reaches it is answered with "echo: <text>" from the remote user
// `remote1` ("Remote Alice"), through the bridge, as the ghost @echo_remote1.
//
// The registration is added with `npm run appservice -- add` (scripts/appservice.mjs → the admin
// API). Checked: a Matrix message reaches the remote side; the remote answer appears in the room
// from the ghost with its display name; with the bridge stopped, messages sent meanwhile all
// reach it, in order and once each, when it is back (transaction retries with backoff).
//
// The bridge loads @vector-im/matrix-bot-sdk, which loads the native
// @matrix-org/matrix-sdk-crypto-nodejs at import time; package.json's `overrides` points that at
// test/shims/matrix-sdk-crypto-nodejs (exports that throw if used): encryption is not used here.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import { createHmac } from "node:crypto";
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { dump } from "js-yaml";
import { Bridge, AppServiceRegistration, type Request, type WeakEvent } from "matrix-appservice-bridge";
import { freePort, startServer, type RunningServer } from "./harness";

const root = path.resolve(import.meta.dirname, "../..");
let server: RunningServer;
let tmp: string;
const servers: Server[] = [];

async function listen(handler: (body: any) => Promise<void> | void): Promise<number> {
  const port = await freePort();
  const s = createServer((req, res) => {
    let data = "";
    req.on("data", (d) => (data += d));
    req.on("end", async () => {
      try {
        await handler(JSON.parse(data || "{}"));
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      } catch (e) {
        res.writeHead(500).end(String(e));
      }
    });
  });
  await new Promise<void>((r) => s.listen(port, "127.0.0.1", r));
  servers.push(s);
  return port;
}

const post = (url: string, body: unknown) => fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

async function registerAdmin(): Promise<string> {
  const { nonce } = (await (await fetch(`${server.baseUrl}/_synapse/admin/v1/register`)).json()) as { nonce: string };
  const username = `admin${Date.now().toString(36)}`;
  const mac = createHmac("sha1", "e2e-shared-secret-0123456789").update(`${nonce}\0${username}\0pw\0admin`).digest("hex");
  const r = await post(`${server.baseUrl}/_synapse/admin/v1/register`, { nonce, username, password: "pw", admin: true, mac });
  const body = (await r.json()) as any;
  if (!r.ok) throw new Error(JSON.stringify(body));
  return body.access_token;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  server = await startServer({ APPSERVICE_HTTP_LOOPBACK: "true", REGISTRATION_SHARED_SECRET: "e2e-shared-secret-0123456789" });
  tmp = mkdtempSync(path.join(tmpdir(), "lattice-bridge-"));
});
afterAll(async () => {
  for (const s of servers) s.close();
  await server?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("matrix-appservice-bridge 11 against Lattice", () => {
  it("bridges an echo network both ways and catches up after the bridge was down", async () => {
    const enc = encodeURIComponent;
    const domain = server.serverName;
    const bridgePort = await freePort();

    // The remote network: records what arrives, answers through the bridge's inbound webhook.
    const remoteReceived: string[] = [];
    let webhookPort = 0;
    const echoPort = await listen(async (msg: { roomId: string; text: string }) => {
      remoteReceived.push(msg.text);
      await post(`http://127.0.0.1:${webhookPort}/inbound`, { roomId: msg.roomId, from: "remote1", displayName: "Remote Alice", text: `echo: ${msg.text}` });
    });

    // The registration, as matrix-appservice-bridge writes it, added with the npm script.
    const reg = new AppServiceRegistration(`http://127.0.0.1:${bridgePort}`);
    reg.setId(`echo${Date.now().toString(36)}`);
    reg.setHomeserverToken(AppServiceRegistration.generateToken());
    reg.setAppServiceToken(AppServiceRegistration.generateToken());
    reg.setSenderLocalpart("echobot");
    reg.addRegexPattern("users", `@echo_.*:${domain.replace(/[.]/g, "\\.")}`, true);
    reg.setRateLimited(false);
    const regFile = path.join(tmp, "echo-registration.yaml");
    writeFileSync(regFile, dump(reg.getOutput()));
    const adminToken = await registerAdmin();
    const run = promisify(execFile);
    const added = await run(process.execPath, [path.join(root, "scripts/appservice.mjs"), "add", regFile, "--url", server.baseUrl, "--token", adminToken]);
    expect(added.stdout).toContain(`Added ${reg.getId()}`);
    const listed = await run(process.execPath, [path.join(root, "scripts/appservice.mjs"), "list", "--url", server.baseUrl, "--token", adminToken]);
    expect(listed.stdout).toContain(reg.getId());

    const botUserId = `@echobot:${domain}`;
    let bridge: Bridge;
    // onEvent is called in the order the events arrive; the remote network gets them one at a
    // time in that order (the bridge's own job, as any bridge with an ordered remote).
    let toRemote: Promise<unknown> = Promise.resolve();
    const startBridge = async () => {
      const b: Bridge = new Bridge({
        homeserverUrl: server.baseUrl,
        domain,
        registration: reg,
        disableStores: true,
        disableContext: true,
        suppressEcho: true,
        controller: {
          onUserQuery: () => ({}),
          onEvent: async (request: Request<WeakEvent>) => {
            const ev = request.getData();
            if (ev.type === "m.room.member" && ev.state_key === botUserId && ev.content.membership === "invite") {
              await b.getIntent().join(ev.room_id);
            } else if (ev.type === "m.room.message") {
              const text = ev.content.body;
              toRemote = toRemote.then(() => post(`http://127.0.0.1:${echoPort}/send`, { roomId: ev.room_id, text }));
            }
          },
        },
      });
      await b.initialise();
      await b.listen(bridgePort, "127.0.0.1");
      bridge = b;
    };
    // The bridge's side for the remote network: post as the ghost of the remote user.
    webhookPort = await listen(async (msg: { roomId: string; from: string; displayName: string; text: string }) => {
      const intent = bridge.getIntent(`@echo_${msg.from}:${domain}`);
      await intent.setDisplayName(msg.displayName);
      await intent.sendText(msg.roomId, msg.text);
    });
    await startBridge();

    // A Matrix user opens a room and invites the bridge bot, which joins.
    const user = (await (
      await post(`${server.baseUrl}/_matrix/client/v3/register`, { username: `alice${Date.now().toString(36)}`, password: "pw", auth: { type: "m.login.dummy" } })
    ).json()) as any;
    const as = (method: string, p: string, body?: unknown) =>
      fetch(`${server.baseUrl}/_matrix/client/v3${p}`, {
        method,
        headers: { authorization: `Bearer ${user.access_token}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
    const { body: created } = await as("POST", "/createRoom", { preset: "public_chat", invite: [botUserId] });
    const roomId: string = created.room_id;
    await waitFor("the bot to join", async () => {
      const m = await as("GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(botUserId)}`);
      return m.body.membership === "join" ? true : undefined;
    });

    // Matrix → remote, and the remote's answer → Matrix from the ghost with its display name.
    await as("PUT", `/rooms/${enc(roomId)}/send/m.room.message/hello`, { msgtype: "m.text", body: "hello" });
    await waitFor("the remote side to get the message", () => (remoteReceived.includes("hello") ? true : undefined));
    const ghost = `@echo_remote1:${domain}`;
    const echoed = await waitFor("the echo in the room", async () => {
      const r = await as("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=50`);
      return r.body.chunk?.find((e: any) => e.type === "m.room.message" && e.content.body === "echo: hello");
    });
    expect(echoed.sender).toBe(ghost);
    const member = await as("GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(ghost)}`);
    expect(member.body.displayname).toBe("Remote Alice");
    const profile = await as("GET", `/profile/${enc(ghost)}/displayname`);
    expect(profile.body.displayname).toBe("Remote Alice");

    // The bridge goes down; five messages are sent meanwhile; it comes back and gets them all.
    await bridge!.close();
    const missed = ["m1", "m2", "m3", "m4", "m5"];
    for (const text of missed) await as("PUT", `/rooms/${enc(roomId)}/send/m.room.message/${text}`, { msgtype: "m.text", body: text });
    await new Promise((r) => setTimeout(r, 3_000));
    expect(remoteReceived).toEqual(["hello"]);
    await startBridge();
    await waitFor("the missed messages", () => (remoteReceived.length >= 6 ? true : undefined), 60_000);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(remoteReceived).toEqual(["hello", ...missed]);
    // And their echoes reach the room, in order, from the ghost.
    let echoes: string[] = [];
    await waitFor("the echoes of the missed messages", async () => {
      const r = await as("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=100`);
      echoes = (r.body.chunk as any[]).filter((e) => e.sender === ghost && e.type === "m.room.message").map((e) => e.content.body).reverse();
      return echoes.length >= 6 ? true : undefined;
    }).catch((e) => {
      throw new Error(`${e.message}; echoes so far: ${JSON.stringify(echoes)}`);
    });
    expect(echoes).toEqual(["echo: hello", ...missed.map((m) => `echo: ${m}`)]);
    await bridge!.close();
  });
});
