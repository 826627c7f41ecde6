// Synapse-compatible media and federation-destination admin API.
import { describe, expect, it } from "vitest";
import { env } from "cloudflare:test";
import { SERVER, call, registerUser, uniqueName } from "./helpers";
import { A, enc, registerAdmin, uploadMedia } from "./admin-helpers";
import { enqueueEdu } from "../../src/services/federation/sender";
import { parseConfig } from "../../src/config";

describe("admin API: media", () => {
  it("non-admins get 403 M_FORBIDDEN", async () => {
    const u = await registerUser();
    const id = await uploadMedia(u.accessToken);
    for (const [method, path] of [
      ["GET", `/v1/users/${enc(u.userId)}/media`],
      ["DELETE", `/v1/users/${enc(u.userId)}/media`],
      ["GET", `/v1/media/${SERVER}/${id}`],
      ["POST", `/v1/media/quarantine/${SERVER}/${id}`],
      ["POST", `/v1/media/unquarantine/${SERVER}/${id}`],
      ["POST", `/v1/user/${enc(u.userId)}/media/quarantine`],
      ["DELETE", `/v1/media/${SERVER}/${id}`],
      ["POST", `/v1/media/delete?before_ts=${Date.now()}`],
      ["POST", `/v1/purge_media_cache?before_ts=${Date.now()}`],
      ["GET", `/v1/statistics/users/media`],
      ["GET", `/v1/federation/destinations`],
      ["POST", `/v1/federation/destinations/remote.example/reset_connection`],
    ]) {
      const r = await call(method, `${A}${path}`, { token: u.accessToken });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.body.errcode).toBe("M_FORBIDDEN");
    }
  });

  it("lists a user's media, quarantines and releases, deletes by ID, by user and by date/size", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    const u = await registerUser();
    const other = await registerUser();
    const a = await uploadMedia(u.accessToken, "first");
    const b = await uploadMedia(u.accessToken, "second, longer");
    const list = await call("GET", `${A}/v1/users/${enc(u.userId)}/media?limit=1`, { token: t });
    expect(list.body.total).toBe(2);
    expect(list.body.media[0]).toMatchObject({ media_id: a, media_type: "text/plain", media_length: 5, quarantined_by: null });
    expect(list.body.next_token).toBe(1);
    const dl = (id: string) => call("GET", `/_matrix/client/v1/media/download/${SERVER}/${id}`, { token: other.accessToken });
    expect((await dl(a)).status).toBe(200);
    expect((await call("POST", `${A}/v1/media/quarantine/${SERVER}/${a}`, { token: t })).body).toEqual({});
    expect((await dl(a)).status).toBe(404);
    expect((await call("GET", `${A}/v1/media/${SERVER}/${a}`, { token: t })).body.media_info.quarantined_by).toBe(admin.userId);
    await call("POST", `${A}/v1/media/unquarantine/${SERVER}/${a}`, { token: t });
    expect((await dl(a)).status).toBe(200);
    expect((await call("POST", `${A}/v1/user/${enc(u.userId)}/media/quarantine`, { token: t })).body).toEqual({ num_quarantined: 2 });
    expect((await dl(b)).status).toBe(404);
    expect((await call("DELETE", `${A}/v1/media/${SERVER}/${a}`, { token: t })).body).toEqual({ deleted_media: [a], total: 1 });
    expect((await call("GET", `${A}/v1/media/${SERVER}/${a}`, { token: t })).status).toBe(404);
    expect((await call("DELETE", `${A}/v1/users/${enc(u.userId)}/media`, { token: t })).body).toEqual({ deleted_media: [b], total: 1 });
    // By date and size: only the big, old one goes.
    const small = await uploadMedia(other.accessToken, "s");
    const big = await uploadMedia(other.accessToken, "x".repeat(2000));
    const cutoff = Date.now() + 1;
    const del = await call("POST", `${A}/v1/media/delete?before_ts=${cutoff}&size_gt=1000`, { token: t });
    expect(del.body.deleted_media).toContain(big);
    expect(del.body.deleted_media).not.toContain(small);
    expect((await dl(small)).status).toBe(200);
    const stats = await call("GET", `${A}/v1/statistics/users/media`, { token: t });
    expect(stats.body.users.some((x: any) => x.user_id === other.userId && x.media_count === 1)).toBe(true);
  });

  it("bad input: missing before_ts, unknown media, invalid IDs, remote deletes, wrong types", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    expect((await call("POST", `${A}/v1/media/delete`, { token: t })).body.errcode).toBe("M_MISSING_PARAM");
    expect((await call("POST", `${A}/v1/media/delete?before_ts=soon`, { token: t })).body.errcode).toBe("M_INVALID_PARAM");
    expect((await call("POST", `${A}/v1/media/quarantine/${SERVER}/nope${uniqueName()}`, { token: t })).status).toBe(404);
    expect((await call("POST", `${A}/v1/media/quarantine/${SERVER}/bad%20id`, { token: t })).status).toBe(400);
    expect((await call("DELETE", `${A}/v1/media/elsewhere.example/abc`, { token: t })).status).toBe(400);
    expect((await call("GET", `${A}/v1/users/${enc(`@nobody${uniqueName()}:${SERVER}`)}/media`, { token: t })).status).toBe(404);
    expect((await call("POST", `${A}/v1/purge_media_cache`, { token: t })).status).toBe(400);
    expect((await call("POST", `${A}/v1/purge_media_cache?before_ts=${Date.now()}`, { token: t })).body).toEqual({ deleted: 0 });
  });
});

