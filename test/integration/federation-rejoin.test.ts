// Rejoining a room this server left (workerd). After its last local member leaves, this server
// receives nothing more from the room, so its copy stops at the leave. A later join must go
// through a server still in the room (make_join/send_join), take that server's state, and build
// on the resident's extremities, not on the stale ones.
import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import { clientOk, federationCall, federationSetup, offline, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { computeEventId, hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";
import type { RoomStub } from "../../src/services/rooms";

const REMOTE = "remote.test";
const REM = `@rem:${REMOTE}`;
let key: SigningKey;
let alice: TestUser;
const enc = encodeURIComponent;
const rv = getRoomVersion("12")!;

const fed = (method: string, path: string, body?: unknown) => federationCall(REMOTE, key, method, path, body);
const ok = (method: string, path: string, body?: unknown) => clientOk(alice.accessToken, method, path, body);

federationSetup(REMOTE, (s) => ({ key, alice } = s), "afterAll");

describe("rejoining a room this server left", () => {
  it("goes through the resident server and takes its state; the stale extremities are dropped", async () => {
    const roomId = (await ok("POST", "/createRoom", { preset: "public_chat", room_version: "12", name: "old name" })).room_id as string;
    const t = await fed("GET", `/v1/make_join/${enc(roomId)}/${enc(REM)}?ver=12`);
    const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, REMOTE, key);
    expect((await fed("PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu)).status).toBe(200);
    const pl = await ok("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels/`);
    await ok("PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl, users: { ...pl.users, [REM]: 100 } });
    await ok("POST", `/rooms/${enc(roomId)}/leave`, {});

    // The room as the resident (remote.test) holds it: our events up to the leave, then a name
    // change we never receive (we are out of the room).
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
    const [leave] = await room.getForwardExtremities();
    const atLeave = (await fed("GET", `/v1/state/${enc(roomId)}?event_id=${enc(leave)}`)).body as { pdus: PDU[]; auth_chain: PDU[] };
    const leavePdu = (await fed("GET", `/v1/event/${enc(leave)}?room_id=${enc(roomId)}`)).body.pdus[0] as PDU;
    const byKey = new Map<string, PDU>();
    for (const p of [...atLeave.pdus, leavePdu]) byKey.set(`${p.type}|${p.state_key}`, p);
    const idsByKey = async (k: string) => computeEventId(byKey.get(k)!, rv);
    const renamed = await hashAndSignEvent(
      { room_id: roomId, sender: REM, type: "m.room.name", state_key: "", content: { name: "new name" }, origin_server_ts: Date.now(), depth: leavePdu.depth + 1, prev_events: [leave], auth_events: [await idsByKey("m.room.power_levels|"), await idsByKey(`m.room.member|${REM}`)] } as unknown as PDU,
      rv,
      REMOTE,
      key,
    );
    byKey.set("m.room.name|", renamed.pdu);

    const asked: string[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      asked.push(`${init?.method ?? "GET"} ${url.pathname}`);
      if (url.pathname.startsWith(`/_matrix/federation/v1/make_join/${enc(roomId)}/`)) {
        const event = {
          room_id: roomId,
          sender: alice.userId,
          state_key: alice.userId,
          type: "m.room.member",
          content: { membership: "join" },
          origin_server_ts: Date.now(),
          depth: leavePdu.depth + 2,
          prev_events: [renamed.eventId],
          auth_events: [await idsByKey("m.room.power_levels|"), await idsByKey("m.room.join_rules|"), leave],
        };
        return Response.json({ room_version: "12", event });
      }
      if (url.pathname.startsWith(`/_matrix/federation/v2/send_join/${enc(roomId)}/`)) {
        return Response.json({ state: [...byKey.values()], auth_chain: [...atLeave.auth_chain, ...atLeave.pdus, leavePdu], servers_in_room: [REMOTE] });
      }
      if (url.pathname.startsWith("/_matrix/federation/")) return new Response("{}", { status: 404 });
      throw new Error("offline (test)");
    });

    // Alice rejoins: through remote.test, the only server our stale copy saw in the room.
    await ok("POST", `/join/${enc(roomId)}`, {});
    expect(asked.some((a) => a.startsWith("GET /_matrix/federation/v1/make_join/"))).toBe(true);
    expect(asked.some((a) => a.startsWith("PUT /_matrix/federation/v2/send_join/"))).toBe(true);
    expect((await ok("GET", `/rooms/${enc(roomId)}/state/m.room.name/`)).name).toBe("new name");
    expect((await ok("GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(alice.userId)}`)).membership).toBe("join");
    const extremities = await room.getForwardExtremities();
    expect(extremities).toHaveLength(1);
    expect(extremities[0]).not.toBe(leave);

    // Sending builds on the resident's DAG now.
    setFederationFetch(offline);
    const sent = (await ok("PUT", `/rooms/${enc(roomId)}/send/m.room.message/back`, { msgtype: "m.text", body: "back" })).event_id as string;
    const pdu = (await fed("GET", `/v1/event/${enc(sent)}`)).body.pdus[0] as PDU;
    expect(pdu.prev_events).toEqual(extremities);
  });

  it("a room nobody else is in is still rejoined locally", async () => {
    const roomId = (await ok("POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    await ok("POST", `/rooms/${enc(roomId)}/leave`, {});
    await ok("POST", `/join/${enc(roomId)}`, {});
    expect((await ok("GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(alice.userId)}`)).membership).toBe("join");
  });
});
