// A minimal Worker + SQLite-backed Durable Object: the runtime's floor for createRoom
// (bench/do-create-floor.mjs). Not part of Lattice; run only by that bench under `wrangler dev`.
import { DurableObject } from "cloudflare:workers";

export class FloorDO extends DurableObject {
  /** One row in one transaction (the table made by the first statement, as a new RoomDO's
   *  schema is: durable-objects/room/schema.ts openRoomStorage). */
  write(value) {
    const sql = this.ctx.storage.sql;
    this.ctx.storage.transactionSync(() => {
      sql.exec("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)");
      sql.exec("INSERT INTO kv (v) VALUES (?)", value);
    });
    return 1;
  }
  noop() {
    return 1;
  }
  /** createRoom's I/O shape with none of its work: one row here, then (after this object's
   *  commit, as the output gate orders it) one D1 batch, then one row in another, existing
   *  object (the creator's sync hub). */
  async createShape(value) {
    this.write(value);
    await this.env.DB.batch([
      this.env.DB.prepare("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)"),
      this.env.DB.prepare("INSERT INTO kv (v) VALUES (?)").bind(value),
    ]);
    await this.env.FLOOR.getByName("hub").write(value);
    return 1;
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const mode = url.pathname.slice(1);
    const v = url.searchParams.get("v") ?? "x";
    switch (mode) {
      case "noop":
        return new Response("ok");
      case "existing-noop":
        return new Response(String(await env.FLOOR.getByName("existing").noop()));
      case "existing":
        return new Response(String(await env.FLOOR.getByName("existing").write(v)));
      case "new-noop":
        return new Response(String(await env.FLOOR.get(env.FLOOR.newUniqueId()).noop()));
      case "new":
        return new Response(String(await env.FLOOR.get(env.FLOOR.newUniqueId()).write(v)));
      case "create-shape": {
        // A D1 read first (Lattice's token lookup), then a brand-new object doing createShape.
        await env.DB.prepare("SELECT 1 AS one").first();
        return new Response(String(await env.FLOOR.get(env.FLOOR.newUniqueId()).createShape(v)));
      }
      case "d1": {
        // One batch (one round trip), as createRoom's D1 rows go.
        await env.DB.batch([
          env.DB.prepare("CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)"),
          env.DB.prepare("INSERT INTO kv (v) VALUES (?)").bind(v),
        ]);
        return new Response("1");
      }
      default:
        return new Response("unknown mode", { status: 404 });
    }
  },
};
