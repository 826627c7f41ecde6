// Event reports (admin side) and server notices.
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { SERVER, call, clientOk, registerUser } from "./helpers";
import { A, enc, registerAdmin } from "./admin-helpers";

// The `reports` table belongs to the client reporting endpoints (module "Reporting content"),
// built separately; this file creates it with the same columns when this branch lacks it.
async function ensureReportsTable(): Promise<boolean> {
  const had = !!(await env.DB.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reports'").first());
  await env.DB.prepare(
    `CREATE TABLE IF NOT EXISTS reports (id integer PRIMARY KEY AUTOINCREMENT NOT NULL, kind text NOT NULL, reporter text NOT NULL,
     room_id text, event_id text, target_user_id text, reason text, score integer, received_ts integer NOT NULL)`,
  ).run();
  return had;
}

describe("admin API: event reports", () => {
  it("403 for non-admins; lists, shows and deletes event reports in Synapse's shape", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    const u = await registerUser();
    expect((await call("GET", `${A}/v1/event_reports`, { token: u.accessToken })).body.errcode).toBe("M_FORBIDDEN");
    const had = await env.DB.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reports'").first();
    if (!had) expect((await call("GET", `${A}/v1/event_reports`, { token: t })).body.errcode).toBe("M_UNRECOGNIZED");
    await ensureReportsTable();

    const spammer = await registerUser();
    const { room_id } = await clientOk(u.accessToken, "POST", "/createRoom", { name: "Reported room", preset: "public_chat" });
    await clientOk(spammer.accessToken, "POST", `/join/${enc(room_id)}`, {});
    const { event_id } = await clientOk(spammer.accessToken, "PUT", `/rooms/${enc(room_id)}/send/m.room.message/x1`, { msgtype: "m.text", body: "spam" });
    const now = Date.now();
    await env.DB.prepare("INSERT INTO reports (kind, reporter, room_id, event_id, reason, score, received_ts) VALUES ('event', ?, ?, ?, 'spam', -100, ?)").bind(u.userId, room_id, event_id, now).run();
    await env.DB.prepare("INSERT INTO reports (kind, reporter, room_id, reason, received_ts) VALUES ('room', ?, ?, 'bad room', ?)").bind(u.userId, room_id, now + 1).run();

    const list = await call("GET", `${A}/v1/event_reports?room_id=${enc(room_id)}`, { token: t });
    expect(list.status).toBe(200);
    expect(list.body.total).toBe(1);
    const rep = list.body.event_reports[0];
    expect(rep).toMatchObject({ room_id, event_id, user_id: u.userId, reason: "spam", score: -100, sender: spammer.userId, name: "Reported room", received_ts: now });
    const one = await call("GET", `${A}/v1/event_reports/${rep.id}`, { token: t });
    expect(one.body.event_json.content.body).toBe("spam");
    expect((await call("GET", `${A}/v1/event_reports/abc`, { token: t })).status).toBe(400);
    expect((await call("GET", `${A}/v1/event_reports?dir=sideways`, { token: t })).status).toBe(400);
    expect((await call("DELETE", `${A}/v1/event_reports/${rep.id}`, { token: t })).body).toEqual({});
    expect((await call("GET", `${A}/v1/event_reports/${rep.id}`, { token: t })).status).toBe(404);
    expect((await call("DELETE", `${A}/v1/event_reports/${rep.id}`, { token: t })).status).toBe(404);
  });
});

describe("admin API: server notices", () => {
  it("sends notices from the notices account into one tagged room per user", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    expect((await call("POST", `${A}/v1/send_server_notice`, { token: u.accessToken, body: { user_id: u.userId, content: { msgtype: "m.text", body: "x" } } })).body.errcode).toBe("M_FORBIDDEN");
    const first = await call("POST", `${A}/v1/send_server_notice`, { token: admin.accessToken, body: { user_id: u.userId, content: { msgtype: "m.text", body: "Maintenance at noon" } } });
    expect(first.status).toBe(200);
    expect(first.body.event_id).toMatch(/^\$/);
    const second = await call("PUT", `${A}/v1/send_server_notice/t1`, { token: admin.accessToken, body: { user_id: u.userId, content: { msgtype: "m.text", body: "Done" } } });
    expect(second.status).toBe(200);
    const sync = await clientOk(u.accessToken, "GET", "/sync?timeout=0");
    const invites = Object.entries(sync.rooms?.invite ?? {});
    expect(invites.length).toBe(1);
    const [roomId] = invites[0];
    const tags = await clientOk(u.accessToken, "GET", `/user/${enc(u.userId)}/rooms/${enc(roomId)}/tags`);
    expect(Object.keys(tags.tags)).toContain("m.server_notice");
    await clientOk(u.accessToken, "POST", `/join/${enc(roomId)}`, {});
    const msgs = await clientOk(u.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=20`);
    const bodies = msgs.chunk.filter((e: any) => e.type === "m.room.message").map((e: any) => e.content.body);
    expect(bodies).toEqual(["Done", "Maintenance at noon"]);
    expect(msgs.chunk.find((e: any) => e.type === "m.room.message").sender).toBe(`@notices:${SERVER}`);
    // Bad input.
    expect((await call("POST", `${A}/v1/send_server_notice`, { token: admin.accessToken, body: { user_id: "@x:elsewhere.example", content: {} } })).status).toBe(400);
    expect((await call("POST", `${A}/v1/send_server_notice`, { token: admin.accessToken, body: { user_id: `@nobody${Date.now()}:${SERVER}`, content: {} } })).status).toBe(404);
    expect((await call("POST", `${A}/v1/send_server_notice`, { token: admin.accessToken, body: { user_id: u.userId, content: "hi" } })).body.errcode).toBe("M_BAD_JSON");
  });
});

describe("admin API: registration tokens (get and edit)", () => {
  it("reads one token and changes uses_allowed and expiry_time", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const t = admin.accessToken;
    const made = await call("POST", `${A}/v1/registration_tokens/new`, { token: t, body: { uses_allowed: 1 } });
    const p = `${A}/v1/registration_tokens/${made.body.token}`;
    expect((await call("GET", p, { token: u.accessToken })).status).toBe(403);
    expect((await call("PUT", p, { token: u.accessToken, body: { uses_allowed: 9 } })).status).toBe(403);
    expect((await call("GET", p, { token: t })).body).toMatchObject({ token: made.body.token, uses_allowed: 1, pending: 0, completed: 0, expiry_time: null });
    const edited = await call("PUT", p, { token: t, body: { uses_allowed: null, expiry_time: 4102444800000 } });
    expect(edited.body).toMatchObject({ uses_allowed: null, expiry_time: 4102444800000 });
    expect((await call("PUT", p, { token: t, body: { uses_allowed: "many" } })).body.errcode).toBe("M_BAD_JSON");
    expect((await call("GET", `${A}/v1/registration_tokens/nonexistent`, { token: t })).status).toBe(404);
    expect((await call("PUT", `${A}/v1/registration_tokens/nonexistent`, { token: t, body: {} })).status).toBe(404);
  });
});
