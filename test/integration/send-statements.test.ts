// What one send costs in SQL (issue 21, the send path): the statements the room's object and the
// sender's sync hub run for a message in a room of one member, once both are warm. Each
// statement is a cursor and a trip into SQLite inside the write (~15–20 µs of workerd CPU).
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { createRoom, registerUser, sendText } from "./helpers";

/** Log `state`'s SQL into `log` until the returned function is called. */
function logInto(state: DurableObjectState, log: string[]): () => void {
  const sql = state.storage.sql;
  const exec = sql.exec;
  Object.defineProperty(sql, "exec", {
    configurable: true,
    value: (query: string, ...bindings: SqlStorageValue[]) => {
      log.push(query.replace(/\s+/g, " ").slice(0, 120));
      return exec.call(sql, query, ...bindings);
    },
  });
  return () => delete (sql as { exec?: unknown }).exec;
}

describe("a send's statements", () => {
  it("a warm room of one member: 7 in the room (no partial-state read, no extremity or duplicate read), 6 in the sender's hub", async () => {
    const u = await registerUser();
    const roomId = await createRoom(u);
    for (let i = 0; i < 3; i++) await sendText(u, roomId, `warm ${i}`);
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId));
    const hub = env.USERS.get(env.USERS.idFromName(u.userId));
    const roomLog: string[] = [];
    const hubLog: string[] = [];
    const stopRoom = await runInDurableObject(room, (_i, state) => logInto(state, roomLog));
    const stopHub = await runInDurableObject(hub, (_i, state) => logInto(state, hubLog));
    try {
      await sendText(u, roomId, "counted");
    } finally {
      await runInDurableObject(room, () => stopRoom());
      await runInDurableObject(hub, () => stopHub());
    }
    const shown = `room:\n  ${roomLog.join("\n  ")}\nhub:\n  ${hubLog.join("\n  ")}`;
    // Whether the room is partial (a partial-state join) is remembered: only the writer changes it.
    expect(roomLog.filter((q) => q.includes("'partial'")), shown).toEqual([]);
    // The writer knows the room's one forward extremity after a local send: the next send
    // neither reads the extremities (to build on) nor their states (for the current state).
    expect(roomLog.filter((q) => q.startsWith("SELECT") && q.includes("extremities")), shown).toEqual([]);
    // An event the room has just built and signed is not looked up as a possible duplicate.
    expect(roomLog.filter((q) => q.startsWith("SELECT * FROM events WHERE event_id")), shown).toEqual([]);
    // ... and moves it in one statement.
    expect(roomLog.filter((q) => q.includes("extremities")), shown).toEqual(["UPDATE extremities SET event_id = ? WHERE event_id = ?"]);
    expect(roomLog.length, shown).toBeLessThanOrEqual(7);
    // The hub knows the room's row and what it recorded from the send before: no read.
    expect(hubLog.filter((q) => q.startsWith("SELECT")), shown).toEqual([]);
    expect(hubLog.length, shown).toBeLessThanOrEqual(6);
  });
});

describe("the writer's memory of the one forward extremity", () => {
  it("is forgotten by a write that moves extremities outside admitting an event (a partial state's completion rejecting the newest event)", async () => {
    const u = await registerUser();
    const roomId = await createRoom(u);
    const a = await sendText(u, roomId, "a");
    const b = await sendText(u, roomId, "b");
    const room = env.ROOMS.get(env.ROOMS.idFromName(roomId));
    // What the completion of a partial-state join does to an event the full state forbids:
    // rejected, out of the extremities, its prev event back in.
    type Internals = { writer: { partialWrite(fn: (w: { rejectAfterAll(id: string, reason: string): void }) => void): void }; events: { loadEvent(id: string): { ev: { prev_events: string[] } } | undefined } };
    await runInDurableObject(room, (instance) => (instance as unknown as Internals).writer.partialWrite((w) => w.rejectAfterAll(b, "test: forbidden by the full state")));
    const c = await sendText(u, roomId, "c");
    const prev = await runInDurableObject(room, (instance) => (instance as unknown as Internals).events.loadEvent(c)?.ev.prev_events);
    expect(prev).toEqual([a]);
  });
});
