// What a local send writes in the RoomDO (issue 21, send path): fewer pages per transaction — no
// second index on the related event ID, forward extremities in one b-tree.
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { RoomDO } from "../../durable-objects/room";
import { call, registerUser, sendText } from "./helpers";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
const roomObject = (roomId: string) => env.ROOMS.get(env.ROOMS.idFromName(roomId));

describe("the send path's writes", () => {
  it("events carry one index on the related event ID (events_relation), and relations are still found", async () => {
    const alice = await registerUser();
    const roomId = (await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "public_chat" } })).body.room_id as string;
    const root = await sendText(alice, roomId, "root");
    const reply = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/rel1`, {
      token: alice.accessToken,
      body: { msgtype: "m.text", body: "in thread", "m.relates_to": { rel_type: "m.thread", event_id: root } },
    });
    expect(reply.status).toBe(200);
    const indexes = await runInDurableObject(roomObject(roomId), async (_instance, state) =>
      state.storage.sql
        .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND name LIKE 'events_rel%' ORDER BY name")
        .toArray()
        .map((r) => r.name),
    );
    expect(indexes).toEqual(["events_relation"]);
    const rel = await call("GET", `/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(root)}`, { token: alice.accessToken });
    expect(rel.status).toBe(200);
    expect((rel.body.chunk as { event_id: string }[]).map((e) => e.event_id)).toEqual([reply.body.event_id]);
  });

  it("forward extremities are one b-tree (WITHOUT ROWID); a room from before is rebuilt at start with its rows", async () => {
    const alice = await registerUser();
    const roomId = (await call("POST", `${V3}/createRoom`, { token: alice.accessToken, body: { preset: "public_chat" } })).body.room_id as string;
    const last = await sendText(alice, roomId, "tip");
    const ddl = (sql: SqlStorage) => sql.exec<{ sql: string }>("SELECT sql FROM sqlite_master WHERE name = 'extremities'").one().sql;
    const out = await runInDurableObject(roomObject(roomId), async (_instance, state) => {
      const sql = state.storage.sql;
      const now = ddl(sql);
      // The table as rooms from before had it, and a schema version that makes the start run.
      sql.exec("CREATE TABLE old_x (event_id TEXT PRIMARY KEY); INSERT INTO old_x SELECT event_id FROM extremities; DROP TABLE extremities; ALTER TABLE old_x RENAME TO extremities;");
      sql.exec("UPDATE meta SET value = 'old' WHERE key = 'schema'");
      new RoomDO(state, env);
      return { now, after: ddl(sql), rows: sql.exec<{ event_id: string }>("SELECT event_id FROM extremities").toArray().map((r) => r.event_id) };
    });
    expect(out.now).toMatch(/WITHOUT ROWID/);
    expect(out.after).toMatch(/WITHOUT ROWID/);
    expect(out.rows).toEqual([last]);
  });
});
