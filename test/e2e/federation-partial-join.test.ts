// Partial-state ("faster") joins between two real Lattice servers on loopback: A holds an
// encrypted room without a name, B's user joins it (send_join with omit_members; A leaves the
// members out but the heroes), sees the room at once, and B fetches the members in the
// background. Then B has every member (/joined_members), its user's device-list changes name A's
// members, a non-lazy incremental /sync brings the member events B's client had not been given,
// and messages flow both ways. Every wait is bounded.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { startServer, freePort, type RunningServer } from "./harness";
import { api, ok, registerUser, type User } from "./client";

let a: RunningServer;
let b: RunningServer;


const enc = encodeURIComponent;

/** Register `username` on `server` (client.ts registerUser, with this file's password). */
const register = (server: RunningServer, username: string): Promise<User> => registerUser(server, username, "pw-fed-partial");

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  const [pa, pb] = [await freePort(), await freePort()];
  const vars = { FEDERATION_HTTP_LOOPBACK: "true", PARTIAL_STATE_JOINS: "on" };
  [a, b] = await Promise.all([startServer(vars, { port: pa }), startServer(vars, { port: pb })]);
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

describe("partial-state join between two Lattice servers", () => {
  it("B joins A's encrypted room at once and completes its members in the background", async () => {
    const alice = await register(a, "palice");
    const others = await Promise.all(["pa1", "pa2", "pa3"].map((n) => register(a, n)));
    const roomId = (
      await ok(alice, "POST", "/createRoom", {
        preset: "public_chat",
        room_version: "12",
        initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
      })
    ).room_id as string;
    for (const u of others) await ok(u, "POST", `/rooms/${enc(roomId)}/join`, {});
    const onA = [alice, ...others].map((u) => u.userId);

    const bob = await register(b, "pbob");
    const before = (await ok(bob, "GET", "/sync?timeout=0")).next_batch as string;
    await ok(bob, "POST", `/join/${enc(roomId)}?via=${enc(a.serverName)}`, {});
    // The room is there at once, named by its heroes (A sent their member events).
    const lazy = enc(JSON.stringify({ room: { state: { lazy_load_members: true } } }));
    const first = await ok(bob, "GET", `/sync?timeout=0&filter=${lazy}&since=${enc(before)}`);
    const room = first.rooms?.join?.[roomId];
    expect(room).toBeDefined();
    expect(room.summary["m.heroes"]?.length).toBeGreaterThan(0);
    // A non-lazy client's first sync after the join (while B is partial, or already complete:
    // the completion is quick here): the members it lacks come at the completion or with it.
    const plain = await ok(bob, "GET", `/sync?timeout=0&since=${enc(before)}`);
    const seenMembers = new Set<string>();
    const noteMembers = (r: any) => {
      for (const e of [...(r?.state?.events ?? []), ...(r?.timeline?.events ?? [])]) if (e.type === "m.room.member") seenMembers.add(e.state_key);
    };
    noteMembers(plain.rooms?.join?.[roomId]);
    let plainSince = plain.next_batch as string;

    // The members arrive in the background; /joined_members waits for them.
    const members = await until("B to have every member", async () => {
      const m = Object.keys((await ok(bob, "GET", `/rooms/${enc(roomId)}/joined_members`)).joined).sort();
      return m.length === onA.length + 1 ? m : undefined;
    });
    expect(members).toEqual([...onA, bob.userId].sort());
    // Encrypted room: bob's client hears that A's members share it now.
    const changed = await until("device-list changes", async () => {
      const now = (await ok(bob, "GET", "/sync?timeout=0")).next_batch as string;
      const c = (await ok(bob, "GET", `/keys/changes?from=${enc(before)}&to=${enc(now)}`)).changed as string[];
      return onA.every((u) => c.includes(u)) ? c : undefined;
    });
    expect(changed).toEqual(expect.arrayContaining(onA));

    // The non-lazy client has every member by the time alice's next message reaches it: from
    // its first sync if B was complete by then, else from the sync the completion woke (its
    // hub is told), at the latest with the room's next change.
    await ok(alice, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/p1`, { msgtype: "m.text", body: "after completion" });
    await until("alice's message on B", async () => {
      const s = await ok(bob, "GET", `/sync?timeout=0&since=${enc(plainSince)}`);
      plainSince = s.next_batch as string;
      const r = s.rooms?.join?.[roomId];
      noteMembers(r);
      return r?.timeline?.events?.some((e: any) => e.content?.body === "after completion");
    });
    expect([...seenMembers]).toEqual(expect.arrayContaining(onA));

    // And B's user is heard on A.
    await ok(bob, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/p2`, { msgtype: "m.text", body: "from B" });
    await until("bob's message on A", async () => {
      const r = await ok(alice, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=5`);
      return (r.chunk as any[]).some((e) => e.content?.body === "from B");
    });
  });
});
