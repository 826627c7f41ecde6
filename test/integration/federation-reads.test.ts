// Federation reads and rooms named by remote input (workerd; hardening issue items 2 and 4).
// A server reads a room's events only while one of its users is joined (history visibility for
// servers, then applied per event): a server never in the room, or whose users were all
// kicked, gets 403 from /event, /timestamp_to_event, /backfill, /state_ids, /get_missing_events
// and /event_auth. Room IDs from requests and EDUs are checked against the D1 registry before
// any Durable Object is addressed: an unknown room must not create one.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { env, listDurableObjectIds } from "cloudflare:test";
import { clientOk, federationCall, offline, registerUser, remoteJoinWave, seedRemoteKey, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "reader.test";
const STRANGER = "stranger.test";
const enc = encodeURIComponent;
let remoteKey: SigningKey;
let strangerKey: SigningKey;
let alice: TestUser;

const asRemote = (method: string, path: string, body?: unknown) => federationCall(REMOTE, remoteKey, method, path, body);
const asStranger = (method: string, path: string, body?: unknown) => federationCall(STRANGER, strangerKey, method, path, body);

/** Every read a server can make of a room's history, for one event. */
function reads(roomId: string, eventId: string): [string, string, unknown?][] {
  return [
    ["GET", `/v1/event/${enc(eventId)}`],
    ["GET", `/v1/event/${enc(eventId)}?room_id=${enc(roomId)}`],
    ["GET", `/v1/timestamp_to_event/${enc(roomId)}?ts=${Date.now() + 60_000}&dir=b`],
    ["GET", `/v1/backfill/${enc(roomId)}?v=${enc(eventId)}&limit=10`],
    ["GET", `/v1/state_ids/${enc(roomId)}?event_id=${enc(eventId)}`],
    ["GET", `/v1/state/${enc(roomId)}?event_id=${enc(eventId)}`],
    ["GET", `/v1/event_auth/${enc(roomId)}/${enc(eventId)}`],
    ["POST", `/v1/get_missing_events/${enc(roomId)}`, { earliest_events: [], latest_events: [eventId], limit: 10 }],
  ];
}

async function statuses(as: typeof asRemote, roomId: string, eventId: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [m, p, b] of reads(roomId, eventId)) out[`${m} ${p.split("?")[0].split("/").slice(0, 3).join("/")}${p.includes("room_id=") ? "?room_id" : ""}`] = (await as(m, p, b)).status;
  return out;
}

function roomObjectExists(name: string): Promise<boolean> {
  const id = env.ROOMS.idFromName(name).toString();
  return listDurableObjectIds(env.ROOMS).then((ids) => ids.some((x) => x.toString() === id));
}

beforeAll(async () => {
  setFederationFetch(offline);
  remoteKey = await seedRemoteKey(REMOTE);
  strangerKey = await seedRemoteKey(STRANGER);
  alice = await registerUser();
});
afterAll(() => setFederationFetch(offline));

