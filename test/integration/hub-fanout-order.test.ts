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
import type { UserDO } from "../../durable-objects/user";
import { createRoom, joinRoom, registerUser, sendText, syncOk, type Json } from "./helpers";

type Hook = (userId: string, notices: RoomEventNotice[], call: number) => Promise<void> | void;

/** env with USERS wrapped: each roomEvents call is logged (`start`/`end`/`fail` with the user),
 *  `before` runs first (it may wait or throw), then the real hub is called. */
function recordingEnv(before: Hook = () => {}) {
  const log: string[] = [];
  const got = new Map<string, number[]>();
  /** Per hub, the `defer` argument of each call. */
  const deferred = new Map<string, unknown[]>();
  let calls = 0;
  const real = env.USERS;
  const users = {
    idFromName: (name: string) => real.idFromName(name),
    get(id: DurableObjectId) {
      const stub = real.get(id) as unknown as { roomEvents(u: string, n: RoomEventNotice[], defer?: boolean): Promise<void> };
      return {
        async roomEvents(userId: string, notices: RoomEventNotice[], defer?: boolean) {
          const name = userId.slice(1, userId.indexOf("-"));
          log.push(`start ${name}`);
          deferred.set(userId, [...(deferred.get(userId) ?? []), defer]);
          try {
            await before(userId, notices, ++calls);
            await stub.roomEvents(userId, notices, defer);
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
  return { env: { ...env, USERS: users } as unknown as Env, log, got, deferred };
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

  it("the other hubs are called before the send returns, but told to defer their work (the sender's hub is not)", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const [alice, bob, carol] = ["alice", "bob", "carol"].map((n) => `@${n}-${tag}:test.local`);
    const roomId = `!answer-first-${tag}:test.local`;
    const rec = recordingEnv();
    const hubs = new HubFanOut(rec.env);
    const settled: number[] = [];
    await hubs.notify(notice(roomId, 1, alice), [bob, carol, alice], (s) => settled.push(s));
    // Within the turn the send's answer is written in (microtasks only), every other hub has
    // been called: it holds the notice before any later request of its user can reach it.
    for (let i = 0; i < 50; i++) await Promise.resolve();
    expect(rec.log.slice(0, 2)).toEqual(["start alice", "end alice"]);
    expect(rec.log.slice(2).sort()).toEqual(["start bob", "start carol"]);
    expect(rec.deferred.get(alice)).toEqual([false]);
    expect(rec.deferred.get(bob)).toEqual([true]);
    expect(rec.deferred.get(carol)).toEqual([true]);
    for (let i = 0; i < 100 && settled.length === 0; i++) await sleep(10);
    expect(settled).toEqual([1]);
    expect(rec.got.get(bob)).toEqual([1]);
  });

  it("a hub told to defer takes the notice at once, applies it a timer turn later, and its readers wait for it", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const [alice, bob] = ["alice", "bob"].map((n) => `@${n}-${tag}:test.local`);
    const roomId = `!deferred-${tag}:test.local`;
    const stub = env.USERS.get(env.USERS.idFromName(bob));
    const seen = await runInDurableObject(stub, async (inst, state) => {
      const hub = inst as unknown as UserDO;
      const count = () => state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM room_events WHERE room_id = ?", roomId).one().n;
      const since = await hub.currentToken();
      const req = { userId: bob, deviceId: "DEV", since, timeoutMs: 0, fullState: false, includeLeave: false, threadCounts: false };
      // The first notice: a reader arriving while it is deferred waits for it.
      const first = hub.roomEvents(bob, [notice(roomId, 1, alice)], true);
      for (let i = 0; i < 50; i++) await Promise.resolve();
      const before = count();
      const synced = await hub.sync(req);
      const inSync = synced.ok ? synced.value.rooms.map((r) => [r.roomId, r.upTo]) : synced;
      await first;
      // The second: /keys/changes-like position reads and the room list wait too.
      const second = hub.roomEvents(bob, [notice(roomId, 2, alice)], true);
      const rooms = await hub.getRooms();
      await second;
      // Not deferred (the sender's hub): applied at once.
      const third = hub.roomEvents(bob, [notice(roomId, 3, alice)]);
      const atOnce = count();
      await third;
      return { before, inSync, rooms: rooms.filter((r) => r.roomId === roomId).map((r) => r.stream), atOnce, after: count() };
    });
    expect(seen).toEqual({ before: 0, inSync: [[roomId, 1]], rooms: [2], atOnce: 3, after: 3 });
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

describe("hub fan-out: read-after-write across users", () => {
  it("another member's /sync right after a send's answer has the event (room of 10, 20 sends in a row)", async () => {
    const users = await Promise.all(Array.from({ length: 10 }, () => registerUser()));
    const roomId = await createRoom(users[0]);
    for (const u of users.slice(1)) await joinRoom(u, roomId);
    const since = new Map<string, string>();
    for (const u of users) since.set(u.userId, (await syncOk(u)).next_batch as string);
    for (let i = 0; i < 20; i++) {
      const sender = users[i % users.length];
      const reader = users[(i * 3 + 1) % users.length];
      const eventId = await sendText(sender, roomId, `raw ${i}`);
      // No timeout: the reader's hub must already have the notice (it was handed to the hub
      // before the send answered) and apply it before answering.
      const body = await syncOk(reader, { since: since.get(reader.userId)!, timeout: 0 });
      since.set(reader.userId, body.next_batch as string);
      const rooms = (body.rooms as Json | undefined)?.join as Record<string, { timeline: { events: { event_id: string }[] } }> | undefined;
      const ids = rooms?.[roomId]?.timeline.events.map((e) => e.event_id) ?? [];
      expect(ids, `send ${i}: ${sender.userId} -> ${reader.userId}`).toContain(eventId);
    }
  });
});
