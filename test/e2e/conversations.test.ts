// Issue 16 with matrix-js-sdk (threadSupport: true, as Element runs it): the SDK's thread model
// shows replies and counts, an edit is shown as edited, reactions count once per sender, search
// returns a message with its context, and the user directory finds a user by display name.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, type RunningServer } from "./harness";
import { registerSdkClient, startSynced, until } from "./client";

let server: RunningServer;
const clients: sdk.MatrixClient[] = [];
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  for (const c of clients) c.stopClient();
  await server?.stop();
});

async function newClient(name: string): Promise<sdk.MatrixClient> {
  const c = await registerSdkClient(server.baseUrl, `${name}${Date.now().toString(36)}`, "pw-e2e-conversations");
  clients.push(c);
  return c;
}
const sendRaw = (c: sdk.MatrixClient, roomId: string, type: string, content: Record<string, unknown>) =>
  (c as unknown as { sendEvent(r: string, t: string, body: unknown): Promise<{ event_id: string }> }).sendEvent(roomId, type, content);

describe("conversations through matrix-js-sdk", () => {
  it("threads, edits, reactions, search with context, user directory", async () => {
    const alice = await newClient("alice");
    const bob = await newClient("bob");
    await bob.setDisplayName("Bobby Tables");
    const { room_id: roomId } = await alice.createRoom({ name: "Conversations", preset: sdk.Preset.PrivateChat, invite: [bob.getUserId()!] });
    await bob.joinRoom(roomId);

    // A thread with three replies (two from Bob, one from Alice), sent before Alice's client starts.
    const root = (await alice.sendTextMessage(roomId, "thread root")).event_id;
    const reply = (body: string) => ({ msgtype: "m.text", body, "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } } });
    await sendRaw(bob, roomId, "m.room.message", reply("reply one"));
    await sendRaw(alice, roomId, "m.room.message", reply("reply two"));
    const last = (await sendRaw(bob, roomId, "m.room.message", reply("reply three"))).event_id;

    // An edit of Alice's message, and a message to search for around it.
    const before = (await alice.sendTextMessage(roomId, "context before")).event_id;
    const orig = (await alice.sendTextMessage(roomId, "the quarterly zeppelin report")).event_id;
    await sendRaw(alice, roomId, "m.room.message", { msgtype: "m.text", body: "* the quarterly zeppelin report (final)", "m.new_content": { msgtype: "m.text", body: "the quarterly zeppelin report (final)" }, "m.relates_to": { rel_type: "m.replace", event_id: orig } });
    const after = (await alice.sendTextMessage(roomId, "context after")).event_id;

    // Reactions: Bob twice with the same key (the second refused), Alice once.
    const react = (c: sdk.MatrixClient) => sendRaw(c, roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: orig, key: "👍" } });
    await react(bob);
    await expect(react(bob)).rejects.toMatchObject({ errcode: "M_DUPLICATE_ANNOTATION" });
    await react(alice);

    await startSynced(alice, { threadSupport: true, initialSyncLimit: 30 });
    const room = alice.getRoom(roomId)!;

    // Threads: the SDK builds the thread from the bundled m.thread aggregation and /relations.
    const thread = await until("the thread", async () => room.getThread(root) ?? undefined);
    await until("thread replies loaded", async () => thread.length === 3 && thread.replyToEvent?.getId() === last);
    expect(thread.length).toBe(3);
    expect(thread.replyToEvent?.getContent().body).toBe("reply three");
    const threads = await alice.createThreadListMessagesRequest(roomId, null, 10, sdk.Direction.Backward, sdk.ThreadFilterType.All);
    expect(threads.chunk.map((e) => e.event_id)).toEqual([root]);

    // The edit: shown with the new content, marked as replaced.
    const origEvent = await until("the edited event", async () => room.findEventById(orig));
    await until("edit applied", async () => origEvent.getContent().body === "the quarterly zeppelin report (final)");
    expect(origEvent.replacingEventId()).toBeTruthy();

    // Reactions, once per sender.
    const annotations = await until("reactions", async () => {
      const rel = room.relations.getChildEventsForEvent(orig, sdk.RelationType.Annotation, sdk.EventType.Reaction);
      const sorted = rel?.getSortedAnnotationsByKey();
      return sorted && sorted.length ? sorted : undefined;
    });
    expect(annotations.map(([key, set]) => [key, [...set].map((e) => e.getSender()).sort()])).toEqual([["👍", [alice.getUserId(), bob.getUserId()].sort()]]);

    // Search returns the message with its context.
    const results = await alice.searchRoomEvents({ term: "zeppelin" });
    expect(results.results.length).toBe(1);
    const hit = results.results[0];
    expect(hit.context.getEvent().getId()).toBe(orig);
    // The SDK asks for one event either side: the message before it, and its edit after it.
    const around = hit.context.getTimeline().map((e) => e.getId());
    expect(around.length).toBe(3);
    expect(around).toContain(before);
    expect(around).toContain(orig);
    void after;

    // The directory finds Bob by display name.
    const dir = await alice.searchUserDirectory({ term: "bobby" });
    expect(dir.results.map((r) => [r.user_id, r.display_name])).toEqual([[bob.getUserId(), "Bobby Tables"]]);
  });
});
