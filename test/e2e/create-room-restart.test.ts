// A room createRoom answered for survives a restart right after the answer: the creator's /sync
// shows it and its alias resolves (the room's commit, its D1 batch and the creator's hub are all
// done before the answer; durable-objects/room/fanout.ts armIfStillDelivering).
import { describe, expect, it } from "vitest";
import path from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { startServer, freePort } from "./harness";
import { api, ok, registerUser } from "./client";

describe("createRoom and a restart", () => {
  it("a restart right after createRoom answered: the room in the creator's /sync, its alias and listing kept", async () => {
    const stateDir = mkdtempSync(path.join(tmpdir(), "lattice-create-restart-"));
    const port = await freePort();
    try {
      const first = await startServer({}, { stateDir, port });
      const user = await registerUser(first, "creator", "pw");
      const created: string[] = [];
      for (const body of [{}, { preset: "public_chat", visibility: "public", room_alias_name: "kept" }]) {
        created.push((await ok<{ room_id: string }>(user, "POST", "/createRoom", body)).room_id);
      }
      await first.stop();

      const second = await startServer({}, { stateDir, port });
      try {
        const again = { ...user, server: second };
        const sync = await ok<{ rooms?: { join?: Record<string, unknown> } }>(again, "GET", "/sync?timeout=0");
        for (const roomId of created) expect(sync.rooms?.join?.[roomId]).toBeDefined();
        const alias = await api<{ room_id?: string }>(again, "GET", `/directory/room/${encodeURIComponent(`#kept:${second.serverName}`)}`);
        expect(alias.body.room_id).toBe(created[1]);
        const listed = await ok<{ chunk: { room_id: string }[] }>(again, "GET", "/publicRooms");
        expect(listed.chunk.map((r) => r.room_id)).toContain(created[1]);
      } finally {
        await second.stop();
      }
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  }, 180_000);
});
