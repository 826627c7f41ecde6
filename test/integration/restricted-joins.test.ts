// Restricted rooms cannot be joined without meeting their allow conditions (workerd; hardening
// issue item 1), and createRoom's initial_state cannot point m.room.canonical_alias at another
// room's alias (item 12).
//  - Federation: send_join of a join naming one of our users in join_authorised_via_users_server
//    is co-signed only after the allow conditions are checked again (a remote user removed from
//    the allowing room after make_join, or a server skipping make_join, is refused).
//  - Client: PUT /state/m.room.member/{me} cannot change membership (it skipped /join's checks).
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { call, clientOk, federationCall, offline, registerUser, seedRemoteKey, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "joiner.test";
const enc = encodeURIComponent;
const rv = getRoomVersion("12")!;
let key: SigningKey;
let alice: TestUser;
let bob: TestUser;

const fed = (method: string, path: string, body?: unknown) => federationCall(REMOTE, key, method, path, body);

/** A space and a room restricted to its members, both alice's. */
async function spaceAndRestrictedRoom(): Promise<{ space: string; room: string }> {
  const space = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12", creation_content: { type: "m.space" } })).room_id as string;
  const room = (
    await clientOk(alice.accessToken, "POST", "/createRoom", {
      preset: "private_chat",
      room_version: "12",
      initial_state: [{ type: "m.room.join_rules", content: { join_rule: "restricted", allow: [{ type: "m.room_membership", room_id: space }] } }],
    })
  ).room_id as string;
  return { space, room };
}

/** A remote user joins a room through make_join/send_join; the send_join response. */
async function remoteJoin(roomId: string, userId: string) {
  const t = await fed("GET", `/v1/make_join/${enc(roomId)}/${enc(userId)}?ver=12`);
  expect(t.status).toBe(200);
  const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, REMOTE, key);
  return fed("PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu);
}

beforeAll(async () => {
  setFederationFetch(offline);
  key = await seedRemoteKey(REMOTE);
  [alice, bob] = await Promise.all([registerUser(), registerUser()]);
});
afterAll(() => setFederationFetch(offline));

describe("restricted joins over federation", () => {
  it("send_join re-checks the allow conditions: a user kicked from the space after make_join is refused", async () => {
    const { space, room } = await spaceAndRestrictedRoom();
    const user = `@kicked:${REMOTE}`;
    expect((await remoteJoin(space, user)).status).toBe(200);
    // The template is fetched while the user is in the space: it names alice as authoriser.
    const t = await fed("GET", `/v1/make_join/${enc(room)}/${enc(user)}?ver=12`);
    expect(t.status).toBe(200);
    expect(t.body.event.content.join_authorised_via_users_server).toBe(alice.userId);
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(space)}/kick`, { user_id: user });
    const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, REMOTE, key);
    const r = await fed("PUT", `/v2/send_join/${enc(room)}/${enc(j.eventId)}`, j.pdu);
    expect([r.status, r.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    expect((await clientOk(alice.accessToken, "GET", `/rooms/${enc(room)}/joined_members`)).joined[user]).toBeUndefined();
  });

  it("a member of the space still joins", async () => {
    const { space, room } = await spaceAndRestrictedRoom();
    const user = `@member:${REMOTE}`;
    expect((await remoteJoin(space, user)).status).toBe(200);
    const r = await remoteJoin(room, user);
    expect(r.status).toBe(200);
    expect(r.body.event.signatures).toHaveProperty("test.local");
  });
});

describe("membership through the state endpoint", () => {
  it("a join naming join_authorised_via_users_server is refused; /join applies the conditions", async () => {
    const { room } = await spaceAndRestrictedRoom();
    const r = await call("PUT", `/_matrix/client/v3/rooms/${enc(room)}/state/m.room.member/${enc(bob.userId)}`, {
      token: bob.accessToken,
      body: { membership: "join", join_authorised_via_users_server: alice.userId },
    });
    expect([r.status, r.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    expect((await call("POST", `/_matrix/client/v3/rooms/${enc(room)}/join`, { token: bob.accessToken, body: {} })).status).toBe(403);
    expect((await clientOk(alice.accessToken, "GET", `/rooms/${enc(room)}/joined_members`)).joined[bob.userId]).toBeUndefined();
  });

  it("other users' membership and leaving are refused too; a per-room displayname still works", async () => {
    const room = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(room)}/join`, {});
    const kick = await call("PUT", `/_matrix/client/v3/rooms/${enc(room)}/state/m.room.member/${enc(bob.userId)}`, { token: alice.accessToken, body: { membership: "leave" } });
    expect([kick.status, kick.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const leave = await call("PUT", `/_matrix/client/v3/rooms/${enc(room)}/state/m.room.member/${enc(bob.userId)}`, { token: bob.accessToken, body: { membership: "leave" } });
    expect([leave.status, leave.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    await clientOk(bob.accessToken, "PUT", `/rooms/${enc(room)}/state/m.room.member/${enc(bob.userId)}`, { membership: "join", displayname: "Bob here" });
    expect((await clientOk(alice.accessToken, "GET", `/rooms/${enc(room)}/state/m.room.member/${enc(bob.userId)}`)).displayname).toBe("Bob here");
  });
});

describe("createRoom initial_state m.room.canonical_alias", () => {
  it("cannot name another room's alias; may name the alias it claims", async () => {
    const local = `taken${Date.now()}`;
    const other = (await clientOk(alice.accessToken, "POST", "/createRoom", { room_alias_name: local })).room_id as string;
    const alias = `#${local}:test.local`;
    for (const content of [{ alias }, { alt_aliases: [alias] }]) {
      const r = await call("POST", "/_matrix/client/v3/createRoom", { token: bob.accessToken, body: { initial_state: [{ type: "m.room.canonical_alias", content }] } });
      expect([r.status, r.body.errcode]).toEqual([400, "M_BAD_ALIAS"]);
    }
    const bad = await call("POST", "/_matrix/client/v3/createRoom", { token: bob.accessToken, body: { initial_state: [{ type: "m.room.canonical_alias", content: { alias: "not an alias" } }] } });
    expect([bad.status, bad.body.errcode]).toEqual([400, "M_INVALID_PARAM"]);
    expect((await clientOk(alice.accessToken, "GET", `/directory/room/${enc(alias)}`)).room_id).toBe(other);
    const own = `own${Date.now()}`;
    const ok = await clientOk(bob.accessToken, "POST", "/createRoom", { room_alias_name: own, initial_state: [{ type: "m.room.canonical_alias", content: { alias: `#${own}:test.local` } }] });
    expect((await clientOk(bob.accessToken, "GET", `/rooms/${enc(ok.room_id)}/state/m.room.canonical_alias/`)).alias).toBe(`#${own}:test.local`);
  });
});
