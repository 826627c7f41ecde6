// Sync hub log compaction benchmark (issue 14: "show in a benchmark that a user with 1,000,000
// hub entries syncs as fast as a new one"). Runs inside workerd (the `workers` vitest project
// with BENCH=1; start it with `node bench/hub-compaction.mjs [sizes...]`), real Worker, D1 and
// Durable Objects, /sync through the Worker's HTTP entry (SELF.fetch).
//
// How the entries are made: a million positions through HTTP would take hours on this machine
// (every request is a Worker→DO round trip with an on-disk commit), so the hub's own entry
// methods are called inside the hub Durable Object (runInDurableObject, test builds only): the
// same code the Worker's RPCs run for typing (start/stop), other members' read receipts, room
// account data and device-list changes — each call takes one position and writes its log rows
// exactly as in production, automatic compaction attempts included. Nothing is inserted into
// the tables by hand. The rooms, the members and 20 messages per room are real (client API).
//
// Per size N: the fresh user (a new hub, same rooms) and the filled user (its hub took N
// positions) are both measured: initial /sync, incremental /sync with nothing new, incremental
// /sync after one new message, and for the filled user /sync from a token issued before the N
// entries. First with the log uncompacted (the filled user's device synced just before the
// entries, so its mark holds compaction back, as it would for a day), then after
// compactLog({ now: a day later }) — what the hub does by itself once the mark expires.
import { describe, expect, inject, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, registerUser, type Json, type TestUser } from "../test/integration/helpers";
import type { UserDO } from "../durable-objects/user";

declare module "vitest" {
  export interface ProvidedContext {
    hubBenchSizes: string;
  }
}

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
const DAY = 24 * 3600_000;
const FILTER = enc(JSON.stringify({ room: { timeline: { limit: 10 } } }));
let txn = 0;

function hubStub(u: TestUser) {
  return env.USERS.get(env.USERS.idFromName(u.userId));
}
async function ok(method: string, path: string, token: string, body?: unknown): Promise<Json> {
  const r = await call(method, path, { token, body });
  expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBe(200);
  return r.body;
}
async function timedSync(u: TestUser, since?: string): Promise<{ ms: number; body: Json }> {
  const t = performance.now();
  const body = await ok("GET", `${V3}/sync?filter=${FILTER}&timeout=0${since ? `&since=${enc(since)}` : ""}`, u.accessToken);
  return { ms: performance.now() - t, body };
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))];
const fmt = (xs: number[]) => `${median(xs).toFixed(1)} / ${p90(xs).toFixed(1)}`;

