// Application services (spec: Application Service API): registrations through the admin API,
// namespaces, as_token authentication and masquerading.
import { describe, it, expect, beforeAll } from "vitest";
import { call, clientOk, registerUser, uniqueName, type TestUser } from "./helpers";
import { addAppservice, queuedItems, registration, serverAdmin } from "./appservice-helpers";
import { unsafeRegexReason } from "../../src/core/appservice-registration";

let admin: TestUser;

async function addReg(reg: Record<string, unknown>, token = admin.accessToken) {
  return call("POST", "/_lattice/admin/v1/appservices", { token, body: reg });
}

beforeAll(async () => {
  admin = await serverAdmin();
});

describe("registration admin API", () => {
  it("adds (JSON), lists without tokens, refuses duplicates and removes", async () => {
    const reg = registration();
    const r = await addReg(reg);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.id).toBe(reg.id);
    const list = await call("GET", "/_lattice/admin/v1/appservices", { token: admin.accessToken });
    expect(list.status).toBe(200);
    const mine = list.body.appservices.find((a: any) => a.id === reg.id);
    expect(mine.sender_localpart).toBe(reg.sender_localpart);
    expect(JSON.stringify(list.body)).not.toContain(reg.as_token);
    expect(JSON.stringify(list.body)).not.toContain(reg.hs_token);
    // The sender_localpart user exists.
    const prof = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent(`@${reg.sender_localpart}:test.local`)}`);
    expect(prof.status).toBe(200);

    for (const clash of [
      { id: reg.id },
      { as_token: reg.as_token },
      { hs_token: reg.hs_token },
      { sender_localpart: reg.sender_localpart },
      { as_token: reg.hs_token },
    ]) {
      const dup = await addReg({ ...registration(), ...clash });
      expect(dup.status, JSON.stringify(clash)).toBe(400);
      expect(dup.body.errcode).toBe("M_INVALID_PARAM");
    }
    const del = await call("DELETE", `/_lattice/admin/v1/appservices/${reg.id}`, { token: admin.accessToken });
    expect(del.status).toBe(200);
    const again = await call("DELETE", `/_lattice/admin/v1/appservices/${reg.id}`, { token: admin.accessToken });
    expect(again.status).toBe(404);
    expect(again.body.errcode).toBe("M_NOT_FOUND");
  });

  it("accepts the registration as YAML", async () => {
    const p = uniqueName("yaml").toLowerCase();
    const yaml = [
      `id: ${p}`,
      `url: null`,
      `as_token: as_${p}_token`,
      `hs_token: hs_${p}_token`,
      `sender_localpart: ${p}_bot`,
      `rate_limited: false`,
      `namespaces:`,
      `  users:`,
      `    - exclusive: true`,
      `      regex: '@_${p}_.*:test\\.local'`,
      `  aliases: []`,
      `  rooms: []`,
    ].join("\n");
    const r = await call("POST", "/_lattice/admin/v1/appservices", { token: admin.accessToken, rawBody: yaml, headers: { "content-type": "application/x-yaml" } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.namespaces.users[0].regex).toBe(`@_${p}_.*:test\\.local`);
  });

  it("refuses bad registrations with a clear error", async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ namespaces: { users: [{ exclusive: true, regex: "(a+)+$" }] } }, "M_BAD_JSON", /catastrophic/],
      [{ namespaces: { users: [{ exclusive: true, regex: "(x|xx)*y" }] } }, "M_BAD_JSON", /catastrophic/],
      [{ namespaces: { users: [{ exclusive: true, regex: "@_a_(.*:test" }] } }, "M_BAD_JSON", /does not compile/],
      [{ namespaces: { aliases: [{ exclusive: true, regex: "x".repeat(600) }] } }, "M_BAD_JSON", /longer than/],
      [{ namespaces: { users: [{ regex: "@_a_.*" }] } }, "M_BAD_JSON", /exclusive/],
      [{ sender_localpart: "Bad Bot" }, "M_BAD_JSON", /sender_localpart/],
      [{ as_token: "" }, "M_BAD_JSON", /as_token/],
      [{ hs_token: undefined }, "M_BAD_JSON", /hs_token/],
      [{ url: "http://bridge.example.org:9000" }, "M_INVALID_PARAM", /https/],
      [{ url: "https://10.0.0.1/" }, "M_INVALID_PARAM", /not allowed/],
    ];
    for (const [over, errcode, message] of cases) {
      const r = await addReg(registration(over));
      expect(r.status, JSON.stringify(over)).toBe(400);
      expect(r.body.errcode, JSON.stringify(over)).toBe(errcode);
      expect(r.body.error, JSON.stringify(over)).toMatch(message);
    }
    const notYaml = await call("POST", "/_lattice/admin/v1/appservices", { token: admin.accessToken, rawBody: "id: [unclosed" });
    expect(notYaml.status).toBe(400);
    expect(notYaml.body.errcode).toBe("M_NOT_JSON");
  });

  it("needs a server admin", async () => {
    const user = await registerUser();
    expect((await addReg(registration(), user.accessToken)).status).toBe(403);
    expect((await call("GET", "/_lattice/admin/v1/appservices", { token: user.accessToken })).status).toBe(403);
    expect((await call("GET", "/_lattice/admin/v1/appservices")).status).toBe(401);
  });

  it("judges regexes: common bridge patterns pass, backtracking traps do not", () => {
    for (const ok of ["@_irc_.*:example\\.org", "@telegram_[0-9]+:server", "#_discord_[0-9]+_[0-9]+:x\\.y", "@(bot|ghost)_\\d+:hs", "@a(_[a-z])?:hs"]) {
      expect(unsafeRegexReason(ok), ok).toBeNull();
    }
    for (const bad of ["(a+)+", "(a*)*b", "(a|aa)+", "(\\w+\\s?)*$", "(a)\\1", "(?=a).*", ".*.*.*.*x", "(.{1,3})+"]) {
      expect(unsafeRegexReason(bad), bad).not.toBeNull();
    }
  });
});

describe("namespaces and registration", () => {
  it("an appservice registers users in its namespace only; others' exclusive namespaces are closed", async () => {
    const a = await addAppservice();
    expect(await a.registerGhost("alice")).toBe(a.ghost("alice"));
    // Without inhibit_login it gets a session for the new user.
    const s = await a.as("POST", "/_matrix/client/v3/register", { type: "m.login.application_service", username: `_${a.p}_bob` });
    expect(s.status).toBe(200);
    expect(s.body.access_token).toBeTruthy();
    // Outside its namespace: M_EXCLUSIVE.
    const out = await a.as("POST", "/_matrix/client/v3/register", { type: "m.login.application_service", username: uniqueName("plain") });
    expect(out.status).toBe(400);
    expect(out.body.errcode).toBe("M_EXCLUSIVE");
    // Without a token / with an unknown token: 401.
    const none = await call("POST", "/_matrix/client/v3/register", { body: { type: "m.login.application_service", username: `_${a.p}_c` } });
    expect([none.status, none.body.errcode]).toEqual([401, "M_MISSING_TOKEN"]);
    const bad = await call("POST", "/_matrix/client/v3/register", { token: "not-a-token", body: { type: "m.login.application_service", username: `_${a.p}_c` } });
    expect([bad.status, bad.body.errcode]).toEqual([401, "M_UNKNOWN_TOKEN"]);
    // Another appservice cannot take users from a's exclusive namespace.
    const b = await addAppservice({ namespaces: { users: [{ exclusive: false, regex: "@_.*" }] } });
    const steal = await b.as("POST", "/_matrix/client/v3/register", { type: "m.login.application_service", username: `_${a.p}_dave` });
    expect([steal.status, steal.body.errcode]).toEqual([400, "M_EXCLUSIVE"]);
  });

  it("a normal user cannot register a name in an exclusive namespace (or the sender's)", async () => {
    const a = await addAppservice();
    for (const username of [`_${a.p}_mallory`, a.reg.sender_localpart]) {
      const r = await call("POST", "/_matrix/client/v3/register", { body: { username, password: "pw", auth: { type: "m.login.dummy" } } });
      expect([r.status, r.body.errcode], username).toEqual([400, "M_EXCLUSIVE"]);
      const avail = await call("GET", `/_matrix/client/v3/register/available?username=${username}`);
      expect(avail.body.errcode).toBe("M_EXCLUSIVE");
    }
    // A non-exclusive namespace leaves names open.
    const open = await addAppservice({ namespaces: { users: [{ exclusive: false, regex: "@_shared_.*" }] } });
    expect(open.reg.id).toBeTruthy();
    const ok = await call("POST", "/_matrix/client/v3/register", { body: { username: `_shared_${uniqueName("x").toLowerCase()}`, password: "pw", auth: { type: "m.login.dummy" } } });
    expect(ok.status).toBe(200);
  });

  it("aliases in an exclusive namespace are the appservice's", async () => {
    const a = await addAppservice();
    const user = await registerUser();
    const create = await call("POST", "/_matrix/client/v3/createRoom", { token: user.accessToken, body: { room_alias_name: `_${a.p}_room` } });
    expect([create.status, create.body.errcode]).toEqual([400, "M_EXCLUSIVE"]);
    const room = await call("POST", "/_matrix/client/v3/createRoom", { token: user.accessToken, body: {} });
    const alias = encodeURIComponent(`#_${a.p}_room:test.local`);
    const put = await call("PUT", `/_matrix/client/v3/directory/room/${alias}`, { token: user.accessToken, body: { room_id: room.body.room_id } });
    expect([put.status, put.body.errcode]).toEqual([400, "M_EXCLUSIVE"]);
    // The appservice's own user creates it.
    const own = await a.as("POST", "/_matrix/client/v3/createRoom", { room_alias_name: `_${a.p}_room` });
    expect(own.status, JSON.stringify(own.body)).toBe(200);
  });
});

