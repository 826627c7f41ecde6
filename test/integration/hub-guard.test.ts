// Read-after-write in the sync hub (durable-objects/user.ts): a hub told to defer a room notice
// (roomEvents' `defer`) holds it before the send's answer, and every RPC method that runs after
// that must see it. The class guards its whole prototype in one place; this test walks the
// prototype as the runtime does (Object.getOwnPropertyNames), calls each method while a notice
// is held back, and lists those whose body began before it was applied: only the notice takers
// and the alarm may.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import type { RoomEventNotice } from "../../src/rpc/user";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function notice(roomId: string, stream: number, sender: string): RoomEventNotice {
  return {
    roomId,
    stream,
    event: { event_id: `$${stream}-${roomId}`, room_id: roomId, type: "m.room.message", sender, content: { msgtype: "m.text", body: `${stream}` }, origin_server_ts: 1000 + stream },
    memberCount: 2,
    senderPowerLevel: 0,
  };
}

type Method = (...args: unknown[]) => Promise<unknown>;

describe("sync hub: one guard for every reader", () => {
  it("every method on UserDO's prototype waits for the notices deferred when it was called, except the notice takers and the alarm", async () => {
    const tag = crypto.randomUUID().slice(0, 8);
    const [alice, bob] = ["alice", "bob"].map((n) => `@${n}-${tag}:test.local`);
    const roomId = `!guard-${tag}:test.local`;
    const stub = env.USERS.get(env.USERS.idFromName(bob));
    const unguarded = await runInDurableObject(stub, async (inst) => {
      const hub = inst as unknown as Record<string, Method> & { fanIn: { roomEvents: Method } };
      await hub.roomEvents(bob, [notice(roomId, 1, alice)]); // the hub knows its user
      const proto = Object.getPrototypeOf(inst) as object;
      const names = Object.getOwnPropertyNames(proto).filter((n) => n !== "constructor" && typeof Object.getOwnPropertyDescriptor(proto, n)?.value === "function");
      const applyNotices = hub.fanIn.roomEvents.bind(hub.fanIn);
      const didNotWait: string[] = [];
      let stream = 2;
      for (const name of names) {
        // The deferred notice is held until `release`: a guarded method cannot begin before.
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        let first = true;
        hub.fanIn.roomEvents = async (...a: unknown[]) => {
          if (first) {
            first = false;
            await held;
          }
          return applyNotices(...a);
        };
        const deferred = hub.roomEvents(bob, [notice(roomId, stream++, alice)], true);
        for (let i = 0; i < 50; i++) await Promise.resolve();
        // The method runs with a spy for `this`: any use of the hub other than the guard's look
        // at `deferred` means its body began. Any arguments will do (most calls fail on them).
        let began = false;
        const spy = new Proxy(inst, {
          get(target, prop) {
            if (prop !== "deferred") began = true;
            return Reflect.get(target, prop, target);
          },
        });
        const method = Object.getOwnPropertyDescriptor(proto, name)!.value as Method;
        const call = Promise.resolve()
          .then(() => method.call(spy))
          .catch(() => {});
        for (let i = 0; i < 50; i++) await Promise.resolve();
        await sleep(5);
        if (began) didNotWait.push(name);
        release();
        await deferred;
        await Promise.race([call, sleep(2000)]);
        delete (hub.fanIn as { roomEvents?: Method }).roomEvents;
      }
      return { names: names.length, didNotWait: didNotWait.sort() };
    });
    expect(unguarded.names).toBeGreaterThan(30);
    expect(unguarded.didNotWait).toEqual(["alarm", "roomEvent", "roomEvents"]);
  });
});