describe("federation reads need a joined user of the requesting server", () => {
  it("a server never in the room reads nothing, even with shared history", async () => {
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    const { event_id: secret } = await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/t1`, { msgtype: "m.text", body: "secret" });
    const got = await statuses(asStranger, roomId, secret);
    for (const [k, s] of Object.entries(got)) expect([k, s]).toEqual([k, 403]);
  });

  it("a joined server reads; once its only user is kicked it reads nothing", async () => {
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    await remoteJoinWave(REMOTE, remoteKey, roomId, 0, 1);
    const { event_id: msg } = await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/t2`, { msgtype: "m.text", body: "while joined" });
    const before = await statuses(asRemote, roomId, msg);
    for (const [k, s] of Object.entries(before)) expect([k, s]).toEqual([k, 200]);
    const seen = await asRemote("GET", `/v1/event/${enc(msg)}`);
    expect(seen.body.pdus[0].content.body).toBe("while joined");

    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/kick`, { user_id: `@w0u0:${REMOTE}` });
    const after = await statuses(asRemote, roomId, msg);
    for (const [k, s] of Object.entries(after)) expect([k, s]).toEqual([k, 403]);
  });

  it("history from before a joined-only server joined is served redacted", async () => {
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.history_visibility/`, { history_visibility: "joined" });
    const { event_id: early } = await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/t3`, { msgtype: "m.text", body: "before you" });
    await remoteJoinWave(REMOTE, remoteKey, roomId, 1, 1);
    const r = await asRemote("GET", `/v1/event/${enc(early)}`);
    expect(r.status).toBe(200);
    expect(r.body.pdus[0].content).toEqual({});
  });
});

describe("room IDs from remote input are checked against the registry first", () => {
  it("/event with an unknown room_id answers 404 without creating a room object", async () => {
    const ghost = "!ghostevent:nowhere.test";
    const r = await asRemote("GET", `/v1/event/${enc("$nothing")}?room_id=${enc(ghost)}`);
    expect(r.status).toBe(404);
    expect(await roomObjectExists(ghost)).toBe(false);
  });

  it("m.typing and m.receipt EDUs for unknown rooms create no room object", async () => {
    const typingRoom = "!ghosttyping:nowhere.test";
    const receiptRoom = "!ghostreceipt:nowhere.test";
    const edus = [
      { edu_type: "m.typing", content: { room_id: typingRoom, user_id: `@a:${REMOTE}`, typing: true } },
      { edu_type: "m.receipt", content: { [receiptRoom]: { "m.read": { [`@a:${REMOTE}`]: { event_ids: ["$x"], data: { ts: 1 } } } } } },
    ];
    const r = await asRemote("PUT", `/v1/send/ghost${Date.now()}`, { origin: REMOTE, origin_server_ts: Date.now(), pdus: [], edus });
    expect(r.status).toBe(200);
    expect(await roomObjectExists(typingRoom)).toBe(false);
    expect(await roomObjectExists(receiptRoom)).toBe(false);
  });

  it("/hierarchy of an unknown room answers 404 without creating a room object", async () => {
    const ghost = "!ghostspace:nowhere.test";
    const r = await asRemote("GET", `/v1/hierarchy/${enc(ghost)}`);
    expect(r.status).toBe(404);
    expect(await roomObjectExists(ghost)).toBe(false);
  });
});

describe("federation reads check history visibility in bulk", () => {
  /** `fn`'s value and the SQL statements it ran on `state` (exec counted meanwhile). */
  async function counted<T>(state: DurableObjectState, fn: () => Promise<T>): Promise<{ statements: number; value: T }> {
    const sql = state.storage.sql;
    const exec = sql.exec;
    let statements = 0;
    Object.defineProperty(sql, "exec", { configurable: true, value: (q: string, ...b: SqlStorageValue[]) => (statements++, exec.call(sql, q, ...b)) });
    try {
      const value = await fn();
      return { statements, value };
    } finally {
      delete (sql as { exec?: unknown }).exec;
    }
  }

  it("backfill and get_missing_events from a cold room: statements do not grow with the events served; the answers are the warm ones", async () => {
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    // joined: each event's visibility needs the requesting server's members in the state before it.
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.history_visibility/`, { history_visibility: "joined" });
    for (let i = 0; i < 4; i++) await remoteJoinWave(REMOTE, remoteKey, roomId, 10 + i, 1);
    const first = (await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/bulk-first`, { msgtype: "m.text", body: "first" })).event_id as string;
    let last = first;
    for (let i = 0; i < 40; i++) {
      last = (await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/bulk${i}`, { msgtype: "m.text", body: `m${i}` })).event_id as string;
      // A state change now and then: events before and after it have different state groups.
      if (i % 10 === 5) await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/org.example.marker/${i}`, { i });
    }
    const { runInDurableObject } = await import("cloudflare:test");
    const { RoomDO } = await import("../../durable-objects/room");
    type Fed = Pick<InstanceType<typeof RoomDO>, "fedBackfill" | "fedMissingEvents">;
    const stub = env.ROOMS.get(env.ROOMS.idFromName(roomId));
    const r = await runInDurableObject(stub, async (instance, state) => {
      const cold = () => new RoomDO(state, env) as unknown as Fed;
      const warm = instance as unknown as Fed;
      const bf5 = await counted(state, () => cold().fedBackfill(REMOTE, [last], 5));
      const bf40 = await counted(state, () => cold().fedBackfill(REMOTE, [last], 40));
      const gm5 = await counted(state, () => cold().fedMissingEvents(REMOTE, [], [last], 5, 0));
      const gm40 = await counted(state, () => cold().fedMissingEvents(REMOTE, [], [last], 40, 0));
      return {
        bf5, bf40, gm5, gm40,
        warmBf: await warm.fedBackfill(REMOTE, [last], 40),
        warmGm: await warm.fedMissingEvents(REMOTE, [], [last], 40, 0),
      };
    });
    expect(r.bf40.value).toEqual(r.warmBf);
    expect(r.gm40.value).toEqual(r.warmGm);
    if (!r.bf40.value.ok || !r.gm40.value.ok) throw new Error("fed read failed");
    expect(r.bf40.value.value).toHaveLength(40);
    expect(r.gm40.value.value).toHaveLength(40);
    // 35 more events served: a few statements more (a page of 90 IDs, a state group), not 35+.
    expect(r.bf40.statements - r.bf5.statements, `backfill: ${r.bf5.statements} → ${r.bf40.statements}`).toBeLessThan(10);
    expect(r.gm40.statements - r.gm5.statements, `get_missing_events: ${r.gm5.statements} → ${r.gm40.statements}`).toBeLessThan(10);
  });
});
