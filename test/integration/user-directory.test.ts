// POST /v3/user_directory/search (issue 16): shared rooms, public rooms, USER_DIRECTORY=all,
// case- and accent-insensitive, kept current as profiles and memberships change.
import { describe, expect, it } from "vitest";
import { env, createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../src/index";
import { BASE, call, createRoom, registerUser, remoteJoinWave, seedRemoteKey, uniqueName, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;

async function setName(u: TestUser, name: string) {
  const r = await call("PUT", `${V3}/profile/${enc(u.userId)}/displayname`, { token: u.accessToken, body: { displayname: name } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}
async function find(u: TestUser, search_term: string, limit?: number) {
  const r = await call("POST", `${V3}/user_directory/search`, { token: u.accessToken, body: { search_term, ...(limit !== undefined ? { limit } : {}) } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as { results: { user_id: string; display_name?: string }[]; limited: boolean };
}
const userIds = (r: { results: { user_id: string }[] }) => r.results.map((x) => x.user_id).sort();

describe("POST /v3/user_directory/search", () => {
  it("finds users sharing a private room by display name, case- and accent-insensitively; not strangers; follows leaves and renames", async () => {
    const tag = uniqueName("z").slice(-8);
    const [alice, bob, stranger] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    await setName(bob, `Zoë Ångström ${tag}`);
    await setName(stranger, `Zoe Angstrom ${tag}`);
    const room = await createRoom(alice, { preset: "private_chat", invite: [bob.userId] });
    expect((await call("POST", `${V3}/rooms/${enc(room)}/join`, { token: bob.accessToken, body: {} })).status).toBe(200);

    const r = await find(alice, `zoe ANGSTROM ${tag}`);
    expect(userIds(r)).toEqual([bob.userId]);
    expect(r.results[0].display_name).toBe(`Zoë Ångström ${tag}`);
    expect(r.limited).toBe(false);
    // By user ID (localpart).
    expect(userIds(await find(alice, bob.userId.slice(1, 10)))).toContain(bob.userId);

    // Rename: the directory follows the profile.
    await setName(bob, `Bartholomew ${tag}`);
    expect(userIds(await find(alice, `bartholomew ${tag}`))).toEqual([bob.userId]);
    expect(userIds(await find(alice, `zoe ${tag}`))).toEqual([]);

    // Bob leaves: no longer shares a room with Alice.
    expect((await call("POST", `${V3}/rooms/${enc(room)}/leave`, { token: bob.accessToken, body: {} })).status).toBe(200);
    expect(userIds(await find(alice, `bartholomew ${tag}`))).toEqual([]);
  });

  it("users in public rooms are found by anyone; limited; bad input", async () => {
    const tag = uniqueName("q").slice(-8);
    const [owner, searcher] = await Promise.all([registerUser(), registerUser()]);
    const members = await Promise.all([0, 1, 2].map(() => registerUser()));
    const room = await createRoom(owner, { preset: "public_chat" });
    for (const [i, m] of members.entries()) {
      await setName(m, `Pubby ${tag} ${i}`);
      expect((await call("POST", `${V3}/rooms/${enc(room)}/join`, { token: m.accessToken, body: {} })).status).toBe(200);
    }
    const all = await find(searcher, `pubby ${tag}`);
    expect(userIds(all)).toEqual(members.map((m) => m.userId).sort());
    const two = await find(searcher, `pubby ${tag}`, 2);
    expect(two.results.length).toBe(2);
    expect(two.limited).toBe(true);
    // The room turns private (invite only): its members are no longer public.
    const jr = await call("PUT", `${V3}/rooms/${enc(room)}/state/m.room.join_rules/`, { token: owner.accessToken, body: { join_rule: "invite" } });
    expect(jr.status).toBe(200);
    expect(userIds(await find(searcher, `pubby ${tag}`))).toEqual([]);

    expect((await call("POST", `${V3}/user_directory/search`, { token: searcher.accessToken, body: {} })).body.errcode).toBe("M_BAD_JSON");
    expect((await call("POST", `${V3}/user_directory/search`, { token: searcher.accessToken, body: { search_term: "x", limit: -1 } })).status).toBe(400);
    expect((await call("POST", `${V3}/user_directory/search`, { body: { search_term: "x" } })).status).toBe(401);
    // LIKE wildcards are literal.
    expect((await find(searcher, "%")).results.filter((x) => !x.user_id.includes("%"))).toEqual([]);
  });

  it("USER_DIRECTORY=all: every local user; deactivated users drop out", async () => {
    const tag = uniqueName("w").slice(-8);
    const [searcher, loner] = await Promise.all([registerUser(), registerUser()]);
    await setName(loner, `Lonely ${tag}`);
    expect(userIds(await find(searcher, `lonely ${tag}`))).toEqual([]); // default: shared
    const allEnv = { ...env, USER_DIRECTORY: "all" };
    const search = async () => {
      const ctx = createExecutionContext();
      const res = await worker.fetch(
        new Request(`${BASE}${V3}/user_directory/search`, { method: "POST", headers: { authorization: `Bearer ${searcher.accessToken}`, "content-type": "application/json" }, body: JSON.stringify({ search_term: `lonely ${tag}` }) }),
        allEnv,
        ctx,
      );
      await waitOnExecutionContext(ctx);
      return (await res.json()) as { results: { user_id: string }[] };
    };
    expect(userIds(await search())).toEqual([loner.userId]);
    const d = await call("POST", `${V3}/account/deactivate`, { token: loner.accessToken, body: { auth: { type: "m.login.password", identifier: { type: "m.id.user", user: loner.userId }, password: "correct horse battery staple" } } });
    expect(d.status, JSON.stringify(d.body)).toBe(200);
    expect(userIds(await search())).toEqual([]);
  });

  it("remote users joined over federation are found by users sharing the room", async () => {
    const remote = `dir${uniqueName("r").slice(-6)}.example`;
    const key = await seedRemoteKey(remote);
    const [alice, stranger] = await Promise.all([registerUser(), registerUser()]);
    const room = await createRoom(alice, { preset: "private_chat", room_version: "12" });
    // Invite-only: the remote joins need invites; make it public for the join, then private.
    await call("PUT", `${V3}/rooms/${enc(room)}/state/m.room.join_rules/`, { token: alice.accessToken, body: { join_rule: "public" } });
    await remoteJoinWave(remote, key, room, 7, 2);
    await call("PUT", `${V3}/rooms/${enc(room)}/state/m.room.join_rules/`, { token: alice.accessToken, body: { join_rule: "invite" } });
    expect(userIds(await find(alice, `:${remote}`))).toEqual([`@w7u0:${remote}`, `@w7u1:${remote}`]);
    expect(userIds(await find(stranger, `:${remote}`))).toEqual([]);
  });
});