async function logSize(u: TestUser) {
  return runInDurableObject(hubStub(u), async (_i, state) => {
    const sql = state.storage.sql;
    const n = (q: string) => sql.exec<{ n: number }>(q).one().n;
    return {
      roomLog: n("SELECT COUNT(*) AS n FROM room_log"),
      deviceListLog: n("SELECT COUNT(*) AS n FROM device_list_log"),
      floor: Number(sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'log_floor'").toArray()[0]?.value ?? 0),
      mib: sql.databaseSize / 2 ** 20,
    };
  });
}

/** N positions in `u`'s hub through its entry methods, in chunks (each chunk one DO call). */
async function fill(u: TestUser, rooms: string[], eventId: string, n: number): Promise<void> {
  const CHUNK = 20_000;
  let done = 0;
  for (let c = 0; done < n && c < 10_000; c++) {
    const target = Math.min(n, done + CHUNK);
    done = await runInDurableObject(hubStub(u), async (instance) => {
      const hub = instance as unknown as UserDO;
      const start = Number(/^s(\d+)_/.exec(await hub.currentToken())![1]);
      let i = done;
      while (i < target) {
        const room = rooms[i % rooms.length];
        const k = i % 10;
        if (k < 4) {
          // A member starts and stops typing: two positions.
          const typer = `@typer${i % 50}:test.local`;
          await hub.typing(u.userId, room, typer, 30_000);
          await hub.typing(u.userId, room, typer, 0);
          i += 2;
        } else if (k < 7) {
          await hub.receipt(u.userId, { roomId: room, userId: `@reader${i % 50}:test.local`, type: "m.read", eventId, threadId: "", ts: Date.now() });
          i++;
        } else if (k < 9) {
          await hub.setAccountData(u.userId, room, `org.lattice.bench.${i % 20}`, { i });
          i++;
        } else {
          await hub.deviceListChanged(u.userId, `@devices${i % 100}:test.local`);
          i++;
        }
      }
      const end = Number(/^s(\d+)_/.exec(await hub.currentToken())![1]);
      return done + (end - start);
    });
  }
}

interface Row {
  what: string;
  fresh: number[];
  filled: number[];
}

async function measure(fresh: TestUser, filled: TestUser, owner: TestUser, rooms: string[], oldTokens: Map<TestUser, string>, runs: number): Promise<Row[]> {
  const rows: Row[] = [
    { what: "initial /sync", fresh: [], filled: [] },
    { what: "incremental /sync, nothing new", fresh: [], filled: [] },
    { what: "incremental /sync, one new message", fresh: [], filled: [] },
    { what: "/sync from a token issued before the entries", fresh: [], filled: [] },
  ];
  const tokens = new Map<TestUser, string>();
  for (let r = 0; r < runs; r++) {
    for (const u of [fresh, filled]) {
      const col = u === fresh ? "fresh" : "filled";
      const init = await timedSync(u);
      expect(Object.keys(init.body.rooms.join).sort()).toEqual([...rooms].sort());
      rows[0][col].push(init.ms);
      tokens.set(u, init.body.next_batch);
      const idle = await timedSync(u, init.body.next_batch);
      rows[1][col].push(idle.ms);
      tokens.set(u, idle.body.next_batch);
    }
    const sent = await ok("PUT", `${V3}/rooms/${enc(rooms[0])}/send/m.room.message/hb${++txn}`, owner.accessToken, { msgtype: "m.text", body: `m${txn}` });
    for (const u of [fresh, filled]) {
      const col = u === fresh ? "fresh" : "filled";
      // Fan-out to hubs is asynchronous: wait until the hub has it (bounded), then time one sync.
      let s!: { ms: number; body: Json };
      for (let i = 0; i < 100; i++) {
        s = await timedSync(u, tokens.get(u));
        if (s.body.rooms?.join?.[rooms[0]]?.timeline.events.some((e: Json) => e.event_id === sent.event_id)) break;
        await new Promise((res) => setTimeout(res, 20));
      }
      expect(s.body.rooms.join[rooms[0]].timeline.events.at(-1).event_id).toBe(sent.event_id);
      rows[2][col].push(s.ms);
    }
    for (const u of [fresh, filled]) rows[3][u === fresh ? "fresh" : "filled"].push((await timedSync(u, oldTokens.get(u))).ms);
  }
  return rows;
}

function table(title: string, rows: Row[]): string {
  // Runs alternate between the users, so the per-run ratio is the least disturbed by the load.
  const lines = [title, "| What (median / p90 ms) | fresh user | filled user | filled ÷ fresh, median of runs |", "| --- | --- | --- | --- |"];
  for (const r of rows) lines.push(`| ${r.what} | ${fmt(r.fresh)} | ${fmt(r.filled)} | ${median(r.filled.map((x, i) => x / Math.max(1, r.fresh[i]))).toFixed(2)} |`);
  return lines.join("\n");
}

// "N" or "N:runs" (runs per cell, default 15).
const sizes = (inject("hubBenchSizes") ?? "10000")
  .split(/[ ,]+/)
  .filter(Boolean)
  .map((x) => x.split(":").map(Number));

/** /sync of `u` (timeout 0) back to back while `work` runs: how long the hub kept it waiting. */
async function syncsDuring(u: TestUser, since: string, work: Promise<unknown>): Promise<number[]> {
  let done = false;
  void work.finally(() => (done = true));
  const ms: number[] = [];
  for (let i = 0; !done && i < 100_000; i++) ms.push((await timedSync(u, since)).ms);
  await work;
  return ms;
}

describe("sync hub with many log entries", () => {
  for (const [size, runsWanted] of sizes) {
    it(`${size} entries: /sync as fast as a fresh user's`, async () => {
      const [owner, fresh, filled] = [await registerUser(), await registerUser(), await registerUser()];
      const rooms: string[] = [];
      let lastEvent = "";
      for (let r = 0; r < 3; r++) {
        const { room_id } = await ok("POST", `${V3}/createRoom`, owner.accessToken, { preset: "public_chat" });
        rooms.push(room_id);
        for (const u of [fresh, filled]) await ok("POST", `${V3}/rooms/${enc(room_id)}/join`, u.accessToken, {});
        for (let i = 0; i < 20; i++) lastEvent = (await ok("PUT", `${V3}/rooms/${enc(room_id)}/send/m.room.message/hb${++txn}`, owner.accessToken, { msgtype: "m.text", body: `m${i}` })).event_id;
      }
      // Both users caught up once (the filled user's token from here on is "old").
      const oldTokens = new Map<TestUser, string>();
      for (const u of [fresh, filled]) oldTokens.set(u, (await timedSync(u)).body.next_batch);

      const t0 = performance.now();
      await fill(filled, rooms, lastEvent, size);
      const fillSecs = (performance.now() - t0) / 1000;
      const before = await logSize(filled);
      const runs = runsWanted || 15;
      const uncompacted = await measure(fresh, filled, owner, rooms, oldTokens, runs);

      // Compaction, with the filled user's /sync called back to back meanwhile (each through the
      // Worker to the hub): the longest of them is how long the hub stalled.
      const recent = (await timedSync(filled)).body.next_batch;
      const tc = performance.now();
      const compaction = hubStub(filled).compactLog({ now: Date.now() + DAY + 60_000 }) as Promise<{ floor: number; removed: number; slices?: number }>;
      const during = await syncsDuring(filled, recent, compaction);
      const c = await compaction;
      const compactMs = performance.now() - tc;
      const after = await logSize(filled);
      const compacted = await measure(fresh, filled, owner, rooms, oldTokens, runs);
      const freshSize = await logSize(fresh);

      console.log(
        [
          `## ${size.toLocaleString("en")} hub entries`,
          `fill: ${size.toLocaleString("en")} positions in ${fillSecs.toFixed(1)} s (${(size / fillSecs).toFixed(0)}/s)`,
          `log before compaction: room_log ${before.roomLog} rows, device_list_log ${before.deviceListLog}, hub database ${before.mib.toFixed(1)} MiB`,
          `compactLog: removed ${c.removed} rows in ${compactMs.toFixed(0)} ms, ${c.slices ?? 1} transaction(s); ${during.length} /sync calls meanwhile: median ${during.length ? median(during).toFixed(0) : "-"} ms, longest ${during.length ? Math.max(...during).toFixed(0) : "-"} ms; after: room_log ${after.roomLog} rows, device_list_log ${after.deviceListLog}, floor ${after.floor}, database ${after.mib.toFixed(1)} MiB (fresh user's hub: room_log ${freshSize.roomLog} rows, ${freshSize.mib.toFixed(2)} MiB)`,
          table(`uncompacted (${runs} runs each)`, uncompacted),
          table(`compacted (${runs} runs each)`, compacted),
        ].join("\n"),
      );
      expect(after.roomLog).toBeLessThan(before.roomLog);
    }, 3 * 3600_000);
  }
});
