// Synapse-compatible room admin API: list, details, members, state, messages, block, delete.
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { SERVER, call, clientOk, registerUser, uniqueName, type TestUser } from "./helpers";
import { A, enc, registerAdmin } from "./admin-helpers";

async function namedRoom(owner: TestUser, name: string, extra: Record<string, unknown> = {}): Promise<string> {
  return (await clientOk(owner.accessToken, "POST", "/createRoom", { name, preset: "public_chat", ...extra })).room_id;
}

async function waitDeleted(token: string, deleteId: string): Promise<Record<string, any>> {
  for (let i = 0; i < 100; i++) {
    const r = await call("GET", `${A}/v2/rooms/delete_status/${deleteId}`, { token });
    if (r.body.status === "complete" || r.body.status === "failed") return r.body;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error("deletion did not finish");
}

describe("admin API: rooms", () => {
  it("non-admins get 403 M_FORBIDDEN on every room endpoint", async () => {
    const u = await registerUser();
    const roomId = await namedRoom(u, "mine");
    const id = enc(roomId);
    const endpoints: [string, string, unknown?][] = [
      ["GET", "/v1/rooms"],
      ["GET", `/v1/rooms/${id}`],
      ["GET", `/v1/rooms/${id}/members`],
      ["GET", `/v1/rooms/${id}/state`],
      ["GET", `/v1/rooms/${id}/messages`],
      ["GET", `/v1/rooms/${id}/block`],
      ["PUT", `/v1/rooms/${id}/block`, { block: true }],
      ["DELETE", `/v1/rooms/${id}`, {}],
      ["DELETE", `/v2/rooms/${id}`, {}],
      ["GET", `/v2/rooms/${id}/delete_status`],
      ["GET", `/v2/rooms/delete_status/abc`],
    ];
    for (const [method, path, body] of endpoints) {
      const r = await call(method, `${A}${path}`, { token: u.accessToken, body });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.body.errcode).toBe("M_FORBIDDEN");
    }
    // Still there.
    expect((await clientOk(u.accessToken, "GET", "/joined_rooms")).joined_rooms).toContain(roomId);
  });

  it("lists rooms with search_term, ordering, paging and Synapse's fields; details, members, state, messages", async () => {
    const admin = await registerAdmin();
    const owner = await registerUser();
    const guest = await registerUser();
    const tag = uniqueName("srch");
    const r1 = await namedRoom(owner, `${tag} alpha`);
    const r2 = await namedRoom(owner, `${tag} beta`, { room_alias_name: tag });
    await clientOk(guest.accessToken, "POST", `/join/${enc(r2)}`, {});
    await clientOk(owner.accessToken, "PUT", `/rooms/${enc(r2)}/send/m.room.message/m1`, { msgtype: "m.text", body: "hello admin" });
    const list = await call("GET", `${A}/v1/rooms?search_term=${tag}`, { token: admin.accessToken });
    expect(list.status).toBe(200);
    expect(list.body.total_rooms).toBe(2);
    expect(list.body.rooms.map((r: any) => r.room_id)).toEqual([r1, r2]);
    expect(list.body.rooms[1]).toMatchObject({ name: `${tag} beta`, canonical_alias: `#${tag}:${SERVER}`, joined_members: 2, joined_local_members: 2, creator: owner.userId, join_rules: "public", federatable: true, public: false });
    const byMembers = await call("GET", `${A}/v1/rooms?search_term=${tag}&order_by=joined_members`, { token: admin.accessToken });
    expect(byMembers.body.rooms[0].room_id).toBe(r2);
    const paged = await call("GET", `${A}/v1/rooms?search_term=${tag}&limit=1`, { token: admin.accessToken });
    expect(paged.body.rooms.length).toBe(1);
    expect(paged.body.next_batch).toBe(1);
    expect((await call("GET", `${A}/v1/rooms?search_term=${tag}&order_by=size`, { token: admin.accessToken })).body.rooms[0].room_id).toBe(r2);
    expect((await call("GET", `${A}/v1/rooms?search_term=${tag}&empty_rooms=true`, { token: admin.accessToken })).body.total_rooms).toBe(0);
    expect((await call("GET", `${A}/v1/rooms?search_term=${tag}&public_rooms=false`, { token: admin.accessToken })).body.total_rooms).toBe(2);
    const creates = await call("GET", `${A}/v1/rooms/${enc(r1)}/state?type=m.room.create`, { token: admin.accessToken });
    expect(creates.body.state.map((e: any) => e.type)).toEqual(["m.room.create"]);
    const byAlias = await call("GET", `${A}/v1/rooms?search_term=${enc(`#${tag}`)}`, { token: admin.accessToken });
    expect(byAlias.body.rooms.map((r: any) => r.room_id)).toEqual([r2]);

    const details = await call("GET", `${A}/v1/rooms/${enc(r2)}`, { token: admin.accessToken });
    expect(details.body).toMatchObject({ room_id: r2, name: `${tag} beta`, joined_local_devices: 2, state_events: expect.any(Number) });
    const members = await call("GET", `${A}/v1/rooms/${enc(r2)}/members`, { token: admin.accessToken });
    expect(members.body).toEqual({ members: [owner.userId, guest.userId].sort(), total: 2 });
    const state = await call("GET", `${A}/v1/rooms/${enc(r2)}/state`, { token: admin.accessToken });
    expect(state.body.state.some((e: any) => e.type === "m.room.create")).toBe(true);
    const msgs = await call("GET", `${A}/v1/rooms/${enc(r2)}/messages?limit=5&dir=b`, { token: admin.accessToken });
    expect(msgs.status).toBe(200);
    expect(msgs.body.chunk.some((e: any) => e.content?.body === "hello admin")).toBe(true);
  });

  it("bad input: invalid and unknown rooms, bad order_by, wrong body types, huge pages", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    expect((await call("GET", `${A}/v1/rooms/not-a-room`, { token: t })).status).toBe(400);
    const unknown = await call("GET", `${A}/v1/rooms/${enc(`!nope${uniqueName()}:${SERVER}`)}`, { token: t });
    expect(unknown.status).toBe(404);
    expect(unknown.body.errcode).toBe("M_NOT_FOUND");
    expect((await call("GET", `${A}/v1/rooms?order_by=secret`, { token: t })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("GET", `${A}/v1/rooms?limit=-5`, { token: t })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("GET", `${A}/v1/rooms?limit=99999999999`, { token: t })).status).toBe(200);
    const owner = await registerUser();
    const roomId = await namedRoom(owner, "x");
    expect((await call("PUT", `${A}/v1/rooms/${enc(roomId)}/block`, { token: t, body: { block: "yes" } })).body.errcode).toBe("M_BAD_JSON");
    expect((await call("DELETE", `${A}/v2/rooms/${enc(roomId)}`, { token: t, body: { purge: 1 } })).body.errcode).toBe("M_BAD_JSON");
    expect((await call("DELETE", `${A}/v2/rooms/${enc(roomId)}`, { token: t, body: { new_room_user_id: "@ghost:elsewhere.example" } })).status).toBe(400);
    expect((await call("GET", `${A}/v2/rooms/delete_status/nope`, { token: t })).status).toBe(404);
  });

  it("blocks rooms: local users cannot join; unblocking lets them", async () => {
    const admin = await registerAdmin();
    const owner = await registerUser();
    const joiner = await registerUser();
    const roomId = await namedRoom(owner, "to block");
    expect((await call("GET", `${A}/v1/rooms/${enc(roomId)}/block`, { token: admin.accessToken })).body).toEqual({ block: false });
    expect((await call("PUT", `${A}/v1/rooms/${enc(roomId)}/block`, { token: admin.accessToken, body: { block: true } })).body).toEqual({ block: true });
    expect((await call("GET", `${A}/v1/rooms/${enc(roomId)}/block`, { token: admin.accessToken })).body).toEqual({ block: true, user_id: admin.userId });
    const j = await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: joiner.accessToken, body: {} });
    expect(j.status).toBe(403);
    await call("PUT", `${A}/v1/rooms/${enc(roomId)}/block`, { token: admin.accessToken, body: { block: false } });
    expect((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: joiner.accessToken, body: {} })).status).toBe(200);
  });

  it("delete v2 evicts every local member through leave events, moves them to a new room, and purges every mirror", async () => {
    const admin = await registerAdmin();
    const owner = await registerUser();
    const member = await registerUser();
    const invitee = await registerUser();
    const tag = uniqueName("del");
    const roomId = await namedRoom(owner, "doomed", { room_alias_name: tag, visibility: "public" });
    await clientOk(member.accessToken, "POST", `/join/${enc(roomId)}`, {});
    await clientOk(owner.accessToken, "POST", `/rooms/${enc(roomId)}/invite`, { user_id: invitee.userId });
    const since = (await clientOk(member.accessToken, "GET", "/sync?timeout=0")).next_batch;

    const r = await call("DELETE", `${A}/v2/rooms/${enc(roomId)}`, { token: admin.accessToken, body: { new_room_user_id: admin.userId, room_name: "Moved", message: "This room was closed", block: true } });
    expect(r.status).toBe(200);
    expect(typeof r.body.delete_id).toBe("string");
    const status = await waitDeleted(admin.accessToken, r.body.delete_id);
    expect(status.status).toBe("complete");
    expect(status.shutdown_room.kicked_users.sort()).toEqual([owner.userId, member.userId].sort());
    expect(status.shutdown_room.failed_to_kick_users).toEqual([]);
    expect(status.shutdown_room.local_aliases).toEqual([`#${tag}:${SERVER}`]);
    const newRoom = status.shutdown_room.new_room_id;
    expect(newRoom).toMatch(/^!/);
    const byRoom = await call("GET", `${A}/v2/rooms/${enc(roomId)}/delete_status`, { token: admin.accessToken });
    expect(byRoom.body.results[0]).toMatchObject({ delete_id: r.body.delete_id, status: "complete" });

    // Members saw their leave in /sync and are now in the new room.
    const sync = await clientOk(member.accessToken, "GET", `/sync?timeout=0&since=${since}`);
    expect(Object.keys(sync.rooms?.leave ?? {})).toContain(roomId);
    expect((await clientOk(member.accessToken, "GET", "/joined_rooms")).joined_rooms).toEqual([newRoom]);
    expect((await clientOk(owner.accessToken, "GET", "/joined_rooms")).joined_rooms).toEqual([newRoom]);
    const invited = await clientOk(invitee.accessToken, "GET", "/sync?timeout=0");
    expect(Object.keys(invited.rooms?.invite ?? {})).not.toContain(roomId);
    // Every mirror is gone: registry, directory, aliases, memberships; the room answers 404.
    for (const table of ["rooms", "room_directory", "room_aliases", "room_memberships"]) {
      const row = await env.DB.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE room_id = ?`).bind(roomId).first<{ n: number }>();
      expect(row?.n, table).toBe(0);
    }
    expect((await call("GET", `/_matrix/client/v3/directory/room/${enc(`#${tag}:${SERVER}`)}`)).status).toBe(404);
    expect((await call("GET", `${A}/v1/rooms/${enc(roomId)}`, { token: admin.accessToken })).status).toBe(404);
    expect((await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages`, { token: owner.accessToken })).status).toBe(404);
    // Blocked: nobody can join it again.
    expect((await call("POST", `/_matrix/client/v3/join/${enc(roomId)}`, { token: member.accessToken, body: {} })).status).toBe(403);
    // The new room has the message.
    const msgs = await clientOk(member.accessToken, "GET", `/rooms/${enc(newRoom)}/messages?dir=b&limit=20`);
    expect(msgs.chunk.some((e: any) => e.content?.body === "This room was closed")).toBe(true);
  });

  it("delete v1 answers the shutdown result at once", async () => {
    const admin = await registerAdmin();
    const owner = await registerUser();
    const roomId = await namedRoom(owner, "v1 delete");
    const r = await call("DELETE", `${A}/v1/rooms/${enc(roomId)}`, { token: admin.accessToken, body: {} });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ kicked_users: [owner.userId], failed_to_kick_users: [], local_aliases: [], new_room_id: null });
    expect((await clientOk(owner.accessToken, "GET", "/joined_rooms")).joined_rooms).toEqual([]);
  });
});
