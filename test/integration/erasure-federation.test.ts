// Erasure over federation (views.erasureForServer): an erased user's events are served redacted
// to a server none of whose users was joined when they were sent, and deciding it costs work per
// state group of the events served, not a scan of the room's state per erased event.
import { describe, expect, it, beforeAll, afterAll } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { RoomDO } from "../../durable-objects/room";
import { call, clientOk, federationCall, offline, registerUser, remoteJoinWave, seedRemoteKey, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { setFederationFetch } from "../../src/services/federation/client";

const enc = encodeURIComponent;
const EARLY = "erasure-early.test";
const LATE = "erasure-late.test";
let earlyKey: SigningKey;
let lateKey: SigningKey;

beforeAll(async () => {
  setFederationFetch(offline);
  [earlyKey, lateKey] = await Promise.all([seedRemoteKey(EARLY), seedRemoteKey(LATE)]);
});
afterAll(() => setFederationFetch(offline));

async function eraseAccount(u: TestUser): Promise<void> {
  const c1 = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: {} });
  const auth = { type: "m.login.password", session: c1.body.session, identifier: { type: "m.id.user", user: u.userId }, password: u.password };
  const r = await call("POST", "/_matrix/client/v3/account/deactivate", { token: u.accessToken, body: { erase: true, auth } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

describe("erased senders over federation", () => {
  it("backfill of 40 erased events: redacted for a later server, kept for one joined then; state looked at per group, not per event", async () => {
    const [alice, eve] = await Promise.all([registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12", initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "shared" } }] })).room_id as string;
    await clientOk(eve.accessToken, "POST", `/join/${enc(roomId)}`, {});
    await remoteJoinWave(EARLY, earlyKey, roomId, 0, 1);
    let last = "";
    for (let i = 0; i < 40; i++) {
      last = (await clientOk(eve.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/e${i}`, { msgtype: "m.text", body: `eve ${i}` })).event_id as string;
      if (i % 20 === 10) await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.marker/${i}`, { i });
    }
    await eraseAccount(eve);
    await remoteJoinWave(LATE, lateKey, roomId, 0, 1);

    const early = await federationCall(EARLY, earlyKey, "GET", `/v1/event/${enc(last)}`);
    expect(early.body.pdus[0].content.body).toBe("eve 39");
    const late = await federationCall(LATE, lateKey, "GET", `/v1/event/${enc(last)}`);
    expect(late.body.pdus[0].content).toEqual({});

    type Fed = Pick<InstanceType<typeof RoomDO>, "fedBackfill"> & { state: { groupState(g: number | null): unknown } };
    const stub = env.ROOMS.get(env.ROOMS.idFromName(roomId));
    const r = await runInDurableObject(stub, async (_i, state) => {
      const room = new RoomDO(state, env) as unknown as Fed;
      const groupState = room.state.groupState.bind(room.state);
      let lookups = 0;
      room.state.groupState = (g) => (lookups++, groupState(g));
      const out = await room.fedBackfill(LATE, [last], 40);
      return { lookups, out };
    });
    if (!r.out.ok) throw new Error("backfill failed");
    const eves = r.out.value.filter((p) => p.sender === eve.userId && p.type === "m.room.message");
    expect(eves).toHaveLength(38); // (40 events back: 38 of eve's and the 2 markers)
    for (const p of eves) expect(p.content).toEqual({});
    // 40 events over 3 state groups: a few state lookups, not one (a whole-state scan) per event.
    expect(r.lookups, `groupState calls: ${r.lookups}`).toBeLessThan(12);
  });
});
