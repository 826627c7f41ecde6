// Space hierarchy and the public room directory, client and federation side, in workerd (spec:
// Client-Server API "Discovering rooms within spaces"; Server-Server API "Spaces" and "Public
// Room Directory"). remote.test is simulated: its key is seeded, its requests signed here, and
// its /hierarchy answers come from a fake federation fetch.
import { describe, it, expect, beforeAll, afterEach } from "vitest";
import { call, offline, registerUser, remoteJoinWave, seedRemoteKey, SERVER, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { setFederationFetch } from "../../src/services/federation/client";
import { clearHierarchyCache } from "../../src/services/space-hierarchy";

const REMOTE = "remote.test";
const enc = encodeURIComponent;
let remoteKey: SigningKey;
let alice: TestUser;
let bob: TestUser;

async function fed(method: string, path: string, body?: unknown, sign = true) {
  const uri = `/_matrix/federation${path}`;
  const headers: Record<string, string> = {};
  if (sign) headers.authorization = await signRequest(remoteKey, { method, uri, origin: REMOTE, destination: SERVER, content: body });
  return call(method, uri, { body, headers });
}

async function ok(u: TestUser, method: string, path: string, body?: unknown) {
  const r = await call(method, `/_matrix/client/v3${path}`, { token: u.accessToken, body });
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

const hierarchy = (u: TestUser, roomId: string, q = "") => call("GET", `/_matrix/client/v1/rooms/${enc(roomId)}/hierarchy${q}`, { token: u.accessToken });

async function createRoom(u: TestUser, opts: Record<string, unknown>): Promise<string> {
  return (await ok(u, "POST", "/createRoom", { room_version: "12", ...opts })).room_id;
}

async function addChild(space: string, child: string, content: Record<string, unknown> = {}) {
  await ok(alice, "PUT", `/rooms/${enc(space)}/state/m.space.child/${enc(child)}`, { via: [SERVER], ...content });
}

/** space (public, m.space)
 *    ├─ pub       public room, suggested, order "b"
 *    ├─ sub       public sub-space, order "a" (comes first)
 *    │    ├─ deep   public room
 *    │    └─ space  (a loop back to the root)
 *    ├─ secret    invite-only room (alice only)
 *    ├─ peekable  invite-only, world_readable history
 *    ├─ gone      child without via: not a child
 *    └─ !remoteSpace:remote.test (via remote.test)
 */
let space: string;
let pub: string;
let sub: string;
let deep: string;
let secret: string;
let peekable: string;
let gone: string;
let privateSpace: string;
const REMOTE_SPACE = "!remoteSpace:remote.test";
const REMOTE_ROOM = "!remoteRoom:remote.test";
const REMOTE_RESTRICTED = "!remoteRestricted:remote.test";
let remoteHits = 0;

function fakeRemote(): typeof fetch {
  return async (input) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input.toString() : input.url);
    if (url.pathname.startsWith("/.well-known/")) return new Response("", { status: 404 });
    if (url.pathname === `/_matrix/federation/v1/hierarchy/${enc(REMOTE_SPACE)}`) {
      remoteHits++;
      const child = (id: string) => ({ type: "m.space.child", state_key: id, content: { via: [REMOTE] }, sender: "@r:remote.test", origin_server_ts: 5 });
      return Response.json({
        room: {
          room_id: REMOTE_SPACE,
          name: "Remote space",
          num_joined_members: 3,
          world_readable: false,
          guest_can_join: false,
          join_rule: "public",
          room_type: "m.space",
          children_state: [child(REMOTE_ROOM), child(REMOTE_RESTRICTED), child("!hidden:remote.test")],
          evil_extra_field: "<script>",
        },
        children: [
          { room_id: REMOTE_ROOM, name: "Remote room", num_joined_members: 1, world_readable: true, guest_can_join: false, join_rule: "invite", children_state: [] },
          { room_id: REMOTE_RESTRICTED, name: "Remote restricted", num_joined_members: 1, world_readable: false, guest_can_join: false, join_rule: "restricted", allowed_room_ids: [space], children_state: [] },
          { room_id: "not a room id", name: "junk" },
        ],
        inaccessible_children: ["!hidden:remote.test"],
      });
    }
    return new Response(JSON.stringify({ errcode: "M_NOT_FOUND" }), { status: 404 });
  };
}

