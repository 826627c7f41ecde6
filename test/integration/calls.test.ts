// Calls: TURN credentials (voip.yaml), MatrixRTC transport discovery (MSC4143). The integration
// environment configures neither, so these are the unconfigured answers; the configured ones are
// tested end to end (test/e2e/calls.test.ts) and in test/unit/push-gateway.test.ts.
import { describe, it, expect } from "vitest";
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { call, clientOk, registerUser } from "./helpers";
import { parseConfig } from "../../src/config";

describe("voip/turnServer", () => {
  it("answers {} when no TURN server is configured, and needs authentication", async () => {
    const u = await registerUser();
    expect(await clientOk(u.accessToken, "GET", "/voip/turnServer")).toEqual({});
    expect((await call("GET", "/_matrix/client/v3/voip/turnServer")).status).toBe(401);
  });
  it("refuses contradictory or incomplete TURN configuration", () => {
    const base = { SERVER_NAME: "test.local" };
    const bad = (vars: Record<string, string>, why: RegExp) => expect(() => parseConfig({ ...base, ...vars } as any)).toThrow(why);
    bad({ TURN_SHARED_SECRET: "0123456789", TURN_URIS: "turn:t.example.org", TURN_KEY_ID: "abc", TURN_KEY_API_TOKEN: "x" }, /not both/);
    bad({ TURN_SHARED_SECRET: "0123456789" }, /TURN_URIS: required/);
    bad({ TURN_SHARED_SECRET: "0123456789", TURN_URIS: "https://t.example.org" }, /TURN_URIS/);
    bad({ TURN_KEY_ID: "abc" }, /go together/);
    bad({ TURN_TTL_SECONDS: "5" }, /TURN_TTL_SECONDS/);
    bad({ RTC_FOCUS_URL: "ftp://x" }, /RTC_FOCUS_URL/);
    bad({ PUSH_HTTP_LOOPBACK: "yes" }, /PUSH_HTTP_LOOPBACK/);
    expect(() => parseConfig({ ...base } as any)).not.toThrow();
    const ok = parseConfig({ ...base, TURN_SHARED_SECRET: "0123456789", TURN_URIS: "turn:a.example.org:3478, turns:a.example.org:5349" } as any);
    expect(ok.turn).toEqual({ kind: "shared-secret", secret: "0123456789", uris: ["turn:a.example.org:3478", "turns:a.example.org:5349"], ttlSeconds: 86400 });
  });
});

describe("MatrixRTC transports (MSC4143)", () => {
  it("lists no transport when RTC_FOCUS_URL is unset; well-known has no rtc_foci", async () => {
    const u = await registerUser();
    const r = await call("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", { token: u.accessToken });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ rtc_transports: [] });
    expect((await call("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports")).status).toBe(401);
    const wk = await call("GET", "/.well-known/matrix/client");
    expect(wk.body["org.matrix.msc4143.rtc_foci"]).toBeUndefined();
  });
});

