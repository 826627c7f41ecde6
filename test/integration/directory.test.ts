// Room aliases and the published room directory, through the real Worker (spec: Client-Server API
// "Room aliases", "Published room directory").
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, uniqueName, SERVER, type TestUser } from "./helpers";
import { createAlias, deleteAlias, listAliases, resolveAlias, validateCanonicalAlias, aliasFromLocalpart, isAliasAvailable } from "../../src/services/aliases";
import { MatrixError } from "../../src/api/errors";
import { setFederationFetch } from "../../src/services/federation/client";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
/** A well-formed room ID no RoomDO knows. */
const NO_ROOM = "!nosuchroomnosuchroomnosuchroomnosuchroom000";

function expectError(r: { status: number; body: any }, status: number, errcode: string) {
  expect({ status: r.status, errcode: r.body.errcode }).toEqual({ status, errcode });
  expect(typeof r.body.error).toBe("string");
}

async function expectThrows(p: Promise<unknown>, status: number, errcode: string) {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(MatrixError);
    expect({ status: (e as MatrixError).status, errcode: (e as MatrixError).errcode }).toEqual({ status, errcode });
    return;
  }
  expect.unreachable(`expected ${errcode}`);
}

let alice: TestUser;
let bob: TestUser;
beforeAll(async () => {
  alice = await registerUser(uniqueName("alice"));
  bob = await registerUser(uniqueName("bob"));
});

describe("alias service", () => {
  it("creates, resolves, lists, deletes", async () => {
    const room = "!svc:test.local";
    const a1 = `#svc-one:${SERVER}`;
    const a2 = `#svc-two:${SERVER}`;
    expect(await isAliasAvailable(env, a1)).toBe(true);
    await createAlias(env, a1, room, alice.userId);
    await createAlias(env, a2, room, alice.userId);
    expect(await isAliasAvailable(env, a1)).toBe(false);
    expect(await resolveAlias(env, a1)).toEqual({ room_id: room, servers: [SERVER] });
    expect(await listAliases(env, room)).toEqual([a1, a2]);
    expect(await deleteAlias(env, a1)).toBe(true);
    expect(await deleteAlias(env, a1)).toBe(false);
    expect(await resolveAlias(env, a1)).toBeNull();
    expect(await listAliases(env, room)).toEqual([a2]);
  });
  it("refuses a duplicate with 409 M_UNKNOWN, and bad input with M_INVALID_PARAM", async () => {
    const a = `#svc-dup:${SERVER}`;
    await createAlias(env, a, "!one:test.local", alice.userId);
    await expectThrows(createAlias(env, a, "!two:test.local", bob.userId), 409, "M_UNKNOWN");
    expect((await resolveAlias(env, a))?.room_id).toBe("!one:test.local");
    await expectThrows(createAlias(env, "svc:test.local", "!one:test.local", alice.userId), 400, "M_INVALID_PARAM");
    await expectThrows(createAlias(env, `#svc-x:${SERVER}`, "not-a-room", alice.userId), 400, "M_INVALID_PARAM");
  });
  it("concurrent creates of one alias: exactly one wins", async () => {
    const a = `#svc-race:${SERVER}`;
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => createAlias(env, a, `!r${i}:test.local`, alice.userId)));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
  });
  it("builds createRoom's alias from room_alias_name", () => {
    expect(aliasFromLocalpart("cheese", SERVER)).toBe(`#cheese:${SERVER}`);
    for (const bad of ["a:b", "", "x".repeat(260), "nul\u0000"]) {
      expect(() => aliasFromLocalpart(bad, SERVER), bad).toThrow(MatrixError);
    }
  });
});

