// Peeking into world_readable rooms (spec: Client-Server API, module "Room Previews", and
// "Room History Visibility"): a user who is not a member reads a world_readable room's history
// and state, and follows it through GET /events?room_id=; other rooms refuse with 403.
import { describe, expect, it } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import app from "../../src/index";
import { BASE, call, createRoom, registerUser, sendText } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

const worldReadable = { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "world_readable" } };
const bodiesOf = (chunk: any[]) => chunk.filter((e) => e.type === "m.room.message").map((e) => e.content.body);

describe("reading a world_readable room without joining", () => {
  it("serves /messages, /state, /state/{type}/{key}, /event, /context and /members to a non-member", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat", name: "Lobby", initial_state: [worldReadable] });
    const hello = await sendText(alice, roomId, "hello lurkers");
    const r = (path: string) => call("GET", `${V3}/rooms/${enc(roomId)}${path}`, { token: bob.accessToken });

    const messages = await r("/messages?dir=b&limit=10");
    expect(messages.status, JSON.stringify(messages.body)).toBe(200);
    expect(bodiesOf(messages.body.chunk)).toEqual(["hello lurkers"]);
    const state = await r("/state");
    expect(state.status).toBe(200);
    expect(state.body.some((e: any) => e.type === "m.room.name" && e.content.name === "Lobby")).toBe(true);
    const name = await r("/state/m.room.name/");
    expect(name.body).toEqual({ name: "Lobby" });
    const ev = await r(`/event/${enc(hello)}`);
    expect(ev.status).toBe(200);
    expect(ev.body.content.body).toBe("hello lurkers");
    const ctx = await r(`/context/${enc(hello)}?limit=2`);
    expect(ctx.status).toBe(200);
    expect(ctx.body.event.event_id).toBe(hello);
    const members = await r("/members");
    expect(members.status).toBe(200);
    expect(members.body.chunk.map((e: any) => e.state_key)).toEqual([alice.userId]);
    // Peeking does not make Bob a member.
    expect((await call("GET", `${V3}/joined_rooms`, { token: bob.accessToken })).body.joined_rooms).not.toContain(roomId);
  });

  it("shows a non-member only the events sent while the history was world_readable", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat" });
    await sendText(alice, roomId, "before");
    await call("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.history_visibility/`, { token: alice.accessToken, body: { history_visibility: "world_readable" } });
    await sendText(alice, roomId, "after");
    const messages = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: bob.accessToken });
    expect(messages.status).toBe(200);
    expect(bodiesOf(messages.body.chunk)).toEqual(["after"]);
  });

  it("refuses non-members of rooms with any other visibility with 403 M_FORBIDDEN", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    for (const hv of ["shared", "invited", "joined"]) {
      const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [{ ...worldReadable, content: { history_visibility: hv } }] });
      const hello = await sendText(alice, roomId, "members only");
      for (const path of ["/messages?dir=b", "/state", "/state/m.room.create/", `/context/${enc(hello)}`, "/members"]) {
        const r = await call("GET", `${V3}/rooms/${enc(roomId)}${path}`, { token: bob.accessToken });
        expect(r.status, `${hv} ${path}`).toBe(403);
        expect(r.body.errcode, `${hv} ${path}`).toBe("M_FORBIDDEN");
      }
      // /event answers as for an event that does not exist (nothing leaks).
      expect((await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(hello)}`, { token: bob.accessToken })).status).toBe(404);
      const peek = await call("GET", `${V3}/events?room_id=${enc(roomId)}&timeout=0`, { token: bob.accessToken });
      expect(peek.status, hv).toBe(403);
      expect(peek.body.errcode).toBe("M_FORBIDDEN");
    }
  });
});

describe("GET /rooms/{roomId}/initialSync (start of a peek)", () => {
  it("gives a non-member the state and latest messages of a world_readable room, and where /events continues", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat", name: "Preview", visibility: "public", initial_state: [worldReadable] });
    for (const t of ["m1", "m2", "m3"]) await sendText(alice, roomId, t);
    const init = await call("GET", `${V3}/rooms/${enc(roomId)}/initialSync?limit=2`, { token: bob.accessToken });
    expect(init.status, JSON.stringify(init.body)).toBe(200);
    expect(init.body.room_id).toBe(roomId);
    expect(init.body.membership).toBeUndefined();
    expect(init.body.visibility).toBe("public");
    expect(init.body.state.some((e: any) => e.type === "m.room.name" && e.content.name === "Preview")).toBe(true);
    expect(bodiesOf(init.body.messages.chunk)).toEqual(["m2", "m3"]); // oldest first
    const earlier = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=1&from=${enc(init.body.messages.start)}`, { token: bob.accessToken });
    expect(bodiesOf(earlier.body.chunk)).toEqual(["m1"]);
    await sendText(alice, roomId, "m4");
    const next = await call("GET", `${V3}/events?room_id=${enc(roomId)}&from=${enc(init.body.messages.end)}&timeout=0`, { token: bob.accessToken });
    expect(bodiesOf(next.body.chunk)).toEqual(["m4"]);
    // A member gets their membership.
    expect((await call("GET", `${V3}/rooms/${enc(roomId)}/initialSync`, { token: alice.accessToken })).body.membership).toBe("join");
  });

  it("refuses non-members of a room that is not world_readable", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat" });
    const r = await call("GET", `${V3}/rooms/${enc(roomId)}/initialSync`, { token: bob.accessToken });
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe("M_FORBIDDEN");
  });
});

