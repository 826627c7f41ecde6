// Appservice users as the rest of the server sees them: rate limits (`rate_limited`), the user
// directory, and the admin API's user list.
import { describe, it, expect } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../src/index";
import { BASE, call, registerUser, uniqueName, type Json, type TestUser } from "./helpers";
import { addAppservice, serverAdmin } from "./appservice-helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

/** A request to the Worker with some environment variables overridden. */
async function fetchWith(vars: Record<string, string>, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const ctx = createExecutionContext();
  const res = await worker.fetch(
    new Request(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) }),
    { ...env, ...vars },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return { status: res.status, body: (await res.json()) as Json };
}

describe("rate limits and rate_limited", () => {
  // Reports: a burst of 10 per user, then one a minute (LIMITS.reportPerUser).
  const reportTwelve = async (token: string, query: string) => {
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await fetchWith({ RATE_LIMITS: "on" }, "POST", `${V3}/users/${enc("@someone:test.local")}/report${query}`, token, { reason: `r${i}` });
      statuses.push(r.status);
    }
    return statuses;
  };

  it("rate_limited: false exempts the appservice's users; true (the default) does not", async () => {
    const free = await addAppservice({ rate_limited: false });
    const freeGhost = await free.registerGhost("free");
    expect(await reportTwelve(free.reg.as_token, `?user_id=${enc(freeGhost)}`)).toEqual(Array(12).fill(200));
    const limited = await addAppservice({ rate_limited: true });
    const limitedGhost = await limited.registerGhost("limited");
    const statuses = await reportTwelve(limited.reg.as_token, `?user_id=${enc(limitedGhost)}`);
    expect(statuses.slice(0, 10)).toEqual(Array(10).fill(200));
    expect(statuses.slice(10)).toEqual([429, 429]);
    const unset = await addAppservice({ rate_limited: undefined });
    expect((await reportTwelve(unset.reg.as_token, "")).slice(10)).toEqual([429, 429]);
  });
});

describe("appservice users in the user directory and the admin API", () => {
  const search = async (u: TestUser, term: string, vars: Record<string, string> = {}) =>
    (await fetchWith(vars, "POST", `${V3}/user_directory/search`, u.accessToken, { search_term: term })).body.results.map((r: any) => r.user_id);

  it("a ghost is found by its display name under the shared/public room rules, never by USER_DIRECTORY=all alone", async () => {
    const a = await addAppservice();
    const tag = uniqueName("g").slice(-8).toLowerCase();
    const shared = await a.registerGhost(`shared${tag}`);
    const lonely = await a.registerGhost(`lonely${tag}`);
    for (const [g, name] of [
      [shared, `Bridged Shared ${tag}`],
      [lonely, `Bridged Lonely ${tag}`],
    ]) {
      const r = await a.as("PUT", `${V3}/profile/${enc(g)}/displayname?user_id=${enc(g)}`, { displayname: name });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    const searcher = await registerUser();
    const room = await call("POST", `${V3}/createRoom`, { token: searcher.accessToken, body: { preset: "private_chat" } });
    expect((await call("POST", `${V3}/rooms/${enc(room.body.room_id)}/invite`, { token: searcher.accessToken, body: { user_id: shared } })).status).toBe(200);
    expect((await a.as("POST", `${V3}/join/${enc(room.body.room_id)}?user_id=${enc(shared)}`, {})).status).toBe(200);
    expect(await search(searcher, `bridged shared ${tag}`)).toEqual([shared]);
    // Sharing no room: not found, with USER_DIRECTORY=all neither (bridged contacts are not
    // the server's own users).
    expect(await search(searcher, `bridged lonely ${tag}`)).toEqual([]);
    expect(await search(searcher, `bridged lonely ${tag}`, { USER_DIRECTORY: "all" })).toEqual([]);
    // A plain user sharing no room is found with USER_DIRECTORY=all.
    const plain = await registerUser(`plain${tag}`);
    expect(await search(searcher, `plain${tag}`, { USER_DIRECTORY: "all" })).toEqual([plain.userId]);
  });

  it("/_synapse/admin/v2/users lists ghosts with their appservice_id", async () => {
    const admin = await serverAdmin();
    const a = await addAppservice();
    const ghost = await a.registerGhost("listed");
    const list = await call("GET", `/_synapse/admin/v2/users?user_id=${enc(ghost)}`, { token: admin.accessToken });
    expect(list.status).toBe(200);
    expect(list.body.users).toEqual([expect.objectContaining({ name: ghost, appservice_id: a.p })]);
    const sender = await call("GET", `/_synapse/admin/v2/users?user_id=${enc(a.sender)}`, { token: admin.accessToken });
    expect(sender.body.users[0]).toMatchObject({ name: a.sender, appservice_id: a.p });
    const one = await call("GET", `/_synapse/admin/v2/users/${enc(ghost)}`, { token: admin.accessToken });
    expect(one.body.appservice_id).toBe(a.p);
    const plain = await registerUser();
    const p = await call("GET", `/_synapse/admin/v2/users?user_id=${enc(plain.userId)}`, { token: admin.accessToken });
    expect(p.body.users[0].appservice_id).toBeNull();
  });
});