describe("delayed events (MSC4140)", () => {
  const U = "/_matrix/client/unstable/org.matrix.msc4140";
  const enc = encodeURIComponent;
  async function setup() {
    const u = await registerUser();
    const { room_id } = await clientOk(u.accessToken, "POST", "/createRoom", {});
    return { u, roomId: room_id as string };
  }
  const messages = async (token: string, roomId: string) =>
    ((await clientOk(token, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=50`)).chunk as any[]).filter((e) => e.type === "m.room.message");
  const delayedStub = (userId: string) => env.DELAYED_EVENTS.get(env.DELAYED_EVENTS.idFromName(userId));

  it("is advertised in /versions", async () => {
    expect((await call("GET", "/_matrix/client/versions")).body.unstable_features["org.matrix.msc4140"]).toBe(true);
  });

  it("schedules a message, lists it, restarts it, and sends it when the alarm fires", async () => {
    const { u, roomId } = await setup();
    const r = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/t1?org.matrix.msc4140.delay=600000`, { msgtype: "m.text", body: "later" });
    expect(typeof r.delay_id).toBe("string");
    expect(r.event_id).toBeUndefined();
    // Same transaction ID: the same delayed event.
    const again = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/t1?org.matrix.msc4140.delay=600000`, { msgtype: "m.text", body: "later" });
    expect(again.delay_id).toBe(r.delay_id);
    const list = (await call("GET", `${U}/delayed_events`, { token: u.accessToken })).body.delayed_events;
    expect(list).toEqual([{ delay_id: r.delay_id, room_id: roomId, type: "m.room.message", delay: 600000, running_since: expect.any(Number), content: { msgtype: "m.text", body: "later" } }]);
    expect(await messages(u.accessToken, roomId)).toEqual([]);
    const restarted = await call("POST", `${U}/delayed_events/${enc(r.delay_id)}`, { token: u.accessToken, body: { action: "restart" } });
    expect(restarted.status).toBe(200);
    expect((await call("GET", `${U}/delayed_events`, { token: u.accessToken })).body.delayed_events[0].running_since).toBeGreaterThanOrEqual(list[0].running_since);
    // Not due yet: the alarm sends nothing.
    await runDurableObjectAlarm(delayedStub(u.userId));
    expect(await messages(u.accessToken, roomId)).toEqual([]);
    // Send it now (unauthenticated: the delay_id is the capability).
    expect((await call("POST", `${U}/delayed_events/${enc(r.delay_id)}/send`, { body: {} })).status).toBe(200);
    const sent = await messages(u.accessToken, roomId);
    expect(sent.map((e) => e.content.body)).toEqual(["later"]);
    expect(sent[0].sender).toBe(u.userId);
    expect((await call("GET", `${U}/delayed_events`, { token: u.accessToken })).body.delayed_events).toEqual([]);
    // Retrying send is fine; cancel now conflicts.
    expect((await call("POST", `${U}/delayed_events/${enc(r.delay_id)}/send`, { body: {} })).status).toBe(200);
    const conflict = await call("POST", `${U}/delayed_events/${enc(r.delay_id)}/cancel`, { body: {} });
    expect(conflict.status).toBe(409);
  });

  it("a due delayed state event is sent by the alarm; a cancelled one never", async () => {
    const { u, roomId } = await setup();
    const keep = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/dev1?org.matrix.msc4140.delay=1`, { left: true });
    const drop = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/dev2?org.matrix.msc4140.delay=1`, { left: true });
    expect((await call("POST", `${U}/delayed_events/${enc(drop.delay_id)}/cancel`, { body: {} })).status).toBe(200);
    expect((await call("POST", `${U}/delayed_events/${enc(drop.delay_id)}/cancel`, { body: {} })).status).toBe(200);
    expect((await call("POST", `${U}/delayed_events/${enc(drop.delay_id)}/restart`, { body: {} })).status).toBe(409);
    await new Promise((r) => setTimeout(r, 20));
    await runDurableObjectAlarm(delayedStub(u.userId));
    expect(await clientOk(u.accessToken, "GET", `/rooms/${enc(roomId)}/state/org.example.call/dev1`)).toEqual({ left: true });
    expect((await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/org.example.call/dev2`, { token: u.accessToken })).status).toBe(404);
    expect((await call("POST", `${U}/delayed_events/${enc(keep.delay_id)}/send`, { body: {} })).status).toBe(200);
  });

  it("a refused explicit send answers the room's error and stays scheduled; refused on the alarm, it is cancelled", async () => {
    const { u, roomId } = await setup();
    const other = await registerUser();
    await clientOk(u.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: other.userId });
    await clientOk(other.accessToken, "POST", `/join/${enc(roomId)}`, {});
    // Allowed to schedule (nothing is checked until send time), refused when sent: other has PL 0.
    const d = await clientOk(other.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.name/?org.matrix.msc4140.delay=600000`, { name: "nope" });
    const r = await call("POST", `${U}/delayed_events/${enc(d.delay_id)}/send`, { body: {} });
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe("M_FORBIDDEN");
    // Still scheduled after a refused explicit send (MSC4140).
    expect((await call("GET", `${U}/delayed_events`, { token: other.accessToken })).body.delayed_events.length).toBe(1);
    // Due and refused on the alarm: cancelled (finalised with the error), not retried forever.
    const due = await clientOk(other.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.name/?org.matrix.msc4140.delay=1`, { name: "nope" });
    await new Promise((r) => setTimeout(r, 20));
    await runDurableObjectAlarm(delayedStub(other.userId));
    expect((await call("GET", `${U}/delayed_events`, { token: other.accessToken })).body.delayed_events.map((e: any) => e.delay_id)).toEqual([d.delay_id]);
    expect((await call("POST", `${U}/delayed_events/${enc(due.delay_id)}/send`, { body: {} })).status).toBe(409);
  });

  it("refuses bad input", async () => {
    const { u, roomId } = await setup();
    const other = await registerUser();
    const put = (q: string) => call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/x${Math.random()}?${q}`, { token: u.accessToken, body: { body: "x" } });
    for (const q of ["org.matrix.msc4140.delay=abc", "org.matrix.msc4140.delay=0", "org.matrix.msc4140.delay=-5", "org.matrix.msc4140.delay="]) {
      const r = await put(q);
      expect(r.status, q).toBe(400);
      expect(r.body.errcode, q).toBe("M_INVALID_PARAM");
    }
    const big = await put("org.matrix.msc4140.delay=86400001");
    expect(big.status).toBe(400);
    expect(big.body).toMatchObject({ errcode: "M_MAX_DELAY_EXCEEDED", max_delay: 86400000 });
    const unknownRoom = await call("PUT", `/_matrix/client/v3/rooms/${enc("!nope:test.local")}/send/m.room.message/t?org.matrix.msc4140.delay=1000`, { token: u.accessToken, body: {} });
    expect(unknownRoom.status).toBe(404);
    const d = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/mine?org.matrix.msc4140.delay=600000`, { body: "x" });
    const badAction = await call("POST", `${U}/delayed_events/${enc(d.delay_id)}`, { token: u.accessToken, body: { action: "explode" } });
    expect(badAction.body.errcode).toBe("M_BAD_JSON");
    expect((await call("POST", `${U}/delayed_events/${enc(d.delay_id)}/explode`, { body: {} })).status).toBe(404);
    // Another user cannot manage mine through the authenticated endpoint.
    expect((await call("POST", `${U}/delayed_events/${enc(d.delay_id)}`, { token: other.accessToken, body: { action: "cancel" } })).status).toBe(404);
    expect((await call("POST", `${U}/delayed_events/${enc(d.delay_id)}`, { body: { action: "cancel" } })).status).toBe(401);
    for (const id of ["nope", "dAAAAAAAAAAAAAAAAAAAAAA.QHg6eQ", `${d.delay_id.slice(0, 5)}x${d.delay_id.slice(6)}`]) {
      const r = await call("POST", `${U}/delayed_events/${enc(id)}/cancel`, { body: {} });
      expect(r.status, id).toBe(404);
      expect(r.body.errcode).toBe("M_NOT_FOUND");
    }
    expect((await call("GET", `${U}/delayed_events`)).status).toBe(401);
  });

  it("limits how many a user may have scheduled: 429 M_LIMIT_EXCEEDED with Retry-After", async () => {
    const { u, roomId } = await setup();
    for (let i = 0; i < 100; i++) await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/n${i}?org.matrix.msc4140.delay=3600000`, { body: String(i) });
    const r = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/n100?org.matrix.msc4140.delay=3600000`, { token: u.accessToken, body: { body: "one too many" } });
    expect(r.status).toBe(429);
    expect(r.body.errcode).toBe("M_LIMIT_EXCEEDED");
    expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(3000);
  });
});
