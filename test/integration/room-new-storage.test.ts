// A new RoomDO's schema is created by its first statement, not at start: for createRoom that is
// inside the room's one transaction, so the tables and the room are one commit (before, the
// ~35 empty pages of the schema were a commit of their own: one more fsync per createRoom under
// `wrangler dev`, docs/benchmarks.md "createRoom").
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, createRoom, registerUser } from "./helpers";
import type { RoomStub } from "../../src/services/rooms";
import { executePlan, planRoom } from "../../src/api/client/rooms";
import { parseConfig } from "../../src/config";
import { SCHEMA_VERSION } from "../../durable-objects/room/schema";

const roomObject = (name: string) => env.ROOMS.get(env.ROOMS.idFromName(name));
const hasTable = (sql: SqlStorage, name: string) => sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name).toArray().length > 0;

describe("a new room's storage", () => {
  it("createRoom on a new object: the room and its schema are stored, and the creator syncs it", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, {});
    const stored = await runInDurableObject(roomObject(roomId), async (_inst, state) => state.storage.sql.exec<{ n: number }>("SELECT count(*) AS n FROM events WHERE stream IS NOT NULL").one().n);
    expect(stored).toBeGreaterThanOrEqual(5);
    const synced = await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: alice.accessToken });
    expect(synced.body.rooms?.join?.[roomId]).toBeDefined();
  });

  it("a new object writes nothing at start; a read creates the schema and answers", async () => {
    const stub = roomObject("!unknown-read:test.local");
    const before = await runInDurableObject(stub, async (_inst, state) => hasTable(state.storage.sql, "meta"));
    expect(before).toBe(false);
    expect(await (stub as unknown as RoomStub).getMembership("@nobody:test.local")).toBeNull();
    expect(await (stub as unknown as RoomStub).getForwardExtremities()).toEqual([]);
    const after = await runInDurableObject(stub, async (_inst, state) => hasTable(state.storage.sql, "events"));
    expect(after).toBe(true);
  });

  it("a new object's start runs no statement: a database without tables has no `meta` to read", async () => {
    // (Every object's SqlStorage shares its prototype: watched there, a new object's constructor
    // is seen too.)
    const proto = await runInDurableObject(roomObject("!warm-start-probe:test.local"), (_inst, state) => Object.getPrototypeOf(state.storage.sql) as { exec: SqlStorage["exec"] });
    const exec = proto.exec;
    const seen: string[] = [];
    proto.exec = function (this: SqlStorage, q: string, ...b: SqlStorageValue[]) {
      seen.push(q.replace(/\s+/g, " ").slice(0, 60));
      return exec.call(this, q, ...b);
    } as SqlStorage["exec"];
    try {
      await runInDurableObject(roomObject("!fresh-start:test.local"), () => undefined);
    } finally {
      proto.exec = exec;
    }
    expect(seen).toEqual([]);
    // The first statement still finds the schema.
    expect(await (roomObject("!fresh-start:test.local") as unknown as RoomStub).getForwardExtremities()).toEqual([]);
  });

  it("a first transaction that rolls back takes the schema with it; the next statement creates it again", async () => {
    const stub = roomObject("!rolled-back:test.local");
    await runInDurableObject(stub, async (inst, state) => {
      const writer = (inst as unknown as { writer: { transact(fn: (tx: { exec(q: string, ...b: unknown[]): unknown }) => void): void } }).writer;
      expect(() =>
        writer.transact((tx) => {
          tx.exec("INSERT INTO forgotten (user_id, member_event_id) VALUES ('@a:test.local', '$e')");
          throw new Error("stop");
        }),
      ).toThrow("stop");
      expect(hasTable(state.storage.sql, "forgotten")).toBe(true);
      expect(state.storage.sql.exec("SELECT count(*) AS n FROM forgotten").one().n).toBe(0);
    });
    expect(await (stub as unknown as RoomStub).getForwardExtremities()).toEqual([]);
  });
});

// A new room's redelivery alarm is set with its commit (durable-objects/room/fanout.ts): a stop
// after the commit and before every hub confirmed redelivers within 30 s, not only at the room's
// next start.
describe("createRoom and the redelivery alarm", () => {
  it("createRoom's commit leaves the alarm set, so a stop before every hub confirmed is redelivered by it", async () => {
    const alice = await registerUser();
    const roomId = await createRoom(alice, {});
    const alarm = await runInDurableObject(roomObject(roomId), async (_inst, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
  });

  it("with a local invitee: when createRoom answers, the invitee's hub holds the invite or the alarm is set", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { invite: [bob.userId] });
    const hubHasIt = await runInDurableObject(env.USERS.get(env.USERS.idFromName(bob.userId)), async (_i, state) =>
      state.storage.sql.exec("SELECT 1 FROM room_events WHERE room_id = ?", roomId).toArray().length > 0,
    );
    const alarm = await runInDurableObject(roomObject(roomId), async (_inst, state) => state.storage.getAlarm());
    expect(hubHasIt || alarm !== null).toBe(true);
    const synced = await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: bob.accessToken });
    expect(synced.body.rooms?.invite?.[roomId]).toBeDefined();
  });
});

