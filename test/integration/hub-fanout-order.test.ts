// The RoomDO's fan-out to sync hubs (src/services/notifier.ts HubFanOut): the primary hub (the
// sender's) is called first and the other recipients' hubs once its first attempt has settled;
// every hub still gets a room's notices in stream order, each once, and onSettled hears of every
// notice once all its hubs have it. Real hubs; the namespace is wrapped only to record (and
// delay or fail) the calls.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { HubFanOut } from "../../src/services/notifier";
import type { RoomEventNotice } from "../../src/rpc/user";
import type { Env } from "../../src/env";

type Hook = (userId: string, notices: RoomEventNotice[], call: number) => Promise<void> | void;

/** env with USERS wrapped: each roomEvents call is logged (`start`/`end`/`fail` with the user),
 *  `before` runs first (it may wait or throw), then the real hub is called. */
function recordingEnv(before: Hook = () => {}) {
  const log: string[] = [];
  const got = new Map<string, number[]>();
  let calls = 0;
  const real = env.USERS;
  const users = {
    idFromName: (name: string) => real.idFromName(name),
    get(id: DurableObjectId) {
      const stub = real.get(id) as unknown as { roomEvents(u: string, n: RoomEventNotice[]): Promise<void> };
      return {
        async roomEvents(userId: string, notices: RoomEventNotice[]) {
          const name = userId.slice(1, userId.indexOf("-"));
          log.push(`start ${name}`);
          try {
            await before(userId, notices, ++calls);
            await stub.roomEvents(userId, notices);
          } catch (e) {
            log.push(`fail ${name}`);
            throw e;
          }
          log.push(`end ${name}`);
          got.set(userId, [...(got.get(userId) ?? []), ...notices.map((n) => n.stream)]);
        },
      };
    },
  };
  return { env: { ...env, USERS: users } as unknown as Env, log, got };
}

function notice(roomId: string, stream: number, sender: string): RoomEventNotice {
  return {
    roomId,
    stream,
    event: { event_id: `$${stream}-${roomId}`, room_id: roomId, type: "m.room.message", sender, content: { msgtype: "m.text", body: `${stream}` }, origin_server_ts: 1000 + stream },
    memberCount: 4,
    senderPowerLevel: 0,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("hub fan-out: primary hub first", () => {
  it("the sender's hub call completes before the other hubs' calls begin, and the send waits for it only", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const [alice, bob, carol] = ["alice", "bob", "carol"].map((n) => `@${n}-${tag}:test.local`);
    const roomId = `!primary-${tag}:test.local`;
    // The sender's hub is slow (a commit behind other work): the others must still wait for it.
    const rec = recordingEnv(async (u) => {
      if (u === alice) await sleep(30);
    });
    const hubs = new HubFanOut(rec.env);
    const settled: number[] = [];
    await hubs.notify(notice(roomId, 1, alice), [bob, carol, alice], (s) => settled.push(s));
    expect(rec.log.slice(0, 2)).toEqual(["start alice", "end alice"]);
    for (let i = 0; i < 100 && settled.length === 0; i++) await sleep(10);
    expect(settled).toEqual([1]);
    expect(rec.log.slice(2).sort()).toEqual(["end bob", "end carol", "start bob", "start carol"]);
  });

  it("a failing primary hub holds the others back for one attempt only, and gets the notice on retry", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const [alice, bob] = ["alice", "bob"].map((n) => `@${n}-${tag}:test.local`);
    const roomId = `!failing-${tag}:test.local`;
    let failed = false;
    const rec = recordingEnv((u) => {
      if (u === alice && !failed) {
        failed = true;
        throw new Error("hub unavailable");
      }
    });
    const hubs = new HubFanOut(rec.env);
    const settled: number[] = [];
    await hubs.notify(notice(roomId, 1, alice), [alice, bob], (s) => settled.push(s));
    for (let i = 0; i < 100 && settled.length === 0; i++) await sleep(10);
    expect(settled).toEqual([1]);
    expect(rec.log.indexOf("fail alice")).toBe(1);
    expect(rec.log.indexOf("start bob")).toBeGreaterThan(1);
    expect(rec.got.get(alice)).toEqual([1]);
    expect(rec.got.get(bob)).toEqual([1]);
  });

  it("keeps every hub's notices in stream order, each once, under concurrent sends of several senders (groups, delays, failures)", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const users = ["alice", "bob", "carol", "dave"].map((n) => `@${n}-${tag}:test.local`);
    const roomId = `!order-${tag}:test.local`;
    // Calls take 0-4 ms; every 7th call fails (before reaching the hub) and is retried.
    const rec = recordingEnv(async (_u, _n, call) => {
      await sleep(call % 5);
      if (call % 7 === 0) throw new Error("transient");
    });
    const hubs = new HubFanOut(rec.env);
    const settled: number[] = [];
    let stream = 0;
    const sends: Promise<void>[] = [];
    // 30 rounds: each a group commit of 1-3 events from different senders, notified in one
    // synchronous run; a pause of 0-3 ms between rounds.
    for (let r = 0; r < 30; r++) {
      const size = 1 + (r % 3);
      for (let k = 0; k < size; k++) {
        const sender = users[(r + k) % users.length];
        sends.push(hubs.notify(notice(roomId, ++stream, sender), users, (s) => settled.push(s)));
      }
      await sleep(r % 4);
    }
    await Promise.all(sends);
    for (let i = 0; i < 300 && settled.length < stream; i++) await sleep(10);
    const all = Array.from({ length: stream }, (_, i) => i + 1);
    expect([...settled].sort((a, b) => a - b)).toEqual(all);
    for (const u of users) expect(rec.got.get(u), u).toEqual(all);
    // And the hubs hold each once.
    for (const u of users) {
      const rows = await runInDurableObject(env.USERS.get(env.USERS.idFromName(u)), async (_o, state) =>
        state.storage.sql.exec<{ stream: number }>("SELECT stream FROM room_events WHERE room_id = ? ORDER BY stream", roomId).toArray().map((r) => r.stream),
      );
      expect(rows, u).toEqual(all);
    }
  });
});
