// Threads as the ignoring user sees them (module "Ignoring Users" with "Threading"): an ignored
// user's replies count neither in bundled thread summaries nor in the thread list, and the
// thread list agrees with the thread notification counts and threaded receipts.
import { describe, it, expect } from "vitest";
import { call, createRoom, joinRoom, registerUser, syncOk, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const V1 = "/_matrix/client/v1";
const enc = encodeURIComponent;
let txn = 0;

async function send(u: TestUser, roomId: string, body: string, threadRoot?: string): Promise<string> {
  const content: Record<string, unknown> = { msgtype: "m.text", body };
  if (threadRoot) content["m.relates_to"] = { rel_type: "m.thread", event_id: threadRoot };
  const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/ti${++txn}`, { token: u.accessToken, body: content });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.event_id;
}

const threadOf = (ev: any) => ev?.unsigned?.["m.relations"]?.["m.thread"];

describe("threads and ignored users", () => {
  it("leaves ignored users' replies out of thread summaries and the thread list; counts agree with threaded receipts", async () => {
    const [alice, bob, mallory] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = await createRoom(alice);
    await joinRoom(bob, roomId);
    await joinRoom(mallory, roomId);
    const ign = await call("PUT", `${V3}/user/${enc(bob.userId)}/account_data/m.ignored_user_list`, { token: bob.accessToken, body: { ignored_users: { [mallory.userId]: {} } } });
    expect(ign.status).toBe(200);
    const t0 = (await syncOk(bob)).next_batch;

    const root = await send(alice, roomId, "root");
    const a1 = await send(alice, roomId, "alice in thread", root);
    const m1 = await send(mallory, roomId, "mallory in thread", root);
    // A thread only mallory replied in, and a thread mallory started.
    const root2 = await send(alice, roomId, "root 2");
    await send(mallory, roomId, "only mallory", root2);
    const root3 = await send(mallory, roomId, "mallory's root");
    await send(alice, roomId, "alice under mallory", root3);

    // Alice sees both replies; bob only alice's.
    const forAlice = await call("GET", `${V1}/rooms/${enc(roomId)}/threads`, { token: alice.accessToken });
    const aliceRoot = forAlice.body.chunk.find((e: any) => e.event_id === root);
    expect(threadOf(aliceRoot)).toMatchObject({ count: 2, latest_event: { event_id: m1 } });
    const forBob = await call("GET", `${V1}/rooms/${enc(roomId)}/threads`, { token: bob.accessToken });
    expect(forBob.status).toBe(200);
    expect(forBob.body.chunk.map((e: any) => e.event_id)).toEqual([root]);
    expect(threadOf(forBob.body.chunk[0])).toMatchObject({ count: 1, latest_event: { event_id: a1 }, current_user_participated: false });

    // The same summary bundled in /messages, /context and /relations' parent... and /sync.
    const msgs = await call("GET", `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=20`, { token: bob.accessToken });
    expect(threadOf(msgs.body.chunk.find((e: any) => e.event_id === root))).toMatchObject({ count: 1, latest_event: { event_id: a1 } });
    expect(threadOf(msgs.body.chunk.find((e: any) => e.event_id === root2))).toBeUndefined();
    const ctx = await call("GET", `${V3}/rooms/${enc(roomId)}/context/${enc(root)}?limit=0`, { token: bob.accessToken });
    expect(threadOf(ctx.body.event)).toMatchObject({ count: 1 });
    const one = await call("GET", `${V3}/rooms/${enc(roomId)}/event/${enc(root)}`, { token: bob.accessToken });
    expect(threadOf(one.body)).toMatchObject({ count: 1, latest_event: { event_id: a1 } });
    const old = await call("GET", `${V3}/events/${enc(root)}`, { token: bob.accessToken });
    expect(threadOf(old.body)).toMatchObject({ count: 1 });
    const filter = JSON.stringify({ room: { timeline: { limit: 30, unread_thread_notifications: true } } });
    const s1 = await syncOk(bob, { since: t0, filter });
    const room = s1.rooms.join[roomId];
    expect(threadOf(room.timeline.events.find((e: any) => e.event_id === root))).toMatchObject({ count: 1, latest_event: { event_id: a1 } });
    // Notification counts agree: one unread reply in the thread (mallory's does not count),
    // alice's reply under mallory's root counts in that thread.
    expect(room.unread_thread_notifications[root]).toEqual({ notification_count: 1, highlight_count: 0 });
    expect(room.unread_thread_notifications[root2]).toBeUndefined();

    // A threaded receipt on the thread's latest event (as the thread list shows it) clears it.
    const rr = await call("POST", `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(a1)}`, { token: bob.accessToken, body: { thread_id: root } });
    expect(rr.status).toBe(200);
    const s2 = await syncOk(bob, { since: s1.next_batch, filter });
    expect(s2.rooms.join[roomId].unread_thread_notifications[root]).toBeUndefined();

    // Unignoring brings the replies back.
    await call("PUT", `${V3}/user/${enc(bob.userId)}/account_data/m.ignored_user_list`, { token: bob.accessToken, body: { ignored_users: {} } });
    const after = await call("GET", `${V1}/rooms/${enc(roomId)}/threads`, { token: bob.accessToken });
    expect(after.body.chunk.map((e: any) => e.event_id).sort()).toEqual([root, root2, root3].sort());
  });
});
