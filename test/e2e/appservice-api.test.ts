// The Application Service API against a plain Node appservice on loopback (no library): exactly
// what goes over the wire. Transactions (Bearer hs_token, retry with the same txnId and body,
// every event once, in order), ephemeral receipts, user and alias queries, third-party lookups,
// the network directory and ping.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type Server } from "node:http";
import { createHmac, randomBytes } from "node:crypto";
import { freePort, startServer, type RunningServer } from "./harness";

let server: RunningServer;
let asServer: Server;
let asPort: number;
let adminToken: string;
const enc = encodeURIComponent;

interface Seen {
  method: string;
  path: string;
  auth: string | undefined;
  body: any;
}
const seen: Seen[] = [];
/** Transactions to answer 500 before accepting. */
let failTransactions = 0;
/** Extra behaviour per path prefix (queries create things through the client API). */
const handlers: { prefix: string; run: (path: string) => Promise<[number, unknown]> }[] = [];

const reg = {
  id: `wire${Date.now().toString(36)}`,
  as_token: randomBytes(16).toString("hex"),
  hs_token: randomBytes(16).toString("hex"),
  sender_localpart: `wirebot${Date.now().toString(36)}`,
  rate_limited: false,
  receive_ephemeral: true,
  protocols: ["echo"],
  namespaces: { users: [{ exclusive: true, regex: "@_q_.*" }], aliases: [{ exclusive: true, regex: "#_q_.*" }], rooms: [] },
};

/** A second registration, for an encrypted bridge (MSC3202), on the same loopback server. */
const reg3202 = {
  id: `enc${Date.now().toString(36)}`,
  as_token: randomBytes(16).toString("hex"),
  hs_token: randomBytes(16).toString("hex"),
  sender_localpart: `encbot${Date.now().toString(36)}`,
  rate_limited: false,
  receive_ephemeral: true,
  "org.matrix.msc3202": true,
  namespaces: { users: [{ exclusive: true, regex: "@_e_.*" }], aliases: [], rooms: [] },
};

async function api(method: string, path: string, token: string, body?: unknown) {
  const r = await fetch(`${server.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json()) as any };
}
const asApi = (method: string, path: string, body?: unknown) => api(method, path, reg.as_token, body);

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  asPort = await freePort();
  asServer = createServer((req, res) => {
    let data = "";
    req.on("data", (d) => (data += d));
    req.on("end", async () => {
      const path = req.url ?? "";
      seen.push({ method: req.method ?? "", path, auth: req.headers.authorization, body: data ? JSON.parse(data) : undefined });
      if (req.headers.authorization !== `Bearer ${reg.hs_token}` && req.headers.authorization !== `Bearer ${reg3202.hs_token}`) return res.writeHead(403).end('{"errcode":"M_FORBIDDEN"}');
      if (path.startsWith("/_matrix/app/v1/transactions/") && failTransactions > 0) {
        failTransactions--;
        return res.writeHead(500).end("{}");
      }
      const h = handlers.find((x) => path.startsWith(x.prefix));
      const [status, body] = h ? await h.run(path) : [200, {}];
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => asServer.listen(asPort, "127.0.0.1", r));
  server = await startServer({ APPSERVICE_HTTP_LOOPBACK: "true", REGISTRATION_SHARED_SECRET: "e2e-shared-secret-0123456789" });
  const { nonce } = (await (await fetch(`${server.baseUrl}/_synapse/admin/v1/register`)).json()) as any;
  const mac = createHmac("sha1", "e2e-shared-secret-0123456789").update(`${nonce}\0wireadmin\0pw\0admin`).digest("hex");
  const r = await fetch(`${server.baseUrl}/_synapse/admin/v1/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ nonce, username: "wireadmin", password: "pw", admin: true, mac }),
  });
  adminToken = ((await r.json()) as any).access_token;
  const added = await api("POST", "/_lattice/admin/v1/appservices", adminToken, { ...reg, url: `http://127.0.0.1:${asPort}` });
  expect(added.status, JSON.stringify(added.body)).toBe(200);
});
afterAll(async () => {
  asServer?.close();
  await server?.stop();
});