beforeAll(async () => {
  setFederationFetch(offline);
  remoteKey = await seedRemoteKey(REMOTE);
  [alice, bob] = await Promise.all([registerUser(), registerUser()]);
  space = await createRoom(alice, { preset: "public_chat", name: "Top space", creation_content: { type: "m.space" }, visibility: "public" });
  pub = await createRoom(alice, { preset: "public_chat", name: "Public room", visibility: "public" });
  sub = await createRoom(alice, { preset: "public_chat", name: "Sub space", creation_content: { type: "m.space" } });
  deep = await createRoom(alice, { preset: "public_chat", name: "Deep room" });
  secret = await createRoom(alice, { preset: "private_chat", name: "Secret room" });
  peekable = await createRoom(alice, {
    preset: "private_chat",
    name: "Peekable",
    initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "world_readable" } }],
  });
  gone = await createRoom(alice, { preset: "public_chat", name: "Gone" });
  privateSpace = await createRoom(alice, { preset: "private_chat", name: "Private space", creation_content: { type: "m.space" } });
  await addChild(space, pub, { suggested: true, order: "b" });
  await addChild(space, sub, { order: "a" });
  await addChild(sub, deep);
  await addChild(sub, space);
  await addChild(space, secret);
  await addChild(space, peekable);
  await ok(alice, "PUT", `/rooms/${enc(space)}/state/m.space.child/${enc(gone)}`, {});
  await ok(alice, "PUT", `/rooms/${enc(space)}/state/m.space.child/${enc(REMOTE_SPACE)}`, { via: [REMOTE] });
  await addChild(privateSpace, pub);
});

afterEach(() => {
  setFederationFetch(offline);
  clearHierarchyCache();
});

const ids = (rooms: { room_id: string }[]) => rooms.map((r) => r.room_id);

describe("GET /_matrix/client/v1/rooms/{roomId}/hierarchy", () => {
  it("walks depth-first in the spec's child order, breaking loops, with full summaries", async () => {
    const r = await hierarchy(alice, space);
    expect(r.status).toBe(200);
    // Children order: sub ("a"), pub ("b"), then by timestamp: secret, peekable, remote space.
    // The remote space is unreachable (offline) and is left out.
    expect(ids(r.body.rooms)).toEqual([space, sub, deep, pub, secret, peekable]);
    expect(r.body.next_batch).toBeUndefined();
    const top = r.body.rooms[0];
    expect(top).toMatchObject({ room_id: space, name: "Top space", room_type: "m.space", join_rule: "public", num_joined_members: 1, room_version: "12", world_readable: false, guest_can_join: false });
    expect(top.children_state.map((c: any) => c.state_key)).toEqual([sub, pub, secret, peekable, REMOTE_SPACE]);
    for (const c of top.children_state) {
      expect(Object.keys(c).sort()).toEqual(["content", "origin_server_ts", "sender", "state_key", "type"]);
      expect(c.type).toBe("m.space.child");
    }
    expect(r.body.rooms.find((x: any) => x.room_id === pub).children_state).toEqual([]);
  });

  it("shows another user only what they may see: public, world_readable, not invite-only", async () => {
    const r = await hierarchy(bob, space);
    expect(r.status).toBe(200);
    expect(ids(r.body.rooms)).toEqual([space, sub, deep, pub, peekable]);
    // After an invite the secret room shows up.
    await ok(alice, "POST", `/rooms/${enc(secret)}/invite`, { user_id: bob.userId });
    expect(ids((await hierarchy(bob, space)).body.rooms)).toContain(secret);
  });

  it("refuses rooms the user cannot see or that do not exist (403), and bad parameters (400)", async () => {
    const r = await hierarchy(bob, privateSpace);
    expect(r.status).toBe(403);
    expect(r.body.errcode).toBe("M_FORBIDDEN");
    expect((await hierarchy(bob, "!doesNotExist:test.local")).status).toBe(403);
    expect((await hierarchy(alice, privateSpace)).status).toBe(200);
    for (const q of ["?limit=0", "?max_depth=-1", "?suggested_only=maybe", "?from=garbage"]) {
      const bad = await hierarchy(alice, space, q);
      expect(bad.status, q).toBe(400);
    }
    const unauth = await call("GET", `/_matrix/client/v1/rooms/${enc(space)}/hierarchy`);
    expect(unauth.status).toBe(401);
  });

  it("paginates with limit and from; parameters cannot change mid-way", async () => {
    const all = ids((await hierarchy(alice, space)).body.rooms);
    const got: string[] = [];
    let from: string | undefined;
    for (let i = 0; i < 10; i++) {
      const r = await hierarchy(alice, space, `?limit=2${from ? `&from=${enc(from)}` : ""}`);
      expect(r.status).toBe(200);
      expect(r.body.rooms.length).toBeLessThanOrEqual(2);
      got.push(...ids(r.body.rooms));
      from = r.body.next_batch;
      if (!from) break;
    }
    expect(got).toEqual(all);
    const first = await hierarchy(alice, space, "?limit=2");
    const changed = await hierarchy(alice, space, `?limit=2&suggested_only=true&from=${enc(first.body.next_batch)}`);
    expect(changed.status).toBe(400);
    expect(changed.body.errcode).toBe("M_INVALID_PARAM");
    const otherRoot = await hierarchy(alice, sub, `?from=${enc(first.body.next_batch)}`);
    expect(otherRoot.status).toBe(400);
  });

  it("honours max_depth and suggested_only", async () => {
    expect(ids((await hierarchy(alice, space, "?max_depth=0")).body.rooms)).toEqual([space]);
    expect(ids((await hierarchy(alice, space, "?max_depth=1")).body.rooms)).toEqual([space, sub, pub, secret, peekable]);
    const s = await hierarchy(alice, space, "?suggested_only=true");
    expect(ids(s.body.rooms)).toEqual([space, pub]);
    expect(s.body.rooms[0].children_state.map((c: any) => c.state_key)).toEqual([pub]);
  });

  it("fills in children we do not hold from a via server's federation /hierarchy (sanitised, cached)", async () => {
    setFederationFetch(fakeRemote());
    remoteHits = 0;
    const r = await hierarchy(bob, space);
    expect(r.status).toBe(200);
    // Bob: the remote space (public) and its world_readable child; the restricted one needs
    // membership of `space`, which bob lacks; the remote's inaccessible child never shows.
    // (bob was invited to `secret` above.)
    expect(ids(r.body.rooms)).toEqual([space, sub, deep, pub, secret, peekable, REMOTE_SPACE, REMOTE_ROOM]);
    const remote = r.body.rooms.find((x: any) => x.room_id === REMOTE_SPACE);
    expect(remote.name).toBe("Remote space");
    expect(remote.evil_extra_field).toBeUndefined();
    expect(remote.children_state.map((c: any) => c.state_key).sort()).toEqual(["!hidden:remote.test", REMOTE_RESTRICTED, REMOTE_ROOM].sort());
    expect(ids(r.body.rooms)).not.toContain(REMOTE_RESTRICTED);
    expect(ids(r.body.rooms)).not.toContain("!hidden:remote.test");
    // Alice is joined to `space`, so the restricted remote room is hers to see.
    const a = await hierarchy(alice, space);
    expect(ids(a.body.rooms)).toContain(REMOTE_RESTRICTED);
    expect(ids(a.body.rooms)).toContain(REMOTE_ROOM);
    expect(remoteHits).toBe(1); // the second walk used the cache
  });
});

