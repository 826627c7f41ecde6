// syncRoomView (durable-objects/room/sync-view.ts) on a hand-built room: the summary (counts, heroes
// per requester, computed once per state map) and lazy-loaded members on fresh and incremental
// syncs.
import { describe, expect, it } from "vitest";
import { syncRoomView, type RoomSyncAccess, type RoomSyncQuery, type SyncEvent } from "../../durable-objects/room/sync-view";
import type { JsonObject, RoomEvent, StateIdMap } from "../../src/core/types";
import { stateKey } from "../../src/core/types";

const ROOM = "!r:test.local";

/** A linear room: create, then `members` join (some then leave), one invite, then messages. */
function fakeRoom(opts: { joined: string[]; invited?: string[]; left?: string[]; senders: string[]; name?: string }) {
  const events: SyncEvent[] = [];
  const add = (type: string, sender: string, content: JsonObject, sk?: string) => {
    const ev = { event_id: `$${events.length}`, room_id: ROOM, type, sender, content, origin_server_ts: 1, depth: events.length, prev_events: [], auth_events: [], pdu: {} } as unknown as RoomEvent;
    if (sk !== undefined) ev.state_key = sk;
    events.push({ ev, stream: events.length + 1 });
  };
  add("m.room.create", opts.joined[0], {}, "");
  for (const u of [...opts.joined, ...(opts.left ?? [])]) add("m.room.member", u, { membership: "join" }, u);
  for (const u of opts.left ?? []) add("m.room.member", u, { membership: "leave" }, u);
  for (const u of opts.invited ?? []) add("m.room.member", opts.joined[0], { membership: "invite" }, u);
  if (opts.name !== undefined) add("m.room.name", opts.joined[0], { name: opts.name }, "");
  for (const [i, u] of opts.senders.entries()) add("m.room.message", u, { body: `m${i}` });
  // State after each stream position; one Map object per distinct state (as the RoomDO's cache).
  const states: StateIdMap[] = [];
  let cur: StateIdMap = new Map();
  for (const e of events) {
    if (e.ev.state_key !== undefined) {
      cur = new Map(cur);
      cur.set(stateKey(e.ev.type, e.ev.state_key), e.ev.event_id);
    }
    states.push(cur);
  }
  let loads = 0;
  const access: RoomSyncAccess<SyncEvent> = {
    eventsDesc: (upTo, since, limit) => events.filter((e) => e.stream! <= upTo && e.stream! > since).reverse().slice(0, limit),
    visibleFor: () => () => true,
    joinedSince: () => 0,
    stateAt: (n) => (n <= 0 ? new Map() : states[Math.min(n, states.length) - 1]),
    load: (id) => {
      loads++;
      return events.find((e) => e.ev.event_id === id);
    },
    toClient: (e) => ({ event_id: e.ev.event_id, type: e.ev.type, sender: e.ev.sender, state_key: e.ev.state_key ?? null, content: e.ev.content }),
  };
  return { access, upTo: events.length, loads: () => loads };
}

const query = (upTo: number, limit: number): RoomSyncQuery => ({ since: null, upTo, limit, lazyLoadMembers: true, fullState: false, useStateAfter: false });

