// Many senders while several clients long-poll: every client sees every event exactly once, in
// stream order (the order /messages returns).
import { describe, expect, it } from "vitest";
import { call, registerUser, type Json, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

describe("sync under concurrent sends", () => {
  it("5 senders × 12 messages, 3 long-polling clients: exactly once, in order", async () => {
    const users = await Promise.all(Array.from({ length: 5 }, () => registerUser()));
    const created = await call("POST", `${V3}/createRoom`, { token: users[0].accessToken, body: { preset: "public_chat" } });
    const roomId = created.body.room_id as string;
    for (const u of users.slice(1)) expect((await call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: u.accessToken, body: {} })).status).toBe(200);

    const filter = enc(JSON.stringify({ room: { timeline: { limit: 100 } } }));
    const pollers = users.slice(0, 3);
    const tokens = await Promise.all(pollers.map(async (u) => (await call("GET", `${V3}/sync?filter=${filter}`, { token: u.accessToken })).body.next_batch as string));
    const seen: string[][] = pollers.map(() => []);
    let done = false;
    const poll = async (u: TestUser, i: number) => {
      let since = tokens[i];
      while (!done || seen[i].length < 60) {
        const r = await call("GET", `${V3}/sync?filter=${filter}&timeout=1000&since=${enc(since)}`, { token: u.accessToken });
        expect(r.status).toBe(200);
        since = r.body.next_batch;
        const tl = r.body.rooms.join[roomId]?.timeline;
        if (tl) {
          expect(tl.limited).toBe(false);
          for (const e of tl.events as Json[]) if (e.type === "m.room.message") seen[i].push(e.event_id);
        }
        if (done && seen[i].length >= 60) break;
      }
    };
    const polling = pollers.map((u, i) => poll(u, i));
    await Promise.all(
      users.map(async (u, s) => {
        for (let k = 0; k < 12; k++) {
          const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/c${s}-${k}`, { token: u.accessToken, body: { msgtype: "m.text", body: `${s}/${k}` } });
          expect(r.status).toBe(200);
        }
      }),
    );
    done = true;
    await Promise.all(polling);
    const page = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=1000`, { token: users[0].accessToken });
    const order = (page.body.chunk as Json[]).filter((e) => e.type === "m.room.message").map((e) => e.event_id);
    expect(order).toHaveLength(60);
    for (const s of seen) expect(s).toEqual(order);
  });
});
