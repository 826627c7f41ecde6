// Late joiners after many concurrent joins (workerd). Members of remote.test join a room on this
// server in waves: every join of a wave is built on the same make_join template state, so each
// wave leaves as many forward extremities as it has joins. A server that joins afterwards is
// handed the state before its join (only the branches its template cited); it must then be sent
// an event that merges every branch, so that fetching that event's gap gives it every member.
// And this server's current state must be the resolution of the states at its forward
// extremities (Server-Server API "Room State Resolution").
import { describe, it, expect, beforeAll } from "vitest";
import { env } from "cloudflare:test";
import { clientOk, federationCall, offline, registerUser, remoteJoinWave, seedRemoteKey, SERVER, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { computeEventId, hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";
import type { RoomStub } from "../../src/services/rooms";

const REMOTE = "remote.test";
const LATE = "late.test";
let key: SigningKey;
let lateKey: SigningKey;
let alice: TestUser;
const enc = encodeURIComponent;
const rv = getRoomVersion("12")!;

const fed = federationCall;
const ok = (method: string, path: string, body?: unknown) => clientOk(alice.accessToken, method, path, body);

beforeAll(async () => {
  setFederationFetch(offline);
  key = await seedRemoteKey(REMOTE);
  lateKey = await seedRemoteKey(LATE);
  alice = await registerUser();
});

const joinWave = (roomId: string, wave: number, n: number) => remoteJoinWave(REMOTE, key, roomId, wave, n);

describe("a server joining after many concurrent joins", () => {
  it("gets an event merging every branch, whose state holds every member; current state is the resolution over the forward extremities", async () => {
    const roomId = (await ok("POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    // Alice talks between waves, so waves start from different places in the DAG.
    for (let wave = 0; wave < 4; wave++) {
      await joinWave(roomId, wave, 12);
      await ok("PUT", `/rooms/${enc(roomId)}/send/m.room.message/w${wave}`, { msgtype: "m.text", body: `after wave ${wave}` });
    }
    await joinWave(roomId, 4, 15); // the last wave is left unmerged

    const current = (await ok("GET", `/rooms/${enc(roomId)}/joined_members`)).joined as Record<string, unknown>;
    expect(Object.keys(current)).toHaveLength(1 + 4 * 12 + 15);

    // The late server's join. It is handed the state before its join, which covers only the
    // extremities its template cited (at most ten of the fifteen). The resident server then
    // merges every branch into one event and sends it there; the state at that event (what
    // the late server asks for when it fetches the gap) holds every member.
    const sentToLate: PDU[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      if (url.hostname === LATE && url.pathname.startsWith("/_matrix/federation/v1/send/")) {
        sentToLate.push(...((JSON.parse(String(init?.body)) as { pdus: PDU[] }).pdus ?? []));
        return Response.json({ pdus: {} });
      }
      throw new Error("offline (test)");
    });
    const t = await fed(LATE, lateKey, "GET", `/v1/make_join/${enc(roomId)}/${enc(`@late:${LATE}`)}?ver=12`);
    expect(t.status).toBe(200);
    const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, LATE, lateKey);
    const r = await fed(LATE, lateKey, "PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu);
    expect(r.status).toBe(200);

    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
    let extremities: string[] = [];
    for (let i = 0; i < 100; i++) {
      extremities = await room.getForwardExtremities();
      if (extremities.length === 1 && sentToLate.some((p) => p.type === "org.matrix.dummy_event")) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(extremities).toHaveLength(1);
    // The one extremity left is a merge that was sent to the late server.
    const [last] = extremities;
    const sentIds = await Promise.all(sentToLate.map((p) => computeEventId(p, rv)));
    expect(sentIds).toContain(last);
    const stateIds = await fed(LATE, lateKey, "GET", `/v1/state_ids/${enc(roomId)}?event_id=${enc(last)}`);
    expect(stateIds.status).toBe(200);
    const seen = new Set<string>();
    for (const id of stateIds.body.pdu_ids as string[]) {
      const e = (await fed(LATE, lateKey, "GET", `/v1/event/${enc(id)}`)).body.pdus[0] as PDU;
      if (e.type === "m.room.member" && (e.content as { membership?: string }).membership === "join") seen.add(e.state_key!);
    }
    expect(Object.keys(current).filter((u) => !seen.has(u))).toEqual([]);
    expect(seen.has(`@late:${LATE}`)).toBe(true);
    setFederationFetch(offline);

    // Current state equals the state a merge event sees (resolution across all extremities).
    const before = (await ok("GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string }[];
    await ok("PUT", `/rooms/${enc(roomId)}/send/m.room.message/merge`, { msgtype: "m.text", body: "merge" });
    const after = (await ok("GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string }[];
    const ids = (s: typeof before) => s.map((e) => `${e.type}|${e.state_key}|${e.event_id}`).sort();
    expect(ids(after)).toEqual(ids(before));
    expect(Object.keys((await ok("GET", `/rooms/${enc(roomId)}/joined_members`)).joined)).toHaveLength(1 + 4 * 12 + 15 + 1);
  });
});
