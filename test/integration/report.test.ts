// Reporting content (issue 16): events, rooms, users; stored for admins; rate-limited; no leak.
import { describe, expect, it } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../src/index";
import { BASE, call, createRoom, registerUser, sendText, type Json } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

const reportsBy = async (userId: string) =>
  (await env.DB.prepare("SELECT kind, room_id, event_id, target_user_id, reason, score FROM reports WHERE reporter = ? ORDER BY id").bind(userId).all()).results;

describe("reporting content", () => {
  it("an event report from a joined member is stored with the event's sender; others get the same 404 as for unknown rooms and events", async () => {
    const [alice, bob, outsider] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "private_chat", invite: [bob.userId] });
    expect((await call("POST", `${V3}/rooms/${enc(room)}/join`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const ev = await sendText(alice, room, "offensive");
    const ok = await call("POST", `${V3}/rooms/${enc(room)}/report/${enc(ev)}`, { token: bob.accessToken, body: { reason: "spam", score: -100 } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body).toEqual({});
    expect(await reportsBy(bob.userId)).toEqual([{ kind: "event", room_id: room, event_id: ev, target_user_id: alice.userId, reason: "spam", score: -100 }]);

    // Not joined, unknown room, unknown event: indistinguishable.
    const notJoined = await call("POST", `${V3}/rooms/${enc(room)}/report/${enc(ev)}`, { token: outsider.accessToken, body: { reason: "x" } });
    const noRoom = await call("POST", `${V3}/rooms/${enc("!nope:test.local")}/report/${enc(ev)}`, { token: outsider.accessToken, body: { reason: "x" } });
    const noEvent = await call("POST", `${V3}/rooms/${enc(room)}/report/${enc("$nope")}`, { token: bob.accessToken, body: { reason: "x" } });
    for (const r of [notJoined, noRoom, noEvent]) {
      expect(r.status).toBe(404);
      expect(r.body).toEqual(notJoined.body);
    }
    expect(notJoined.body.errcode).toBe("M_NOT_FOUND");
    // After leaving, Bob can no longer report events there.
    expect((await call("POST", `${V3}/rooms/${enc(room)}/leave`, { token: bob.accessToken, body: {} })).status).toBe(200);
    const left = await call("POST", `${V3}/rooms/${enc(room)}/report/${enc(ev)}`, { token: bob.accessToken, body: {} });
    expect(left.status).toBe(404);
    expect(left.body).toEqual(notJoined.body);
    expect(await reportsBy(outsider.userId)).toEqual([]);

    // Bad input.
    expect((await call("POST", `${V3}/rooms/${enc(room)}/report/${enc(ev)}`, { token: alice.accessToken, body: { score: 5 } })).body.errcode).toBe("M_BAD_JSON");
    expect((await call("POST", `${V3}/rooms/${enc(room)}/report/${enc(ev)}`, { token: alice.accessToken, body: { reason: 7 } })).status).toBe(400);
    expect((await call("POST", `${V3}/rooms/${enc(room)}/report/${enc(ev)}`, { body: { reason: "x" } })).status).toBe(401);
  });

  it("room and user reports: 200 whether or not the room or user exists, stored; bad IDs 400", async () => {
    const [alice, reporter] = await Promise.all([registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "private_chat" });
    for (const target of [room, "!unknown:test.local"]) {
      const r = await call("POST", `${V3}/rooms/${enc(target)}/report`, { token: reporter.accessToken, body: { reason: "bad room" } });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    for (const target of [alice.userId, "@ghost:test.local"]) {
      const r = await call("POST", `${V3}/users/${enc(target)}/report`, { token: reporter.accessToken, body: { reason: "" } });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    expect((await reportsBy(reporter.userId)).map((r) => [r.kind, r.room_id ?? r.target_user_id])).toEqual([
      ["room", room],
      ["room", "!unknown:test.local"],
      ["user", alice.userId],
      ["user", "@ghost:test.local"],
    ]);
    expect((await call("POST", `${V3}/rooms/${enc(room)}/report`, { token: reporter.accessToken, body: {} })).body.errcode).toBe("M_BAD_JSON"); // reason required
    expect((await call("POST", `${V3}/rooms/not-a-room/report`, { token: reporter.accessToken, body: { reason: "x" } })).status).toBe(400);
    expect((await call("POST", `${V3}/users/not-a-user/report`, { token: reporter.accessToken, body: { reason: "x" } })).status).toBe(400);
    expect((await call("POST", `${V3}/users/${enc(alice.userId)}/report`, { token: reporter.accessToken, body: { reason: "x".repeat(5000) } })).status).toBe(400);
  });

  it("is rate-limited per reporter (RATE_LIMITS=on)", async () => {
    const reporter = await registerUser();
    const onEnv = { ...env, RATE_LIMITS: "on" };
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const ctx = createExecutionContext();
      const res = await worker.fetch(
        new Request(`${BASE}${V3}/users/${enc("@someone:test.local")}/report`, { method: "POST", headers: { authorization: `Bearer ${reporter.accessToken}`, "content-type": "application/json" }, body: JSON.stringify({ reason: `r${i}` }) }),
        onEnv,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      statuses.push(res.status);
      if (res.status === 429) expect(((await res.json()) as Json).errcode).toBe("M_LIMIT_EXCEEDED");
    }
    expect(statuses.slice(0, 10).every((s) => s === 200)).toBe(true);
    expect(statuses.slice(10)).toEqual([429, 429]);
    expect((await reportsBy(reporter.userId)).length).toBe(10);
  });
});
