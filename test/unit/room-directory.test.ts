// Room directory services with fake room state: summaries, permissions, pagination tokens and
// keyset paging over D1 (real D1 in workerd; the RoomDO replaced by in-memory readers).
import { describe, it, expect, beforeEach } from "vitest";
import { env } from "cloudflare:test";
import {
  canEditRoomDirectory,
  decodePageToken,
  encodePageToken,
  listPublicRooms,
  publicRoomChunk,
  setRoomVisibility,
  getRoomVisibility,
  countPublicRooms,
  type RoomStateReader,
  type StateEventLike,
} from "../../src/services/room-directory";
import { MatrixError } from "../../src/api/errors";

type State = Record<string, Record<string, unknown>>; // "type|stateKey" → content

function fakeRoom(state: State, joined = 1, sender = "@creator:test.local"): RoomStateReader {
  return {
    get: async (type, key) => {
      const content = state[`${type}|${key}`];
      return content ? ({ type, state_key: key, sender, event_id: `$${type}`, content } as StateEventLike) : null;
    },
    joinedMemberCount: async () => joined,
  };
}

const CREATOR = "@creator:test.local";
function v12Room(extra: State = {}): State {
  return {
    "m.room.create|": { room_version: "12" },
    [`m.room.member|${CREATOR}`]: { membership: "join" },
    ...extra,
  };
}

describe("page tokens", () => {
  it("round-trips all four kinds", () => {
    for (const dir of ["f", "b"] as const) {
      for (const inclusive of [false, true]) {
        const t = { dir, key: { ts: 1234567, roomId: "!abc:test.local" }, inclusive };
        expect(decodePageToken(encodePageToken(t))).toEqual(t);
      }
    }
  });
  it("rejects garbage with M_INVALID_PARAM", () => {
    for (const bad of ["", "x", "f", "f!!!", "fAAAA", "z" + encodePageToken({ dir: "f", key: { ts: 1, roomId: "!a:b" } }).slice(1)]) {
      try {
        decodePageToken(bad);
        expect.unreachable(`accepted ${bad}`);
      } catch (e) {
        expect((e as MatrixError).errcode).toBe("M_INVALID_PARAM");
        expect((e as MatrixError).status).toBe(400);
      }
    }
    // Valid base64 of the wrong JSON shape.
    const wrong = "f" + btoa(JSON.stringify({ ts: 1 })).replace(/=+$/, "");
    expect(() => decodePageToken(wrong)).toThrow(MatrixError);
  });
});

describe("publicRoomChunk", () => {
  it("reads every field from current state", async () => {
    const chunk = await publicRoomChunk(
      "!r:test.local",
      fakeRoom(
        v12Room({
          "m.room.create|": { room_version: "12", type: "m.space" },
          "m.room.name|": { name: "Cheese" },
          "m.room.topic|": { topic: "legacy", "m.topic": { "m.text": [{ mimetype: "text/html", body: "<b>x</b>" }, { body: "Tasty" }] } },
          "m.room.canonical_alias|": { alias: "#cheese:test.local" },
          "m.room.avatar|": { url: "mxc://test.local/abc" },
          "m.room.join_rules|": { join_rule: "public" },
          "m.room.history_visibility|": { history_visibility: "world_readable" },
          "m.room.guest_access|": { guest_access: "can_join" },
        }),
        37,
      ),
    );
    expect(chunk).toEqual({
      room_id: "!r:test.local",
      num_joined_members: 37,
      world_readable: true,
      guest_can_join: true,
      name: "Cheese",
      topic: "Tasty",
      canonical_alias: "#cheese:test.local",
      avatar_url: "mxc://test.local/abc",
      join_rule: "public",
      room_type: "m.space",
    });
  });
  it("omits what is absent; no join rules event means invite", async () => {
    const chunk = await publicRoomChunk("!r:test.local", fakeRoom(v12Room({ "m.room.topic|": { "m.topic": { "m.text": [{ mimetype: "text/html", body: "x" }] } } }), 2));
    expect(chunk).toEqual({ room_id: "!r:test.local", num_joined_members: 2, world_readable: false, guest_can_join: false, join_rule: "invite" });
  });
  it("is null for an unknown room", async () => {
    expect(await publicRoomChunk("!r:test.local", fakeRoom({}))).toBeNull();
  });
});

