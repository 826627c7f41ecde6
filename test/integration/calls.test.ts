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
    expect(list).toEqual([
      {
        delay_id: r.delay_id,
        room_id: roomId,
        type: "m.room.message",
        delay: 600000,
        running_since: expect.any(Number),
        delay_ms: 600000,
        scheduled_at: expect.any(Number),
        content: { msgtype: "m.text", body: "later" },
      },
    ]);
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
    // MSC4140: the sent event carries its delay_id in unsigned, for its sender only (and no
    // transaction_id: it was not sent with one).
    expect(sent[0].unsigned["org.matrix.msc4140.delay_id"]).toBe(r.delay_id);
    expect(sent[0].unsigned.transaction_id).toBeUndefined();
    const other = await registerUser();
    await clientOk(u.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: other.userId });
    await clientOk(other.accessToken, "POST", `/join/${enc(roomId)}`, {});
    const seen = await clientOk(other.accessToken, "GET", `/rooms/${enc(roomId)}/event/${enc(sent[0].event_id)}`);
    expect(seen.unsigned["org.matrix.msc4140.delay_id"]).toBeUndefined();
    const own = await clientOk(u.accessToken, "GET", `/rooms/${enc(roomId)}/event/${enc(sent[0].event_id)}`);
    expect(own.unsigned["org.matrix.msc4140.delay_id"]).toBe(r.delay_id);
    // Retrying send is fine; cancel now conflicts.
    expect((await call("POST", `${U}/delayed_events/${enc(r.delay_id)}/send`, { body: {} })).status).toBe(200);
    const conflict = await call("POST", `${U}/delayed_events/${enc(r.delay_id)}/cancel`, { body: {} });
    expect(conflict.status).toBe(409);
  });

  it("a due delayed state event is sent by the alarm; a cancelled one never", async () => {
    const { u, roomId } = await setup();
    const keep = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/dev1?org.matrix.msc4140.delay=1`, { left: true });
    // Due in 1.5 s (not 1 ms: the DO's own alarm could send it before the cancel arrives).
    const scheduledAt = Date.now();
    const drop = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/dev2?org.matrix.msc4140.delay=1500`, { left: true });
    expect((await call("POST", `${U}/delayed_events/${enc(drop.delay_id)}/cancel`, { body: {} })).status).toBe(200);
    expect((await call("POST", `${U}/delayed_events/${enc(drop.delay_id)}/cancel`, { body: {} })).status).toBe(200);
    expect((await call("POST", `${U}/delayed_events/${enc(drop.delay_id)}/restart`, { body: {} })).status).toBe(409);
    await new Promise((r) => setTimeout(r, Math.max(20, scheduledAt + 1600 - Date.now())));
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
    for (const id of ["nope", "dAAAAAAAAAAAAAAAAAAAAAA.QHg6eQ", `${d.delay_id.slice(0, 5)}${d.delay_id[5] === "x" ? "y" : "x"}${d.delay_id.slice(6)}`]) {
      const r = await call("POST", `${U}/delayed_events/${enc(id)}/cancel`, { body: {} });
      expect(r.status, id).toBe(404);
      expect(r.body.errcode).toBe("M_NOT_FOUND");
    }
    expect((await call("GET", `${U}/delayed_events`)).status).toBe(401);
  });

  it("the MSC's current form: PUT .../delayed_event, GET one, authenticated actions, finalised lookups, the capability", async () => {
    const { u, roomId } = await setup();
    const other = await registerUser();
    const path = (txn: string, type = "m.room.message") => `${U}/rooms/${enc(roomId)}/delayed_event/${type}/${txn}`;
    const put = (txn: string, body: unknown, token = u.accessToken, type?: string) => call("PUT", path(txn, type), { token, body });
    const r = await put("n1", { delay_ms: 600000, content: { msgtype: "m.text", body: "new form" } });
    expect(r.status).toBe(200);
    const id = r.body.delay_id as string;
    expect((await put("n1", { delay_ms: 600000, content: { msgtype: "m.text", body: "new form" } })).body.delay_id).toBe(id);
    // Its transaction scope is its own: the same txnId on /send?delay is another event.
    const viaQuery = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/n1?org.matrix.msc4140.delay=600000`, { body: "x" });
    expect(viaQuery.delay_id).not.toBe(id);
    const one = await call("GET", `${U}/delayed_events/${enc(id)}`, { token: u.accessToken });
    expect(one.body).toMatchObject({ delay_id: id, room_id: roomId, type: "m.room.message", delay_ms: 600000, scheduled_at: expect.any(Number), content: { body: "new form" } });
    expect(one.body.finalised_ts).toBeUndefined();
    // Someone else's: 404, for reading and for actions with their token.
    expect((await call("GET", `${U}/delayed_events/${enc(id)}`, { token: other.accessToken })).status).toBe(404);
    expect((await call("POST", `${U}/delayed_events/${enc(id)}/cancel`, { token: other.accessToken, body: {} })).status).toBe(404);
    expect((await call("POST", `${U}/delayed_events/${enc(id)}/send`, { token: u.accessToken, body: {} })).status).toBe(200);
    const sent = (await call("GET", `${U}/delayed_events/${enc(id)}`, { token: u.accessToken })).body;
    expect(sent.event_id).toMatch(/^\$/);
    expect(sent.finalised_ts).toEqual(expect.any(Number));
    expect((await messages(u.accessToken, roomId)).map((e) => e.event_id)).toEqual([sent.event_id]);
    // matrix-js-sdk 43's list form: scheduled and finalised, filtered by status and delay_id.
    const fin = (await call("GET", `${U}/delayed_events?status=finalised&delay_id=${enc(id)}`, { token: u.accessToken })).body;
    expect(fin.scheduled).toEqual([]);
    expect(fin.finalised).toEqual([{ delayed_event: expect.objectContaining({ delay_id: id }), outcome: "send", reason: "action", event_id: sent.event_id, origin_server_ts: expect.any(Number) }]);
    const sch = (await call("GET", `${U}/delayed_events?status=scheduled`, { token: u.accessToken })).body;
    expect(sch.scheduled.map((e: any) => e.delay_id)).toEqual([viaQuery.delay_id]);
    expect(sch.finalised).toEqual([]);
    expect((await call("GET", `${U}/delayed_events?status=nope`, { token: u.accessToken })).status).toBe(400);
    // A state event in the new form.
    const st = await put("s1", { delay_ms: 1, state_key: "k", content: { on: true } }, u.accessToken, "org.example.thing");
    await new Promise((r) => setTimeout(r, 20));
    await runDurableObjectAlarm(delayedStub(u.userId));
    expect(await clientOk(u.accessToken, "GET", `/rooms/${enc(roomId)}/state/org.example.thing/k`)).toEqual({ on: true });
    expect((await call("GET", `${U}/delayed_events/${enc(st.body.delay_id)}`, { token: u.accessToken })).body.event_id).toMatch(/^\$/);
    // Limits and bad input, as the MSC says.
    const long = await put("l1", { delay_ms: 86400001, content: {} });
    expect(long.status).toBe(403);
    expect(long.body.errcode).toBe("M_FORBIDDEN");
    for (const bad of [{ content: {} }, { delay_ms: 0, content: {} }, { delay_ms: 10 }, { delay_ms: 10, content: [] }, { delay_ms: 10, state_key: 5, content: {} }]) {
      const b = await put(`b${Math.random()}`, bad);
      expect(b.status, JSON.stringify(bad)).toBe(400);
    }
    expect((await call("PUT", `${U}/rooms/${enc("!nope:test.local")}/delayed_event/m.room.message/t`, { token: u.accessToken, body: { delay_ms: 10, content: {} } })).status).toBe(404);
    expect((await call("PUT", path("u1"), { body: { delay_ms: 10, content: {} } })).status).toBe(401);
    // Membership only through /join, /leave, ...; an unsupported parent_delay_id is refused, not ignored.
    expect((await put("m1", { delay_ms: 10, state_key: u.userId, content: { membership: "leave" } }, u.accessToken, "m.room.member")).status).toBe(403);
    const parent = await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/p1?org.matrix.msc4140.parent_delay_id=${enc(id)}`, { token: u.accessToken, body: {} });
    expect(parent.status).toBe(400);
    expect(parent.body.errcode).toBe("M_INVALID_PARAM");
    expect(await messages(u.accessToken, roomId)).toHaveLength(1);
    const caps = (await clientOk(u.accessToken, "GET", "/capabilities")).capabilities;
    expect(caps["org.matrix.msc4140.delayed_events"]).toEqual({ max_delay_ms: 86400000, max_scheduled: 100 });
  });

  it("someone else's state to the same key cancels a scheduled delayed state event; the owner's own does not", async () => {
    const u = await registerUser();
    const other = await registerUser();
    const { room_id: roomId } = await clientOk(u.accessToken, "POST", "/createRoom", { preset: "public_chat", power_level_content_override: { state_default: 0 } });
    await clientOk(other.accessToken, "POST", `/join/${enc(roomId)}`, {});
    const schedule = async (key: string) =>
      (await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/${key}?org.matrix.msc4140.delay=600000`, { left: true })).delay_id as string;
    const get = async (id: string) => (await call("GET", `${U}/delayed_events/${enc(id)}`, { token: u.accessToken })).body;
    const d1 = await schedule("k1");
    const d2 = await schedule("k2");
    // MatrixRTC's order: the delayed "leave" first, then the "join" to the same key by the owner.
    await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/k1`, { joined: true });
    await new Promise((r) => setTimeout(r, 50));
    expect((await get(d1)).finalised_ts).toBeUndefined();
    // Another member changes k1: d1 is cancelled with the MSC's error; d2 (another key) stays.
    await clientOk(other.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/k1`, { taken: true });
    let cancelled: any;
    for (let i = 0; i < 50 && !(cancelled = await get(d1)).finalised_ts; i++) await new Promise((r) => setTimeout(r, 20));
    expect(cancelled.error).toMatchObject({ errcode: "M_UNKNOWN", "org.matrix.msc4140.errcode": "M_CANCELLED_BY_STATE_UPDATE" });
    expect(cancelled.event_id).toBeUndefined();
    expect((await call("POST", `${U}/delayed_events/${enc(d1)}/send`, { token: u.accessToken, body: {} })).status).toBe(409);
    expect((await get(d2)).finalised_ts).toBeUndefined();
    expect(await clientOk(u.accessToken, "GET", `/rooms/${enc(roomId)}/state/org.example.call/k1`)).toEqual({ taken: true });
    // A message-like delayed event has no key to be overwritten.
    const m = await clientOk(u.accessToken, "PUT", `/rooms/${enc(roomId)}/send/org.example.call/t1?org.matrix.msc4140.delay=600000`, { left: true });
    await clientOk(other.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.call/k2`, { taken: true });
    for (let i = 0; i < 50 && !(await get(d2)).finalised_ts; i++) await new Promise((r) => setTimeout(r, 20));
    expect((await get(m.delay_id)).finalised_ts).toBeUndefined();
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
