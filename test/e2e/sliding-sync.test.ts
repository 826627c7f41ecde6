// matrix-js-sdk's SlidingSync (the MSC4186 client Element Web uses) against a real Lattice: list
// windows, a new message moving its room to the top, an invite, and an encrypted conversation
// through the e2ee and to_device extensions with Rust crypto.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { SlidingSync, SlidingSyncEvent, SlidingSyncState, type MSC3575SlidingSyncResponse } from "matrix-js-sdk/lib/sliding-sync";
import { startServer, type RunningServer } from "./harness";
import { decrypted, rustCryptoClient, sdkRegister, startSynced, until as pollUntil } from "./client";

let server: RunningServer;
const clients: sdk.MatrixClient[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  for (const c of clients) c.stopClient();
  await server?.stop();
});

const PASSWORD = "sliding-sync-pass";
const REQUIRED_STATE: [string, string][] = [
  ["m.room.create", ""],
  ["m.room.name", ""],
  ["m.room.encryption", ""],
  ["m.room.member", "$LAZY"],
  ["m.room.member", "$ME"],
];

interface SlidingClient {
  client: sdk.MatrixClient;
  ss: SlidingSync;
  /** Every complete response, in order. */
  responses: MSC3575SlidingSyncResponse[];
}

/** Register, log in with Rust crypto, and sync with SlidingSync: one list "all", window [0, 1]. */
async function slidingClient(username: string): Promise<SlidingClient> {
  const reg = await sdkRegister(server.baseUrl, username, PASSWORD);
  const client = await rustCryptoClient(server.baseUrl, reg);
  const lists = new Map([["all", { ranges: [[0, 1]], required_state: REQUIRED_STATE, timeline_limit: 10 }]]);
  const ss = new SlidingSync(server.baseUrl, lists, { timeline_limit: 20, required_state: REQUIRED_STATE }, client, 5000);
  const responses: MSC3575SlidingSyncResponse[] = [];
  ss.on(SlidingSyncEvent.Lifecycle, (state, resp) => {
    if (state === SlidingSyncState.Complete && resp) responses.push(resp);
  });
  await startSynced(client, { slidingSync: ss });
  clients.push(client);
  return { client, ss, responses };
}

/** client.ts `until`, with 30 s for what crypto set-up may take on a busy machine. */
const until = <T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>) => pollUntil(what, fn, 30_000);

describe("matrix-js-sdk SlidingSync", () => {
  it("shows list windows, moves a room with a new message to the top, shows an invite, and decrypts an encrypted conversation", async () => {
    const stamp = Date.now().toString(36);
    const alice = await slidingClient(`ssalice${stamp}`);
    const bob = await slidingClient(`ssbob${stamp}`);

    // Three rooms of alice's; the window [0, 1] holds the two newest.
    const rooms: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { room_id } = await alice.client.createRoom({ preset: sdk.Preset.PrivateChat, name: `ss room ${i}` });
      await alice.client.sendTextMessage(room_id, `hello ${i}`);
      rooms.push(room_id);
    }
    await until("alice's list to count 3 rooms", () => alice.responses.some((r) => r.lists?.all?.count === 3));
    await until("alice to hold the two newest rooms", () => alice.client.getRoom(rooms[2]) && alice.client.getRoom(rooms[1]));
    expect(alice.client.getRoom(rooms[2])!.name).toBe("ss room 2");

    // A message in the oldest room brings it into the window, with the highest bump stamp.
    await alice.client.sendTextMessage(rooms[0], "bump");
    const r0 = await until("room 0 to enter the window", () => alice.client.getRoom(rooms[0]));
    // (The timeline holds the local echo at once; the bump stamp comes from the server.)
    const top = () => {
      const stamps = rooms.map((id) => alice.client.getRoom(id)?.getBumpStamp() ?? 0);
      return stamps[0] > Math.max(stamps[1], stamps[2]);
    };
    await until("room 0 to have the highest bump stamp", top);
    expect(r0.getLiveTimeline().getEvents().some((e) => e.getContent().body === "bump" && !e.status)).toBe(true);

    // An encrypted room with an invite for bob.
    const { room_id: secret } = await alice.client.createRoom({
      preset: sdk.Preset.PrivateChat,
      name: "secret",
      invite: [bob.client.getUserId()!],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await until("bob to see the invite", () => bob.client.getRoom(secret)?.getMyMembership() === "invite");
    await bob.client.joinRoom(secret);
    await until("alice to see bob joined", () => alice.client.getRoom(secret)?.getMember(bob.client.getUserId()!)?.membership === "join");
    await until("bob's room to be encrypted", () => bob.client.getRoom(secret)?.hasEncryptionStateEvent());

    await alice.client.sendTextMessage(secret, "sliding secret");
    await decrypted(bob.client, secret, "sliding secret");
    await bob.client.sendTextMessage(secret, "and back");
    await decrypted(alice.client, secret, "and back");
  });
});