describe("canEditRoomDirectory", () => {
  const ROOM = "!perm:test.local";
  const alice = "@alice:test.local";
  it("v12 creator has infinite power even without a power levels entry", async () => {
    expect(await canEditRoomDirectory(env, fakeRoom(v12Room({ "m.room.power_levels|": { users: {} } }), 1, CREATOR), ROOM, CREATOR)).toBe(true);
  });
  it("a joined member needs the canonical_alias level (state_default 50 by default)", async () => {
    const base = { [`m.room.member|${alice}`]: { membership: "join" } };
    expect(await canEditRoomDirectory(env, fakeRoom(v12Room({ ...base, "m.room.power_levels|": { users: { [alice]: 49 } } })), ROOM, alice)).toBe(false);
    expect(await canEditRoomDirectory(env, fakeRoom(v12Room({ ...base, "m.room.power_levels|": { users: { [alice]: 50 } } })), ROOM, alice)).toBe(true);
    expect(
      await canEditRoomDirectory(
        env,
        fakeRoom(v12Room({ ...base, "m.room.power_levels|": { users: { [alice]: 10 }, events: { "m.room.canonical_alias": 10 } } })),
        ROOM,
        alice,
      ),
    ).toBe(true);
    expect(await canEditRoomDirectory(env, fakeRoom(v12Room({ ...base, "m.room.power_levels|": { state_default: 0 } })), ROOM, alice)).toBe(true);
  });
  it("power does not help someone who is not joined", async () => {
    const state = v12Room({ [`m.room.member|${alice}`]: { membership: "leave" }, "m.room.power_levels|": { users: { [alice]: 100 } } });
    expect(await canEditRoomDirectory(env, fakeRoom(state), ROOM, alice)).toBe(false);
  });
  it("pre-v12 rooms: the creator has 100 without a power levels event", async () => {
    const state = { "m.room.create|": { room_version: "10", creator: CREATOR }, [`m.room.member|${CREATOR}`]: { membership: "join" } };
    expect(await canEditRoomDirectory(env, fakeRoom(state, 1, CREATOR), ROOM, CREATOR)).toBe(true);
  });
  it("unknown room: no", async () => {
    expect(await canEditRoomDirectory(env, fakeRoom({}), ROOM, alice)).toBe(false);
  });
  it("server admins may", async () => {
    await env.DB.prepare("INSERT INTO users (user_id, localpart, admin, is_guest, deactivated, created_ts) VALUES (?, ?, 1, 0, 0, 0)")
      .bind("@boss:test.local", "boss")
      .run();
    expect(await canEditRoomDirectory(env, fakeRoom({}), ROOM, "@boss:test.local")).toBe(true);
  });
});

describe("visibility", () => {
  it("defaults to private, publishes, unpublishes; re-publishing keeps the listing position", async () => {
    const id = "!vis:test.local";
    expect(await getRoomVisibility(env, id)).toBe("private");
    await setRoomVisibility(env, id, "public");
    expect(await getRoomVisibility(env, id)).toBe("public");
    const ts = (await env.DB.prepare("SELECT published_ts FROM room_directory WHERE room_id = ?").bind(id).first<{ published_ts: number }>())!.published_ts;
    await new Promise((r) => setTimeout(r, 5));
    await setRoomVisibility(env, id, "public");
    expect((await env.DB.prepare("SELECT published_ts FROM room_directory WHERE room_id = ?").bind(id).first<{ published_ts: number }>())!.published_ts).toBe(ts);
    await setRoomVisibility(env, id, "private");
    expect(await getRoomVisibility(env, id)).toBe("private");
  });
});