describe("GET /_matrix/federation/v1/hierarchy/{roomId}", () => {
  it("answers the room and the children the requesting server could peek/join", async () => {
    const r = await fed("GET", `/v1/hierarchy/${enc(space)}`);
    expect(r.status).toBe(200);
    expect(r.body.room.room_id).toBe(space);
    expect(r.body.room.children_state.map((c: any) => c.state_key)).toEqual([sub, pub, secret, peekable, REMOTE_SPACE]);
    // Not recursive: direct children only; rooms we do not hold are left out.
    expect(ids(r.body.children).sort()).toEqual([sub, pub, peekable].sort());
    expect(r.body.inaccessible_children).toEqual([secret]);
    const sc = r.body.children.find((x: any) => x.room_id === sub);
    expect(sc.children_state.map((c: any) => c.state_key).sort()).toEqual([deep, space].sort());
  });

  it("suggested_only, 404 for unknown or inaccessible rooms, 401 unsigned", async () => {
    const s = await fed("GET", `/v1/hierarchy/${enc(space)}?suggested_only=true`);
    expect(ids(s.body.children)).toEqual([pub]);
    expect(s.body.room.children_state.map((c: any) => c.state_key)).toEqual([pub]);
    for (const room of [privateSpace, "!nope:test.local"]) {
      const r = await fed("GET", `/v1/hierarchy/${enc(room)}`);
      expect(r.status, room).toBe(404);
      expect(r.body.errcode).toBe("M_NOT_FOUND");
    }
    expect((await fed("GET", `/v1/hierarchy/${enc(space)}`, undefined, false)).status).toBe(401);
  });
});