describe("GET /events?room_id= (peeking stream)", () => {
  it("answers at once with timeout=0, then returns what arrives after `end`", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [worldReadable] });
    await sendText(alice, roomId, "old");
    const first = await call("GET", `${V3}/events?room_id=${enc(roomId)}&timeout=0`, { token: bob.accessToken });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.chunk).toEqual([]); // without `from`: from now on
    expect(typeof first.body.end).toBe("string");
    await sendText(alice, roomId, "one");
    await sendText(alice, roomId, "two");
    const next = await call("GET", `${V3}/events?room_id=${enc(roomId)}&from=${enc(first.body.end)}&timeout=0`, { token: bob.accessToken });
    expect(next.status).toBe(200);
    expect(next.body.start).toBe(first.body.end);
    expect(bodiesOf(next.body.chunk)).toEqual(["one", "two"]);
    expect(next.body.chunk[0].room_id).toBe(roomId);
    const none = await call("GET", `${V3}/events?room_id=${enc(roomId)}&from=${enc(next.body.end)}&timeout=0`, { token: bob.accessToken });
    expect(none.body.chunk).toEqual([]);
    expect(none.body.end).toBe(next.body.end);
  });

  it("long-polls: a waiting request returns as soon as an event arrives", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [worldReadable] });
    const first = await call("GET", `${V3}/events?room_id=${enc(roomId)}&timeout=0`, { token: bob.accessToken });
    const t0 = Date.now();
    const waiting = call("GET", `${V3}/events?room_id=${enc(roomId)}&from=${enc(first.body.end)}&timeout=20000`, { token: bob.accessToken });
    await new Promise((r) => setTimeout(r, 300));
    await sendText(alice, roomId, "wake up");
    const got = await waiting;
    expect(got.status).toBe(200);
    expect(bodiesOf(got.body.chunk)).toEqual(["wake up"]);
    expect(Date.now() - t0).toBeLessThan(10_000);
    // With nothing arriving, it answers empty after the timeout.
    const t1 = Date.now();
    const empty = await call("GET", `${V3}/events?room_id=${enc(roomId)}&from=${enc(got.body.end)}&timeout=300`, { token: bob.accessToken });
    expect(empty.body.chunk).toEqual([]);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(250);
  });

  it("bad input → 400, unknown room → 404 (no room_id: the account stream, old-sync.test.ts)", async () => {
    const bob = await registerUser();
    const noRoom = await call("GET", `${V3}/events?timeout=0`, { token: bob.accessToken });
    expect(noRoom.status).toBe(200);
    expect(noRoom.body.chunk).toEqual([]);
    const alice = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [worldReadable] });
    const badFrom = await call("GET", `${V3}/events?room_id=${enc(roomId)}&from=nonsense&timeout=0`, { token: bob.accessToken });
    expect(badFrom.status).toBe(400);
    const badTimeout = await call("GET", `${V3}/events?room_id=${enc(roomId)}&timeout=-1`, { token: bob.accessToken });
    expect(badTimeout.body.errcode).toBe("M_INVALID_PARAM");
    const unknown = await call("GET", `${V3}/events?room_id=${enc("!nope:test.local")}&timeout=0`, { token: bob.accessToken });
    expect(unknown.status).toBe(404);
    expect((await call("GET", `${V3}/events?room_id=${enc(roomId)}&timeout=0`)).status).toBe(401);
  });

  it("lets guests peek (GUEST_ACCESS=on) through /events and /messages", async () => {
    const ctx = createExecutionContext();
    const res = await app.fetch(
      new Request(`${BASE}${V3}/register?kind=guest`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }),
      { ...env, GUEST_ACCESS: "on" },
      ctx,
    );
    await waitOnExecutionContext(ctx);
    const guest = ((await res.json()) as any).access_token as string;
    const alice = await registerUser();
    const roomId = await createRoom(alice, { preset: "public_chat", initial_state: [worldReadable] });
    const first = await call("GET", `${V3}/events?room_id=${enc(roomId)}&timeout=0`, { token: guest });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await sendText(alice, roomId, "for guests too");
    const next = await call("GET", `${V3}/events?room_id=${enc(roomId)}&from=${enc(first.body.end)}&timeout=5000`, { token: guest });
    expect(bodiesOf(next.body.chunk)).toEqual(["for guests too"]);
    const messages = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b`, { token: guest });
    expect(bodiesOf(messages.body.chunk)).toEqual(["for guests too"]);
  });
});