describe("validateCanonicalAlias", () => {
  const room = "!canon:test.local";
  const mine = `#canon-mine:${SERVER}`;
  const other = `#canon-other:${SERVER}`;
  beforeAll(async () => {
    await createAlias(env, mine, room, alice.userId);
    await createAlias(env, other, "!elsewhere:test.local", alice.userId);
  });
  it("accepts aliases that point at the room, and no alias at all", async () => {
    await validateCanonicalAlias(env, room, { alias: mine, alt_aliases: [mine] });
    await validateCanonicalAlias(env, room, {});
    await validateCanonicalAlias(env, room, { alias: null });
    await validateCanonicalAlias(env, room, { alias: "", alt_aliases: [] });
  });
  it("M_BAD_ALIAS for an alias of another room, an unknown alias, or a remote alias", async () => {
    await expectThrows(validateCanonicalAlias(env, room, { alias: other }), 400, "M_BAD_ALIAS");
    await expectThrows(validateCanonicalAlias(env, room, { alt_aliases: [mine, other] }), 400, "M_BAD_ALIAS");
    await expectThrows(validateCanonicalAlias(env, room, { alias: `#nope:${SERVER}` }), 400, "M_BAD_ALIAS");
    await expectThrows(validateCanonicalAlias(env, room, { alias: "#remote:elsewhere.example" }), 400, "M_BAD_ALIAS");
  });
  it("M_INVALID_PARAM for bad syntax or wrong types", async () => {
    await expectThrows(validateCanonicalAlias(env, room, { alias: "no-sigil:test.local" }), 400, "M_INVALID_PARAM");
    await expectThrows(validateCanonicalAlias(env, room, { alias: 5 }), 400, "M_INVALID_PARAM");
    await expectThrows(validateCanonicalAlias(env, room, { alt_aliases: mine }), 400, "M_INVALID_PARAM");
    await expectThrows(validateCanonicalAlias(env, room, { alt_aliases: [mine, 7] }), 400, "M_INVALID_PARAM");
    await expectThrows(validateCanonicalAlias(env, room, { alt_aliases: ["#nocolon"] }), 400, "M_INVALID_PARAM");
  });
  it("alt_aliases already in the previous event are not re-checked (they may have drifted)", async () => {
    const previous = { alt_aliases: [other] };
    await validateCanonicalAlias(env, room, { alias: mine, alt_aliases: [other, mine] }, previous);
    await expectThrows(validateCanonicalAlias(env, room, { alias: other, alt_aliases: [other] }, previous), 400, "M_BAD_ALIAS");
  });
});

