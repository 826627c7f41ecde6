// Federation as people use it, on two real Lattice servers (A, B; FEDERATION_HTTP_LOOPBACK) with
// matrix-js-sdk configured as Element runs it (lazy-loaded members, threads): a DM started with
// createRoom's invite list, several members joining at once, a declined invite, and presence
// from being online through /sync (issue 23). Every wait is bounded.
import * as sdk from "matrix-js-sdk";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { startServer, freePort, type RunningServer } from "./harness";
import { ok, registerUser, startSynced, until, type Json, type User } from "./client";

let a: RunningServer;
let b: RunningServer;
const clients: sdk.MatrixClient[] = [];
const enc = encodeURIComponent;

beforeAll(async () => {
  const [pa, pb] = [await freePort(), await freePort()];
  [a, b] = await Promise.all([startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pa }), startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pb })]);
}, 120_000);

afterAll(async () => {
  for (const c of clients) c.stopClient();
  await Promise.all([a?.stop(), b?.stop()]);
});

/** A user and their matrix-js-sdk client, started the way Element starts it. */
async function person(server: RunningServer, name: string): Promise<{ u: User; client: sdk.MatrixClient }> {
  const u = await registerUser(server, `${name}${Date.now().toString(36)}`, "pw-people");
  const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: u.token, userId: u.userId, deviceId: u.deviceId });
  await startSynced(client, { lazyLoadMembers: true, threadSupport: true, initialSyncLimit: 20 });
  clients.push(client);
  return { u, client };
}

async function sync(u: User, q: Record<string, string> = {}): Promise<Json> {
  return ok(u, "GET", `/sync?${new URLSearchParams({ timeout: "0", set_presence: "offline", ...q })}`);
}
const memberMap = (events: Json[]) => Object.fromEntries(events.filter((e) => e.type === "m.room.member").map((e) => [e.state_key, e.content.membership]));

