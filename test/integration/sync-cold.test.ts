// A cold RoomDO (a new instance over the room's storage, as after a server start) answering
// /sync (issue 21 "Cold start"): what it reads must follow the answer, not the room's size, and
// its start must not re-create a current schema. "Cold" here is a second RoomDO object built
// over the same storage inside the room's Durable Object: nothing in memory, the same rows.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { RoomDO } from "../../durable-objects/room";
import { SCHEMA_VERSION } from "../../durable-objects/room/schema";
import type { RoomSyncQuery, RoomSyncView } from "../../durable-objects/room/sync-view";
import type { RoomResult } from "../../src/rpc/room";
import { call, clientOk, registerUser, remoteJoinWave, seedRemoteKey, sendText, type TestUser } from "./helpers";

const enc = encodeURIComponent;
const roomObject = (roomId: string) => env.ROOMS.get(env.ROOMS.idFromName(roomId));

/** What the code of one RoomDO instance did with its SQL: statements, rows handed to it (what it
 *  loaded into memory) and rows SQLite visited, and the CREATE statements among them. */
interface SqlUse {
  statements: number;
  creates: number;
  rowsLoaded: number;
  /** Each statement's SQL (shortened) and the rows it handed over. */
  log: { sql: string; rows: () => number }[];
  cursors: SqlStorageCursor<Record<string, SqlStorageValue>>[];
}

/** Runs `fn` with `state`'s SQL counted into `use` (its `exec` replaced meanwhile: the
 *  Durable Object base class takes only the real state object). */
