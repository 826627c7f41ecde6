// The hub's half of an initial /sync (durable-objects/user/sync.ts): every room's receipts,
// unread counts and room account data are read together (three statements, not four per room);
// each room must still get exactly its own.
import { describe, expect, it } from "vitest";
import { clientOk, createRoom, joinRoom, registerUser, sendText, syncOk } from "./helpers";

const enc = encodeURIComponent;

describe("initial /sync: per-room hub data read for all rooms at once", () => {
  it("each room gets its own unread counts (threaded too), receipts and account data", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const a = await createRoom(bob);
    const b = await createRoom(bob);
    const c = await createRoom(bob);
    for (const r of [a, b, c]) await joinRoom(alice, r);
    const a1 = await sendText(bob, a, "a1");
    const a2 = await sendText(bob, a, "a2");
    await sendText(bob, a, "a3");
    await sendText(bob, b, "b1");
    const b2 = await sendText(bob, b, "b2");
    // A thread reply in c, read in the main timeline but not in the thread.
    const root = await sendText(bob, c, "root");
    await clientOk(bob.accessToken, "PUT", `/rooms/${enc(c)}/send/m.room.message/t1`, { msgtype: "m.text", body: "reply", "m.relates_to": { rel_type: "m.thread", event_id: root } });
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(c)}/receipt/m.read/${enc(root)}`, { thread_id: "main" });
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(a)}/receipt/m.read/${enc(a2)}`, {});
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(a)}/receipt/m.read/${enc(a1)}`, {});
    await clientOk(alice.accessToken, "PUT", `/user/${enc(alice.userId)}/rooms/${enc(b)}/account_data/org.example.tag`, { in: "b" });
    await clientOk(alice.accessToken, "PUT", `/user/${enc(alice.userId)}/rooms/${enc(c)}/account_data/org.example.tag`, { in: "c" });
    const filter = JSON.stringify({ room: { timeline: { limit: 1, unread_thread_notifications: true } } });
    const body = await syncOk(alice, { filter });
    const join = body.rooms.join;
    expect(join[a].unread_notifications.notification_count).toBe(1);
    expect(join[b].unread_notifications.notification_count).toBe(2);
    expect(join[c].unread_notifications.notification_count).toBe(0);
    expect(Object.values(join[c].unread_thread_notifications ?? {}).map((t) => (t as { notification_count: number }).notification_count)).toEqual([1]);
    const receipts = (r: string) => (join[r].ephemeral.events as { type: string; content: Record<string, { "m.read"?: Record<string, unknown> }> }[]).find((e) => e.type === "m.receipt")?.content;
    expect(Object.keys(receipts(a)?.[a2]?.["m.read"] ?? {})).toEqual([alice.userId]);
    expect(Object.keys(receipts(a)?.[a1]?.["m.read"] ?? {})).toEqual([bob.userId]);
    expect(receipts(b)).toBeUndefined();
    expect(Object.keys(receipts(c) ?? {})).toEqual([root]);
    const data = (r: string) => join[r].account_data.events as { type: string; content: unknown }[];
    expect(data(a)).toEqual([]);
    expect(data(b)).toEqual([{ type: "org.example.tag", content: { in: "b" } }]);
    expect(data(c)).toEqual([{ type: "org.example.tag", content: { in: "c" } }]);
    void b2;
  });
});