describe("federation as people use it", () => {
  it("a DM started with createRoom's invite list reaches the invitee on the other server, is_direct kept", async () => {
    const [alice, bob] = await Promise.all([person(a, "alice"), person(b, "bob")]);
    const { room_id: roomId } = await alice.client.createRoom({ preset: sdk.Preset.TrustedPrivateChat, is_direct: true, invite: [bob.u.userId] });
    await until("bob's client to show the invite", async () => bob.client.getRoom(roomId)?.getMyMembership() === "invite", 20_000);
    const invite = bob.client.getRoom(roomId)!.currentState.getStateEvents("m.room.member", bob.u.userId);
    expect(invite?.getContent()).toMatchObject({ membership: "invite", is_direct: true });
    await bob.client.joinRoom(roomId);
    await until("alice to see bob joined", async () => alice.client.getRoom(roomId)?.getMember(bob.u.userId)?.membership === "join", 20_000);
  }, 90_000);

  it("a declined invite leaves the invitee's sync as their leave event", async () => {
    const [alice, bob] = await Promise.all([person(a, "alice2"), person(b, "bob2")]);
    const { room_id: roomId } = await alice.client.createRoom({ preset: sdk.Preset.PrivateChat });
    const before = await sync(bob.u);
    await alice.client.invite(roomId, bob.u.userId);
    await until("bob's client to show the invite", async () => bob.client.getRoom(roomId)?.getMyMembership() === "invite", 20_000);
    await bob.client.leave(roomId);
    await until("bob's client to drop the invite", async () => bob.client.getRoom(roomId)?.getMyMembership() === "leave", 20_000);
    const after = await sync(bob.u, { since: before.next_batch });
    expect(after.rooms.invite?.[roomId]).toBeUndefined();
    const tl = after.rooms.leave[roomId].timeline.events as Json[];
    expect(tl.map((e) => [e.type, e.state_key, e.content.membership])).toContainEqual(["m.room.member", bob.u.userId, "leave"]);
    await until("A to see the rejection", async () => (await ok(alice.u, "GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.u.userId)}`)).membership === "leave");
  }, 90_000);

  it("three members accept at once (one on A, two on B): /sync state_after, the summary and /members agree with /joined_members on both servers", async () => {
    const [alice, carol, bob, dave] = await Promise.all([person(a, "alice3"), person(a, "carol3"), person(b, "bob3"), person(b, "dave3")]);
    const { room_id: roomId } = await alice.client.createRoom({ preset: sdk.Preset.PrivateChat });
    for (const p of [carol, bob, dave]) await alice.client.invite(roomId, p.u.userId);
    for (const p of [carol, bob, dave]) await until(`${p.u.userId} invited`, async () => p.client.getRoom(roomId)?.getMyMembership() === "invite", 20_000);
    // bob joins over federation first (B enters the room), then carol (A) and dave (B) at once.
    await bob.client.joinRoom(roomId);
    await Promise.all([carol.client.joinRoom(roomId), dave.client.joinRoom(roomId)]);
    const everyone = [alice, carol, bob, dave].map((p) => p.u.userId).sort();
    for (const p of [alice, bob]) {
      await until(`joined_members on ${p.u.server.serverName}`, async () => Object.keys((await ok(p.u, "GET", `/rooms/${enc(roomId)}/joined_members`)).joined).sort().join() === everyone.join(), 30_000);
    }
    // No further event: what each server reports now must already agree.
    for (const p of [alice, bob, dave]) {
      const room = (await sync(p.u, { use_state_after: "true" })).rooms.join[roomId];
      expect(memberMap(room.state_after.events)).toEqual(Object.fromEntries(everyone.map((u) => [u, "join"])));
      expect(room.summary).toMatchObject({ "m.joined_member_count": 4, "m.invited_member_count": 0 });
      const members = (await ok(p.u, "GET", `/rooms/${enc(roomId)}/members`)).chunk as Json[];
      expect(memberMap(members)).toEqual(Object.fromEntries(everyone.map((u) => [u, "join"])));
      // Element's view: everyone joined.
      await until(`${p.u.userId}'s client to show four joined`, async () => p.client.getRoom(roomId)?.getJoinedMemberCount() === 4, 20_000);
    }
    // A later joiner's /messages on B holds every join /sync gave them (history visibility must
    // not depend on B's local order of concurrent joins).
    // (B's timeline starts at its first join, bob's: alice's join is state there.)
    const joins = (events: Json[]) => events.filter((e) => e.type === "m.room.member" && e.content.membership === "join");
    const synced = joins((await sync(dave.u, { filter: JSON.stringify({ room: { timeline: { limit: 100 } } }) })).rooms.join[roomId].timeline.events);
    expect(synced.map((e) => e.state_key).sort()).toEqual([bob, carol, dave].map((p) => p.u.userId).sort());
    const paged = joins((await ok(dave.u, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=100`)).chunk as Json[]);
    expect(paged.map((e) => e.event_id)).toEqual(expect.arrayContaining(synced.map((e) => e.event_id)));
  }, 120_000);

  it("being online through /sync shows on the other server", async () => {
    const [alice, bob] = await Promise.all([person(a, "alice4"), person(b, "bob4")]);
    const { room_id: roomId } = await alice.client.createRoom({ preset: sdk.Preset.PublicChat });
    await bob.client.joinRoom(roomId, { viaServers: [a.serverName] });
    await until("alice to see bob joined", async () => alice.client.getRoom(roomId)?.getMember(bob.u.userId)?.membership === "join", 20_000);
    // Both clients sync (set_presence omitted: online). Each server answers for the other's user.
    await until("A to know bob is online", async () => {
      const r = await fetch(`${a.baseUrl}/_matrix/client/v3/presence/${enc(bob.u.userId)}/status`, { headers: { authorization: `Bearer ${alice.u.token}` } });
      return r.status === 200 && ((await r.json()) as Json).presence === "online";
    }, 30_000);
    await until("B to know alice is online", async () => {
      const r = await fetch(`${b.baseUrl}/_matrix/client/v3/presence/${enc(alice.u.userId)}/status`, { headers: { authorization: `Bearer ${bob.u.token}` } });
      return r.status === 200 && ((await r.json()) as Json).currently_active === true;
    }, 30_000);
    // And the clients show it.
    await until("alice's client to show bob online", async () => alice.client.getUser(bob.u.userId)?.presence === "online", 30_000);
    await until("bob's client to show alice online", async () => bob.client.getUser(alice.u.userId)?.presence === "online", 30_000);
  }, 90_000);
});
