// Guest access and room previews with matrix-js-sdk against `npm start` (GUEST_ACCESS=on): a
// guest registers, peeks into a world_readable room (peekInRoom: /rooms/{roomId}/initialSync,
// then GET /events?room_id= long-polls), receives a live message, joins (guest_access can_join)
// and sends.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, type RunningServer } from "./harness";
import { registerSdkClient } from "./client";

let server: RunningServer;
beforeAll(async () => {
  server = await startServer({ GUEST_ACCESS: "on" });
});
afterAll(async () => {
  await server?.stop();
});

const bodies = (room: sdk.Room) =>
  room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === "m.room.message")
    .map((e) => e.getContent().body);

describe("a matrix-js-sdk guest", () => {
  it("peeks into a world_readable room, sees live messages, joins and sends", async () => {
    const alice = await registerSdkClient(server.baseUrl, `alice${Date.now().toString(36)}`, "pw-e2e-guests");
    const { room_id: roomId } = await alice.createRoom({
      preset: sdk.Preset.PublicChat,
      initial_state: [
        { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "world_readable" } },
        { type: "m.room.guest_access", state_key: "", content: { guest_access: "can_join" } },
      ],
    });
    await alice.sendTextMessage(roomId, "welcome, visitors");

    const reg = await sdk.createClient({ baseUrl: server.baseUrl }).registerGuest({ body: {} });
    const guest = sdk.createClient({ baseUrl: server.baseUrl, accessToken: reg.access_token, userId: reg.user_id, deviceId: reg.device_id });
    guest.setGuest(true);
    try {
      const room = await guest.peekInRoom(roomId);
      expect(bodies(room)).toEqual(["welcome, visitors"]);
      expect(room.currentState.getJoinedMemberCount()).toBe(1);

      // The peek's /events long-poll delivers what Alice sends next.
      const live = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no live event within 20 s")), 20_000);
        room.on(sdk.RoomEvent.Timeline, (ev) => {
          if (ev.getContent().body === "still there?") {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      await new Promise((r) => setTimeout(r, 500)); // let the first poll start
      await alice.sendTextMessage(roomId, "still there?");
      await live;
      guest.stopPeeking();

      await guest.joinRoom(roomId);
      const sent = await guest.sendTextMessage(roomId, "hello from a guest");
      const seen = await alice.fetchRoomEvent(roomId, sent.event_id);
      expect(seen.sender).toBe(reg.user_id);
      const member = await alice.getStateEvent(roomId, "m.room.member", reg.user_id);
      expect(member).toMatchObject({ membership: "join", kind: "guest" });
    } finally {
      guest.stopPeeking();
      guest.stopClient();
    }
  });
});