describe("GET/POST /_matrix/federation/v1/publicRooms", () => {
  it("lists the published rooms, pages with since, filters with POST", async () => {
    const r = await fed("GET", "/v1/publicRooms");
    expect(r.status).toBe(200);
    expect(ids(r.body.chunk)).toEqual(expect.arrayContaining([space, pub]));
    expect(r.body.total_room_count_estimate).toBeGreaterThanOrEqual(2);
    const entry = r.body.chunk.find((x: any) => x.room_id === space);
    expect(entry).toMatchObject({ name: "Top space", room_type: "m.space", join_rule: "public", world_readable: false, guest_can_join: false });
    const p1 = await fed("GET", "/v1/publicRooms?limit=1");
    expect(p1.body.chunk).toHaveLength(1);
    expect(p1.body.next_batch).toBeTruthy();
    const p2 = await fed("GET", `/v1/publicRooms?limit=1&since=${enc(p1.body.next_batch)}`);
    expect(p2.body.chunk).toHaveLength(1);
    expect(p2.body.chunk[0].room_id).not.toBe(p1.body.chunk[0].room_id);
    const f = await fed("POST", "/v1/publicRooms", { limit: 10, filter: { generic_search_term: "top SPACE" } });
    expect(f.status).toBe(200);
    expect(ids(f.body.chunk)).toEqual([space]);
    const t = await fed("POST", "/v1/publicRooms", { filter: { room_types: [null] } });
    expect(ids(t.body.chunk)).toContain(pub);
    expect(ids(t.body.chunk)).not.toContain(space);
  });

  it("401 unsigned, 400 on bad input", async () => {
    expect((await fed("GET", "/v1/publicRooms", undefined, false)).status).toBe(401);
    expect((await fed("GET", "/v1/publicRooms?since=zzz")).status).toBe(400);
    expect((await fed("POST", "/v1/publicRooms", { limit: "ten" })).status).toBe(400);
    expect((await fed("POST", "/v1/publicRooms", { include_all_networks: true, third_party_instance_id: "x" })).status).toBe(400);
  });
});

describe("GET /_matrix/federation/v1/timestamp_to_event/{roomId}", () => {
  it("finds the closest visible event in either direction", async () => {
    // Only a server with a joined user reads a room (hardening issue item 2): remote.test joins.
    const pub = await createRoom(alice, { preset: "public_chat" });
    await remoteJoinWave(REMOTE, remoteKey, pub, 0, 1);
    const first = await fed("GET", `/v1/timestamp_to_event/${enc(pub)}?ts=0&dir=f`);
    expect(first.status).toBe(200);
    const create = (await ok(alice, "GET", `/rooms/${enc(pub)}/messages?dir=f&limit=1`)).chunk[0];
    expect(first.body).toEqual({ event_id: create.event_id, origin_server_ts: create.origin_server_ts });
    const sent = await ok(alice, "PUT", `/rooms/${enc(pub)}/send/m.room.message/ts1`, { msgtype: "m.text", body: "latest" });
    const last = await fed("GET", `/v1/timestamp_to_event/${enc(pub)}?ts=${Date.now() + 60_000}&dir=b`);
    expect(last.status).toBe(200);
    expect(last.body.event_id).toBe(sent.event_id);
    const none = await fed("GET", `/v1/timestamp_to_event/${enc(pub)}?ts=${Date.now() + 60_000}&dir=f`);
    expect(none.status).toBe(404);
  });

  it("history visibility for servers, unknown rooms, bad parameters, unsigned", async () => {
    const joinedOnly = await createRoom(alice, {
      preset: "public_chat",
      initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } }],
    });
    await ok(alice, "PUT", `/rooms/${enc(joinedOnly)}/send/m.room.message/x1`, { msgtype: "m.text", body: "members only" });
    // Not in the room: nothing at all.
    expect((await fed("GET", `/v1/timestamp_to_event/${enc(joinedOnly)}?ts=${Date.now() + 60_000}&dir=b`)).status).toBe(403);
    // Joined after the message: it stays hidden.
    await remoteJoinWave(REMOTE, remoteKey, joinedOnly, 1, 1);
    const hidden = await fed("GET", `/v1/timestamp_to_event/${enc(joinedOnly)}?ts=${Date.now() + 60_000}&dir=b`);
    // Only events before the history_visibility change (state set at creation) could be shown.
    if (hidden.status === 200) {
      const ev = await ok(alice, "GET", `/rooms/${enc(joinedOnly)}/event/${enc(hidden.body.event_id)}`);
      expect(ev.type).not.toBe("m.room.message");
      expect(ev.content.body).toBeUndefined();
    } else expect(hidden.status).toBe(404);
    expect((await fed("GET", `/v1/timestamp_to_event/${enc("!nope:test.local")}?ts=0&dir=f`)).status).toBe(404);
    expect((await fed("GET", `/v1/timestamp_to_event/${enc(pub)}?ts=0&dir=x`)).status).toBe(400);
    expect((await fed("GET", `/v1/timestamp_to_event/${enc(pub)}?dir=f`)).status).toBe(400);
    expect((await fed("GET", `/v1/timestamp_to_event/${enc(pub)}?ts=0&dir=f`, undefined, false)).status).toBe(401);
  });
});
