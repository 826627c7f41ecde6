// 100 concurrent sends from 10 users produce one linear chain: each event's prev_events is exactly
// the event before it, stream positions have no gaps or duplicates, and one forward extremity.
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser } from "./helpers";
import type { RoomStub } from "../../src/services/rooms";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

describe("concurrent sends", () => {
  it("100 sends from 10 users form one linear chain", async () => {
    const users = await Promise.all(Array.from({ length: 10 }, () => registerUser()));
    const owner = users[0];
    const created = await call("POST", `${V3}/createRoom`, { token: owner.accessToken, body: { preset: "public_chat" } });
    const roomId = created.body.room_id as string;
    await Promise.all(users.slice(1).map((u) => call("POST", `${V3}/rooms/${enc(roomId)}/join`, { token: u.accessToken, body: {} })));

    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => {
        const u = users[i % 10];
        return call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/c${i}`, { token: u.accessToken, body: { msgtype: "m.text", body: `n${i}` } });
      }),
    );
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(200);
    const sentIds = new Set(results.map((r) => r.body.event_id));
    expect(sentIds.size).toBe(100);

    const page = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=f&limit=1000`, { token: owner.accessToken });
    const chunk = page.body.chunk as { event_id: string; type: string }[];
    const stub = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
    const pdus = await Promise.all(chunk.map((e) => stub.getPdu(e.event_id)));
    // Streams 1..n without gaps; each event's only prev_event is its predecessor.
    pdus.forEach((p, i) => {
      expect(p!.status).toBe("accepted");
      expect(p!.stream).toBe(i + 1);
      if (i === 0) expect(p!.pdu.prev_events).toEqual([]);
      else expect(p!.pdu.prev_events).toEqual([chunk[i - 1].event_id]);
      if (i > 0) expect(p!.pdu.depth).toBe((pdus[i - 1]!.pdu.depth as number) + 1);
    });
    const messages = chunk.filter((e) => e.type === "m.room.message").map((e) => e.event_id);
    expect(new Set(messages)).toEqual(sentIds);
    expect(await stub.getForwardExtremities()).toEqual([chunk.at(-1)!.event_id]);

    // Retrying every request returns the same event IDs (idempotent per device + txn).
    const retries = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/c${i}`, { token: users[i % 10].accessToken, body: { msgtype: "m.text", body: `n${i}` } }),
      ),
    );
    retries.forEach((r, i) => expect(r.body.event_id).toBe(results[i].body.event_id));
  });
});
