// A sync hub records a RoomDO's group of notices in one call (durable-objects/user/fan-in.ts
// applyRun: the room's row read once, its stream and the sliding-sync recency index written once
// per run). What it stores must be exactly what the same notices leave when they come one call
// each: membership and its log, the position log, push-rule outcomes (unread counts,
// notifications), read marks and the recency index (bump stamps, membership, encryption, room type).
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import type { UserStub } from "../../src/services/notifier";
import type { RoomEventNotice } from "../../src/rpc/user";

const TABLES = [
  "SELECT room_id, membership, member_stream, stream, inviter, display_name FROM rooms ORDER BY room_id",
  "SELECT upos, room_id, membership, stream FROM membership_log ORDER BY upos",
  "SELECT upos, room_id, stream FROM room_log ORDER BY upos",
  "SELECT room_id, stream, event_id, thread_id, notify, highlight, actions, ts, upos FROM room_events ORDER BY room_id, stream",
  "SELECT room_id, thread_id, stream FROM read_marks ORDER BY room_id, thread_id",
  "SELECT room_id, bump, encrypted, rtype, membership, inviter, is_dm FROM sliding_rooms ORDER BY room_id",
  "SELECT user_id, upos, left FROM device_lists ORDER BY user_id",
];

describe("a hub's runs of notices", () => {
  it("leave the same rows as the same notices one call each", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const users = [`@one-by-one-${tag}:test.local`, `@in-runs-${tag}:test.local`];
    const hubs = users.map((u) => env.USERS.get(env.USERS.idFromName(u)) as unknown as UserStub);
    // Both hubs ignore the same user (their messages neither notify nor count).
    for (const [k, h] of hubs.entries()) await h.setAccountData(users[k], null, "m.ignored_user_list", { ignored_users: { "@ignored:test.local": {} } });

    /** The notices of one room for recipient `me`, in the order a RoomDO might deliver them. */
    const script = (me: string, roomId: string): RoomEventNotice[] => {
      let stream = 0;
      const n = (type: string, sender: string, content: Record<string, unknown>, extra: { state_key?: string; encrypted?: boolean } = {}): RoomEventNotice => {
        const s = ++stream;
        return {
          roomId,
          stream: s,
          event: { event_id: `$${s}-${roomId}`, room_id: roomId, type, sender, content: content as never, origin_server_ts: 1000 + s, ...(extra.state_key !== undefined ? { state_key: extra.state_key } : {}) },
          memberCount: 3,
          senderPowerLevel: 0,
          encrypted: extra.encrypted,
        };
      };
      const alice = "@alice:test.local";
      const msg = (sender: string, body: string, content: Record<string, unknown> = {}) => n("m.room.message", sender, { msgtype: "m.text", body, ...content });
      const list = [
        n("m.room.create", alice, { room_version: "10", type: "m.space" }, { state_key: "" }),
        n("m.room.member", alice, { membership: "invite" }, { state_key: me }),
        n("m.room.member", me, { membership: "join", displayname: "Runner" }, { state_key: me }),
        n("m.room.topic", alice, { topic: "not a bump event" }, { state_key: "" }),
        msg(alice, "hello Runner", { "m.mentions": { user_ids: [me] } }),
        msg("@ignored:test.local", "ignored"),
        msg(me, "my own message moves my read mark"),
        msg(alice, "in a thread", { "m.relates_to": { rel_type: "m.thread", event_id: "$root" } }),
        n("m.room.encryption", alice, { algorithm: "m.megolm.v1.aes-sha2" }, { state_key: "", encrypted: true }),
        n("m.room.member", "@carol:test.local", { membership: "join" }, { state_key: "@carol:test.local", encrypted: true }),
        msg(alice, "arrives after the two after it"),
        msg(alice, "after"),
        msg(alice, "after that"),
        n("m.reaction", alice, { "m.relates_to": { rel_type: "m.annotation", event_id: "$x", key: "👍" } }, { encrypted: true }),
        n("m.room.member", me, { membership: "leave" }, { state_key: me, encrypted: true }),
        n("m.room.member", alice, { membership: "invite" }, { state_key: me, encrypted: true }),
        n("m.room.member", me, { membership: "join" }, { state_key: me, encrypted: true }),
      ];
      // Fan-outs may arrive out of order.
      list.splice(12, 0, list.splice(10, 1)[0]);
      return list;
    };
    // Room A: all of it in one run; room B: already known (rows exist) before its run, which
    // repeats a notice already held (a redelivery) and one twice within the run; room C: a room
    // the hub has no record of, whose run has no member event of mine.
    const rooms = [`!a-${tag}:test.local`, `!b-${tag}:test.local`, `!c-${tag}:test.local`];
    const calls = (me: string): RoomEventNotice[][] => {
      const a = script(me, rooms[0]);
      const b = script(me, rooms[1]);
      const c = script(me, rooms[2]).filter((x) => !(x.event.type === "m.room.member" && x.event.state_key === me) && x.event.type !== "m.room.create");
      return [a, b.slice(0, 5), [b[3], ...b.slice(5, 9), b[7], ...b.slice(9)], c];
    };
    // One hub hears each notice in a call of its own, the other each run in one call.
    for (const call of calls(users[0])) for (const n of call) await hubs[0].roomEvents(users[0], [n]);
    for (const call of calls(users[1])) await hubs[1].roomEvents(users[1], call);

    const dump = async (k: number) =>
      runInDurableObject(env.USERS.get(env.USERS.idFromName(users[k])), async (_o, state) =>
        TABLES.map((q) => JSON.stringify(state.storage.sql.exec(q).toArray()).replaceAll(users[k], "@me")),
      );
    const [one, runs] = [await dump(0), await dump(1)];
    for (let i = 0; i < TABLES.length; i++) expect(runs[i], TABLES[i]).toBe(one[i]);
    // What one notice at a time leaves, as the notices say: each room at its newest stream, my
    // membership as my newest member event left it, and the recency index bumped by the newest
    // bump event (a reaction is none).
    const rows = await runInDurableObject(env.USERS.get(env.USERS.idFromName(users[1])), async (_o, state) => ({
      rooms: state.storage.sql.exec<{ room_id: string; membership: string; stream: number; member_stream: number }>("SELECT room_id, membership, stream, member_stream FROM rooms").toArray(),
      bumps: state.storage.sql
        .exec<{ room_id: string; bump: number; last: number }>(
          // the newest bump event delivered: my rejoin ($17) in A and B; in C the message ($11)
          // that arrived after the two after it
          "SELECT s.room_id, s.bump, (SELECT e.upos FROM room_events e WHERE e.room_id = s.room_id AND e.event_id LIKE (CASE WHEN s.room_id LIKE '!c-%' THEN '$11-%' ELSE '$17-%' END)) AS last FROM sliding_rooms s",
        )
        .toArray(),
    }));
    for (const roomId of rooms) {
      const r = rows.rooms.find((x) => x.room_id === roomId)!;
      // (room C's notices stop at the reaction: it has none of my member events)
      expect(r, roomId).toMatchObject({ membership: "join", stream: roomId === rooms[2] ? 14 : 17 });
      const b = rows.bumps.find((x) => x.room_id === roomId)!;
      expect(b.bump, roomId).toBe(b.last);
    }
    // (and the script did exercise what it should)
    expect(one[5]).toContain('"rtype":"m.space"');
    expect(one[3]).toContain('"highlight":1');
    // Unread counts and notifications through the RPCs agree too.
    const [c0, c1] = await Promise.all(hubs.map((h, k) => h.notifications(users[k], { limit: 50, onlyHighlight: false })));
    expect(JSON.stringify(c1).replaceAll(users[1], "@me")).toBe(JSON.stringify(c0).replaceAll(users[0], "@me"));
  });

  it("a run of others’ messages in a room the hub holds costs it 5 statements (8, then 6 before): no reads of what it already holds or of whether the recency row is new", async () => {
    const me = `@counted-${crypto.randomUUID().slice(0, 8)}:test.local`;
    const roomId = `!counted-${crypto.randomUUID().slice(0, 8)}:test.local`;
    const stub = env.USERS.get(env.USERS.idFromName(me));
    const msg = (stream: number, sender = "@alice:test.local"): RoomEventNotice => ({
      roomId,
      stream,
      event: { event_id: `$${stream}-counted`, room_id: roomId, type: "m.room.message", sender, content: { msgtype: "m.text", body: `m${stream}` }, origin_server_ts: 1000 + stream },
      memberCount: 2,
      senderPowerLevel: 0,
    });
    const hub = stub as unknown as UserStub;
    // m.direct names the room before the hub hears of it: its new recency row learns is_dm.
    await hub.setAccountData(me, null, "m.direct", { "@alice:test.local": [roomId] });
    await hub.roomEvents(me, [msg(1)]); // the room is known from here on
    const counted = (notices: RoomEventNotice[]) =>
      runInDurableObject(stub, async (instance, state) => {
        const sql = state.storage.sql;
        const proto = Object.getPrototypeOf(sql) as { exec: (...a: unknown[]) => unknown };
        const exec = proto.exec;
        const seen: string[] = [];
        proto.exec = function (this: unknown, ...a: unknown[]) {
          seen.push(String(a[0]).trim().split(/\s+/).slice(0, 4).join(" "));
          return exec.apply(this, a);
        };
        try {
          await (instance as unknown as UserStub).roomEvents(me, notices);
        } finally {
          proto.exec = exec;
        }
        return seen;
      });
    // One notice of a room the hub holds: room_log, room_events, the room's stream, the recency
    // index (one upsert that says whether the row is new) and the hub's position. The room's row
    // and which notices it holds are known from the run before (newer notices: none held).
    const one = await counted([msg(2)]);
    expect(one, one.join("\n")).toHaveLength(5);
    expect(one.filter((q) => q.startsWith("SELECT")), one.join("\n")).toEqual([]);
    // A run of several costs the same.
    const run = await counted([msg(3), msg(4), msg(5), msg(6)]);
    expect(run, run.join("\n")).toHaveLength(5);
    // A redelivery (a notice at or below what the hub recorded) reads what it holds again.
    const again = await counted([msg(6), msg(7)]);
    expect(again.filter((q) => q.startsWith("SELECT")), again.join("\n")).toHaveLength(1);
    // The rows are as before (the recency row of a room new to the hub learned is_dm).
    const rows = await runInDurableObject(stub, async (_i, state) => ({
      events: state.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM room_events WHERE room_id = ?", roomId).one().n,
      sliding: state.storage.sql.exec<{ is_dm: number }>("SELECT is_dm FROM sliding_rooms WHERE room_id = ?", roomId).toArray(),
    }));
    expect(rows).toEqual({ events: 7, sliding: [{ is_dm: 1 }] });
  });

  it("notices already recorded are skipped whatever the order they come back in (the hub's memory of a room)", async () => {
    const me = `@memo-${crypto.randomUUID().slice(0, 8)}:test.local`;
    const roomId = `!memo-${crypto.randomUUID().slice(0, 8)}:test.local`;
    const hub = env.USERS.get(env.USERS.idFromName(me)) as unknown as UserStub;
    const msg = (stream: number): RoomEventNotice => ({
      roomId,
      stream,
      event: { event_id: `$${stream}-memo`, room_id: roomId, type: "m.room.message", sender: "@alice:test.local", content: { msgtype: "m.text", body: `m${stream}` }, origin_server_ts: 1000 + stream },
      memberCount: 2,
      senderPowerLevel: 0,
    });
    // Out of order, redelivered after newer ones, twice in a row, and in one run with new ones.
    for (const call of [[1], [3], [2], [3], [1, 4], [4], [6], [5, 6, 7], [7]]) await hub.roomEvents(me, call.map(msg));
    const rows = await runInDurableObject(env.USERS.get(env.USERS.idFromName(me)), async (_i, state) => ({
      events: state.storage.sql.exec<{ stream: number }>("SELECT stream FROM room_events WHERE room_id = ? ORDER BY stream", roomId).toArray().map((r) => r.stream),
      log: state.storage.sql.exec<{ stream: number }>("SELECT stream FROM room_log WHERE room_id = ? ORDER BY upos", roomId).toArray().map((r) => r.stream),
      stream: state.storage.sql.exec<{ stream: number }>("SELECT stream FROM rooms WHERE room_id = ?", roomId).one().stream,
    }));
    expect(rows).toEqual({ events: [1, 2, 3, 4, 5, 6, 7], log: [1, 3, 2, 4, 6, 5, 7], stream: 7 });
  });
});
