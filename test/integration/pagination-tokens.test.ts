// Tokens a client holds for a point in a room's history (issue 22, items 0 and 1): /messages
// `from`/`to` and /members `at` accept /sync's next_batch (`s<pos>_<epoch>`) as well as the
// room's own tokens (`t<n>`: prev_batch, /messages start/end). src/services/room-tokens.ts.
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, type Json, type TestUser, createRoom, joinRoom as join, sendText as send } from "./helpers";
import type { UserStub } from "../../src/services/notifier";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
const DAY = 24 * 3600_000;
let txn = 0;

async function nextBatch(u: TestUser): Promise<string> {
  const r = await call("GET", `${V3}/sync?timeout=0`, { token: u.accessToken });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.next_batch;
}
async function messages(u: TestUser, roomId: string, q: Record<string, string>) {
  return call("GET", `${V3}/rooms/${enc(roomId)}/messages?${new URLSearchParams(q)}`, { token: u.accessToken });
}
async function members(u: TestUser, roomId: string, q: Record<string, string>) {
  return call("GET", `${V3}/rooms/${enc(roomId)}/members?${new URLSearchParams(q)}`, { token: u.accessToken });
}
const bodies = (chunk: Json[]) => chunk.filter((e) => e.type === "m.room.message").map((e) => e.content.body as string);
const joined = (chunk: Json[]) => chunk.filter((e) => e.content.membership === "join").map((e) => e.state_key as string).sort();
function hub(u: TestUser): UserStub {
  return env.USERS.get(env.USERS.idFromName(u.userId)) as unknown as UserStub;
}

describe("/sync tokens in room endpoints", () => {
  it("/members?at=<next_batch> answers the members the client had seen then (as matrix-js-sdk asks before encrypting)", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    const beforeBob = await nextBatch(bob); // the room had not reached Bob yet
    await join(bob, roomId);
    const t1 = await nextBatch(bob);
    await join(carol, roomId);

    const at1 = await members(bob, roomId, { at: t1, not_membership: "leave" });
    expect(at1.status, JSON.stringify(at1.body)).toBe(200);
    expect(joined(at1.body.chunk)).toEqual([alice.userId, bob.userId].sort());
    const now = await members(bob, roomId, { at: await nextBatch(bob), not_membership: "leave" });
    expect(joined(now.body.chunk)).toEqual([alice.userId, bob.userId, carol.userId].sort());
    // A token from before the room reached Bob: the state before his join.
    const early = await members(bob, roomId, { at: beforeBob });
    expect(early.status, JSON.stringify(early.body)).toBe(200);
    expect(joined(early.body.chunk)).toEqual([alice.userId]);
    // The room's own tokens still work (prev_batch).
    const prev = (await call("GET", `${V3}/sync?filter=${enc(JSON.stringify({ room: { timeline: { limit: 1 } } }))}`, { token: bob.accessToken })).body.rooms.join[roomId].timeline.prev_batch;
    expect((await members(bob, roomId, { at: prev })).status).toBe(200);
  });

  it("/messages pages back and forward from a /sync token, and stops at one", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await send(alice, roomId, "m1");
    await send(alice, roomId, "m2");
    await join(bob, roomId);
    const t1 = await nextBatch(bob);
    await send(alice, roomId, "m3");
    await send(alice, roomId, "m4");
    const t2 = await nextBatch(bob);
    await send(alice, roomId, "m5");

    const back = await messages(bob, roomId, { from: t1, dir: "b", limit: "50" });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(bodies(back.body.chunk)).toEqual(["m2", "m1"]);
    expect(back.body.chunk[0].state_key).toBe(bob.userId); // his join is the last thing he had seen
    expect(back.body.start).toBe(t1);
    const fwd = await messages(bob, roomId, { from: t1, dir: "f", limit: "50" });
    expect(fwd.status, JSON.stringify(fwd.body)).toBe(200);
    expect(bodies(fwd.body.chunk)).toEqual(["m3", "m4", "m5"]);
    // Between two sync tokens, either way round.
    expect(bodies((await messages(bob, roomId, { from: t2, to: t1, dir: "b" })).body.chunk)).toEqual(["m4", "m3"]);
    expect(bodies((await messages(bob, roomId, { from: t1, to: t2, dir: "f" })).body.chunk)).toEqual(["m3", "m4"]);
    // A room token from /messages continues where a sync token left off.
    const page = await messages(bob, roomId, { from: t2, dir: "b", limit: "1" });
    expect(bodies(page.body.chunk)).toEqual(["m4"]);
    expect(bodies((await messages(bob, roomId, { from: page.body.end, dir: "b", limit: "1" })).body.chunk)).toEqual(["m3"]);
  });

  it("refuses other users' sync tokens and malformed tokens with M_INVALID_PARAM", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const alices = await nextBatch(alice);
    for (const r of [
      await messages(bob, roomId, { from: alices, dir: "b" }),
      await members(bob, roomId, { at: alices }),
      await messages(bob, roomId, { from: "s1_", dir: "b" }),
      await members(bob, roomId, { at: "nonsense" }),
      await messages(bob, roomId, { from: "s99999999_zzz", dir: "f" }),
    ]) {
      expect(r.status, JSON.stringify(r.body)).toBe(400);
      expect(r.body.errcode).toBe("M_INVALID_PARAM");
    }
  });

  it("a token below the hub's compacted log still pages without losing events", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    await send(alice, roomId, "old");
    const t0 = await nextBatch(bob);
    for (let i = 0; i < 4; i++) await send(alice, roomId, `new${i}`);
    await nextBatch(bob);
    const c = await hub(bob).compactLog({ keep: 0, now: Date.now() + 2 * DAY });
    expect(c.floor).toBeGreaterThan(Number(/^s(\d+)_/.exec(t0)![1]));
    // Forward: at least everything after the token (the exact point is gone).
    const fwd = await messages(bob, roomId, { from: t0, dir: "f", limit: "50" });
    expect(fwd.status, JSON.stringify(fwd.body)).toBe(200);
    expect(bodies(fwd.body.chunk)).toEqual(expect.arrayContaining(["new0", "new1", "new2", "new3"]));
    // Backward: at least everything before it.
    const back = await messages(bob, roomId, { from: t0, dir: "b", limit: "50" });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(bodies(back.body.chunk)).toContain("old");
    expect((await members(bob, roomId, { at: t0 })).status).toBe(200);
  });
});

