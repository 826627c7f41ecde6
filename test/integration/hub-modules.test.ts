// The hub's modules (durable-objects/user/) run alone behind their narrow access interfaces:
// here on a fresh hub's storage (its tables), with positions, wakes and tokens supplied by the
// test instead of the UserDO.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { E2eeInbox } from "../../durable-objects/user/e2ee-inbox";
import { Presence } from "../../durable-objects/user/presence";

/** A fresh hub's storage, and a fake of what every module gets from the hub. */
function withHub<T>(fn: (a: { sql: SqlStorage; transaction<R>(f: () => R): R; next(): number; wake(): void; wakes: () => number; pos: () => number }) => T): Promise<T> {
  const stub = env.USERS.get(env.USERS.idFromName(`@modules-${crypto.randomUUID()}:test.local`));
  return runInDurableObject(stub, async (_instance, state) => {
    let pos = 0;
    let wakes = 0;
    return fn({
      sql: state.storage.sql,
      transaction: (f) => state.storage.transactionSync(f),
      next: () => ++pos,
      wake: () => void wakes++,
      wakes: () => wakes,
      pos: () => pos,
    });
  });
}

describe("hub modules alone", () => {
  it("E2eeInbox: to-device batches stop at 100 with the last position, acknowledgement deletes, /keys/changes below the floor is refused", async () => {
    await withHub((a) => {
      let floor = 0;
      const inbox = new E2eeInbox({
        ...a,
        env: env,
        parseToken: (t) => ({ pos: Number(t) }),
        logFloor: () => floor,
      });
      const messages = Array.from({ length: 120 }, (_, i) => ({ sender: "@s:test.local", type: "m.test", content: { i } }));
      inbox.pushToDevice(["D1"], messages);
      expect(a.wakes()).toBe(1);
      const first = inbox.toDeviceAfter("D1", 0);
      expect(first.messages).toHaveLength(100);
      expect(first.upTo).toBe(100);
      expect(inbox.toDeviceAfter("D2", 0)).toEqual({ messages: [], upTo: undefined });
      inbox.acknowledge("D1", first.upTo!);
      const rest = inbox.toDeviceAfter("D1", 0);
      expect(rest.messages.map((m) => m.content.i)).toEqual(Array.from({ length: 20 }, (_, i) => 100 + i));
      expect(rest.upTo).toBeUndefined();

      inbox.deviceListChanged("@x:test.local");
      const at = a.pos();
      inbox.deviceListLeft("@y:test.local");
      expect(inbox.deviceListsSince(at - 1, a.pos())).toEqual({ changed: ["@x:test.local"], left: ["@y:test.local"] });
      expect(inbox.deviceListChanges(String(at), String(a.pos()))).toEqual({ ok: true, value: { changed: [], left: ["@y:test.local"] } });
      floor = a.pos() + 10;
      const old = inbox.deviceListChanges(String(at), String(a.pos()));
      expect(old.ok).toBe(false);
    });
  });

  it("Presence: the same state again only refreshes, a change takes a position and wakes; pings at most every 4 minutes", async () => {
    await withHub((a) => {
      const p = new Presence(a);
      expect(p.setMine("@me:test.local", "online")).toBe(true);
      const afterFirst = a.pos();
      expect(p.setMine("@me:test.local", "online")).toBe(false);
      expect(a.pos()).toBe(afterFirst);
      p.setOther({ userId: "@o:test.local", presence: "unavailable", statusMsg: "away", lastActiveTs: Date.now() });
      expect(a.wakes()).toBe(2);
      expect(p.since(afterFirst, a.pos()).map((e) => [e.sender, (e.content as { presence: string }).presence])).toEqual([["@o:test.local", "unavailable"]]);
      const t = Date.now();
      expect(p.pingDue(false, t)).toBe(true);
      expect(p.pingDue(false, t + 60_000)).toBe(false);
      expect(p.pingDue(true, t + 60_000)).toBe(true);
      expect(p.pingDue(false, t + 60_000 + 4 * 60_000)).toBe(true);
    });
  });
});