async function counted<T>(state: DurableObjectState, use: SqlUse, fn: () => T | Promise<T>): Promise<T> {
  const sql = state.storage.sql;
  const exec = sql.exec;
  const countRows = <R extends Record<string, SqlStorageValue>>(c: SqlStorageCursor<R>): SqlStorageCursor<R> =>
    new Proxy(c, {
      get(t, p) {
        if (p === "toArray") return () => {
          const rows = t.toArray();
          use.rowsLoaded += rows.length;
          return rows;
        };
        if (p === "one") return () => (use.rowsLoaded++, t.one());
        if (p === "next") return () => {
          const r = t.next();
          if (!r.done) use.rowsLoaded++;
          return r;
        };
        if (p === Symbol.iterator) return function* () {
          for (const r of t) {
            use.rowsLoaded++;
            yield r;
          }
        };
        const v = Reflect.get(t, p, t);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
  Object.defineProperty(sql, "exec", {
    configurable: true,
    value: (query: string, ...bindings: SqlStorageValue[]) => {
      use.statements++;
      use.creates += (query.match(/\bCREATE\b/g) ?? []).length;
      const c = exec.call(sql, query, ...bindings);
      use.cursors.push(c);
      const before = use.rowsLoaded;
      const entry = { sql: `${query.replace(/\s+/g, " ").slice(0, 90)} ${JSON.stringify(bindings).slice(0, 60)}`, rows: () => 0 };
      use.log.push(entry);
      const counted = countRows(c);
      entry.rows = () => use.rowsLoaded - before;
      return counted;
    },
  });
  if (state.storage.sql.exec === exec) throw new Error("could not count this storage's SQL");
  try {
    return await fn();
  } finally {
    delete (sql as { exec?: unknown }).exec;
  }
}

const newUse = (): SqlUse => ({ statements: 0, creates: 0, rowsLoaded: 0, log: [], cursors: [] });
const rowsRead = (u: SqlUse) => u.cursors.reduce((n, c) => n + c.rowsRead, 0);

type SyncRpc = { syncRoom(req: { userId: string }, q: RoomSyncQuery): Promise<RoomResult<RoomSyncView>> };

/** A room of `owner` with `members` remote members, joined one after another, and three
 *  messages; its ID. (Concurrent joins would fork the room, and each message merging branches
 *  gives the current state a new group: the timeline would not start in the current state.) */
async function roomWith(owner: TestUser, remote: string, members: number, wave: number): Promise<string> {
  const key = await seedRemoteKey(remote);
  const roomId = (await clientOk(owner.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
  for (let i = 0; i < members; i++) await remoteJoinWave(remote, key, roomId, wave * 100 + i, 1);
  await sendText(owner, roomId, "one");
  await sendText(owner, roomId, "two");
  await sendText(owner, roomId, "three");
  return roomId;
}

/** The room's /sync view for `userId` from a cold instance, with its SQL use, and the same view
 *  from the running (warm) instance. */
async function coldAndWarm(roomId: string, userId: string, q: Omit<RoomSyncQuery, "upTo">) {
  const stub = roomObject(roomId);
  const upTo = (await (stub as unknown as { getSummary(): Promise<{ stream: number }> }).getSummary()).stream;
  const query: RoomSyncQuery = { ...q, upTo };
  return runInDurableObject(stub, async (instance, state) => {
    const use = newUse();
    const coldView = await counted(state, use, () => new RoomDO(state, env).syncRoom({ userId }, query));
    const warmView = await (instance as unknown as SyncRpc).syncRoom({ userId }, query);
    return { use, rowsRead: rowsRead(use), coldView, warmView };
  });
}

/** A view without what differs between two calls or orders (ages, the order of state events). */
function comparable(r: RoomResult<RoomSyncView>): unknown {
  // (Ages at every depth: redacted_because and bundled events carry their own.)
  const strip = (e: Record<string, unknown>): Record<string, unknown> => ({ ...(JSON.parse(JSON.stringify(e, (k, v) => (k === "age" ? undefined : v))) as object), unsigned: { ...(JSON.parse(JSON.stringify(e.unsigned ?? {}, (k, v) => (k === "age" ? undefined : v))) as object), age: undefined } });
  const byKey = (es: Record<string, unknown>[] | undefined) => es?.map(strip).sort((x, y) => `${x.type}|${x.state_key}`.localeCompare(`${y.type}|${y.state_key}`));
  if (!r.ok) return r;
  const v = r.value;
  return { ...v, timeline: { ...v.timeline, events: v.timeline.events.map(strip) }, state: byKey(v.state?.events), state_after: byKey(v.state_after?.events) };
}

const lazy: Omit<RoomSyncQuery, "upTo"> = { since: null, limit: 1, lazyLoadMembers: true, fullState: false, useStateAfter: false };

describe("cold RoomDO: /sync", () => {
  it("a lazy-loading initial sync loads rows in proportion to the answer, not to the member list; the answer is the warm one", async () => {
    const alice = await registerUser();
    const small = await roomWith(alice, "cold-small.test", 4, 1);
    const large = await roomWith(alice, "cold-large.test", 60, 2);
    const a = await coldAndWarm(small, alice.userId, lazy);
    const b = await coldAndWarm(large, alice.userId, lazy);
    for (const r of [a, b]) {
      expect(r.coldView.ok).toBe(true);
      expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
    }
    if (!b.coldView.ok) throw new Error("not ok");
    expect(b.coldView.value.summary["m.joined_member_count"]).toBe(61);
    const members = (b.coldView.value.state?.events ?? []).filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    // Lazy loading: the sender's (here the requester's own) member event and the heroes'.
    expect(members.sort()).toEqual([alice.userId, ...(b.coldView.value.summary["m.heroes"] ?? [])].sort());
    expect(members.length).toBe(6);
    console.log(`cold syncRoom, lazy members: 5 members ${a.use.statements} statements, ${a.use.rowsLoaded} rows loaded, ${a.rowsRead} read; 61 members ${b.use.statements} statements, ${b.use.rowsLoaded} rows loaded, ${b.rowsRead} read`);
    // 56 more members may cost a few rows (heroes: at most six each way), not one per member.
    expect(b.use.rowsLoaded - a.use.rowsLoaded, b.use.log.map((e) => e.sql).join("\n")).toBeLessThan(10);
  });

  it("a named room's cold lazy-loading answer: the start and the answer's fixed part take few statements, the same for 5 or 61 members", async () => {
    const alice = await registerUser();
    const rooms: string[] = [];
    for (const [remote, members, wave] of [["cold-named-s.test", 4, 7], ["cold-named-l.test", 60, 8]] as const) {
      const key = await seedRemoteKey(remote);
      const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", name: "Named" })).room_id as string;
      for (let i = 0; i < members; i++) await remoteJoinWave(remote, key, roomId, wave * 100 + i, 1);
      await sendText(alice, roomId, "one");
      rooms.push(roomId);
    }
    const runs = [];
    for (const roomId of rooms) {
      const r = await coldAndWarm(roomId, alice.userId, lazy);
      expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
      runs.push(r);
    }
    console.log(`cold syncRoom, named room: ${runs.map((r) => r.use.statements).join(" / ")} statements\n${runs[1].use.log.map((e) => e.sql).join("\n")}`);
    // meta at start, with which rarely filled tables hold rows (RoomFacts); the requester's
    // memberships with the current group; the timeline's rows; the non-member state with the members
    // asked for, and their events' rows in the same statement. Was 24: CREATE meta, the partial marks three
    // times, current_groups twice, the requester's memberships three times, the forgotten mark,
    // erasures, redactions twice and relations of empty tables, the timeline's IDs apart from its
    // rows, the name and alias one by one, the members apart from the rest, the counts in two;
    // 8 with the counts in one (they are now kept in `meta`, read at start), 7 with the state's
    // events read apart from its entries, 6 with the facts apart from `meta`, 5 with the
    // memberships apart from the current group.
    for (const r of runs) expect(r.use.statements, r.use.log.map((e) => e.sql).join("\n")).toBeLessThanOrEqual(4);
  });

  it("a timeline that changed the state: the state before it is read key by key too", async () => {
    const alice = await registerUser();
    const small = await roomWith(alice, "cold-small2.test", 4, 4);
    const large = await roomWith(alice, "cold-large2.test", 60, 5);
    for (const roomId of [small, large]) {
      await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { topic: "changed" });
      await sendText(alice, roomId, "after the topic");
    }
    const q = { ...lazy, limit: 3 };
    const a = await coldAndWarm(small, alice.userId, q);
    const b = await coldAndWarm(large, alice.userId, q);
    for (const r of [a, b]) expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
    console.log(`cold syncRoom, state in the timeline: 5 members ${a.use.rowsLoaded} rows loaded, 61 members ${b.use.rowsLoaded}`);
    expect(b.use.rowsLoaded - a.use.rowsLoaded, b.use.log.map((e) => e.sql).join("\n")).toBeLessThan(10);
  });

  it("without lazy loading, and with a timeline that changes the state, the cold answer is the warm one", async () => {
    const alice = await registerUser();
    const roomId = await roomWith(alice, "cold-full.test", 8, 3);
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { topic: "cold" });
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.name`, { name: "Cold" });
    await sendText(alice, roomId, "three");
    for (const q of [
      { ...lazy, lazyLoadMembers: false },
      { ...lazy, limit: 3 },
      { ...lazy, limit: 3, useStateAfter: true },
      { ...lazy, since: 3 },
    ]) {
      const r = await coldAndWarm(roomId, alice.userId, q);
      expect(r.coldView.ok).toBe(true);
      expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
    }
  });

  it("statements follow the answer, not the timeline's length: events, redactions, previous state and relations are read a page at a time", async () => {
    const alice = await registerUser();
    const roomId = await roomWith(alice, "cold-timeline.test", 4, 6);
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      if (i % 6 === 5) await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/state/m.room.topic`, { topic: `topic ${i}` });
      else ids.push(await sendText(alice, roomId, `message ${i}`));
    }
    // A redacted message, an edit and a thread reply in the timeline.
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/redact/${enc(ids[17])}/r1`, { reason: "gone" });
    const edit = { msgtype: "m.text", body: "* edited", "m.new_content": { msgtype: "m.text", body: "edited" }, "m.relates_to": { rel_type: "m.replace", event_id: ids[16] } };
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/e1`, edit);
    const reply = { msgtype: "m.text", body: "in thread", "m.relates_to": { rel_type: "m.thread", event_id: ids[15] } };
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/t1`, reply);
    const short = await coldAndWarm(roomId, alice.userId, { ...lazy, limit: 2 });
    const long = await coldAndWarm(roomId, alice.userId, { ...lazy, limit: 20 });
    for (const r of [short, long]) {
      expect(r.coldView.ok).toBe(true);
      expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
    }
    if (!long.coldView.ok) throw new Error("not ok");
    expect(long.coldView.value.timeline.events.length).toBe(20);
    console.log(`cold syncRoom, timeline of 2: ${short.use.statements} statements; of 20: ${long.use.statements} statements`);
    // 18 more events (4 of them state events with a previous state, a redaction, an edit and a
    // thread) cost a few statements, not a few per event.
    expect(long.use.statements - short.use.statements, long.use.log.map((e) => e.sql).join("\n")).toBeLessThan(8);
  });

  it("heroes of a cold room: members who left when nobody else is joined or invited", async () => {
    const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    for (const u of [bob, carol]) await clientOk(u.accessToken, "POST", `/rooms/${enc(roomId)}/join`, {});
    for (const u of [bob, carol]) await clientOk(u.accessToken, "POST", `/rooms/${enc(roomId)}/leave`, {});
    await sendText(alice, roomId, "alone");
    const r = await coldAndWarm(roomId, alice.userId, lazy);
    expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
    expect(r.coldView.ok && r.coldView.value.summary).toEqual({ "m.heroes": [bob.userId, carol.userId].sort(), "m.joined_member_count": 1, "m.invited_member_count": 0 });
  });
});

describe("RoomFacts: empty tables skipped until a write", () => {
  it("a room read while it had no redactions, relations, erasures or forgotten marks shows each once written", async () => {
    const [alice, bob] = await Promise.all([registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(roomId)}/join`, {});
    const m1 = await sendText(alice, roomId, "to redact");
    const m2 = await sendText(alice, roomId, "to edit");
    const messages = async () => (await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=10`)).chunk as { event_id: string; content: Record<string, unknown>; unsigned?: Record<string, unknown> }[];
    // Read with every fact false (the instance remembers that).
    const before = await messages();
    expect(before.find((e) => e.event_id === m1)?.content.body).toBe("to redact");
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/redact/${enc(m1)}/facts1`, {});
    const edit = { msgtype: "m.text", body: "* edited", "m.new_content": { msgtype: "m.text", body: "edited" }, "m.relates_to": { rel_type: "m.replace", event_id: m2 } };
    await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/facts2`, edit);
    const after = await messages();
    expect(after.find((e) => e.event_id === m1)?.content).toEqual({});
    expect((after.find((e) => e.event_id === m2)?.unsigned?.["m.relations"] as Record<string, unknown> | undefined)?.["m.replace"]).toBeDefined();
    // Forgetting: bob leaves and forgets; he reads the room as a stranger would (403).
    await clientOk(bob.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=1`);
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(roomId)}/leave`, {});
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(roomId)}/forget`, {});
    const res = await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=1`, { token: bob.accessToken });
    expect(res.status).toBe(403);
  });
});

describe("RoomDO schema version", () => {
  it("a room at the current schema starts without running CREATE statements", async () => {
    const alice = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    const creates = await runInDurableObject(roomObject(roomId), async (_instance, state) => {
      const use = newUse();
      await counted(state, use, () => new RoomDO(state, env));
      return use.creates;
    });
    // (CREATE TABLE IF NOT EXISTS meta, read before the version it holds)
    expect(creates).toBeLessThanOrEqual(1);
  });

  it("a room from before schema versions, or at an older one, gets the current tables and indexes at its next start", async () => {
    const alice = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    await sendText(alice, roomId, "before");
    for (const old of [null, "0ld5c4e4"]) {
      const after = await runInDurableObject(roomObject(roomId), async (_instance, state) => {
        const sql = state.storage.sql;
        // What a room created before the index, the table and the version row looks like.
        sql.exec("DROP INDEX memberships_user");
        sql.exec("DROP TABLE delayed_state_watch");
        if (old === null) sql.exec("DELETE FROM meta WHERE key = 'schema'");
        else sql.exec("UPDATE meta SET value = ? WHERE key = 'schema'", old);
        new RoomDO(state, env);
        const names = sql.exec<{ name: string }>("SELECT name FROM sqlite_master").toArray().map((r) => r.name);
        const version = sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'schema'").one().value;
        return { names, version };
      });
      expect(after.names).toEqual(expect.arrayContaining(["memberships_user", "delayed_state_watch", "events", "current_state"]));
      expect(after.version).toBe(SCHEMA_VERSION);
    }
    // The room still works after the migration.
    await sendText(alice, roomId, "after");
  });
});

describe("member counts kept with the current state", () => {
  /** The room's stored counts (meta `member_counts`) and the count over its current state. */
  const countsOf = (roomId: string) =>
    runInDurableObject(roomObject(roomId), async (_instance, state) => {
      const sql = state.storage.sql;
      const stored = sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'member_counts'").toArray()[0]?.value ?? null;
      const rows = sql
        .exec<{ ms: string | null }>(
          "SELECT COALESCE(m.membership, json_extract(e.pdu, '$.content.membership')) AS ms FROM current_state c LEFT JOIN memberships m ON m.event_id = c.event_id LEFT JOIN events e ON e.event_id = c.event_id WHERE c.type = 'm.room.member'",
        )
        .toArray();
      const counted = `${rows.filter((r) => r.ms === "join").length} ${rows.filter((r) => r.ms === "invite").length}`;
      return { stored, counted };
    });

  it("the writer keeps them equal to counting the current state: invites, joins (concurrent ones resolved), leaves, kicks, bans", async () => {
    const [alice, bob, carol, dan] = await Promise.all([registerUser(), registerUser(), registerUser(), registerUser()]);
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat", name: "Counted" })).room_id as string;
    const check = async (expected: string) => {
      const c = await countsOf(roomId);
      expect(c.counted).toBe(expected);
      expect(c.stored).toBe(c.counted);
    };
    await check("1 0");
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: bob.userId });
    await check("1 1");
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(roomId)}/join`, {});
    await check("2 0");
    const remote = "cold-counts.test";
    await remoteJoinWave(remote, await seedRemoteKey(remote), roomId, 9, 4);
    await check("6 0");
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: carol.userId });
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: dan.userId });
    await check("6 2");
    await clientOk(carol.accessToken, "POST", `/rooms/${enc(roomId)}/leave`, {});
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/kick`, { user_id: bob.userId });
    await clientOk(alice.accessToken, "POST", `/rooms/${enc(roomId)}/ban`, { user_id: dan.userId });
    await check("5 0");
    await sendText(alice, roomId, "no member change");
    await check("5 0");
    // A cold instance answers the summary from them, without counting the members.
    const r = await coldAndWarm(roomId, alice.userId, lazy);
    expect(comparable(r.coldView)).toEqual(comparable(r.warmView));
    if (!r.coldView.ok) throw new Error("not ok");
    expect(r.coldView.value.summary).toEqual({ "m.joined_member_count": 5, "m.invited_member_count": 0 });
    expect(r.use.log.map((e) => e.sql).join("\n")).not.toMatch(/count\(\*\)/);
  });

  it("a room from before them gets them at its next start", async () => {
    const alice = await registerUser();
    const roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    const remote = "cold-counts-old.test";
    await remoteJoinWave(remote, await seedRemoteKey(remote), roomId, 10, 3);
    await runInDurableObject(roomObject(roomId), async (_instance, state) => {
      const sql = state.storage.sql;
      sql.exec("DELETE FROM meta WHERE key = 'member_counts'");
      sql.exec("UPDATE meta SET value = '0ld5c4e4' WHERE key = 'schema'");
      new RoomDO(state, env);
    });
    expect(await countsOf(roomId)).toEqual({ stored: "4 0", counted: "4 0" });
  });
});
