// Pushers API (spec: module "Push Notifications" → "Pushers"; pusher.yaml). Delivery to a real
// gateway is tested end to end (test/e2e/push.test.ts); these tests send no notifying events, so
// nothing leaves the test.
import { describe, it, expect } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, clientOk, registerUser, type TestUser } from "./helpers";

const URL_OK = "https://push.example.org/_matrix/push/v1/notify";

function pusher(over: Record<string, unknown> = {}) {
  return {
    kind: "http",
    app_id: "org.example.app.ios",
    pushkey: "pk-" + Math.random().toString(36).slice(2),
    app_display_name: "Example",
    device_display_name: "Phone",
    lang: "en",
    data: { url: URL_OK, format: "event_id_only", custom: { a: 1 } },
    ...over,
  };
}

async function login(u: TestUser) {
  const r = await call("POST", "/_matrix/client/v3/login", {
    body: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password },
  });
  expect(r.status).toBe(200);
  return { accessToken: r.body.access_token as string, deviceId: r.body.device_id as string };
}

const list = async (token: string) => (await clientOk(token, "GET", "/pushers")).pushers as any[];

describe("pushers", () => {
  it("sets, lists, updates and deletes (kind null) a pusher", async () => {
    const u = await registerUser();
    expect(await list(u.accessToken)).toEqual([]);
    const p = pusher({ profile_tag: "tag1" });
    await clientOk(u.accessToken, "POST", "/pushers/set", p);
    const [got] = await list(u.accessToken);
    expect(got).toEqual({
      kind: "http",
      app_id: p.app_id,
      pushkey: p.pushkey,
      app_display_name: "Example",
      device_display_name: "Phone",
      lang: "en",
      profile_tag: "tag1",
      data: p.data,
    });
    // Same app_id + pushkey: updated in place.
    await clientOk(u.accessToken, "POST", "/pushers/set", { ...p, lang: "de", data: { url: URL_OK } });
    const after = await list(u.accessToken);
    expect(after.length).toBe(1);
    expect(after[0].lang).toBe("de");
    expect(after[0].data).toEqual({ url: URL_OK });
    // kind null deletes (only app_id and pushkey needed).
    await clientOk(u.accessToken, "POST", "/pushers/set", { kind: null, app_id: p.app_id, pushkey: p.pushkey });
    expect(await list(u.accessToken)).toEqual([]);
  });

  it("requires authentication", async () => {
    expect((await call("GET", "/_matrix/client/v3/pushers")).status).toBe(401);
    expect((await call("POST", "/_matrix/client/v3/pushers/set", { body: pusher() })).status).toBe(401);
  });

  it("refuses bad input with the spec's errors", async () => {
    const u = await registerUser();
    const bad = async (body: unknown, errcode: string) => {
      const r = await call("POST", "/_matrix/client/v3/pushers/set", { token: u.accessToken, body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.errcode, JSON.stringify(r.body)).toBe(errcode);
    };
    const { kind: _k, ...noKind } = pusher();
    await bad(noKind, "M_MISSING_PARAM");
    const { lang: _l, ...noLang } = pusher();
    await bad(noLang, "M_MISSING_PARAM");
    const { data: _d, ...noData } = pusher();
    await bad(noData, "M_MISSING_PARAM");
    await bad(pusher({ data: {} }), "M_MISSING_PARAM");
    await bad(pusher({ data: { url: "http://push.example.org/_matrix/push/v1/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: "https://push.example.org/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: "not a url" } }), "M_INVALID_PARAM");
    // The outbound address guard: no private, loopback or internal hosts.
    await bad(pusher({ data: { url: "https://10.1.2.3/_matrix/push/v1/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: "https://127.0.0.1/_matrix/push/v1/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: "http://127.0.0.1:9/_matrix/push/v1/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: "https://metadata.google.internal/_matrix/push/v1/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: "https://[::1]/_matrix/push/v1/notify" } }), "M_INVALID_PARAM");
    await bad(pusher({ data: { url: URL_OK, format: "full" } }), "M_INVALID_PARAM");
    await bad(pusher({ kind: "email" }), "M_INVALID_PARAM");
    await bad(pusher({ kind: 5 }), "M_BAD_JSON");
    await bad(pusher({ app_id: "x".repeat(65) }), "M_BAD_JSON");
    await bad(pusher({ pushkey: "é".repeat(257) }), "M_BAD_JSON");
    await bad(pusher({ data: "x" }), "M_BAD_JSON");
    await bad(pusher({ append: "yes" }), "M_BAD_JSON");
    const notJson = await call("POST", "/_matrix/client/v3/pushers/set", { token: u.accessToken, rawBody: "{", headers: { "content-type": "application/json" } });
    expect(notJson.body.errcode).toBe("M_NOT_JSON");
    expect(await list(u.accessToken)).toEqual([]);
  });

  it("without append, another user's pusher with the same app_id and pushkey goes; with append it stays", async () => {
    const a = await registerUser();
    const b = await registerUser();
    const p = pusher();
    await clientOk(a.accessToken, "POST", "/pushers/set", p);
    await clientOk(b.accessToken, "POST", "/pushers/set", { ...p, append: true });
    expect((await list(a.accessToken)).length).toBe(1);
    expect((await list(b.accessToken)).length).toBe(1);
    await clientOk(b.accessToken, "POST", "/pushers/set", p);
    expect(await list(a.accessToken)).toEqual([]);
    expect((await list(b.accessToken)).length).toBe(1);
  });

  it("a pusher goes when its device logs out or is deleted", async () => {
    const u = await registerUser();
    const d2 = await login(u);
    const d3 = await login(u);
    await clientOk(u.accessToken, "POST", "/pushers/set", pusher({ pushkey: "keep" }));
    await clientOk(d2.accessToken, "POST", "/pushers/set", pusher({ pushkey: "logout" }));
    await clientOk(d3.accessToken, "POST", "/pushers/set", pusher({ pushkey: "delete" }));
    expect((await list(u.accessToken)).map((p) => p.pushkey).sort()).toEqual(["delete", "keep", "logout"]);
    await clientOk(d2.accessToken, "POST", "/logout", {});
    expect((await list(u.accessToken)).map((p) => p.pushkey).sort()).toEqual(["delete", "keep"]);
    const del1 = await call("DELETE", `/_matrix/client/v3/devices/${d3.deviceId}`, { token: u.accessToken, body: {} });
    expect(del1.status).toBe(401);
    const del = await call("DELETE", `/_matrix/client/v3/devices/${d3.deviceId}`, {
      token: u.accessToken,
      body: { auth: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, session: del1.body.session } },
    });
    expect(del.status).toBe(200);
    expect((await list(u.accessToken)).map((p) => p.pushkey)).toEqual(["keep"]);
  });

  it("a password change removes the pushers of other devices, even those that stay logged in", async () => {
    const u = await registerUser();
    const d2 = await login(u);
    await clientOk(u.accessToken, "POST", "/pushers/set", pusher({ pushkey: "mine" }));
    await clientOk(d2.accessToken, "POST", "/pushers/set", pusher({ pushkey: "other" }));
    const c1 = await call("POST", "/_matrix/client/v3/account/password", { token: u.accessToken, body: { new_password: "new-pass-2", logout_devices: false } });
    expect(c1.status).toBe(401);
    const r = await call("POST", "/_matrix/client/v3/account/password", {
      token: u.accessToken,
      body: {
        new_password: "new-pass-2",
        logout_devices: false,
        auth: { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, session: c1.body.session },
      },
    });
    expect(r.status).toBe(200);
    expect((await call("GET", "/_matrix/client/v3/account/whoami", { token: d2.accessToken })).status).toBe(200);
    expect((await list(u.accessToken)).map((p) => p.pushkey)).toEqual(["mine"]);
  });

  it("notifications reach the pusher's queue with counts.unread and counts.missed_calls (a gateway that never resolves keeps them)", async () => {
    // push.invalid never resolves (RFC 2606): the queue's first attempt fails and it keeps the
    // items, which the test reads from its storage. Nothing leaves the test.
    const alice = await registerUser();
    const bob = await registerUser();
    const p = pusher({ data: { url: "https://push.invalid/_matrix/push/v1/notify" } });
    await clientOk(bob.accessToken, "POST", "/pushers/set", p);
    const { room_id: roomId } = await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "private_chat", invite: [bob.userId] });
    await clientOk(bob.accessToken, "POST", `/join/${encodeURIComponent(roomId)}`, {});
    const queue = env.PUSHERS.get(env.PUSHERS.idFromName(JSON.stringify([bob.userId, p.app_id, p.pushkey])));
    const queued = () =>
      runInDurableObject(queue, async (_o, state) => state.storage.sql.exec<{ body: string }>("SELECT body FROM queue ORDER BY seq").toArray().map((r) => JSON.parse(r.body)));
    let n = 0;
    const ev = async (u: TestUser, type: string, content: Record<string, unknown>) =>
      (await clientOk(u.accessToken, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/${type}/t${++n}`, content)).event_id as string;
    const waitFor = async (pred: (items: any[]) => any) => {
      for (let i = 0; i < 100; i++) {
        const got = pred(await queued());
        if (got) return got;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`not queued: ${JSON.stringify(await queued())}`);
    };
    // A call bob misses: it rings, then alice hangs up.
    const ring = await ev(alice, "m.call.invite", { call_id: "c1", party_id: "a", version: "1", lifetime: 60000, offer: { type: "offer", sdp: "v=0" } });
    await ev(alice, "m.call.hangup", { call_id: "c1", party_id: "a", version: "1" });
    const msg = await ev(alice, "m.room.message", { msgtype: "m.text", body: "call me" });
    const items = await waitFor((q) => q.some((x: any) => x.event?.event_id === msg) && q);
    const ringing = items.find((x: any) => x.event?.event_id === ring);
    expect(ringing.counts).toEqual({ unread: 1, missed_calls: 0 }); // bob's join marked the room read
    expect(items.find((x: any) => !x.event && x.counts.missed_calls === 1)).toBeDefined(); // the badge when it was missed
    expect(items.find((x: any) => x.event?.event_id === msg).counts).toEqual({ unread: 2, missed_calls: 1 });
  });
});

describe("push_calls (counts.missed_calls bookkeeping)", () => {
  it("is pruned: answered calls, calls before the read mark and rooms left go; the rest is capped", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    // push.invalid never resolves: nothing leaves the test.
    await clientOk(bob.accessToken, "POST", "/pushers/set", pusher({ data: { url: "https://push.invalid/_matrix/push/v1/notify" } }));
    const { room_id: roomId } = await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "private_chat", invite: [bob.userId] });
    await clientOk(bob.accessToken, "POST", `/join/${encodeURIComponent(roomId)}`, {});
    const hub = env.USERS.get(env.USERS.idFromName(bob.userId));
    const calls = () => runInDurableObject(hub, async (_o, state) => state.storage.sql.exec<{ call_id: string }>("SELECT call_id FROM push_calls ORDER BY call_id").toArray().map((r) => r.call_id));
    let n = 0;
    const ev = async (u: TestUser, type: string, content: Record<string, unknown>) =>
      (await clientOk(u.accessToken, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/${type}/t${++n}`, content)).event_id as string;
    const invite = (id: string) => ev(alice, "m.call.invite", { call_id: id, party_id: "a", version: "1", lifetime: 60000, offer: { type: "offer", sdp: "v=0" } });
    const waitCalls = async (want: string[]) => {
      for (let i = 0; i < 100 && JSON.stringify(await calls()) !== JSON.stringify(want); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await calls()).toEqual(want);
    };
    // c1 is answered by bob, c2 missed, c3 still ringing.
    await invite("c1");
    await ev(bob, "m.call.answer", { call_id: "c1", party_id: "b", version: "1", answer: { type: "answer", sdp: "v=0" } });
    await invite("c2");
    await ev(alice, "m.call.hangup", { call_id: "c2", party_id: "a", version: "1" });
    const last = await invite("c3");
    // The answered call counts for nothing: gone with the next call's bookkeeping.
    await waitCalls(["c2", "c3"]);
    // Bob reads the room: nothing before his read mark can count again.
    await clientOk(bob.accessToken, "POST", `/rooms/${encodeURIComponent(roomId)}/receipt/m.read/${encodeURIComponent(last)}`, {});
    await waitCalls([]);
    // A flood of unanswered calls after the read mark stays bounded.
    await runInDurableObject(hub, async (_o, state) => {
      for (let i = 0; i < 600; i++) state.storage.sql.exec("INSERT INTO push_calls (room_id, call_id, stream, expires_ts) VALUES (?, ?, ?, ?)", roomId, `f${1000 + i}`, 10_000 + i, Date.now() + i);
    });
    await invite("c4");
    // (alice's send answers once her hub has it; bob's hub hears of it just after)
    let left = await calls();
    for (let i = 0; i < 100 && !left.includes("c4"); i++) {
      await new Promise((r) => setTimeout(r, 50));
      left = await calls();
    }
    expect(left.length).toBeLessThanOrEqual(500);
    expect(left).toContain("c4");
    expect(left).not.toContain("f1000"); // the oldest go first
    // Bob leaves: the room's calls can no longer count.
    await clientOk(bob.accessToken, "POST", `/rooms/${encodeURIComponent(roomId)}/leave`, {});
    await waitCalls([]);
  });
});

describe("counts.unread (kept by the hub per push, not counted again)", () => {
  it("follows notifying events, read receipts, my own messages, leaving and rejoining across two rooms", async () => {
    const alice = await registerUser();
    const bob = await registerUser();
    // push.invalid never resolves: the queue keeps every notification, read from its storage.
    const p = pusher({ data: { url: "https://push.invalid/_matrix/push/v1/notify" } });
    await clientOk(bob.accessToken, "POST", "/pushers/set", p);
    const a = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    const b = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "public_chat" })).room_id as string;
    for (const r of [a, b]) await clientOk(bob.accessToken, "POST", `/join/${encodeURIComponent(r)}`, {});
    const queue = env.PUSHERS.get(env.PUSHERS.idFromName(JSON.stringify([bob.userId, p.app_id, p.pushkey])));
    const hub = env.USERS.get(env.USERS.idFromName(bob.userId));
    const queued = () =>
      runInDurableObject(queue, async (_o, state) => state.storage.sql.exec<{ body: string }>("SELECT body FROM queue ORDER BY seq").toArray().map((r) => JSON.parse(r.body)));
    const hubRow = (query: string, ...args: unknown[]) => runInDurableObject(hub, async (_o, state) => state.storage.sql.exec(query, ...args).toArray()[0] as any);
    const until = async (what: string, pred: () => Promise<unknown>) => {
      for (let i = 0; i < 100; i++) {
        if (await pred()) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`timed out: ${what}`);
    };
    let n = 0;
    const say = async (u: TestUser, roomId: string) =>
      (await clientOk(u.accessToken, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/u${++n}`, { msgtype: "m.text", body: `m${n}` })).event_id as string;
    /** Alice says something in `roomId`: its event ID and the unread count bob's pusher got with it. */
    const alicePushed = async (roomId: string) => {
      const id = await say(alice, roomId);
      let unread = -1;
      await until(`push for ${id}`, async () => {
        unread = (await queued()).find((x: any) => x.event?.event_id === id)?.counts.unread ?? -1;
        return unread >= 0;
      });
      return { id, unread };
    };
    expect((await alicePushed(a)).unread).toBe(1);
    expect((await alicePushed(b)).unread).toBe(2);
    const x2 = await alicePushed(a);
    expect(x2.unread).toBe(3);
    // Bob reads room A elsewhere: only B's count.
    await clientOk(bob.accessToken, "POST", `/rooms/${encodeURIComponent(a)}/receipt/m.read/${encodeURIComponent(x2.id)}`, {});
    await until("read mark in A", async () => (await hubRow("SELECT 1 AS x FROM read_marks WHERE room_id = ? AND thread_id = ''", a))?.x === 1);
    expect((await alicePushed(b)).unread).toBe(2);
    // Bob speaks in B: B is read up to there.
    await say(bob, b);
    expect((await alicePushed(a)).unread).toBe(1);
    // Bob leaves A: its unread message no longer counts.
    await clientOk(bob.accessToken, "POST", `/rooms/${encodeURIComponent(a)}/leave`, {});
    await until("bob left A", async () => (await hubRow("SELECT membership FROM rooms WHERE room_id = ?", a))?.membership === "leave");
    expect((await alicePushed(b)).unread).toBe(1);
    // Bob joins A again (his join marks it read).
    await clientOk(bob.accessToken, "POST", `/join/${encodeURIComponent(a)}`, {});
    await until("bob in A", async () => (await hubRow("SELECT membership FROM rooms WHERE room_id = ?", a))?.membership === "join");
    expect((await alicePushed(a)).unread).toBe(2);
    // A hub transaction that recorded a push and then rolled back: that push is never sent and
    // does not count (the outbox's staged rows and kept count go with the transaction).
    const ghost = "$ghost-of-a-rolled-back-transaction";
    await runInDurableObject(hub, async (instance) => {
      const o = instance as unknown as { fanIn: any; push: any };
      const notice = { event_id: ghost, type: "m.room.message", sender: alice.userId, content: { msgtype: "m.text", body: "never" }, origin_server_ts: Date.now() };
      expect(() =>
        o.fanIn.a.batch(() => {
          o.push.recordEvent(bob.userId, b, 1_000_000, notice, { notify: true, actions: ["notify"] });
          throw new Error("boom");
        }),
      ).toThrow("boom");
    });
    expect((await alicePushed(b)).unread).toBe(3);
    expect((await queued()).some((x: any) => x.event?.event_id === ghost)).toBe(false);
    // The hub's count agrees with a fresh COUNT of its rows (what every push computed before).
    const { n: fresh } = await hubRow(
      `SELECT COUNT(*) AS n FROM room_events e JOIN rooms r ON r.room_id = e.room_id AND r.membership = 'join'
       LEFT JOIN read_marks m ON m.room_id = e.room_id AND m.thread_id = '' WHERE e.notify = 1 AND e.stream > COALESCE(m.stream, -1)`,
    );
    expect(fresh).toBe(3);
  });

  // docs/benchmarks.md "Push": the hub wrote its room_events rows before every push so that the
  // COUNT could see them; with the count kept, only a push that must count again (after my own
  // event or membership) has the run's rows written first, the rest go at the end of the run.
  it("a run of notices writes its room_events rows only where the count is taken from them, with the same counts", async () => {
    const me = (await registerUser()).userId;
    const alice = "@alice:test.local";
    const roomId = `!counted-${crypto.randomUUID().slice(0, 8)}:test.local`;
    const hub = env.USERS.get(env.USERS.idFromName(me));
    // push.invalid never resolves: nothing leaves the test.
    await (hub as unknown as { setPushers(u: string, t: unknown[]): Promise<void> }).setPushers(me, [
      { appId: "org.example.app", pushkey: "pk-run", pushkeyTs: Date.now(), data: { url: "https://push.invalid/_matrix/push/v1/notify" } },
    ]);
    let stream = 0;
    const n = (sender: string, type: string, content: Record<string, unknown>, stateKey?: string) => {
      const s = ++stream;
      return {
        roomId,
        stream: s,
        event: { event_id: `$run${s}`, room_id: roomId, type, sender, content, origin_server_ts: 1000 + s, ...(stateKey !== undefined ? { state_key: stateKey } : {}) },
        memberCount: 2,
        senderPowerLevel: 0,
      };
    };
    const msg = (sender: string) => n(sender, "m.room.message", { msgtype: "m.text", body: `m${stream + 1}` });
    // My join, three of alice's messages, mine (marks the room read), two more of alice's.
    const run = [n(me, "m.room.member", { membership: "join" }, me), msg(alice), msg(alice), msg(alice), msg(me), msg(alice), msg(alice)];
    const { writes, pushed, fresh } = await runInDurableObject(hub, async (instance, state) => {
      const sql = state.storage.sql;
      const exec = sql.exec;
      let writes = 0;
      const pushed: number[] = [];
      sql.exec = function (this: SqlStorage, query: string, ...args: unknown[]) {
        if (query.includes("INTO room_events")) writes++;
        if (query.startsWith("INSERT INTO push_outbox")) pushed.push(JSON.parse(args[1] as string).counts.unread);
        return exec.call(this, query, ...args);
      } as typeof sql.exec;
      try {
        await (instance as unknown as { roomEvents(u: string, n: unknown[]): Promise<void> }).roomEvents(me, run);
      } finally {
        sql.exec = exec;
      }
      const fresh = sql
        .exec<{ n: number }>(
          `SELECT COUNT(*) AS n FROM room_events e JOIN rooms r ON r.room_id = e.room_id AND r.membership = 'join'
           LEFT JOIN read_marks m ON m.room_id = e.room_id AND m.thread_id = '' WHERE e.notify = 1 AND e.stream > COALESCE(m.stream, -1)`,
        )
        .one().n;
      return { writes, pushed, fresh };
    });
    expect(pushed).toEqual([1, 2, 3, 1, 2]);
    expect(fresh).toBe(2);
    // Counted from storage twice (after my join, after my message), plus the rest at the end:
    // three statements for seven notices (one per notice before).
    expect(writes).toBe(3);
  });
});