describe("listPublicRooms paging", () => {
  const rooms = new Map<string, State>();
  const readerFor = (id: string) => fakeRoom(rooms.get(id) ?? {}, 3);
  const ids = Array.from({ length: 25 }, (_, i) => `!room${String(i).padStart(2, "0")}:test.local`);

  beforeEach(async () => {
    await env.DB.prepare("DELETE FROM room_directory").run();
    rooms.clear();
    // Published at distinct times, except rooms 10..12 which share one timestamp (tie on room_id).
    const stmts = ids.map((id, i) => {
      rooms.set(id, v12Room({ "m.room.name|": { name: i % 5 === 0 ? `Cheese ${i}` : `Room ${i}` }, ...(i === 7 ? { "m.room.create|": { room_version: "12", type: "m.space" } } : {}) }));
      const ts = i >= 10 && i <= 12 ? 1000 + 10 : 1000 + i;
      return env.DB.prepare("INSERT INTO room_directory (room_id, visibility, published_ts) VALUES (?, 'public', ?)").bind(id, ts);
    });
    await env.DB.batch(stmts);
    // A published room its RoomDO does not know (e.g. never created): left out.
    await env.DB.prepare("INSERT INTO room_directory (room_id, visibility, published_ts) VALUES ('!ghost:test.local', 'public', 1005)").run();
  });

  it("pages forward and back without repeats or gaps", async () => {
    expect(await countPublicRooms(env)).toBe(26);
    const seen: string[] = [];
    let page = await listPublicRooms(env, { limit: 10 }, readerFor);
    expect(page.prev_batch).toBeUndefined();
    const pages = [page];
    while (true) {
      seen.push(...page.chunk.map((c) => c.room_id));
      if (!page.next_batch) break;
      page = await listPublicRooms(env, { limit: 10, since: decodePageToken(page.next_batch) }, readerFor);
      expect(page.prev_batch).toBeDefined();
      pages.push(page);
    }
    expect(seen).toEqual(ids);
    expect(pages.map((p) => p.chunk.length)).toEqual([10, 10, 5]);
    // Back from the last page gives the middle page again, then the first.
    const back1 = await listPublicRooms(env, { limit: 10, since: decodePageToken(pages[2].prev_batch!) }, readerFor);
    expect(back1.chunk.map((c) => c.room_id)).toEqual(ids.slice(10, 20));
    expect(back1.next_batch).toBeDefined();
    const back2 = await listPublicRooms(env, { limit: 10, since: decodePageToken(back1.prev_batch!) }, readerFor);
    expect(back2.chunk.map((c) => c.room_id)).toEqual(ids.slice(0, 10));
    expect(back2.prev_batch).toBeUndefined();
    // And forward again from a backward page.
    const fwd = await listPublicRooms(env, { limit: 10, since: decodePageToken(back2.next_batch!) }, readerFor);
    expect(fwd.chunk.map((c) => c.room_id)).toEqual(ids.slice(10, 20));
  });

  it("filters by search term and room type, still paging correctly", async () => {
    const p1 = await listPublicRooms(env, { limit: 2, searchTerm: "cheese" }, readerFor);
    expect(p1.chunk.map((c) => c.name)).toEqual(["Cheese 0", "Cheese 5"]);
    const p2 = await listPublicRooms(env, { limit: 2, searchTerm: "CHEESE", since: decodePageToken(p1.next_batch!) }, readerFor);
    expect(p2.chunk.map((c) => c.name)).toEqual(["Cheese 10", "Cheese 15"]);
    const p3 = await listPublicRooms(env, { limit: 2, searchTerm: "cheese", since: decodePageToken(p2.next_batch!) }, readerFor);
    expect(p3.chunk.map((c) => c.name)).toEqual(["Cheese 20"]);
    expect(p3.next_batch).toBeUndefined();
    const spaces = await listPublicRooms(env, { limit: 10, roomTypes: ["m.space"] }, readerFor);
    expect(spaces.chunk.map((c) => c.room_id)).toEqual([ids[7]]);
    const plain = await listPublicRooms(env, { limit: 100, roomTypes: [null] }, readerFor);
    expect(plain.chunk).toHaveLength(24);
    expect(await listPublicRooms(env, { limit: 10, searchTerm: "nothing like this" }, readerFor)).toEqual({ chunk: [] });
  });

  it("an empty page still links back to where it came from", async () => {
    const last = await listPublicRooms(env, { limit: 25 }, readerFor);
    expect(last.next_batch).toBeUndefined();
    // A forward token past the end (e.g. the tail rooms were unpublished meanwhile).
    const tail = encodePageToken({ dir: "f", key: { ts: 1024, roomId: ids[24] } });
    const empty = await listPublicRooms(env, { limit: 10, since: decodePageToken(tail) }, readerFor);
    expect(empty.chunk).toEqual([]);
    const back = await listPublicRooms(env, { limit: 2, since: decodePageToken(empty.prev_batch!) }, readerFor);
    expect(back.chunk.map((c) => c.room_id)).toEqual([ids[23], ids[24]]);
    // A backward token before the start: empty, but next_batch comes back to the first room.
    const head = encodePageToken({ dir: "b", key: { ts: 1000, roomId: ids[0] } });
    const none = await listPublicRooms(env, { limit: 10, since: decodePageToken(head) }, readerFor);
    expect(none.chunk).toEqual([]);
    expect(none.prev_batch).toBeUndefined();
    const again = await listPublicRooms(env, { limit: 1, since: decodePageToken(none.next_batch!) }, readerFor);
    expect(again.chunk.map((c) => c.room_id)).toEqual([ids[0]]);
  });
});
