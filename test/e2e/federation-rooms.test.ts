// Federated rooms across three real Lattice servers on loopback (A, B, C; FEDERATION_HTTP_LOOPBACK):
// joins (v12 and v11, by remote alias and by room ID with via=), invites, rejecting an invite,
// knocking, kicks and bans, messages in the same order everywhere, an adversarial peer (C's key
// is known to the test so it can forge events as C), and backfill of 500 messages.
// The servers are shared by all tests in this file; every wait is bounded.
import * as sdk from "matrix-js-sdk";
import { api, ok, registerUser, startSynced, until, type User } from "./client";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { startServer, freePort, type RunningServer } from "./harness";
import { generateSigningKey, type SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";

let a: RunningServer;
let b: RunningServer;
let c: RunningServer;
let cKey: SigningKey;

let alice: User;
let bob: User;
let carol: User;

/** Register `username` on `server` (client.ts registerUser, with this file's password). */
const register = (server: RunningServer, username: string): Promise<User> => registerUser(server, username, "pw-fed-rooms");


const enc = encodeURIComponent;

async function membership(u: User, roomId: string, userId: string): Promise<string | undefined> {
  const r = await api<{ membership?: string }>(u, "GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`);
  return r.status === 200 ? r.body.membership : undefined;
}

async function send(u: User, roomId: string, body: string): Promise<string> {
  const r = await ok<{ event_id: string }>(u, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/${Math.random().toString(36).slice(2)}`, { msgtype: "m.text", body });
  return r.event_id;
}

/** Message bodies in the room, oldest first, paging backwards through /messages. */
async function bodies(u: User, roomId: string, max = 1000): Promise<string[]> {
  const out: string[] = [];
  let from: string | undefined;
  for (let i = 0; i < 40; i++) {
    const q = new URLSearchParams({ dir: "b", limit: "100", ...(from ? { from } : {}) });
    const r = await ok<{ chunk: { type: string; content: { body?: string } }[]; end?: string }>(u, "GET", `/rooms/${enc(roomId)}/messages?${q}`);
    for (const e of r.chunk) if (e.type === "m.room.message") out.unshift(e.content.body ?? "");
    if (!r.end || out.length >= max) break;
    from = r.end;
  }
  return out;
}

async function joinedMembers(u: User, roomId: string): Promise<string[]> {
  const r = await ok<{ joined: Record<string, unknown> }>(u, "GET", `/rooms/${enc(roomId)}/joined_members`);
  return Object.keys(r.joined).sort();
}

async function syncInvites(u: User): Promise<string[]> {
  const r = await ok<{ rooms?: { invite?: Record<string, unknown> } }>(u, "GET", `/sync?timeout=0`);
  return Object.keys(r.rooms?.invite ?? {});
}

beforeAll(async () => {
  cKey = await generateSigningKey("ed25519:e2eC");
  const [pa, pb, pc] = [await freePort(), await freePort(), await freePort()];
  [a, b, c] = await Promise.all([
    startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pa }),
    startServer({ FEDERATION_HTTP_LOOPBACK: "true" }, { port: pb }),
    startServer({ FEDERATION_HTTP_LOOPBACK: "true", SIGNING_KEY: `ed25519 e2eC ${cKey.seed}` }, { port: pc }),
  ]);
  [alice, bob, carol] = await Promise.all([register(a, "alice"), register(b, "bob"), register(c, "carol")]);
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
});

describe("federated rooms across three servers", () => {
  let roomId: string;

  it("B joins a v12 room on A by remote alias, C joins through B; messages agree everywhere", async () => {
    roomId = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", room_alias_name: "fed", room_version: "12", name: "Fed" })).room_id;
    await ok(bob, "POST", `/join/${enc(`#fed:${a.serverName}`)}`, {});
    await ok(carol, "POST", `/join/${enc(roomId)}?via=${enc(b.serverName)}`, {});
    const everyone = [alice.userId, bob.userId, carol.userId].sort();
    for (const u of [alice, bob, carol]) await until(`members on ${u.server.serverName}`, async () => JSON.stringify(await joinedMembers(u, roomId)) === JSON.stringify(everyone));
    // Causally ordered sends (each seen everywhere before the next) appear in the same order
    // on every server.
    const order: [User, string][] = [[alice, "a1"], [bob, "b1"], [carol, "c1"], [alice, "a2"], [carol, "c2"]];
    for (const [u, text] of order) {
      await send(u, roomId, text);
      for (const v of [alice, bob, carol]) await until(`${text} on ${v.server.serverName}`, async () => (await bodies(v, roomId)).includes(text));
    }
    const expected = order.map(([, t]) => t);
    for (const u of [alice, bob, carol]) expect(await bodies(u, roomId)).toEqual(expected);
  }, 90_000);

  it("concurrent joins: C's users join while B's user joins; all three agree on the members with no further message", async () => {
    const room = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
    const cUsers = await Promise.all(Array.from({ length: 6 }, (_, i) => register(c, `cj${i}`)));
    // Every join at once: C's each through A; B's through A too. Their templates cite the same
    // extremities, so the joins are concurrent branches, and B's join state misses C's joins.
    await Promise.all([...cUsers, bob].map((u) => ok(u, "POST", `/join/${enc(room)}?via=${enc(a.serverName)}`, {})));
    const everyone = [alice, bob, ...cUsers].map((u) => u.userId).sort();
    await until("all members on A", async () => JSON.stringify(await joinedMembers(alice, room)) === JSON.stringify(everyone));
    for (const u of [bob, cUsers[0]]) {
      await until(`all members on ${u.server.serverName}`, async () => JSON.stringify(await joinedMembers(u, room)) === JSON.stringify(everyone), 30_000);
    }
  }, 90_000);

  it("a v11 room: B joins by room ID with via", async () => {
    const v11 = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "11" })).room_id;
    await ok(bob, "POST", `/join/${enc(v11)}?via=${enc(a.serverName)}`, {});
    await send(bob, v11, "hello v11");
    await until("v11 message on A", async () => (await bodies(alice, v11)).includes("hello v11"));
    expect(await membership(alice, v11, bob.userId)).toBe("join");
  }, 60_000);

  it("invites across servers: B accepts, C rejects through the inviting server", async () => {
    const priv = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "private_chat" })).room_id;
    await ok(alice, "POST", `/rooms/${enc(priv)}/invite`, { user_id: bob.userId });
    await ok(alice, "POST", `/rooms/${enc(priv)}/invite`, { user_id: carol.userId });
    await until("bob sees the invite", async () => (await syncInvites(bob)).includes(priv));
    await until("carol sees the invite", async () => (await syncInvites(carol)).includes(priv));
    await ok(bob, "POST", `/rooms/${enc(priv)}/join`, {});
    await ok(carol, "POST", `/rooms/${enc(priv)}/leave`, {});
    await until("A: bob joined, carol left", async () => (await membership(alice, priv, bob.userId)) === "join" && (await membership(alice, priv, carol.userId)) === "leave");
    await send(bob, priv, "thanks");
    await until("bob's message on A", async () => (await bodies(alice, priv)).includes("thanks"));
  }, 60_000);

  it("knocking: C knocks on a knock room on A, A lets C in", async () => {
    const knockRoom = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "private_chat", room_version: "12", initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }] })).room_id;
    await ok(carol, "POST", `/knock/${enc(knockRoom)}?via=${enc(a.serverName)}`, { reason: "let me in" });
    await until("A sees the knock", async () => (await membership(alice, knockRoom, carol.userId)) === "knock");
    await ok(alice, "POST", `/rooms/${enc(knockRoom)}/invite`, { user_id: carol.userId });
    await until("carol invited", async () => (await syncInvites(carol)).includes(knockRoom));
    await ok(carol, "POST", `/rooms/${enc(knockRoom)}/join`, {});
    await until("carol joined on A", async () => (await membership(alice, knockRoom, carol.userId)) === "join");
  }, 60_000);

  it("kick and ban across servers", async () => {
    await ok(alice, "POST", `/rooms/${enc(roomId)}/kick`, { user_id: bob.userId, reason: "out" });
    await until("B sees the kick", async () => (await membership(bob, roomId, bob.userId)) === "leave");
    expect((await api(bob, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/x1`, { msgtype: "m.text", body: "still here?" })).status).toBe(403);
    await ok(alice, "POST", `/rooms/${enc(roomId)}/ban`, { user_id: carol.userId });
    await until("C sees the ban", async () => (await membership(carol, roomId, carol.userId)) === "ban");
    for (const u of [alice, carol]) expect(await membership(u, roomId, carol.userId)).toBe("ban");
    // Bob comes back (public room), and all three agree on membership.
    await ok(bob, "POST", `/rooms/${enc(roomId)}/join`, {});
    await until("bob back on A", async () => (await membership(alice, roomId, bob.userId)) === "join");
  }, 60_000);

  it("adversarial peer: forged, unsigned, unauthorised and dangling events change nothing", async () => {
    const room = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
    await ok(bob, "POST", `/join/${enc(room)}?via=${enc(a.serverName)}`, {});
    await ok(carol, "POST", `/join/${enc(room)}?via=${enc(a.serverName)}`, {});
    await until("carol joined on A", async () => (await membership(alice, room, carol.userId)) === "join");
    await until("carol joined on B", async () => (await membership(bob, room, carol.userId)) === "join");
    const rv = getRoomVersion("12")!;
    const state = await ok<{ type: string; state_key: string; event_id: string; content: Record<string, unknown> }[]>(alice, "GET", `/rooms/${enc(room)}/state`);
    const id = (type: string, key = "") => state.find((e) => e.type === type && e.state_key === key)!.event_id;
    const pl = state.find((e) => e.type === "m.room.power_levels")!;
    const tip = (await ok<{ chunk: { event_id: string; depth?: number }[] }>(alice, "GET", `/rooms/${enc(room)}/messages?dir=b&limit=1`)).chunk[0].event_id;
    const base = (sender: string, type: string, content: Record<string, unknown>, auth: string[], stateKey?: string) =>
      ({ room_id: room, sender, type, content, origin_server_ts: Date.now(), depth: 100, prev_events: [tip], auth_events: auth, ...(stateKey !== undefined ? { state_key: stateKey } : {}) }) as unknown as PDU;
    const wrongKey = await generateSigningKey(cKey.keyId);
    const badSig = (await hashAndSignEvent(base(carol.userId, "m.room.message", { msgtype: "m.text", body: "bad sig" }, [id("m.room.power_levels"), id("m.room.member", carol.userId)]), rv, c.serverName, wrongKey)).pdu;
    const forged = (await hashAndSignEvent(base(alice.userId, "m.room.message", { msgtype: "m.text", body: "forged alice" }, [id("m.room.power_levels"), id("m.room.member", alice.userId)]), rv, c.serverName, cKey)).pdu;
    const content = { ...pl.content, users: { ...((pl.content.users as Record<string, number>) ?? {}), [carol.userId]: 100 } };
    const raise = (await hashAndSignEvent(base(carol.userId, "m.room.power_levels", content, [id("m.room.power_levels"), id("m.room.member", carol.userId)], ""), rv, c.serverName, cKey)).pdu;
    const dangling = (await hashAndSignEvent(base(carol.userId, "m.room.message", { msgtype: "m.text", body: "dangling" }, [id("m.room.power_levels"), "$doesnotexist0000000000000000000000000000000"]), rv, c.serverName, cKey)).pdu;
    const txn = async (server: RunningServer, pdus: PDU[]) => {
      const path = `/_matrix/federation/v1/send/adv${Math.random().toString(36).slice(2)}`;
      const body = { origin: c.serverName, origin_server_ts: Date.now(), pdus };
      const r = await fetch(`${server.baseUrl}${path}`, {
        method: "PUT",
        headers: { "content-type": "application/json", authorization: await signRequest(cKey, { method: "PUT", uri: path, origin: c.serverName, destination: server.serverName, content: body }) },
        body: JSON.stringify(body),
      });
      expect(r.status).toBe(200);
      return (await r.json()) as { pdus: Record<string, { error?: string }> };
    };
    for (const server of [a, b]) {
      const res = await txn(server, [badSig, forged, raise, dangling]);
      const errors = Object.values(res.pdus).map((x) => x.error);
      expect(errors.filter((e) => e !== undefined).length).toBeGreaterThanOrEqual(3);
    }
    for (const u of [alice, bob]) {
      const plNow = await ok<{ users: Record<string, number> }>(u, "GET", `/rooms/${enc(room)}/state/m.room.power_levels/`);
      expect(plNow.users[carol.userId]).toBeUndefined();
      const msgs = await bodies(u, room);
      for (const bad of ["bad sig", "forged alice", "dangling"]) expect(msgs).not.toContain(bad);
    }
    // A and B keep working.
    await send(alice, room, "still fine");
    await until("B receives A's message after the attack", async () => (await bodies(bob, room)).includes("still fine"));
  }, 90_000);

  it("backfill: B joins a room with 500 prior messages on A and pages back through all of them in order with matrix-js-sdk", async () => {
    const room = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
    const N = 500;
    const sent: string[] = [];
    for (let i = 0; i < N; i++) {
      sent.push(`m${i}`);
      await send(alice, room, `m${i}`);
    }
    // Bob's own client: joins through A, then scrolls back the way Element does; every page
    // past the join is history B's server fetches from A with /backfill.
    const client = sdk.createClient({ baseUrl: b.baseUrl, accessToken: bob.token, userId: bob.userId });
    try {
      await startSynced(client);
      await client.joinRoom(room, { viaServers: [a.serverName] });
      const sdkRoom = await until("the room in Bob's client", async () => client.getRoom(room) ?? undefined);
      const timeline = sdkRoom.getLiveTimeline();
      for (let i = 0; i < 40; i++) {
        const more = await client.paginateEventTimeline(timeline, { backwards: true, limit: 100 });
        if (!more) break;
      }
      const got = timeline
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body as string);
      expect(got).toEqual(sent);
      // The start of the room was reached: the create event is in the timeline.
      expect(timeline.getEvents()[0].getType()).toBe("m.room.create");
    } finally {
      client.stopClient();
    }
  }, 150_000);

  it("jump to date: B answers timestamp_to_event for history it does not hold by asking A and backfilling to the event", async () => {
    const room = (await ok<{ room_id: string }>(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
    const ids: string[] = [];
    for (let i = 0; i < 150; i++) ids.push(await send(alice, room, `j${i}`));
    const tsOf = async (id: string) => (await ok<{ origin_server_ts: number }>(alice, "GET", `/rooms/${enc(room)}/event/${enc(id)}`)).origin_server_ts;
    const jump = async (u: User, ts: number, dir: "f" | "b") => {
      const r = await fetch(`${u.server.baseUrl}/_matrix/client/v1/rooms/${enc(room)}/timestamp_to_event?ts=${ts}&dir=${dir}`, { headers: { authorization: `Bearer ${u.token}` } });
      return { status: r.status, body: (await r.json()) as { event_id?: string; origin_server_ts?: number; errcode?: string } };
    };
    await ok(bob, "POST", `/join/${enc(room)}?server_name=${enc(a.serverName)}`, {});
    // B holds only the state and what came after its join: message j40 is history it lacks.
    expect((await api(bob, "GET", `/rooms/${enc(room)}/event/${enc(ids[40])}`)).status).toBe(404);
    for (const [target, dir] of [[40, "f"], [60, "b"]] as const) {
      const ts = await tsOf(ids[target]);
      const onA = await jump(alice, ts, dir);
      const onB = await jump(bob, ts, dir);
      expect(onA.status).toBe(200);
      expect(onB).toEqual(onA);
      // The answer is now held on B: the client can open it with /context.
      const ctx = await ok<{ event: { event_id: string } }>(bob, "GET", `/rooms/${enc(room)}/context/${enc(onB.body.event_id!)}?limit=2`);
      expect(ctx.event.event_id).toBe(onB.body.event_id);
    }
    // Before the room existed: nothing in either direction b, on A or B.
    const before = (await tsOf(ids[0])) - 3_600_000;
    expect((await jump(alice, before, "b")).status).toBe(404);
    expect((await jump(bob, before, "b")).status).toBe(404);
  }, 120_000);
});