// createRoom's alias and directory listing go in the D1 batch the RoomDO writes after storing the
// room (with its registry row and the creator's membership), not in D1 round trips of the
// Worker's after the room answered.
describe("createRoom's alias and directory rows", () => {
  /** env whose D1 counts the writes made through it. */
  function countingEnv() {
    const writes: string[] = [];
    const db = env.DB;
    const counted = (stmt: D1PreparedStatement, sql: string): D1PreparedStatement =>
      new Proxy(stmt, {
        get(s, p) {
          if (p === "bind") return (...b: unknown[]) => counted(s.bind(...b), sql);
          if (p === "run" || p === "all" || p === "first" || p === "raw") writes.push(sql);
          const v = Reflect.get(s, p, s);
          return typeof v === "function" ? v.bind(s) : v;
        },
      });
    const DB = new Proxy(db, {
      get(target, prop) {
        if (prop === "prepare") return (sql: string) => (/^\s*(INSERT|UPDATE|DELETE)/i.test(sql) ? counted(target.prepare(sql), sql) : target.prepare(sql));
        if (prop === "batch") return (stmts: D1PreparedStatement[]) => (writes.push(`batch of ${stmts.length}`), target.batch(stmts.map((x) => Reflect.get(x, "__target") ?? x)));
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    // defineProperty, not assignment: assigning through Object.create(env) reaches env's own
    // proxy and would replace the real binding for the rest of the file.
    return { env: Object.create(env, { DB: { value: DB } }) as typeof env, writes };
  }

  it("alias and public listing: written in the one D1 batch after the room, not one write each; both in place", async () => {
    const alice = await registerUser();
    const tag = `pub${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
    const config = parseConfig(env);
    const counted = countingEnv();
    const plan = await planRoom(counted.env, config, alice.userId, { room_alias_name: tag, visibility: "public", preset: "public_chat" });
    const roomId = await executePlan(counted.env, config, plan);
    // (Here the RoomDO may be given the same counting env: its one batch may show.)
    expect(counted.writes.filter((w) => !w.startsWith("batch"))).toEqual([]);
    expect(counted.writes.length).toBeLessThanOrEqual(1);
    const resolved = await call("GET", `/_matrix/client/v3/directory/room/${encodeURIComponent(`#${tag}:test.local`)}`, { token: alice.accessToken });
    expect(resolved.body.room_id).toBe(roomId);
    const listed = await env.DB.prepare("SELECT visibility FROM room_directory WHERE room_id = ?").bind(roomId).first<{ visibility: string }>();
    expect(listed?.visibility).toBe("public");
  });

  it("an alias taken between the check and the claim: M_ROOM_IN_USE, and the room is not listed", async () => {
    const alice = await registerUser();
    const tag = `race${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
    const config = parseConfig(env);
    const plan = await planRoom(env, config, alice.userId, { room_alias_name: tag, visibility: "public" });
    await env.DB.prepare("INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES (?, '!other:test.local', ?, 0)").bind(`#${tag}:test.local`, alice.userId).run();
    const before = (await env.DB.prepare("SELECT count(*) AS n FROM room_directory").first<{ n: number }>())!.n;
    await expect(executePlan(env, config, plan)).rejects.toMatchObject({ errcode: "M_ROOM_IN_USE" });
    const after = (await env.DB.prepare("SELECT count(*) AS n FROM room_directory").first<{ n: number }>())!.n;
    expect(after).toBe(before);
    const alias = await env.DB.prepare("SELECT room_id FROM room_aliases WHERE alias = ?").bind(`#${tag}:test.local`).first<{ room_id: string }>();
    expect(alias?.room_id).toBe("!other:test.local");
  });
});

// createRoom on a new object: every write (the schema's CREATE statements included) is in the
// room's one transaction. A lookup before it (checking the Worker-signed create event against
// the event table) created the schema outside it, and its DDL read back the `meta` it had just
// made three times.
describe("createRoom's writes on a new object", () => {
  it("nothing is written outside the room's one transaction", async () => {
    const alice = await registerUser();
    const config = parseConfig(env);
    // (The test helpers find their namespaces on first use: before ROOMS is wrapped below.)
    await runInDurableObject(roomObject("!warm-helpers:test.local"), () => undefined);
    const outside: string[] = [];
    const statements: string[] = [];
    let transactions = 0;
    const rooms = new Proxy(env.ROOMS, {
      get(ns, prop) {
        if (prop !== "get") {
          const v = Reflect.get(ns, prop, ns);
          return typeof v === "function" ? v.bind(ns) : v;
        }
        return (id: DurableObjectId, opts?: DurableObjectNamespaceGetDurableObjectOptions) => {
          const stub = ns.get(id, opts);
          return new Proxy(stub, {
            get(s, p) {
              const v = Reflect.get(s, p, s);
              if (p !== "createRoom") return typeof v === "function" ? v.bind(s) : v;
              return async (...args: unknown[]) => {
                // Log the new object's SQL while it creates the room.
                const stop = await runInDurableObject(stub, (inst, state) => {
                  const sql = state.storage.sql;
                  const exec = sql.exec;
                  let depth = 0;
                  Object.defineProperty(sql, "exec", {
                    configurable: true,
                    value: (q: string, ...b: SqlStorageValue[]) => {
                      if (depth === 0 && /^\s*(CREATE|INSERT|UPDATE|DELETE|DROP|ALTER)/i.test(q)) outside.push(q.replace(/\s+/g, " ").slice(0, 80));
                      statements.push(q.replace(/\s+/g, " ").trim().slice(0, 60));
                      return exec.call(sql, q, ...b);
                    },
                  });
                  // The write door (RoomWriter.transact): the room's only transactions.
                  const writer = (inst as unknown as { writer: { transact(fn: unknown): unknown } }).writer;
                  const transact = writer.transact;
                  writer.transact = (fn: unknown) => {
                    transactions++;
                    depth++;
                    try {
                      return transact.call(writer, fn);
                    } finally {
                      depth--;
                    }
                  };
                  return () => {
                    // (Put back as it was: `exec` may be the object's own property.)
                    Object.defineProperty(sql, "exec", { configurable: true, writable: true, value: exec });
                    writer.transact = transact;
                  };
                });
                try {
                  return await (s as unknown as { createRoom(...a: unknown[]): Promise<unknown> }).createRoom(...args);
                } finally {
                  await runInDurableObject(stub, () => stop());
                }
              };
            },
          });
        };
      },
    });
    // (defineProperty: an assignment would reach `env` itself through the prototype chain.)
    const logged = Object.defineProperty(Object.create(env), "ROOMS", { value: rooms }) as typeof env;
    const plan = await planRoom(logged, config, alice.userId, {});
    const roomId = await executePlan(logged, config, plan);
    expect(outside).toEqual([]);
    expect(transactions).toBe(1);
    // The room's statements for an empty-body createRoom (6 events): 82 before (the schema's 7,
    // 7 duplicate lookups, 7 `meta` rows one statement each, a read of the extremities and of
    // the create event after each event that could not change them), 53 after, 46 now: a room
    // being created has no state group to find the next ID after and no delayed-state watch to
    // look up (on a new object each statement is prepared for the first time), and the six
    // `current_groups` rows go in one statement at the transaction's end.
    expect(statements.filter((q) => q.includes("MAX(id)") || q.includes("delayed_state_watch")), statements.join("\n")).toEqual([]);
    expect(statements.filter((q) => q.includes("current_groups")).length, statements.join("\n")).toBe(1);
    expect(statements.length, statements.join("\n")).toBeLessThanOrEqual(46);
    // Each event's position still has its row (what /sync reads the state at a position from).
    const groups = await runInDurableObject(roomObject(roomId), async (_inst, state) =>
      state.storage.sql.exec<{ stream: number; grp: number; at: number }>("SELECT c.stream, c.grp, e.state_after AS at FROM current_groups c JOIN events e ON e.stream = c.stream ORDER BY c.stream").toArray(),
    );
    expect(groups.map((g) => g.stream)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const g of groups) expect(g.grp).toBe(g.at);
    const synced = await call("GET", "/_matrix/client/v3/sync?timeout=0", { token: alice.accessToken });
    expect(synced.body.rooms?.join?.[roomId]).toBeDefined();
  });
});

// A new object's schema is one statement list with its version: openSchema's reads of `meta`
// (three, the first failing) and its checks of older layouts are for rooms that have tables.
describe("a new object's schema", () => {
  it("is created by one statement, without reading meta or sqlite_master", async () => {
    const stub = roomObject("!schema-statements:test.local");
    const log: string[] = [];
    const stop = await runInDurableObject(stub, (_inst, state) => {
      const sql = state.storage.sql;
      const exec = sql.exec;
      Object.defineProperty(sql, "exec", {
        configurable: true,
        value: (q: string, ...b: SqlStorageValue[]) => {
          log.push(q.replace(/\s+/g, " ").trim().slice(0, 80));
          return exec.call(sql, q, ...b);
        },
      });
      return () => Object.defineProperty(sql, "exec", { configurable: true, writable: true, value: exec });
    });
    try {
      expect(await (stub as unknown as RoomStub).getForwardExtremities()).toEqual([]);
    } finally {
      await runInDurableObject(stub, () => stop());
    }
    const shown = log.join("\n");
    expect(log.filter((q) => q.includes("CREATE TABLE")).length, shown).toBe(1);
    expect(log.filter((q) => /FROM meta\b|sqlite_master/.test(q)), shown).toEqual([]);
    const version = await runInDurableObject(stub, async (_inst, state) => state.storage.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'schema'").one().value);
    expect(version).toBe(SCHEMA_VERSION);
  });
});