async function registerGhost(name: string): Promise<string> {
  const r = await asApi("POST", "/_matrix/client/v3/register", { type: "m.login.application_service", username: `_q_${name}`, inhibit_login: true });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.user_id;
}

async function plainUser() {
  const r = await fetch(`${server.baseUrl}/_matrix/client/v3/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: `u${Date.now().toString(36)}${randomBytes(2).toString("hex")}`, password: "pw", auth: { type: "m.login.dummy" } }),
  });
  return (await r.json()) as any;
}

describe("MSC3202: an encrypted bridge's transactions", () => {
  it("carry device-list changes and its users' one-time-key counts and fallback key types", async () => {
    const added = await api("POST", "/_lattice/admin/v1/appservices", adminToken, { ...reg3202, url: `http://127.0.0.1:${asPort}` });
    expect(added.status, JSON.stringify(added.body)).toBe(200);
    const encApi = (method: string, path: string, body?: unknown) => api(method, path, reg3202.as_token, body);
    const reg = await encApi("POST", "/_matrix/client/v3/register", { type: "m.login.application_service", username: "_e_alice", inhibit_login: true });
    expect(reg.status, JSON.stringify(reg.body)).toBe(200);
    const ghost = reg.body.user_id as string;
    const login = await encApi("POST", "/_matrix/client/v3/login", { type: "m.login.application_service", identifier: { type: "m.id.user", user: ghost }, device_id: "EDEV" });
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    const as = `user_id=${enc(ghost)}&device_id=EDEV`;
    const up = await encApi("POST", `/_matrix/client/v3/keys/upload?${as}`, {
      one_time_keys: { "curve25519:AAAAAQ": "b3RrMQ", "curve25519:AAAAAg": "b3RrMg" },
      fallback_keys: { "curve25519:AAAAAw": "ZmFsbGJhY2s" },
    });
    expect(up.status, JSON.stringify(up.body)).toBe(200);
    const user = await plainUser();
    const { body: room } = await api("POST", "/_matrix/client/v3/createRoom", user.access_token, { preset: "public_chat" });
    expect((await encApi("POST", `/_matrix/client/v3/join/${enc(room.room_id)}?user_id=${enc(ghost)}`, {})).status).toBe(200);
    const mine = () => seen.filter((s) => s.path.startsWith("/_matrix/app/v1/transactions/") && s.auth === `Bearer ${reg3202.hs_token}`);
    const counts = (t: Seen) => t.body["org.matrix.msc3202.device_one_time_keys_count"]?.[ghost]?.EDEV;
    // The upload's counts, and (in that or a later transaction) the user the ghost now shares
    // a room with.
    const withCounts = await waitFor("the ghost's key counts", () => mine().find((t) => counts(t)?.curve25519 === 2));
    expect(counts(withCounts)).toEqual({ signed_curve25519: 0, curve25519: 2 });
    expect(withCounts.body["org.matrix.msc3202.device_unused_fallback_key_types"][ghost].EDEV).toEqual(["curve25519"]);
    await waitFor("the device-list change", () => mine().find((t) => t.body["org.matrix.msc3202.device_lists"]?.changed?.includes(user.user_id)));
    // A claim lowers the count; the bridge hears of it without any other traffic.
    const claim = await api("POST", "/_matrix/client/v3/keys/claim", user.access_token, { one_time_keys: { [ghost]: { EDEV: "curve25519" } } });
    expect(Object.keys(claim.body.one_time_keys[ghost].EDEV)).toHaveLength(1);
    await waitFor("the lower count", () => (mine().some((t) => counts(t)?.curve25519 === 1) ? true : undefined));
    // The other registration (no org.matrix.msc3202) never sees these fields.
    const plain = seen.filter((s) => s.path.startsWith("/_matrix/app/v1/transactions/") && s.auth === `Bearer ${reg.hs_token}`);
    expect(plain.some((t) => Object.keys(t.body).some((k) => k.startsWith("org.matrix.msc3202")))).toBe(false);
  });
});

