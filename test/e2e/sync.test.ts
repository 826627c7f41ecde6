// Two matrix-js-sdk clients syncing against a real server (`npm start`): messages, typing,
// receipts and unread counts show up in each client's own room model.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, type RunningServer } from "./harness";
import { registerSdkClient, startSynced } from "./client";

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
  const username = `${name}${Date.now().toString(36)}`;
  const client = await registerSdkClient(server.baseUrl, username, "pw-123456");
  clients.push(client);
  return client;
}

function until<T>(what: string, check: () => T | undefined | false, timeoutMs = 15_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      const v = check();
      if (v) return resolve(v);
      if (Date.now() - started > timeoutMs) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

describe("matrix-js-sdk startClient()", () => {
  it("two clients see each other's messages, typing, receipts and unread counts", async () => {
    const alice = await newClient("alice");
    const bob = await newClient("bob");
    // Bob's client lazy-loads members, as Element does.
    await Promise.all([startSynced(alice), startSynced(bob, { lazyLoadMembers: true })]);

    const { room_id: roomId } = await alice.createRoom({ preset: sdk.Preset.PrivateChat, invite: [bob.getUserId()!], name: "e2e sync" });
    await until("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === sdk.KnownMembership.Invite);
    await bob.joinRoom(roomId);
    await until("alice sees bob joined", () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.membership === sdk.KnownMembership.Join);

    // A message from alice reaches bob's room model through his long-polling sync.
    const sentAt = Date.now();
    const { event_id: eventId } = await alice.sendTextMessage(roomId, "hello bob");
    const got = await until("bob receives the message", () => bob.getRoom(roomId)?.getLiveTimeline().getEvents().find((e) => e.getId() === eventId));
    expect(got.getContent().body).toBe("hello bob");
    expect(Date.now() - sentAt).toBeLessThan(5_000);
    await until("bob's unread count", () => bob.getRoom(roomId)!.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 1);

    // Typing.
    await alice.sendTyping(roomId, true, 10_000);
    await until("bob sees alice typing", () => bob.getRoom(roomId)?.getMember(alice.getUserId()!)?.typing === true);

    // Receipts: bob reads, alice sees it; bob's count clears.
    await bob.sendReadReceipt(got);
    await until("alice sees bob's receipt", () => alice.getRoom(roomId)?.getUsersReadUpTo(alice.getRoom(roomId)!.findEventById(eventId)!).includes(bob.getUserId()!));
    await until("bob's count cleared", () => bob.getRoom(roomId)!.getUnreadNotificationCount(sdk.NotificationCountType.Total) === 0);

    // And back the other way.
    const { event_id: reply } = await bob.sendTextMessage(roomId, "hi alice");
    await until("alice receives the reply", () => alice.getRoom(roomId)?.getLiveTimeline().getEvents().some((e) => e.getId() === reply));
  });
});
