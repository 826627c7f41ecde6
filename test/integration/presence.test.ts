// Presence (module "Presence"; Server-Server API "Presence"), in workerd: set_presence on /sync,
// the presence of people one newly shares a room with, being online through /sync reaching other
// servers as m.presence EDUs, and remote users' presence answered from what their server sent.
import { describe, it, expect, beforeAll, afterEach } from "vitest";
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { call, clientOk, federationCall, offline, registerUser, remoteJoinWave, seedRemoteKey, type Json, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "presence-remote.test";
const enc = encodeURIComponent;
let key: SigningKey;

beforeAll(async () => {
  setFederationFetch(offline);
  key = await seedRemoteKey(REMOTE);
});
afterEach(() => setFederationFetch(offline));

async function sync(u: TestUser, q: Record<string, string> = {}): Promise<Json> {
  const r = await call("GET", `/_matrix/client/v3/sync?${new URLSearchParams({ timeout: "0", ...q })}`, { token: u.accessToken });
  expect(r.status).toBe(200);
  return r.body;
}
const presenceOf = (body: Json, userId: string) => (body.presence?.events as Json[] | undefined)?.filter((e) => e.sender === userId).at(-1)?.content;
/** `fn()` until `done` holds for its result (at most 40 tries); the last result. */
async function eventually<T>(fn: () => Promise<T>, done: (v: T) => boolean): Promise<T> {
  let v = await fn();
  for (let i = 0; i < 40 && !done(v); i++) {
    await new Promise((r) => setTimeout(r, 25));
    v = await fn();
  }
  return v;
}
const status = async (asker: TestUser, userId: string) => call("GET", `/_matrix/client/v3/presence/${enc(userId)}/status`, { token: asker.accessToken });

async function sharedRoom(a: TestUser, ...others: TestUser[]): Promise<string> {
  const roomId = (await clientOk(a.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
  for (const o of others) await clientOk(o.accessToken, "POST", `/join/${enc(roomId)}`, {});
  return roomId;
}

describe("set_presence on /sync", () => {
  it("omitted: online; unavailable: idle; offline: presence left alone", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    await sharedRoom(alice, bob);
    let bobToken = (await sync(bob, { set_presence: "offline" })).next_batch as string;
    const bobSees = async () => {
      const r = await sync(bob, { since: bobToken, set_presence: "offline" });
      bobToken = r.next_batch;
      return presenceOf(r, alice.userId);
    };

    // Omitted: "automatically marked as online".
    const first = await sync(alice);
    expect(presenceOf(first, alice.userId)).toMatchObject({ presence: "online", currently_active: true });
    expect((await status(bob, alice.userId)).body).toMatchObject({ presence: "online", currently_active: true });
    expect(await bobSees()).toMatchObject({ presence: "online" });

    // unavailable: "marked as being idle".
    await sync(alice, { since: first.next_batch, set_presence: "unavailable" });
    expect((await status(bob, alice.userId)).body).toMatchObject({ presence: "unavailable", currently_active: false });
    expect(await bobSees()).toMatchObject({ presence: "unavailable" });

    // offline: "not marked as being online": what was set stays.
    await clientOk(alice.accessToken, "PUT", `/presence/${enc(alice.userId)}/status`, { presence: "unavailable", status_msg: "away" });
    await sync(alice, { set_presence: "offline" });
    expect((await status(bob, alice.userId)).body).toMatchObject({ presence: "unavailable", status_msg: "away" });

    // Syncing again without the parameter: online, the status message kept.
    await sync(alice);
    expect((await status(bob, alice.userId)).body).toMatchObject({ presence: "online", status_msg: "away", currently_active: true });
    expect(await bobSees()).toMatchObject({ presence: "online", status_msg: "away" });
  });
});

describe("presence of people one newly shares a room with", () => {
  it("joining a room with someone online brings their presence in the incremental and in a fresh initial sync", async () => {
    const [carol, dave, erin] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    await sync(carol); // carol is online, sharing no room with anyone yet
    const roomId = (await clientOk(carol.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;

    const before = await sync(dave, { set_presence: "offline" });
    expect(presenceOf(before, carol.userId)).toBeUndefined();
    await clientOk(dave.accessToken, "POST", `/join/${enc(roomId)}`, {});
    // (Shared after the join's answer: a long-poll would wake for it.)
    const inc = await eventually(() => sync(dave, { since: before.next_batch, set_presence: "offline" }), (r) => !!presenceOf(r, carol.userId));
    expect(presenceOf(inc, carol.userId)).toMatchObject({ presence: "online", currently_active: true });
    const initial = await sync(dave, { set_presence: "offline" });
    expect(presenceOf(initial, carol.userId)).toMatchObject({ presence: "online" });

    // Someone online joining a room I am in: their presence in my next sync.
    await sync(erin);
    const t = (await sync(dave, { set_presence: "offline" })).next_batch;
    await clientOk(erin.accessToken, "POST", `/join/${enc(roomId)}`, {});
    const afterJoin = await eventually(() => sync(dave, { since: t, set_presence: "offline" }), (r) => !!presenceOf(r, erin.userId));
    expect(presenceOf(afterJoin, erin.userId)).toMatchObject({ presence: "online" });
  });
});

describe("presence over federation", () => {
  it("being online through /sync sends m.presence to the servers sharing a room; remote presence is answered from what was received", async () => {
    const alice = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    await remoteJoinWave(REMOTE, key, roomId, 0, 1);
    const rem = `@w0u0:${REMOTE}`;

    // Before anything was received: not known.
    expect((await status(alice, rem)).status).toBe(404);

    const edus: Json[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      if (url.hostname === REMOTE && url.pathname.startsWith("/_matrix/federation/v1/send/")) {
        edus.push(...(JSON.parse(String(init!.body)).edus ?? []));
        return Response.json({ pdus: {} });
      }
      return new Response("{}", { status: 404 });
    });
    await sync(alice); // online through /sync
    const sender = env.FEDERATION_SENDER.get(env.FEDERATION_SENDER.idFromName(REMOTE));
    const mine = () => edus.filter((e) => e.edu_type === "m.presence").flatMap((e) => e.content.push as Json[]).filter((p) => p.user_id === alice.userId);
    for (let i = 0; i < 40 && mine().length === 0; i++) {
      await runDurableObjectAlarm(sender);
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(mine()[0]).toMatchObject({ user_id: alice.userId, presence: "online", currently_active: true });
    expect(typeof mine()[0].last_active_ago).toBe("number");
    // Syncing on while nothing changes sends nothing more (rate limit: pings every few minutes).
    await sync(alice);
    await sync(alice);
    for (let i = 0; i < 5; i++) await runDurableObjectAlarm(sender);
    expect(mine()).toHaveLength(1);

    // The remote user's presence, as their server sent it.
    const txn = `p${Date.now()}`;
    const r = await federationCall(REMOTE, key, "PUT", `/v1/send/${txn}`, {
      origin: REMOTE,
      origin_server_ts: Date.now(),
      pdus: [],
      edus: [{ edu_type: "m.presence", content: { push: [{ user_id: rem, presence: "online", last_active_ago: 2000, currently_active: true, status_msg: "remote" }] } }],
    });
    expect(r.status).toBe(200);
    const got = await status(alice, rem);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ presence: "online", currently_active: true, status_msg: "remote" });
    expect(got.body.last_active_ago).toBeGreaterThanOrEqual(2000);
  });

  it("a server whose user joins one of our rooms is sent the presence of our members there", async () => {
    const alice = await registerUser();
    await sync(alice); // online before anyone from the remote server is in her room
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    const edus: Json[] = [];
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      if (url.hostname === REMOTE && url.pathname.startsWith("/_matrix/federation/v1/send/")) {
        edus.push(...(JSON.parse(String(init!.body)).edus ?? []));
        return Response.json({ pdus: {} });
      }
      return new Response("{}", { status: 404 });
    });
    await remoteJoinWave(REMOTE, key, roomId, 7, 1);
    const sender = env.FEDERATION_SENDER.get(env.FEDERATION_SENDER.idFromName(REMOTE));
    const hers = () => edus.filter((e) => e.edu_type === "m.presence").flatMap((e) => e.content.push as Json[]).filter((p) => p.user_id === alice.userId);
    for (let i = 0; i < 40 && hers().length === 0; i++) {
      await runDurableObjectAlarm(sender);
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(hers()[0]).toMatchObject({ presence: "online", currently_active: true });
  });
});