describe("transactions", () => {
  it("retries a failed transaction with the same ID and body; every event once, in order", async () => {
    const ghost = await registerGhost("tx");
    const user = await plainUser();
    const { body: room } = await api("POST", "/_matrix/client/v3/createRoom", user.access_token, { preset: "public_chat" });
    const roomId = room.room_id as string;
    expect((await asApi("POST", `/_matrix/client/v3/join/${enc(roomId)}?user_id=${enc(ghost)}`, {})).status).toBe(200);
    // Wait for the join to be delivered, then make the next two attempts fail.
    const txns = () => seen.filter((s) => s.path.startsWith("/_matrix/app/v1/transactions/"));
    await waitFor("the join", () => (txns().some((t) => t.body.events?.some((e: any) => e.state_key === ghost)) ? true : undefined));
    failTransactions = 2;
    const before = txns().length;
    const texts = ["one", "two", "three", "four"];
    for (const t of texts) {
      const s = await api("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${t}`, user.access_token, { msgtype: "m.text", body: t });
      expect(s.status).toBe(200);
    }
    const delivered = () => {
      // Successful attempts: the last attempt of each distinct txnId.
      const byId = new Map<string, Seen>();
      for (const t of txns().slice(before)) byId.set(t.path, t);
      return [...byId.values()].flatMap((t) => t.body.events.filter((e: any) => e.room_id === roomId && e.type === "m.room.message").map((e: any) => e.content.body));
    };
    await waitFor("all four messages", () => (delivered().length >= 4 && failTransactions === 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    expect(delivered()).toEqual(texts);
    const attempts = txns().slice(before);
    // The first failed twice and was resent unchanged.
    expect(attempts[0].path).toBe(attempts[1].path);
    expect(attempts[1].path).toBe(attempts[2].path);
    expect(attempts[1].body).toEqual(attempts[0].body);
    expect(attempts.every((a) => a.method === "PUT" && a.auth === `Bearer ${reg.hs_token}`)).toBe(true);
    // Event shape: client format with the fields bridges read.
    const ev = attempts.at(-1)!.body.events.at(-1);
    expect(ev).toMatchObject({ type: "m.room.message", room_id: roomId, sender: user.user_id, content: { body: "four" } });
    expect(typeof ev.event_id).toBe("string");
    expect(typeof ev.origin_server_ts).toBe("number");

    // Receipts in the room reach the appservice as ephemeral data (receive_ephemeral).
    const last = await api("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1`, user.access_token);
    const eventId = last.body.chunk[0].event_id;
    expect((await api("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, user.access_token, {})).status).toBe(200);
    const eph = await waitFor("the receipt", () => txns().flatMap((t) => t.body["de.sorunome.msc2409.ephemeral"] ?? []).find((e: any) => e.type === "m.receipt"));
    expect(eph.room_id).toBe(roomId);
    expect(eph.content[eventId]["m.read"][user.user_id].ts).toBeGreaterThan(0);

    // Typing: m.typing with the room's typers; stopping empties the list.
    const ephemeral = () => txns().flatMap((t) => t.body.ephemeral ?? []);
    const typingPath = `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(user.user_id)}`;
    expect((await api("PUT", typingPath, user.access_token, { typing: true, timeout: 30000 })).status).toBe(200);
    await waitFor("typing", () => ephemeral().find((e: any) => e.type === "m.typing" && e.room_id === roomId && e.content.user_ids.includes(user.user_id)));
    expect((await api("PUT", typingPath, user.access_token, { typing: false })).status).toBe(200);
    await waitFor("typing stopped", () => {
      const last = ephemeral().filter((e: any) => e.type === "m.typing" && e.room_id === roomId).at(-1);
      return last && last.content.user_ids.length === 0 ? true : undefined;
    });
    // Presence of a user sharing a room with a ghost.
    expect((await api("PUT", `/_matrix/client/v3/presence/${enc(user.user_id)}/status`, user.access_token, { presence: "online", status_msg: "bridging" })).status).toBe(200);
    const pres = await waitFor("presence", () => ephemeral().find((e: any) => e.type === "m.presence" && e.sender === user.user_id));
    expect(pres.content).toMatchObject({ presence: "online", status_msg: "bridging" });

    // To-device messages for a ghost's device (MSC2409 to_device).
    const login = await asApi("POST", "/_matrix/client/v3/login", { type: "m.login.application_service", identifier: { type: "m.id.user", user: ghost }, device_id: "GHOSTDEV" });
    expect(login.status).toBe(200);
    const td = await api("PUT", `/_matrix/client/v3/sendToDevice/m.test/td1`, user.access_token, { messages: { [ghost]: { "*": { hello: "ghost" } } } });
    expect(td.status).toBe(200);
    const msg = await waitFor("to-device", () => txns().flatMap((t) => t.body["de.sorunome.msc2409.to_device"] ?? []).find((m: any) => m.to_user_id === ghost));
    expect(msg).toEqual({ type: "m.test", sender: user.user_id, content: { hello: "ghost" }, to_user_id: ghost, to_device_id: "GHOSTDEV" });
  });

  it("a room without namespaced members is not sent", async () => {
    const user = await plainUser();
    const { body: room } = await api("POST", "/_matrix/client/v3/createRoom", user.access_token, {});
    await api("PUT", `/_matrix/client/v3/rooms/${enc(room.room_id)}/send/m.room.message/x`, user.access_token, { msgtype: "m.text", body: "private" });
    await new Promise((r) => setTimeout(r, 1500));
    expect(seen.some((s) => JSON.stringify(s.body ?? {}).includes(room.room_id))).toBe(false);
  });
});

describe("queries", () => {
  it("an unknown user in the namespace is asked for, and created by the appservice", async () => {
    handlers.push({
      prefix: "/_matrix/app/v1/users/",
      run: async (path) => {
        const userId = decodeURIComponent(path.split("/").pop()!);
        if (!userId.startsWith("@_q_made")) return [404, { errcode: "M_NOT_FOUND" }];
        await registerGhost(userId.slice(4, userId.indexOf(":")));
        return [200, {}];
      },
    });
    const user = await plainUser();
    const made = `@_q_made:${server.serverName}`;
    const p = await api("GET", `/_matrix/client/v3/profile/${enc(made)}`, user.access_token);
    expect(p.status, JSON.stringify(p.body)).toBe(200);
    expect(seen.some((s) => s.path === `/_matrix/app/v1/users/${enc(made)}`)).toBe(true);
    const missing = await api("GET", `/_matrix/client/v3/profile/${enc(`@_q_never:${server.serverName}`)}`, user.access_token);
    expect(missing.status).toBe(404);
    // Outside every namespace: nobody is asked.
    const n = seen.length;
    expect((await api("GET", `/_matrix/client/v3/profile/${enc(`@nobody:${server.serverName}`)}`, user.access_token)).status).toBe(404);
    expect(seen.length).toBe(n);
  });

  it("an unknown alias in the namespace is asked for, and created by the appservice", async () => {
    const alias = `#_q_lobby:${server.serverName}`;
    handlers.push({
      prefix: "/_matrix/app/v1/rooms/",
      run: async (path) => {
        if (decodeURIComponent(path.split("/").pop()!) !== alias) return [404, { errcode: "M_NOT_FOUND" }];
        const r = await asApi("POST", "/_matrix/client/v3/createRoom", { room_alias_name: "_q_lobby", preset: "public_chat" });
        return r.status === 200 ? [200, {}] : [500, r.body];
      },
    });
    const user = await plainUser();
    const r = await api("GET", `/_matrix/client/v3/directory/room/${enc(alias)}`, user.access_token);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.room_id).toMatch(/^!/);
    // Joining by the alias works too (same lookup).
    expect((await api("POST", `/_matrix/client/v3/join/${enc(alias)}`, user.access_token, {})).status).toBe(200);
  });

  it("third-party lookups go to the appservice declaring the protocol", async () => {
    handlers.push({
      prefix: "/_matrix/app/v1/thirdparty/",
      run: async (path) => {
        if (path.startsWith("/_matrix/app/v1/thirdparty/protocol/echo")) {
          return [200, { user_fields: ["nick"], location_fields: ["channel"], icon: "mxc://x/y", field_types: {}, instances: [{ desc: "Echo", network_id: "echo-net", fields: {} }] }];
        }
        if (path.startsWith("/_matrix/app/v1/thirdparty/location")) return [200, [{ alias: "#_q_lobby:x", protocol: "echo", fields: { channel: "lobby" } }]];
        if (path.startsWith("/_matrix/app/v1/thirdparty/user")) return [200, [{ userid: "@_q_made:x", protocol: "echo", fields: { nick: "made" } }]];
        return [404, {}];
      },
    });
    const user = await plainUser();
    const protocols = await api("GET", "/_matrix/client/v3/thirdparty/protocols", user.access_token);
    expect(protocols.status).toBe(200);
    expect(protocols.body.echo.instances[0].network_id).toBe("echo-net");
    expect((await api("GET", "/_matrix/client/v3/thirdparty/protocol/echo", user.access_token)).body.user_fields).toEqual(["nick"]);
    expect((await api("GET", "/_matrix/client/v3/thirdparty/protocol/irc", user.access_token)).status).toBe(404);
    const loc = await api("GET", "/_matrix/client/v3/thirdparty/location/echo?channel=lobby", user.access_token);
    expect(loc.body).toEqual([{ alias: "#_q_lobby:x", protocol: "echo", fields: { channel: "lobby" } }]);
    expect(seen.some((s) => s.path === "/_matrix/app/v1/thirdparty/location/echo?channel=lobby")).toBe(true);
    const u = await api("GET", "/_matrix/client/v3/thirdparty/user?userid=%40_q_made%3Ax", user.access_token);
    expect(u.body[0].fields.nick).toBe("made");
  });

  it("publishes a room under a network; only appservices may", async () => {
    const { body: room } = await asApi("POST", "/_matrix/client/v3/createRoom", { preset: "public_chat", name: "Echo lobby" });
    const path = `/_matrix/client/v3/directory/list/appservice/echo-net/${enc(room.room_id)}`;
    expect((await asApi("PUT", path, { visibility: "public" })).status).toBe(200);
    const user = await plainUser();
    expect((await api("PUT", path, user.access_token, { visibility: "public" })).status).toBe(403);
    const list = await api("POST", "/_matrix/client/v3/publicRooms", user.access_token, { third_party_instance_id: "echo-net" });
    expect(list.body.chunk.map((r: any) => r.room_id)).toContain(room.room_id);
    expect((await asApi("PUT", path, { visibility: "private" })).status).toBe(200);
    const after = await api("POST", "/_matrix/client/v3/publicRooms", user.access_token, { third_party_instance_id: "echo-net" });
    expect(after.body.chunk.map((r: any) => r.room_id)).not.toContain(room.room_id);
  });

  it("ping reaches the appservice with the transaction ID", async () => {
    const r = await asApi("POST", `/_matrix/client/v1/appservice/${reg.id}/ping`, { transaction_id: "meow" });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(typeof r.body.duration_ms).toBe("number");
    expect(seen.find((s) => s.path === "/_matrix/app/v1/ping")?.body).toEqual({ transaction_id: "meow" });
  });
});
