// Forward extremities stay bounded under waves of concurrent remote joins (workerd). Every join
// of a wave is built on the same make_join template (the deepest ten extremities), so a wave of
// 16 leaves 16 branches and the six it did not cite are never cited by later templates. The
// room's current state is the resolution over every extremity's state, so left alone their
// number — and the cost of every event — grows with each wave. Past twice what one event may
// cite, the room merges them (org.matrix.dummy_event).
import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import { clientOk, federationSetup, remoteJoinWave, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import type { RoomStub } from "../../src/services/rooms";

const REMOTE = "waves.test";
const WAVES = 5;
const WAVE = 16;
let key: SigningKey;
let alice: TestUser;
const enc = encodeURIComponent;

federationSetup(REMOTE, (s) => ({ key, alice } = s));

describe("waves of concurrent remote joins", () => {
  it("leave at most twice MAX_PREV_EVENTS forward extremities, and every member joined", { timeout: 120_000 }, async () => {
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as RoomStub;
    const settled = async () => {
      // Merging runs after the send_join answers: wait until the count stops moving.
      let last = -1;
      for (let i = 0; i < 50; i++) {
        const n = (await room.getForwardExtremities()).length;
        if (n === last) return n;
        last = n;
        await new Promise((r) => setTimeout(r, 100));
      }
      return last;
    };
    const counts: number[] = [];
    for (let wave = 0; wave < WAVES; wave++) {
      await remoteJoinWave(REMOTE, key, roomId, wave, WAVE, { omitMembers: true });
      counts.push(await settled());
    }
    // Without merging: 16, then 6 more left behind by each wave (40 after five waves).
    for (const n of counts) expect(n).toBeLessThanOrEqual(20);
    const joined = (await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/joined_members`)).joined as Record<string, unknown>;
    expect(Object.keys(joined)).toHaveLength(1 + WAVES * WAVE);
  });
});