describe("admin API: media in rooms", () => {
  it("lists the media a room's events reference and quarantines it all", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const other = await registerUser();
    const id = await uploadMedia(u.accessToken, "picture");
    const r = await call("POST", "/_matrix/client/v3/createRoom", { token: u.accessToken, body: {} });
    const roomId = r.body.room_id;
    await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/i1`, { token: u.accessToken, body: { msgtype: "m.image", body: "pic", url: `mxc://${SERVER}/${id}` } });
    await call("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/i2`, { token: u.accessToken, body: { msgtype: "m.image", body: "far", url: "mxc://remote.example/abcDEF" } });
    expect((await call("GET", `${A}/v1/room/${enc(roomId)}/media`, { token: u.accessToken })).status).toBe(403);
    const list = await call("GET", `${A}/v1/room/${enc(roomId)}/media`, { token: admin.accessToken });
    expect(list.body).toEqual({ local: [`mxc://${SERVER}/${id}`], remote: ["mxc://remote.example/abcDEF"] });
    expect((await call("POST", `${A}/v1/room/${enc(roomId)}/media/quarantine`, { token: admin.accessToken })).body).toEqual({ num_quarantined: 1 });
    expect((await call("GET", `/_matrix/client/v1/media/download/${SERVER}/${id}`, { token: other.accessToken })).status).toBe(404);
    expect((await call("POST", `${A}/v1/room/${enc(`!nope:${SERVER}`)}/media/quarantine`, { token: admin.accessToken })).status).toBe(404);
    expect((await call("POST", `${A}/v1/room/nonsense/media/quarantine`, { token: admin.accessToken })).status).toBe(400);
  });
});

describe("admin API: federation destinations", () => {
  it("lists destinations with their retry state from the SenderDOs and resets a failing one", async () => {
    const admin = await registerAdmin();
    const t = admin.accessToken;
    const dest = `${uniqueName("peer")}.example`;
    // Outbound federation fails in tests: the SenderDO records failures and backs off.
    await enqueueEdu(env, parseConfig(env), dest, { edu_type: "m.typing", content: {} });
    let entry: any;
    for (let i = 0; i < 50; i++) {
      const r = await call("GET", `${A}/v1/federation/destinations?destination=${dest}`, { token: t });
      expect(r.status).toBe(200);
      entry = r.body.destinations[0];
      if (entry?.failure_ts) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(entry).toMatchObject({ destination: dest, queued: 1 });
    expect(entry.failure_ts).toBeGreaterThan(0);
    expect(entry.retry_last_ts).toBeGreaterThan(0);
    expect(entry.retry_interval).toBeGreaterThan(0);
    expect((await call("GET", `${A}/v1/federation/destinations/${dest}`, { token: t })).body.destination).toBe(dest);
    expect((await call("POST", `${A}/v1/federation/destinations/${dest}/reset_connection`, { token: t })).body).toEqual({});
    expect((await call("GET", `${A}/v1/federation/destinations/unknown-${dest}`, { token: t })).status).toBe(404);
    expect((await call("GET", `${A}/v1/federation/destinations?order_by=nope`, { token: t })).status).toBe(400);
    expect((await call("GET", `${A}/v1/federation/destinations/${enc("bad name!")}`, { token: t })).status).toBe(400);
  });
});
