// Room aliases and the published room directory, through the real Worker (spec: Client-Server API
// "Room aliases", "Published room directory").
import { describe, it, expect, beforeAll } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, uniqueName, SERVER, type TestUser } from "./helpers";
import { createAlias, deleteAlias, listAliases, resolveAlias, validateCanonicalAlias, aliasFromLocalpart, isAliasAvailable } from "../../src/services/aliases";
import { MatrixError } from "../../src/api/errors";

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
  it("remote aliases: 404 saying federation is not available yet", async () => {
    const r = await call("GET", `${V3}/directory/room/${enc("#room:elsewhere.example")}`);
    expectError(r, 404, "M_NOT_FOUND");
    expect(r.body.error).toMatch(/federation/);
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
  it("GET: bad limit, bad since, other servers", async () => {
    expectError(await call("GET", `${V3}/publicRooms?limit=abc`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/publicRooms?limit=-1`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/publicRooms?since=garbage`), 400, "M_INVALID_PARAM");
    expectError(await call("GET", `${V3}/publicRooms?server=${enc("not a server")}`), 400, "M_INVALID_PARAM");
    const remote = await call("GET", `${V3}/publicRooms?server=elsewhere.example`);
    expectError(remote, 404, "M_NOT_FOUND");
    expect(remote.body.error).toMatch(/federation/);
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
    expectError(await call("POST", p, { token: alice.accessToken, body: { include_all_networks: true, third_party_instance_id: "irc" } }), 400, "M_INVALID_PARAM");
    expectError(await call("POST", `${p}?server=elsewhere.example`, { token: alice.accessToken, body: {} }), 404, "M_NOT_FOUND");
    const tp = await call("POST", p, { token: alice.accessToken, body: { third_party_instance_id: "irc" } });
    expect(tp.status).toBe(200);
    expect(tp.body.chunk).toEqual([]);
    expect((await call("POST", p, { token: alice.accessToken, body: {} })).status).toBe(200);
  });
});
