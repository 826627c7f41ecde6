// Convergence of current state under every arrival order (workerd). The same forked DAG shape
// is built in several rooms: a local fork (the room's server changes topic and power levels) and
// two concurrent remote branches from remote.test (topic + power levels; topic + name). Each
// room receives the remote events in a different order (parents always before children). The
// resulting current state must be the same in all rooms (compared by content: event IDs differ
// between rooms), and equal to what a merge event built on all forward extremities sees.
// Spec: Server-Server API "Room State Resolution"; the current state of a room is the resolution
// of the states at its forward extremities, whatever order their events arrived in.
import { describe, it, expect } from "vitest";
import { clientOk, federationCall, federationSetup, SERVER, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";

const REMOTE = "remote.test";
const REM = `@rem:${REMOTE}`;
let key: SigningKey;
let alice: TestUser;
const enc = encodeURIComponent;
const rv = getRoomVersion("12")!;

const fed = (method: string, path: string, body?: unknown) => federationCall(REMOTE, key, method, path, body);
const ok = (method: string, path: string, body?: unknown) => clientOk(alice.accessToken, method, path, body);

federationSetup(REMOTE, (s) => ({ key, alice } = s));

interface Built {
  roomId: string;
  remote: Record<string, PDU>;
}

/** A room with rem joined as PL 100, then the local fork; returns the remote branches (not
 *  yet delivered), built on the last event before the local fork. */
async function buildRoom(ts: number): Promise<Built> {
  const roomId = (await ok("POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
  const t = await fed("GET", `/v1/make_join/${enc(roomId)}/${enc(REM)}?ver=12`);
  const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: ts } as PDU, rv, REMOTE, key);
  expect((await fed("PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu)).status).toBe(200);
  const pl = await ok("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels/`);
  await ok("PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl, users: { ...pl.users, [REM]: 100 } });
  const state = (await ok("GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string }[];
  const id = (type: string, k = "") => state.find((e) => e.type === type && e.state_key === k)!.event_id;
  const base = (await ok("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=1`)).chunk[0].event_id as string;
  const depth = ((await fed("GET", `/v1/event/${enc(base)}`)).body.pdus[0] as PDU).depth;

  // The local fork, on top of `base`: topic, then rem demoted to 50 and @x raised.
  await ok("PUT", `/rooms/${enc(roomId)}/state/m.room.topic/`, { topic: "local topic" });
  const pl2 = await ok("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels/`);
  await ok("PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl2, users: { ...pl2.users, [REM]: 50, [`@x:${SERVER}`]: 20 } });

  // Remote branches, both on `base`, signed by remote.test; timestamps fixed so that every room
  // sees the same tie-breaks.
  const mk = async (type: string, content: Record<string, unknown>, prev: string, d: number, at: number, auth = [id("m.room.power_levels"), id("m.room.member", REM)]) =>
    (await hashAndSignEvent({ room_id: roomId, sender: REM, type, state_key: "", content, origin_server_ts: at, depth: d, prev_events: [prev], auth_events: auth } as unknown as PDU, rv, REMOTE, key)).pdu;
  const x1 = await mk("m.room.topic", { topic: "remote topic X" }, base, depth + 1, ts + 10);
  const x1Id = (await hashAndSignEvent(x1, rv, REMOTE, key)).eventId;
  const x2 = await mk("m.room.power_levels", { ...pl, users: { ...pl.users, [REM]: 100, [`@y:${REMOTE}`]: 30 } }, x1Id, depth + 2, ts + 20);
  const y1 = await mk("m.room.topic", { topic: "remote topic Y" }, base, depth + 1, ts + 15);
  const y1Id = (await hashAndSignEvent(y1, rv, REMOTE, key)).eventId;
  const y2 = await mk("m.room.name", { name: "remote name Y" }, y1Id, depth + 2, ts + 25);
  return { roomId, remote: { x1, x2, y1, y2 } };
}

async function deliver(roomId: string, pdus: PDU[]) {
  for (const p of pdus) {
    const r = await fed("PUT", `/v1/send/conv${Math.random().toString(36).slice(2)}`, { origin: REMOTE, origin_server_ts: Date.now(), pdus: [p] });
    expect(r.status).toBe(200);
    for (const [eid, res] of Object.entries(r.body.pdus as Record<string, { error?: string }>)) expect([eid, res.error]).toEqual([eid, undefined]);
  }
  void roomId;
}

/** Current state by content (event IDs differ between rooms): type|key → content sans room-specific bits. */
async function stateByContent(roomId: string): Promise<Record<string, unknown>> {
  const st = (await ok("GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; content: Record<string, unknown> }[];
  const out: Record<string, unknown> = {};
  for (const e of st) if (e.type !== "m.room.create") out[`${e.type}|${e.state_key}`] = e.content;
  return out;
}

describe("current state converges whatever the arrival order", () => {
  it("four interleavings of two remote branches against a local fork give one state", async () => {
    const orders = [
      ["x1", "x2", "y1", "y2"],
      ["y1", "y2", "x1", "x2"],
      ["x1", "y1", "x2", "y2"],
      ["y1", "x1", "y2", "x2"],
    ];
    const ts = Date.now() + 60_000; // after the local fork in every room
    const results: Record<string, unknown>[] = [];
    const merged: Record<string, unknown>[] = [];
    for (const order of orders) {
      const b = await buildRoom(ts);
      await deliver(b.roomId, order.map((k) => b.remote[k]));
      results.push(await stateByContent(b.roomId));
      // A local event now merges all forward extremities; the state it is built on is the
      // resolution across them. After it the room has one extremity.
      await ok("PUT", `/rooms/${enc(b.roomId)}/send/m.room.message/merge`, { msgtype: "m.text", body: "merge" });
      merged.push(await stateByContent(b.roomId));
    }
    for (let i = 1; i < orders.length; i++) {
      expect({ order: orders[i].join(","), state: results[i] }).toEqual({ order: orders[i].join(","), state: results[0] });
      expect({ order: orders[i].join(","), state: merged[i] }).toEqual({ order: orders[i].join(","), state: merged[0] });
    }
    expect(merged[0]).toEqual(results[0]);
  });
});

describe("forward extremities", () => {
  it("more concurrent remote branches than one event may cite are merged by dummy events", async () => {
    const roomId = (await ok("POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
    const t = await fed("GET", `/v1/make_join/${enc(roomId)}/${enc(REM)}?ver=12`);
    const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, REMOTE, key);
    expect((await fed("PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu)).status).toBe(200);
    const state = (await ok("GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string }[];
    const id = (type: string, k = "") => state.find((e) => e.type === type && e.state_key === k)!.event_id;
    const base = (await ok("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=1`)).chunk[0].event_id as string;
    const depth = ((await fed("GET", `/v1/event/${enc(base)}`)).body.pdus[0] as PDU).depth;

    // 12 messages from the remote server, all on the same parent: 12 branches.
    const pdus: PDU[] = [];
    for (let i = 0; i < 12; i++) {
      const { pdu } = await hashAndSignEvent(
        { room_id: roomId, sender: REM, type: "m.room.message", content: { msgtype: "m.text", body: `branch ${i}` }, origin_server_ts: Date.now() + i, depth: depth + 1, prev_events: [base], auth_events: [id("m.room.power_levels"), id("m.room.member", REM)] } as unknown as PDU,
        rv,
        REMOTE,
        key,
      );
      pdus.push(pdu);
    }
    const r = await fed("PUT", `/v1/send/branches${Date.now()}`, { origin: REMOTE, origin_server_ts: Date.now(), pdus });
    expect(r.status).toBe(200);
    for (const res of Object.values(r.body.pdus as Record<string, { error?: string }>)) expect(res.error).toBeUndefined();

    const { env } = await import("cloudflare:test");
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId)) as unknown as import("../../src/services/rooms").RoomStub;
    let extremities: string[] = [];
    for (let i = 0; i < 50; i++) {
      extremities = await room.getForwardExtremities();
      if (extremities.length <= 10) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(extremities.length).toBeLessThanOrEqual(10);
    // The merge is a dummy event from the room's local member citing ten branches (it may land
    // between two of the remote events: it is sent as soon as an 11th extremity appears).
    const recent = (await ok("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=20`)).chunk as { type: string; sender: string; event_id: string }[];
    const dummies = recent.filter((e) => e.type === "org.matrix.dummy_event");
    expect(dummies.length).toBeGreaterThanOrEqual(1);
    expect(dummies[0].sender).toBe(alice.userId);
    const merged = (await fed("GET", `/v1/event/${enc(dummies[0].event_id)}`)).body.pdus[0] as PDU;
    expect(merged.prev_events).toHaveLength(10);
  });
});

/** A small deterministic PRNG (mulberry32), so a failing seed can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One node of an abstract remote DAG: what it does and which earlier nodes it follows
 *  (-1 = the room's last event before the remote branches). */
interface Node {
  sender: string;
  type: string;
  stateKey: string;
  content: Record<string, unknown>;
  prevs: number[];
}

/** A random DAG of remote events that cannot be soft-failed (so arrival order may not change
 *  which events count): two PL-100 senders change topic and name and raise new users in the
 *  power levels (never lowering anyone), and new remote users join the public room. */
function randomDag(seed: number, size: number): Node[] {
  const rnd = prng(seed);
  const nodes: Node[] = [];
  const raised: Record<string, number> = {};
  for (let i = 0; i < size; i++) {
    const prevs = new Set<number>();
    const fan = rnd() < 0.3 ? 2 : 1;
    for (let k = 0; k < fan; k++) prevs.add(Math.floor(rnd() * (i + 1)) - 1);
    const sender = rnd() < 0.5 ? REM : REM2;
    const pick = rnd();
    if (pick < 0.3) nodes.push({ sender, type: "m.room.topic", stateKey: "", content: { topic: `topic ${i}` }, prevs: [...prevs] });
    else if (pick < 0.5) nodes.push({ sender, type: "m.room.name", stateKey: "", content: { name: `name ${i}` }, prevs: [...prevs] });
    else if (pick < 0.7) {
      raised[`@p${i}:${REMOTE}`] = 1 + Math.floor(rnd() * 50);
      nodes.push({ sender, type: "m.room.power_levels", stateKey: "", content: { users: { ...raised } }, prevs: [...prevs] });
    } else {
      const u = `@j${i}:${REMOTE}`;
      nodes.push({ sender: u, type: "m.room.member", stateKey: u, content: { membership: "join" }, prevs: [...prevs] });
    }
  }
  return nodes;
}

/** Parents before children, otherwise shuffled. */
function randomTopologicalOrder(nodes: Node[], rnd: () => number): number[] {
  const done = new Set<number>([-1]);
  const out: number[] = [];
  while (out.length < nodes.length) {
    const ready = nodes.map((n, i) => i).filter((i) => !done.has(i) && nodes[i].prevs.every((p) => done.has(p)));
    const i = ready[Math.floor(rnd() * ready.length)];
    done.add(i);
    out.push(i);
  }
  return out;
}

const REM2 = `@rem2:${REMOTE}`;

describe("current state converges for random DAGs in random arrival orders", () => {
  it("three random DAGs, each delivered in four random orders, give one state per DAG, equal to what a merge event sees", async () => {
    for (const seed of [7, 1234, 99991]) {
      const nodes = randomDag(seed, 18);
      const rnd = prng(seed * 31 + 1);
      const ts = Date.now() + 60_000;
      const results: Record<string, unknown>[] = [];
      for (let run = 0; run < 4; run++) {
        const roomId = (await ok("POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
        for (const u of [REM, REM2]) {
          const t = await fed("GET", `/v1/make_join/${enc(roomId)}/${enc(u)}?ver=12`);
          const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: ts - 1000 } as PDU, rv, REMOTE, key);
          expect((await fed("PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}`, j.pdu)).status).toBe(200);
        }
        const pl = await ok("GET", `/rooms/${enc(roomId)}/state/m.room.power_levels/`);
        await ok("PUT", `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { ...pl, users: { ...pl.users, [REM]: 100, [REM2]: 100 } });
        const state = (await ok("GET", `/rooms/${enc(roomId)}/state`)) as unknown as { type: string; state_key: string; event_id: string }[];
        const id = (type: string, k = "") => state.find((e) => e.type === type && e.state_key === k)!.event_id;
        const base = (await ok("GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=1`)).chunk[0].event_id as string;
        const baseDepth = ((await fed("GET", `/v1/event/${enc(base)}`)).body.pdus[0] as PDU).depth;

        // Instantiate the abstract DAG in this room (unique timestamps: no tie-breaks by ID).
        const pdus: PDU[] = [];
        const ids: string[] = [];
        const depths: number[] = [];
        for (const [i, n] of nodes.entries()) {
          const prevIds = n.prevs.map((p) => (p < 0 ? base : ids[p]));
          const depth = Math.max(...n.prevs.map((p) => (p < 0 ? baseDepth : depths[p]))) + 1;
          const content = n.type === "m.room.power_levels" ? { ...pl, users: { ...pl.users, [REM]: 100, [REM2]: 100, ...(n.content.users as object) } } : n.content;
          const auth = n.type === "m.room.member" ? [id("m.room.power_levels"), id("m.room.join_rules")] : [id("m.room.power_levels"), id("m.room.member", n.sender)];
          const { pdu, eventId } = await hashAndSignEvent(
            { room_id: roomId, sender: n.sender, type: n.type, state_key: n.stateKey, content, origin_server_ts: ts + i * 10, depth, prev_events: prevIds, auth_events: auth } as unknown as PDU,
            rv,
            REMOTE,
            key,
          );
          pdus.push(pdu);
          ids.push(eventId);
          depths.push(depth);
        }
        await deliver(roomId, randomTopologicalOrder(nodes, rnd).map((i) => pdus[i]));
        const current = await stateByContent(roomId);
        await ok("PUT", `/rooms/${enc(roomId)}/send/m.room.message/merge`, { msgtype: "m.text", body: "merge" });
        expect({ seed, run, state: await stateByContent(roomId) }).toEqual({ seed, run, state: current });
        results.push(current);
      }
      for (let run = 1; run < results.length; run++) expect({ seed, run, state: results[run] }).toEqual({ seed, run, state: results[0] });
    }
  }, 120_000);
});