describe("as_token authentication", () => {
  it("acts as the sender by default, as a namespaced user with user_id, never outside", async () => {
    const a = await addAppservice();
    const me = await a.as("GET", "/_matrix/client/v3/account/whoami");
    expect(me.status).toBe(200);
    expect(me.body.user_id).toBe(a.sender);
    expect(me.body.device_id).toBeUndefined();
    const alice = await a.registerGhost("alice");
    const asAlice = await a.as("GET", `/_matrix/client/v3/account/whoami?user_id=${encodeURIComponent(alice)}`);
    expect(asAlice.body.user_id).toBe(alice);
    const plain = await registerUser();
    const outside = await a.as("GET", `/_matrix/client/v3/account/whoami?user_id=${encodeURIComponent(plain.userId)}`);
    expect([outside.status, outside.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const unregistered = await a.as("GET", `/_matrix/client/v3/account/whoami?user_id=${encodeURIComponent(a.ghost("nobody"))}`);
    expect(unregistered.status).toBe(403);
    const remote = await a.as("GET", `/_matrix/client/v3/account/whoami?user_id=${encodeURIComponent(`@_${a.p}_x:elsewhere.example`)}`);
    expect(remote.status).toBe(403);
    // The ghost's rooms show in its /sync.
    const q = `user_id=${encodeURIComponent(alice)}`;
    const room = await a.as("POST", `/_matrix/client/v3/createRoom?${q}`, { name: "ghost room" });
    expect(room.status).toBe(200);
    const sync = await a.as("GET", `/_matrix/client/v3/sync?${q}&timeout=0`);
    expect(sync.status, JSON.stringify(sync.body)).toBe(200);
    expect(Object.keys(sync.body.rooms?.join ?? {})).toContain(room.body.room_id);
  });

  it("device_id (and MSC3202's name for it) must be one of the user's devices", async () => {
    const a = await addAppservice();
    const alice = await a.registerGhost("alice");
    const login = await a.as("POST", "/_matrix/client/v3/login", { type: "m.login.application_service", identifier: { type: "m.id.user", user: alice }, device_id: "BRIDGEDEV" });
    expect(login.status, JSON.stringify(login.body)).toBe(200);
    expect(login.body.user_id).toBe(alice);
    const q = `user_id=${encodeURIComponent(alice)}`;
    for (const param of ["device_id", "org.matrix.msc3202.device_id"]) {
      const ok = await a.as("GET", `/_matrix/client/v3/account/whoami?${q}&${param}=BRIDGEDEV`);
      expect(ok.body.device_id, param).toBe("BRIDGEDEV");
      const bad = await a.as("GET", `/_matrix/client/v3/account/whoami?${q}&${param}=NOPE`);
      expect([bad.status, bad.body.errcode], param).toEqual([400, "M_UNKNOWN_DEVICE"]);
    }
  });

  it("login with m.login.application_service: namespace only, needs the as_token", async () => {
    const a = await addAppservice();
    await a.registerGhost("carol");
    const plain = await registerUser();
    const out = await a.as("POST", "/_matrix/client/v3/login", { type: "m.login.application_service", identifier: { type: "m.id.user", user: plain.userId } });
    expect([out.status, out.body.errcode]).toEqual([403, "M_EXCLUSIVE"]);
    const noToken = await call("POST", "/_matrix/client/v3/login", { body: { type: "m.login.application_service", identifier: { type: "m.id.user", user: a.ghost("carol") } } });
    expect([noToken.status, noToken.body.errcode]).toEqual([401, "M_MISSING_TOKEN"]);
    const flows = await call("GET", "/_matrix/client/v3/login");
    expect(flows.body.flows.map((f: any) => f.type)).toContain("m.login.application_service");
  });

  it("timestamp massaging: ts sets origin_server_ts for appservices only", async () => {
    const a = await addAppservice();
    const alice = await a.registerGhost("alice");
    const q = `user_id=${encodeURIComponent(alice)}`;
    const room = await a.as("POST", `/_matrix/client/v3/createRoom?${q}`, {});
    const roomId = encodeURIComponent(room.body.room_id);
    const sent = await a.as("PUT", `/_matrix/client/v3/rooms/${roomId}/send/m.room.message/t1?${q}&ts=1234567890`, { msgtype: "m.text", body: "old" });
    expect(sent.status, JSON.stringify(sent.body)).toBe(200);
    const ev = await a.as("GET", `/_matrix/client/v3/rooms/${roomId}/event/${encodeURIComponent(sent.body.event_id)}?${q}`);
    expect(ev.body.origin_server_ts).toBe(1234567890);
    const state = await a.as("PUT", `/_matrix/client/v3/rooms/${roomId}/state/m.room.topic/?${q}&ts=1234567999`, { topic: "t" });
    const sev = await a.as("GET", `/_matrix/client/v3/rooms/${roomId}/event/${encodeURIComponent(state.body.event_id)}?${q}`);
    expect(sev.body.origin_server_ts).toBe(1234567999);
    const bad = await a.as("PUT", `/_matrix/client/v3/rooms/${roomId}/send/m.room.message/t2?${q}&ts=soon`, { msgtype: "m.text", body: "x" });
    expect([bad.status, bad.body.errcode]).toEqual([400, "M_INVALID_PARAM"]);
    // A normal user's ts is ignored.
    const user = await registerUser();
    const r2 = await clientOk(user.accessToken, "POST", "/createRoom", {});
    const s2 = await clientOk(user.accessToken, "PUT", `/rooms/${encodeURIComponent(r2.room_id)}/send/m.room.message/t1?ts=1234567890`, { msgtype: "m.text", body: "now" });
    const e2 = await clientOk(user.accessToken, "GET", `/rooms/${encodeURIComponent(r2.room_id)}/event/${encodeURIComponent(s2.event_id)}`);
    expect(e2.origin_server_ts).toBeGreaterThan(1_700_000_000_000);
  });

  it("ping: own id only, needs a url, reports an unreachable appservice", async () => {
    const noUrl = await addAppservice();
    const r = await noUrl.as("POST", `/_matrix/client/v1/appservice/${noUrl.p}/ping`, {});
    expect([r.status, r.body.errcode]).toEqual([400, "M_URL_NOT_SET"]);
    const other = await noUrl.as("POST", `/_matrix/client/v1/appservice/someone-else/ping`, {});
    expect([other.status, other.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const down = await addAppservice({ url: "http://127.0.0.1:1" });
    const d = await down.as("POST", `/_matrix/client/v1/appservice/${down.p}/ping`, { transaction_id: "meow" });
    expect(d.status).toBe(502);
    expect(d.body.errcode).toBe("M_CONNECTION_FAILED");
    const user = await registerUser();
    const u = await call("POST", `/_matrix/client/v1/appservice/${down.p}/ping`, { token: user.accessToken, body: {} });
    expect(u.status).toBe(403);
  });
});

describe("transaction queue", () => {
  it("queues the events of interested rooms in order and retries an unreachable appservice", async () => {
    const { runInDurableObject, env } = await import("cloudflare:test");
    const a = await addAppservice({ url: "http://127.0.0.1:1" });
    const alice = await a.registerGhost("alice");
    const user = await registerUser();
    // A room of plain users: not the appservice's business.
    const other = await clientOk(user.accessToken, "POST", "/createRoom", {});
    await clientOk(user.accessToken, "PUT", `/rooms/${encodeURIComponent(other.room_id)}/send/m.room.message/o1`, { msgtype: "m.text", body: "private" });
    // A room with a ghost in it: everything in it from then on.
    const room = await clientOk(user.accessToken, "POST", "/createRoom", { preset: "public_chat" });
    const roomId = encodeURIComponent(room.room_id);
    const join = await a.as("POST", `/_matrix/client/v3/join/${roomId}?user_id=${encodeURIComponent(alice)}`, {});
    expect(join.status, JSON.stringify(join.body)).toBe(200);
    for (let i = 0; i < 5; i++) await clientOk(user.accessToken, "PUT", `/rooms/${roomId}/send/m.room.message/m${i}`, { msgtype: "m.text", body: `m${i}` });

    const stub = env.APPSERVICE_SENDER.get(env.APPSERVICE_SENDER.idFromName(a.p));
    let status = await stub.status();
    for (let i = 0; i < 100 && !(status.queued >= 6 && status.failures >= 1); i++) {
      await new Promise((r) => setTimeout(r, 50));
      status = await stub.status();
    }
    expect(status.failures).toBeGreaterThanOrEqual(1);
    expect(status.lastError).toMatch(/reach/);
    expect(status.inFlightTxnId).toBeTruthy();
    const bodies = (await queuedItems(a.p)).filter((i) => i.kind === "event").map((i) => i.body);
    const texts = bodies.filter((e) => e.type === "m.room.message").map((e) => e.content.body);
    expect(texts).toEqual(["m0", "m1", "m2", "m3", "m4"]);
    expect(bodies[0]).toMatchObject({ type: "m.room.member", state_key: alice, room_id: room.room_id });
    expect(bodies.every((e) => e.room_id === room.room_id)).toBe(true);
    // The retry keeps the transaction ID (same content until the appservice answers).
    const txn = status.inFlightTxnId;
    await runInDurableObject(stub, async (instance) => {
      await (instance as any).sendOne();
    });
    expect((await stub.status()).inFlightTxnId).toBe(txn);
    expect((await stub.status()).failures).toBeGreaterThanOrEqual(2);
    // Removing the registration drops its queue.
    expect((await call("DELETE", `/_lattice/admin/v1/appservices/${a.p}`, { token: admin.accessToken })).status).toBe(200);
    expect((await stub.status()).queued).toBe(0);
  });

  it("the RoomDO hands over again what a stopped instance did not (watermark, alarm)", async () => {
    const { runInDurableObject, env } = await import("cloudflare:test");
    const a = await addAppservice({ url: "http://127.0.0.1:1" });
    const alice = await a.registerGhost("alice");
    const user = await registerUser();
    const room = await clientOk(user.accessToken, "POST", "/createRoom", { preset: "public_chat" });
    const roomId = encodeURIComponent(room.room_id);
    expect((await a.as("POST", `/_matrix/client/v3/join/${roomId}?user_id=${encodeURIComponent(alice)}`, {})).status).toBe(200);
    await clientOk(user.accessToken, "PUT", `/rooms/${roomId}/send/m.room.message/r1`, { msgtype: "m.text", body: "handed over once" });
    const texts = async () =>
      (await queuedItems(a.p)).filter((i) => i.kind === "event" && i.body.type === "m.room.message").map((i) => i.body.content.body);
    for (let i = 0; i < 100 && (await texts()).length < 1; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await texts()).toEqual(["handed over once"]);
    const roomDO = env.ROOMS.get(env.ROOMS.idFromName(room.room_id));
    // The watermark covers the message once the chain is idle; an alarm then redelivers nothing.
    let mark: number | undefined;
    for (let i = 0; i < 100; i++) {
      mark = await runInDurableObject(roomDO, (_i, state) => state.storage.get<number>("appservice_done"));
      if (mark !== undefined) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(mark).toBeGreaterThan(0);
    await runInDurableObject(roomDO, (instance) => (instance as any).alarm());
    expect(await texts()).toEqual(["handed over once"]);
    // A new instance whose predecessor stopped before handing the message over: the watermark
    // is below it, so the alarm hands it over (again, here).
    await runInDurableObject(roomDO, async (instance, state) => {
      await state.storage.put("appservice_done", mark! - 1);
      (instance as any).fanout._appservices = undefined; // durable-objects/room/fanout.ts
      await (instance as any).alarm();
    });
    for (let i = 0; i < 100 && (await texts()).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await texts()).toEqual(["handed over once", "handed over once"]);
  });
});