describe("GET /v1/rooms/{roomId}/relations", () => {
  const V1 = "/_matrix/client/v1";
  async function sendContent(u: TestUser, roomId: string, type: string, content: Json): Promise<string> {
    const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/${type}/rel${++txn}`, { token: u.accessToken, body: content });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.event_id;
  }
  async function relations(u: TestUser, roomId: string, path: string, q: Record<string, string> = {}) {
    return call("GET", `${V1}/rooms/${enc(roomId)}/relations/${path}?${new URLSearchParams(q)}`, { token: u.accessToken });
  }

  it("lists children newest first, by rel_type and event type, pages with next_batch and takes /sync tokens", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const root = await send(alice, roomId, "root");
    const thread = (body: string) => ({ msgtype: "m.text", body, "m.relates_to": { rel_type: "m.thread", event_id: root } });
    const r1 = await sendContent(bob, roomId, "m.room.message", thread("reply 1"));
    const react = await sendContent(bob, roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: root, key: "👍" } });
    const t1 = await nextBatch(bob);
    const r2 = await sendContent(alice, roomId, "m.room.message", thread("reply 2"));
    const nested = await sendContent(alice, roomId, "m.room.message", { msgtype: "m.text", body: "ref", "m.relates_to": { rel_type: "m.reference", event_id: r2 } });
    await send(alice, roomId, "unrelated");

    const ids = (r: { body: Json }) => r.body.chunk.map((e: Json) => e.event_id);
    const all = await relations(bob, roomId, enc(root));
    expect(all.status, JSON.stringify(all.body)).toBe(200);
    expect(ids(all)).toEqual([r2, react, r1]);
    expect(all.body.next_batch).toBeUndefined();
    expect(ids(await relations(bob, roomId, `${enc(root)}/m.thread`))).toEqual([r2, r1]);
    expect(ids(await relations(bob, roomId, `${enc(root)}/m.annotation/m.reaction`))).toEqual([react]);
    expect(ids(await relations(bob, roomId, `${enc(root)}/m.thread`, { dir: "f" }))).toEqual([r1, r2]);
    // Pages.
    const p1 = await relations(bob, roomId, enc(root), { limit: "2" });
    expect(ids(p1)).toEqual([r2, react]);
    const p2 = await relations(bob, roomId, enc(root), { limit: "2", from: p1.body.next_batch });
    expect(ids(p2)).toEqual([r1]);
    expect(p2.body.prev_batch).toBe(p1.body.next_batch);
    // From a /sync token: what came before it (b) or after it (f).
    expect(ids(await relations(bob, roomId, enc(root), { from: t1 }))).toEqual([react, r1]);
    expect(ids(await relations(bob, roomId, enc(root), { from: t1, dir: "f" }))).toEqual([r2]);
    // recurse follows relations of relations.
    const rec = await relations(bob, roomId, enc(root), { recurse: "true" });
    expect(ids(rec)).toEqual([nested, r2, react, r1]);
    expect(rec.body.recursion_depth).toBe(2);
    expect((await relations(bob, roomId, enc(root), { recurse: "false" })).body.recursion_depth).toBe(1);
    // Unknown parent; bad tokens.
    expect((await relations(bob, roomId, enc("$nope"))).status).toBe(404);
    const bad = await relations(bob, roomId, enc(root), { from: await nextBatch(alice) });
    expect(bad.status).toBe(400);
    expect(bad.body.errcode).toBe("M_INVALID_PARAM");
  });

  it("hides children the requester may not see, and redacted ones", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await call("POST", `${V3}/createRoom`, {
      token: alice.accessToken,
      body: { preset: "public_chat", initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } }] },
    }).then((r) => r.body.room_id as string);
    const root = await send(alice, roomId, "root");
    const early = await sendContent(alice, roomId, "m.room.message", { msgtype: "m.text", body: "early", "m.relates_to": { rel_type: "m.thread", event_id: root } });
    const gone = await sendContent(alice, roomId, "m.room.message", { msgtype: "m.text", body: "gone", "m.relates_to": { rel_type: "m.thread", event_id: root } });
    const rd = await call("PUT", `${V3}/rooms/${enc(roomId)}/redact/${enc(gone)}/rd${++txn}`, { token: alice.accessToken, body: {} });
    expect(rd.status).toBe(200);
    expect((await relations(alice, roomId, enc(root))).body.chunk.map((e: Json) => e.event_id)).toEqual([early]);
    // Bob joins later: the root is before his join, so it is not found for him.
    await join(bob, roomId);
    expect((await relations(bob, roomId, enc(root))).status).toBe(404);
  });
});