describe("syncRoomView summary and lazy-loaded members", () => {
  const joined = Array.from({ length: 40 }, (_, i) => `@u${String(i).padStart(2, "0")}:test.local`);

  it("counts joined and invited members; heroes are five others in user ID order, per requester", () => {
    const room = fakeRoom({ joined, invited: ["@aaa-invited:test.local"], left: ["@gone:test.local"], senders: [joined[7], joined[3]] });
    const forU00 = syncRoomView(room.access, joined[0], query(room.upTo, 1));
    expect(forU00.summary).toEqual({
      "m.heroes": ["@aaa-invited:test.local", "@u01:test.local", "@u02:test.local", "@u03:test.local", "@u04:test.local"],
      "m.joined_member_count": 40,
      "m.invited_member_count": 1,
    });
    const loadsAfterFirst = room.loads();
    // Another requester, same state: same counts, heroes without them — and the member events
    // are not walked again.
    const forInvited = syncRoomView(room.access, "@aaa-invited:test.local", query(room.upTo, 1));
    expect(forInvited.summary["m.heroes"]).toEqual(["@u00:test.local", "@u01:test.local", "@u02:test.local", "@u03:test.local", "@u04:test.local"]);
    expect(forInvited.summary["m.joined_member_count"]).toBe(40);
    expect(room.loads() - loadsAfterFirst).toBeLessThan(10);
  });

  it("takes memberships from the room's cheap lookup when it has one, loading only what it lacks", () => {
    const room = fakeRoom({ joined, invited: ["@aaa-invited:test.local"], left: ["@gone:test.local"], senders: [joined[7]] });
    // The lookup knows every member event but the invite's (that one is loaded).
    const byId = new Map<string, string>();
    for (let i = 0; i < room.upTo; i++) {
      const e = room.access.load(`$${i}`)!;
      if (e.ev.type === "m.room.member" && e.ev.content.membership !== "invite") byId.set(e.ev.event_id, String(e.ev.content.membership));
    }
    const before = room.loads();
    const v = syncRoomView({ ...room.access, memberships: () => byId }, joined[0], query(room.upTo, 1));
    expect(v.summary["m.joined_member_count"]).toBe(40);
    expect(v.summary["m.invited_member_count"]).toBe(1);
    expect(v.summary["m.heroes"]![0]).toBe("@aaa-invited:test.local");
    expect(room.loads() - before).toBeLessThan(10);
  });

  it("falls back to members who left when nobody else is joined or invited", () => {
    const room = fakeRoom({ joined: ["@me:test.local"], left: ["@b:test.local", "@a:test.local"], senders: ["@me:test.local"] });
    const v = syncRoomView(room.access, "@me:test.local", query(room.upTo, 1));
    expect(v.summary).toEqual({ "m.heroes": ["@a:test.local", "@b:test.local"], "m.joined_member_count": 1, "m.invited_member_count": 0 });
  });

  it("a fresh room with lazy loading sends the timeline senders' and my member events, and all other state", () => {
    // Named: no heroes, whose member events lazy loading would add too (see the next test).
    const room = fakeRoom({ joined, senders: [joined[7], joined[3], joined[9]], name: "Named" });
    const v = syncRoomView(room.access, joined[20], query(room.upTo, 2));
    expect(v.timeline.events.map((e) => e.sender)).toEqual([joined[3], joined[9]]);
    expect(v.timeline.limited).toBe(true);
    const members = v.state!.events.filter((e) => e.type === "m.room.member").map((e) => e.state_key).sort();
    expect(members).toEqual([joined[3], joined[9], joined[20]].sort());
    expect(v.state!.events.filter((e) => e.type === "m.room.create")).toHaveLength(1);
    // Without lazy loading: every member.
    const full = syncRoomView(room.access, joined[20], { ...query(room.upTo, 2), lazyLoadMembers: false });
    expect(full.state!.events.filter((e) => e.type === "m.room.member")).toHaveLength(40);
  });

  it("lazy loading in a room without a name adds the heroes' member events", () => {
    const room = fakeRoom({ joined, senders: [joined[7], joined[3], joined[9]] });
    const v = syncRoomView(room.access, joined[20], query(room.upTo, 2));
    expect(v.summary["m.heroes"]).toEqual(joined.slice(0, 5));
    const members = v.state!.events.filter((e) => e.type === "m.room.member").map((e) => e.state_key).sort();
    expect(members).toEqual([...joined.slice(0, 5), joined[3], joined[9], joined[20]].filter((u, i, a) => a.indexOf(u) === i).sort());
  });

  it("an incremental sync marks senders' unchanged members as lazy candidates; gap changes are not candidates", () => {
    const five = joined.slice(0, 5);
    // (Named, so that no heroes' member events are added.)
    const room = fakeRoom({ joined: five, left: ["@gone:test.local"], senders: [five[1], five[2]], name: "Named" });
    // Streams: create 1, joins 2-6, @gone joins 7 and leaves 8, name 9, messages 10 (u01) and 11 (u02).
    const v = syncRoomView(room.access, five[0], { ...query(room.upTo, 1), since: 7 });
    expect(v.timeline.events.map((e) => e.sender)).toEqual([five[2]]);
    expect(v.timeline.limited).toBe(true);
    const members = Object.fromEntries(v.state!.events.filter((e) => e.type === "m.room.member").map((e) => [e.state_key, e.event_id]));
    expect(Object.keys(members).sort()).toEqual(["@gone:test.local", five[2]].sort());
    expect(v.lazyMembers).toEqual({ [five[2]]: members[five[2]] });
    // A fresh room or full_state: nothing is a candidate (the client holds nothing).
    expect(syncRoomView(room.access, five[0], query(room.upTo, 1)).lazyMembers).toBeUndefined();
    expect(syncRoomView(room.access, five[0], { ...query(room.upTo, 1), since: 7, fullState: true }).lazyMembers).toBeUndefined();
  });
});