describe("PUT /directory/room/{roomAlias}", () => {
  const put = (alias: string, body: unknown, token = alice.accessToken) => call("PUT", `${V3}/directory/room/${enc(alias)}`, { token, body });

  it("needs an access token", async () => {
    expectError(await call("PUT", `${V3}/directory/room/${enc(`#x:${SERVER}`)}`, { body: { room_id: NO_ROOM } }), 401, "M_MISSING_TOKEN");
  });
  it("rejects invalid alias grammar with M_INVALID_PARAM", async () => {
    for (const bad of ["nosigil:test.local", "#nocolon", "#:test.local", `#bad:not a server`, `#${"x".repeat(250)}:${SERVER}`, "!room:test.local"]) {
      expectError(await put(bad, { room_id: NO_ROOM }), 400, "M_INVALID_PARAM");
    }
  });
  it("rejects aliases on another server with M_INVALID_PARAM", async () => {
    expectError(await put("#foreign:elsewhere.example", { room_id: NO_ROOM }), 400, "M_INVALID_PARAM");
    expectError(await put(`#foreign:${SERVER}:8448`, { room_id: NO_ROOM }), 400, "M_INVALID_PARAM");
  });
  it("rejects bad bodies", async () => {
    const path = `${V3}/directory/room/${enc(`#body:${SERVER}`)}`;
    expectError(await call("PUT", path, { token: alice.accessToken, rawBody: "{not json" }), 400, "M_NOT_JSON");
    expectError(await call("PUT", path, { token: alice.accessToken, rawBody: "[1]" }), 400, "M_BAD_JSON");
    expectError(await put(`#body:${SERVER}`, {}), 400, "M_BAD_JSON");
    expectError(await put(`#body:${SERVER}`, { room_id: 12 }), 400, "M_BAD_JSON");
    expectError(await put(`#body:${SERVER}`, { room_id: "not-a-room-id" }), 400, "M_INVALID_PARAM");
  });
  it("404 for a room the server does not know", async () => {
    expectError(await put(`#ghost:${SERVER}`, { room_id: NO_ROOM }), 404, "M_NOT_FOUND");
    expect(await resolveAlias(env, `#ghost:${SERVER}`)).toBeNull();
  });
});

describe("GET /directory/room/{roomAlias}", () => {
  it("resolves a local alias without authentication, percent-decoding the path", async () => {
    const alias = `#get-ü ok:${SERVER}`;
    await createAlias(env, alias, "!target:test.local", alice.userId);
    const r = await call("GET", `${V3}/directory/room/${enc(alias)}`);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ room_id: "!target:test.local", servers: [SERVER] });
    // Legacy r0 prefix serves the same.
    expect((await call("GET", `/_matrix/client/r0/directory/room/${enc(alias)}`)).body.room_id).toBe("!target:test.local");
  });
  it("404 M_NOT_FOUND for an unknown alias", async () => {
    expectError(await call("GET", `${V3}/directory/room/${enc(`#unknown:${SERVER}`)}`), 404, "M_NOT_FOUND");
  });
  it("400 M_INVALID_PARAM for a malformed alias", async () => {
    expectError(await call("GET", `${V3}/directory/room/${enc("nosigil")}`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/directory/room/${enc("#a:b:c:d")}`), 400, "M_INVALID_PARAM");
  });
});

describe("remote aliases and directories over federation", () => {
  const REMOTE = "remote.test:8448"; // explicit port: discovery goes straight to https://remote.test:8448
  let requests: { url: string; method: string; body?: string; auth?: string }[] = [];
  function peer(answer: (url: URL, method: string, body?: string) => Response | Promise<Response>) {
    requests = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      const body = typeof init?.body === "string" ? init.body : undefined;
      const headers = new Headers(init?.headers);
      requests.push({ url: url.toString(), method: init?.method ?? "GET", body, auth: headers.get("authorization") ?? undefined });
      return answer(url, init?.method ?? "GET", body);
    });
  }
  afterAll(() => setFederationFetch(async () => Promise.reject(new Error("offline (test)"))));

  it("GET /directory/room resolves a remote alias with a signed federation query", async () => {
    peer((url) =>
      url.pathname === "/_matrix/federation/v1/query/directory" && url.searchParams.get("room_alias") === `#room:${REMOTE}`
        ? Response.json({ room_id: "!abc:remote.test", servers: ["other.test", 7] })
        : new Response("{}", { status: 500 }),
    );
    const r = await call("GET", `${V3}/directory/room/${enc(`#room:${REMOTE}`)}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ room_id: "!abc:remote.test", servers: [REMOTE, "other.test"] });
    expect(requests[0].url).toBe(`https://${REMOTE}/_matrix/federation/v1/query/directory?room_alias=${enc(`#room:${REMOTE}`)}`);
    expect(requests[0].auth).toMatch(/^X-Matrix /);
  });
  it("remote 404 → 404 M_NOT_FOUND; unreachable or garbage → 502", async () => {
    peer(() => Response.json({ errcode: "M_NOT_FOUND", error: "nope" }, { status: 404 }));
    expectError(await call("GET", `${V3}/directory/room/${enc(`#gone:${REMOTE}`)}`), 404, "M_NOT_FOUND");
    peer(() => Promise.reject(new Error("connection refused")));
    expectError(await call("GET", `${V3}/directory/room/${enc(`#x:${REMOTE}`)}`), 502, "M_UNKNOWN");
    peer(() => Response.json({ room_id: "not a room" }));
    expectError(await call("GET", `${V3}/directory/room/${enc(`#x:${REMOTE}`)}`), 502, "M_UNKNOWN");
  });

  it("GET /publicRooms?server= fetches the remote directory (authenticated users only)", async () => {
    peer((url) =>
      Response.json({
        chunk: [{ room_id: "!r1:remote.test", num_joined_members: 4, world_readable: false, guest_can_join: false, name: "Far" }, { no: "room_id" }],
        next_batch: "their-token",
        total_room_count_estimate: 9,
        _q: url.search,
      }),
    );
    expectError(await call("GET", `${V3}/publicRooms?server=${enc(REMOTE)}`), 401, "M_MISSING_TOKEN");
    const r = await call("GET", `${V3}/publicRooms?server=${enc(REMOTE)}&limit=5&since=abc`, { token: alice.accessToken });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({
      chunk: [{ room_id: "!r1:remote.test", num_joined_members: 4, world_readable: false, guest_can_join: false, name: "Far" }],
      next_batch: "their-token",
      total_room_count_estimate: 9,
    });
    expect(requests).toHaveLength(1);
    const u = new URL(requests[0].url);
    expect(u.pathname).toBe("/_matrix/federation/v1/publicRooms");
    expect(u.searchParams.get("limit")).toBe("5");
    expect(u.searchParams.get("since")).toBe("abc");
  });
  it("POST /publicRooms?server= with a filter POSTs it to the remote server", async () => {
    peer(() => Response.json({ chunk: [] }));
    const body = { limit: 3, filter: { generic_search_term: "cheese" } };
    const r = await call("POST", `${V3}/publicRooms?server=${enc(REMOTE)}`, { token: alice.accessToken, body });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ chunk: [] });
    expect(requests[0].method).toBe("POST");
    expect(JSON.parse(requests[0].body!)).toEqual(body);
  });
  it("remote directory errors: a peer's 4xx passes through; unreachable or malformed is 502", async () => {
    peer(() => Response.json({ errcode: "M_FORBIDDEN", error: "not for you" }, { status: 403 }));
    expectError(await call("GET", `${V3}/publicRooms?server=${enc(REMOTE)}`, { token: alice.accessToken }), 403, "M_FORBIDDEN");
    peer(() => Promise.reject(new Error("down")));
    expectError(await call("POST", `${V3}/publicRooms?server=${enc(REMOTE)}`, { token: alice.accessToken, body: {} }), 502, "M_UNKNOWN");
    peer(() => Response.json({ rooms: [] }));
    expectError(await call("GET", `${V3}/publicRooms?server=${enc(REMOTE)}`, { token: alice.accessToken }), 502, "M_UNKNOWN");
  });
});

describe("DELETE /directory/room/{roomAlias}", () => {
  const del = (alias: string, token?: string) => call("DELETE", `${V3}/directory/room/${enc(alias)}`, { token });

  it("the creator may delete; then it is gone", async () => {
    const alias = `#del-mine:${SERVER}`;
    await createAlias(env, alias, NO_ROOM, alice.userId);
    expect((await del(alias, alice.accessToken)).status).toBe(200);
    expectError(await call("GET", `${V3}/directory/room/${enc(alias)}`), 404, "M_NOT_FOUND");
    expectError(await del(alias, alice.accessToken), 404, "M_NOT_FOUND");
  });
  it("someone else without power in the room may not (403), and the alias stays", async () => {
    const alias = `#del-theirs:${SERVER}`;
    await createAlias(env, alias, NO_ROOM, alice.userId);
    expectError(await del(alias, bob.accessToken), 403, "M_FORBIDDEN");
    expect(await resolveAlias(env, alias)).not.toBeNull();
  });
  it("errors: no token, bad grammar, foreign server, unknown", async () => {
    expectError(await del(`#x:${SERVER}`), 401, "M_MISSING_TOKEN");
    expectError(await del("nosigil", alice.accessToken), 400, "M_INVALID_PARAM");
    expectError(await del("#x:elsewhere.example", alice.accessToken), 400, "M_INVALID_PARAM");
    expectError(await del(`#never-existed:${SERVER}`, alice.accessToken), 404, "M_NOT_FOUND");
  });
});

describe("GET /rooms/{roomId}/aliases", () => {
  it("403 for a room the user is not in (also when unknown), 400 for a bad room ID, 401 without token", async () => {
    expectError(await call("GET", `${V3}/rooms/${enc(NO_ROOM)}/aliases`, { token: alice.accessToken }), 403, "M_FORBIDDEN");
    expectError(await call("GET", `${V3}/rooms/${enc("not-a-room")}/aliases`, { token: alice.accessToken }), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/rooms/${enc(NO_ROOM)}/aliases`), 401, "M_MISSING_TOKEN");
  });
});

describe("/directory/list/room/{roomId}", () => {
  const path = (id: string) => `${V3}/directory/list/room/${enc(id)}`;
  it("GET: 404 for an unknown room, 400 for a bad ID", async () => {
    expectError(await call("GET", path(NO_ROOM)), 404, "M_NOT_FOUND");
    expectError(await call("GET", path("nope")), 400, "M_INVALID_PARAM");
  });
  it("PUT: errors", async () => {
    expectError(await call("PUT", path(NO_ROOM), { body: { visibility: "public" } }), 401, "M_MISSING_TOKEN");
    expectError(await call("PUT", path(NO_ROOM), { token: alice.accessToken, body: { visibility: "public" } }), 404, "M_NOT_FOUND");
    expectError(await call("PUT", path(NO_ROOM), { token: alice.accessToken, body: { visibility: "secret" } }), 400, "M_BAD_JSON");
    expectError(await call("PUT", path(NO_ROOM), { token: alice.accessToken, body: { visibility: 1 } }), 400, "M_BAD_JSON");
    expectError(await call("PUT", path(NO_ROOM), { token: alice.accessToken, rawBody: "{" }), 400, "M_NOT_JSON");
    expectError(await call("PUT", path("nope"), { token: alice.accessToken, body: {} }), 400, "M_INVALID_PARAM");
  });
});

describe("/publicRooms: parameters and errors", () => {
  it("GET works without a token; an invalid token is still refused", async () => {
    const r = await call("GET", `${V3}/publicRooms`);
    expect(r.status).toBe(200);
    expect(Array.isArray(r.body.chunk)).toBe(true);
    expect(typeof r.body.total_room_count_estimate).toBe("number");
    expectError(await call("GET", `${V3}/publicRooms`, { token: "bogus" }), 401, "M_UNKNOWN_TOKEN");
  });
  it("GET: bad limit, bad since, bad server name", async () => {
    expectError(await call("GET", `${V3}/publicRooms?limit=abc`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/publicRooms?limit=-1`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/publicRooms?since=garbage`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/publicRooms?server=${enc("not a server")}`), 400, "M_INVALID_PARAM");
    expect((await call("GET", `${V3}/publicRooms?server=${SERVER}&limit=5`)).status).toBe(200);
  });
  it("POST needs a token and a well-typed body", async () => {
    const p = `${V3}/publicRooms`;
    expectError(await call("POST", p, { body: {} }), 401, "M_MISSING_TOKEN");
    expectError(await call("POST", p, { token: alice.accessToken, rawBody: "nope" }), 400, "M_NOT_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { limit: "5" } }), 400, "M_BAD_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { limit: -2 } }), 400, "M_BAD_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { filter: "cheese" } }), 400, "M_BAD_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { filter: { generic_search_term: 3 } } }), 400, "M_BAD_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { filter: { room_types: "m.space" } } }), 400, "M_BAD_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { since: "garbage" } }), 400, "M_INVALID_PARAM");
    // The body schema is shared with the federation's POST /publicRooms: `since` is bounded.
    expectError(await call("POST", p, { token: alice.accessToken, body: { since: "x".repeat(1001) } }), 400, "M_BAD_JSON");
    expectError(await call("POST", p, { token: alice.accessToken, body: { include_all_networks: true, third_party_instance_id: "irc" } }), 400, "M_INVALID_PARAM");
    const tp = await call("POST", p, { token: alice.accessToken, body: { third_party_instance_id: "irc" } });
    expect(tp.status).toBe(200);
    expect(tp.body.chunk).toEqual([]);
    expect((await call("POST", p, { token: alice.accessToken, body: {} })).status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------
// Through real rooms (createRoom → RoomDO).

async function createRoom(user: TestUser, body: Record<string, unknown>): Promise<string> {
  const r = await call("POST", `${V3}/createRoom`, { token: user.accessToken, body });
  if (r.status !== 200) throw new Error(`createRoom: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.room_id;
}
async function join(user: TestUser, idOrAlias: string) {
  const r = await call("POST", `${V3}/join/${enc(idOrAlias)}`, { token: user.accessToken, body: {} });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.room_id as string;
}
async function setState(user: TestUser, roomId: string, type: string, content: unknown) {
  return call("PUT", `${V3}/rooms/${enc(roomId)}/state/${type}/`, { token: user.accessToken, body: content });
}
async function publicRooms(user?: TestUser, body?: Record<string, unknown>) {
  const r = body ? await call("POST", `${V3}/publicRooms`, { token: user!.accessToken, body }) : await call("GET", `${V3}/publicRooms`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

describe("aliases and directory on real rooms", () => {
  let carol: TestUser;
  let roomId: string;
  let lobby: string;
  beforeAll(async () => {
    carol = await registerUser(uniqueName("carol"));
    const name = uniqueName("lobby");
    lobby = `#${name}:${SERVER}`;
    roomId = await createRoom(alice, {
      preset: "public_chat",
      visibility: "public",
      room_alias_name: name,
      name: "Cheese Lobby",
      topic: "All things dairy",
    });
  });

  it("createRoom's room_alias_name resolves, is listed, and is the canonical alias", async () => {
    const r = await call("GET", `${V3}/directory/room/${enc(lobby)}`);
    expect(r.body).toEqual({ room_id: roomId, servers: [SERVER] });
    const aliases = await call("GET", `${V3}/rooms/${enc(roomId)}/aliases`, { token: alice.accessToken });
    expect(aliases.body).toEqual({ aliases: [lobby] });
    const canon = await call("GET", `${V3}/rooms/${enc(roomId)}/state/m.room.canonical_alias/`, { token: alice.accessToken });
    expect(canon.body.alias).toBe(lobby);
  });

  it("createRoom with a taken alias is M_ROOM_IN_USE", async () => {
    const r = await call("POST", `${V3}/createRoom`, { token: bob.accessToken, body: { room_alias_name: lobby.slice(1, lobby.indexOf(":")) } });
    expectError(r, 400, "M_ROOM_IN_USE");
  });

  it("visibility: public from createRoom; listed with the room's current state", async () => {
    expect((await call("GET", `${V3}/directory/list/room/${enc(roomId)}`)).body).toEqual({ visibility: "public" });
    const list = await publicRooms();
    const entry = list.chunk.find((e: any) => e.room_id === roomId);
    expect(entry).toEqual({
      room_id: roomId,
      name: "Cheese Lobby",
      topic: "All things dairy",
      canonical_alias: lobby,
      num_joined_members: 1,
      world_readable: false,
      guest_can_join: false,
      join_rule: "public",
    });
    expect(list.total_room_count_estimate).toBeGreaterThanOrEqual(1);
  });

  it("joining by alias works and the member count follows", async () => {
    expect(await join(bob, lobby)).toBe(roomId);
    const entry = (await publicRooms()).chunk.find((e: any) => e.room_id === roomId);
    expect(entry.num_joined_members).toBe(2);
  });

  it("PUT alias: members may add one; duplicates are 409; outsiders 403; unknown rooms 404", async () => {
    const bobs = `#${uniqueName("bobs")}:${SERVER}`;
    const put = (alias: string, user: TestUser, id = roomId) => call("PUT", `${V3}/directory/room/${enc(alias)}`, { token: user.accessToken, body: { room_id: id } });
    expect((await put(bobs, bob)).status).toBe(200);
    expectError(await put(bobs, alice), 409, "M_UNKNOWN");
    expectError(await put(lobby, bob), 409, "M_UNKNOWN");
    expectError(await put(`#${uniqueName("carols")}:${SERVER}`, carol), 403, "M_FORBIDDEN");
    expectError(await put(`#${uniqueName("ghost")}:${SERVER}`, alice, NO_ROOM), 404, "M_NOT_FOUND");
    const aliases = await call("GET", `${V3}/rooms/${enc(roomId)}/aliases`, { token: bob.accessToken });
    expect(aliases.body.aliases).toEqual([lobby, bobs]);
  });

  it("GET /rooms/{id}/aliases: outsiders 403 until history is world_readable", async () => {
    expectError(await call("GET", `${V3}/rooms/${enc(roomId)}/aliases`, { token: carol.accessToken }), 403, "M_FORBIDDEN");
    expect((await setState(alice, roomId, "m.room.history_visibility", { history_visibility: "world_readable" })).status).toBe(200);
    const r = await call("GET", `${V3}/rooms/${enc(roomId)}/aliases`, { token: carol.accessToken });
    expect(r.status).toBe(200);
    expect(r.body.aliases).toContain(lobby);
    expect((await publicRooms()).chunk.find((e: any) => e.room_id === roomId).world_readable).toBe(true);
    expect((await setState(alice, roomId, "m.room.history_visibility", { history_visibility: "shared" })).status).toBe(200);
  });

  it("DELETE alias: not someone else's without power; the creator's own, or with power, yes", async () => {
    const a1 = `#${uniqueName("del")}:${SERVER}`;
    const a2 = `#${uniqueName("del")}:${SERVER}`;
    for (const a of [a1, a2]) {
      expect((await call("PUT", `${V3}/directory/room/${enc(a)}`, { token: alice.accessToken, body: { room_id: roomId } })).status).toBe(200);
    }
    const b1 = `#${uniqueName("del")}:${SERVER}`;
    expect((await call("PUT", `${V3}/directory/room/${enc(b1)}`, { token: bob.accessToken, body: { room_id: roomId } })).status).toBe(200);
    // Bob (power 0, joined) may not delete Alice's alias.
    expectError(await call("DELETE", `${V3}/directory/room/${enc(a1)}`, { token: bob.accessToken }), 403, "M_FORBIDDEN");
    // Carol (not in the room) neither.
    expectError(await call("DELETE", `${V3}/directory/room/${enc(a1)}`, { token: carol.accessToken }), 403, "M_FORBIDDEN");
    // Bob may delete his own.
    expect((await call("DELETE", `${V3}/directory/room/${enc(b1)}`, { token: bob.accessToken })).status).toBe(200);
    // Alice (creator, infinite power in v12) may delete her own and others'.
    expect((await call("DELETE", `${V3}/directory/room/${enc(a1)}`, { token: alice.accessToken })).status).toBe(200);
    const b2 = `#${uniqueName("del")}:${SERVER}`;
    expect((await call("PUT", `${V3}/directory/room/${enc(b2)}`, { token: bob.accessToken, body: { room_id: roomId } })).status).toBe(200);
    expect((await call("DELETE", `${V3}/directory/room/${enc(b2)}`, { token: alice.accessToken })).status).toBe(200);
    const left = (await call("GET", `${V3}/rooms/${enc(roomId)}/aliases`, { token: alice.accessToken })).body.aliases;
    expect(left).toContain(a2);
    expect(left).not.toContain(a1);
    expect(left).not.toContain(b1);
    expect(left).not.toContain(b2);
  });

  it("a member given the canonical_alias power level may delete others' aliases and change visibility", async () => {
    const room = await createRoom(alice, { preset: "public_chat", power_level_content_override: { events: { "m.room.canonical_alias": 10 }, users: { [bob.userId]: 10 } } });
    await join(bob, room);
    await join(carol, room);
    const a = `#${uniqueName("pl")}:${SERVER}`;
    expect((await call("PUT", `${V3}/directory/room/${enc(a)}`, { token: carol.accessToken, body: { room_id: room } })).status).toBe(200);
    expect((await call("DELETE", `${V3}/directory/room/${enc(a)}`, { token: bob.accessToken })).status).toBe(200);
    expect((await call("PUT", `${V3}/directory/list/room/${enc(room)}`, { token: bob.accessToken, body: {} })).status).toBe(200);
    expect((await call("GET", `${V3}/directory/list/room/${enc(room)}`)).body.visibility).toBe("public");
    expectError(await call("PUT", `${V3}/directory/list/room/${enc(room)}`, { token: carol.accessToken, body: { visibility: "private" } }), 403, "M_FORBIDDEN");
    expect((await call("PUT", `${V3}/directory/list/room/${enc(room)}`, { token: bob.accessToken, body: { visibility: "private" } })).status).toBe(200);
  });

  it("PUT /directory/list/room: only with power; private hides the room", async () => {
    expectError(await call("PUT", `${V3}/directory/list/room/${enc(roomId)}`, { token: bob.accessToken, body: { visibility: "private" } }), 403, "M_FORBIDDEN");
    expectError(await call("PUT", `${V3}/directory/list/room/${enc(roomId)}`, { token: carol.accessToken, body: { visibility: "private" } }), 403, "M_FORBIDDEN");
    expect((await call("PUT", `${V3}/directory/list/room/${enc(roomId)}`, { token: alice.accessToken, body: { visibility: "private" } })).status).toBe(200);
    expect((await call("GET", `${V3}/directory/list/room/${enc(roomId)}`)).body.visibility).toBe("private");
    expect((await publicRooms()).chunk.map((e: any) => e.room_id)).not.toContain(roomId);
    expect((await call("PUT", `${V3}/directory/list/room/${enc(roomId)}`, { token: alice.accessToken, body: {} })).status).toBe(200);
    expect((await publicRooms()).chunk.map((e: any) => e.room_id)).toContain(roomId);
  });

  it("canonical alias state: M_BAD_ALIAS unless the alias points here", async () => {
    const other = await createRoom(bob, { room_alias_name: uniqueName("other") });
    const otherAlias = (await call("GET", `${V3}/rooms/${enc(other)}/aliases`, { token: bob.accessToken })).body.aliases[0];
    expectError(await setState(alice, roomId, "m.room.canonical_alias", { alias: otherAlias }), 400, "M_BAD_ALIAS");
    expectError(await setState(alice, roomId, "m.room.canonical_alias", { alias: lobby, alt_aliases: [`#missing:${SERVER}`] }), 400, "M_BAD_ALIAS");
    expectError(await setState(alice, roomId, "m.room.canonical_alias", { alias: "not an alias" }), 400, "M_INVALID_PARAM");
    const extra = `#${uniqueName("alt")}:${SERVER}`;
    expect((await call("PUT", `${V3}/directory/room/${enc(extra)}`, { token: alice.accessToken, body: { room_id: roomId } })).status).toBe(200);
    expect((await setState(alice, roomId, "m.room.canonical_alias", { alias: lobby, alt_aliases: [extra] })).status).toBe(200);
  });

  it("publicRooms: search over name, topic and alias; room_types; paging over HTTP", async () => {
    const tag = uniqueName("zz");
    const made = [];
    for (let i = 0; i < 3; i++) {
      made.push(await createRoom(alice, { visibility: "public", name: `${tag} room ${i}`, topic: i === 1 ? "blue cheese" : "plain" }));
    }
    const space = await createRoom(alice, { visibility: "public", name: `${tag} space`, creation_content: { type: "m.space" } });
    const byName = await publicRooms(alice, { filter: { generic_search_term: tag.toUpperCase() } });
    expect(byName.chunk.map((e: any) => e.room_id)).toEqual([...made, space]);
    expect(byName.total_room_count_estimate).toBeUndefined();
    const byTopic = await publicRooms(alice, { filter: { generic_search_term: "BLUE" } });
    expect(byTopic.chunk.map((e: any) => e.room_id)).toEqual([made[1]]);
    const byAlias = await publicRooms(alice, { filter: { generic_search_term: lobby.slice(1, 8) } });
    expect(byAlias.chunk.map((e: any) => e.room_id)).toEqual([roomId]);
    const spaces = await publicRooms(alice, { filter: { generic_search_term: tag, room_types: ["m.space"] } });
    expect(spaces.chunk).toHaveLength(1);
    expect(spaces.chunk[0]).toMatchObject({ room_id: space, room_type: "m.space" });
    const plain = await publicRooms(alice, { filter: { generic_search_term: tag, room_types: [null] } });
    expect(plain.chunk.map((e: any) => e.room_id)).toEqual(made);

    // Page through everything one room at a time, forwards over GET, then back over POST.
    const all = await publicRooms();
    const ids: string[] = [];
    const tokens: (string | undefined)[] = [];
    let page = (await call("GET", `${V3}/publicRooms?limit=1`)).body;
    expect(page.prev_batch).toBeUndefined();
    while (true) {
      expect(page.chunk).toHaveLength(1);
      ids.push(page.chunk[0].room_id);
      tokens.push(page.prev_batch);
      if (!page.next_batch) break;
      page = (await call("GET", `${V3}/publicRooms?limit=1&since=${enc(page.next_batch)}`)).body;
      expect(page.total_room_count_estimate).toBe(all.chunk.length);
    }
    expect(ids).toEqual(all.chunk.map((e: any) => e.room_id));
    expect(ids.length).toBe(all.total_room_count_estimate);
    const back = await publicRooms(alice, { limit: 2, since: tokens[tokens.length - 1] });
    expect(back.chunk.map((e: any) => e.room_id)).toEqual(ids.slice(-3, -1));
  });
});
