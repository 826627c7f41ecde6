// The deprecated sync endpoints (spec: old_sync.yaml): GET /initialSync, GET /events (account
// stream, without room_id) and GET /events/{eventId}.
import { describe, it, expect } from "vitest";
import { call, createRoom, joinRoom, leaveRoom, registerUser, sendText } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

describe("GET /initialSync", () => {
  it("gives each room's membership, state, latest messages and visibility; invites; left rooms with archived=true", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "public_chat", name: "Old times", visibility: "public" });
    await joinRoom(bob, room);
    for (const t of ["one", "two", "three"]) await sendText(alice, room, t);
    const invited = await createRoom(alice, { preset: "private_chat", invite: [bob.userId] });
    const left = await createRoom(alice, { preset: "public_chat" });
    await joinRoom(bob, left);
    await leaveRoom(bob, left);

    const r = await call("GET", `${V3}/initialSync?limit=2`, { token: bob.accessToken });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(typeof r.body.end).toBe("string");
    expect(Array.isArray(r.body.presence)).toBe(true);
    const byId = new Map(r.body.rooms.map((x: any) => [x.room_id, x]));
    const joined: any = byId.get(room);
    expect(joined.membership).toBe("join");
    expect(joined.visibility).toBe("public");
    expect(joined.messages.chunk.map((e: any) => e.content.body)).toEqual(["two", "three"]);
    expect(joined.messages.chunk.every((e: any) => e.room_id === room)).toBe(true);
    expect(joined.messages.start).toBeTruthy();
    expect(joined.state.find((e: any) => e.type === "m.room.name").content.name).toBe("Old times");
    expect(joined.state.find((e: any) => e.type === "m.room.member" && e.state_key === bob.userId).content.membership).toBe("join");
    const inv: any = byId.get(invited);
    expect(inv.membership).toBe("invite");
    expect(inv.invite).toMatchObject({ type: "m.room.member", state_key: bob.userId, content: { membership: "invite" } });
    expect(byId.has(left)).toBe(false);
    // The page goes on with /messages.
    const back = await call("GET", `${V3}/rooms/${enc(room)}/messages?dir=b&from=${enc(joined.messages.start)}&limit=1`, { token: bob.accessToken });
    expect(back.body.chunk.map((e: any) => e.content.body)).toEqual(["one"]);

    const archived = await call("GET", `${V3}/initialSync?archived=true&limit=1`, { token: bob.accessToken });
    const leftEntry = archived.body.rooms.find((x: any) => x.room_id === left);
    expect(leftEntry?.membership).toBe("leave");
    expect((await call("GET", `${V3}/initialSync?limit=-1`, { token: bob.accessToken })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("GET", `${V3}/initialSync?archived=maybe`, { token: bob.accessToken })).status).toBe(400);
    expect((await call("GET", `${V3}/initialSync`)).status).toBe(401);
  });
});

describe("GET /events (the account's event stream)", () => {
  it("streams new events of every room from `from`, waiting up to `timeout`", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const r1 = await createRoom(alice);
    const r2 = await createRoom(bob);
    await joinRoom(bob, r1);
    const init = await call("GET", `${V3}/initialSync?limit=0`, { token: bob.accessToken });
    const from = init.body.end as string;
    await sendText(alice, r1, "in r1");
    await sendText(bob, r2, "in r2");
    const got = await call("GET", `${V3}/events?from=${enc(from)}&timeout=5000`, { token: bob.accessToken });
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.start).toBe(from);
    const msgs = got.body.chunk.filter((e: any) => e.type === "m.room.message");
    expect(msgs.map((e: any) => [e.room_id, e.content.body]).sort()).toEqual([
      [r1, "in r1"],
      [r2, "in r2"],
    ].sort());
    // Nothing new: an empty chunk after the timeout; `end` goes on from there.
    const t0 = Date.now();
    const idle = await call("GET", `${V3}/events?from=${enc(got.body.end)}&timeout=300`, { token: bob.accessToken });
    expect(idle.body.chunk).toEqual([]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    // Without `from` the stream starts now: earlier events are not repeated.
    const t1 = Date.now();
    const now = await call("GET", `${V3}/events`, { token: bob.accessToken });
    expect(Date.now() - t1).toBeLessThan(10_000); // no timeout: no long-poll
    expect(now.status).toBe(200);
    expect(now.body.chunk.filter((e: any) => e.type === "m.room.message")).toEqual([]);
    await sendText(alice, r1, "later");
    const later = await call("GET", `${V3}/events?from=${enc(now.body.end)}&timeout=5000`, { token: bob.accessToken });
    expect(later.body.chunk.filter((e: any) => e.type === "m.room.message").map((e: any) => e.content.body)).toEqual(["later"]);
    expect((await call("GET", `${V3}/events?timeout=-5`, { token: bob.accessToken })).status).toBe(400);
    expect((await call("GET", `${V3}/events?from=nonsense&timeout=0`, { token: bob.accessToken })).status).toBe(400);
  });
});

describe("GET /events/{eventId}", () => {
  it("finds an event in the user's rooms; others and unknown IDs get 404", async () => {
    const [alice, bob, stranger] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "private_chat" });
    await call("POST", `${V3}/rooms/${enc(room)}/invite`, { token: alice.accessToken, body: { user_id: bob.userId } });
    await joinRoom(bob, room);
    const eventId = await sendText(alice, room, "find me");
    const got = await call("GET", `${V3}/events/${enc(eventId)}`, { token: bob.accessToken });
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body).toMatchObject({ event_id: eventId, room_id: room, content: { body: "find me" } });
    const other = await call("GET", `${V3}/events/${enc(eventId)}`, { token: stranger.accessToken });
    expect([other.status, other.body.errcode]).toEqual([404, "M_NOT_FOUND"]);
    expect((await call("GET", `${V3}/events/${enc("$nope")}`, { token: bob.accessToken })).status).toBe(404);
    expect((await call("GET", `${V3}/events/not-an-id`, { token: bob.accessToken })).status).toBe(400);
  });
});
