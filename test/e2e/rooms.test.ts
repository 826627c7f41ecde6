// Two matrix-js-sdk clients against `npm start`: create, invite, join, chat, redact, kick, ban,
// paginate back, and check each user sees the right history. (Uses the SDK's request methods;
// /sync arrives with the sync work.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, type RunningServer } from "./harness";
import { registerSdkClient } from "./client";

let server: RunningServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

async function newClient(name: string): Promise<sdk.MatrixClient> {
  return registerSdkClient(server.baseUrl, `${name}${Date.now().toString(36)}`, "pw-e2e-rooms");
}

type Ev = { type: string; sender: string; event_id: string; content: Record<string, any>; unsigned?: Record<string, any>; state_key?: string };

async function history(client: sdk.MatrixClient, roomId: string): Promise<Ev[]> {
  // Page backwards 5 at a time until the start of the room.
  const out: Ev[] = [];
  let from: string | null = null;
  for (let i = 0; i < 50; i++) {
    const page = await client.createMessagesRequest(roomId, from, 5, sdk.Direction.Backward);
    out.push(...(page.chunk as Ev[]));
    if (!page.end) break;
    from = page.end;
  }
  return out.reverse();
}
const texts = (evs: Ev[]) => evs.filter((e) => e.type === "m.room.message").map((e) => e.content.body ?? "<redacted>");

describe("two matrix-js-sdk clients", () => {
  it("create, invite, join, chat, redact, kick, ban, paginate", async () => {
    const alice = await newClient("alice");
    const bob = await newClient("bob");
    await alice.setDisplayName("Alice");

    const { room_id: roomId } = await alice.createRoom({ name: "E2E room", preset: sdk.Preset.PrivateChat, visibility: sdk.Visibility.Private });
    await alice.sendTextMessage(roomId, "before bob");
    await alice.invite(roomId, bob.getUserId()!);
    await bob.joinRoom(roomId);
    expect((await bob.getJoinedRooms()).joined_rooms).toContain(roomId);

    const sent: string[] = [];
    for (let i = 0; i < 12; i++) {
      const who = i % 2 ? bob : alice;
      sent.push((await who.sendTextMessage(roomId, `msg ${i}`)).event_id);
    }
    // Redact one of bob's messages (alice has the power).
    await alice.redactEvent(roomId, sent[3], undefined, { reason: "oops" });

    const seenByBob = await history(bob, roomId);
    // Shared history: bob sees the message from before he joined.
    expect(texts(seenByBob)).toEqual(["before bob", ...Array.from({ length: 12 }, (_, i) => (i === 3 ? "<redacted>" : `msg ${i}`))]);
    const redacted = seenByBob.find((e) => e.event_id === sent[3])!;
    expect(redacted.content).toEqual({});
    expect(redacted.unsigned?.redacted_because?.content?.reason).toBe("oops");
    const aliceJoin = seenByBob.find((e) => e.type === "m.room.member" && e.state_key === alice.getUserId());
    expect(aliceJoin?.content.displayname).toBe("Alice");

    const members = await alice.getJoinedRoomMembers(roomId);
    expect(Object.keys(members.joined).sort()).toEqual([alice.getUserId(), bob.getUserId()].sort());

    // Kick bob; he can no longer send, and sees nothing sent after he left.
    await alice.kick(roomId, bob.getUserId()!, "bye");
    await alice.sendTextMessage(roomId, "after kick");
    await expect(bob.sendTextMessage(roomId, "let me back")).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    expect(texts(await history(bob, roomId))).not.toContain("after kick");
    expect(texts(await history(alice, roomId))).toContain("after kick");

    // Ban: bob cannot be re-invited; after unban he can be.
    await alice.ban(roomId, bob.getUserId()!, "spam");
    await expect(alice.invite(roomId, bob.getUserId()!)).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await alice.unban(roomId, bob.getUserId()!);
    await alice.invite(roomId, bob.getUserId()!);
    await bob.joinRoom(roomId);
    await bob.sendTextMessage(roomId, "back again");
    expect(texts(await history(alice, roomId)).at(-1)).toBe("back again");

    // Event and state lookups through the SDK.
    const ev = await bob.fetchRoomEvent(roomId, sent[0]);
    expect(ev.content?.body).toBe("msg 0");
    const name = await bob.getStateEvent(roomId, "m.room.name", "");
    expect(name.name).toBe("E2E room");
    await bob.leave(roomId);
    expect((await bob.getJoinedRooms()).joined_rooms).not.toContain(roomId);
    await bob.forget(roomId);
  });
});
