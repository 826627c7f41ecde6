// Thread subscriptions (MSC4306, unstable prefix io.element.msc4306), run with
// THREAD_SUBSCRIPTIONS=on (project workers-msc4306 in vitest.config.ts): the three endpoints,
// automatic subscriptions and the conflicting-unsubscription rule, bad input, and the push
// rules that make subscribed threads notify and unsubscribed ones stay quiet.
import { describe, it, expect } from "vitest";
import { call, createRoom, joinRoom, registerUser, type TestUser } from "./helpers";

const V3 = "/_matrix/client/v3";
const MSC4306 = "/_matrix/client/unstable/io.element.msc4306";
const enc = encodeURIComponent;
let txn = 0;

async function send(u: TestUser, roomId: string, body: string, extra: Record<string, unknown> = {}): Promise<string> {
  const r = await call("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/ts${++txn}`, { token: u.accessToken, body: { msgtype: "m.text", body, ...extra } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.event_id;
}
const inThread = (root: string) => ({ "m.relates_to": { rel_type: "m.thread", event_id: root, is_falling_back: true, "m.in_reply_to": { event_id: root } } });
const sub = (roomId: string, root: string) => `${MSC4306}/rooms/${enc(roomId)}/thread/${enc(root)}/subscription`;

/** A room with alice (creator), bob and carol, and a thread root by alice. */
async function threadRoom() {
  const [alice, bob, carol] = await Promise.all([registerUser(), registerUser(), registerUser()]);
  const roomId = await createRoom(alice);
  await joinRoom(bob, roomId);
  await joinRoom(carol, roomId);
  const root = await send(alice, roomId, "root");
  return { alice, bob, carol, roomId, root };
}

/** The event IDs that notified `u` (GET /notifications), once `marker` has reached their hub
 *  (their /sync shows it: the hub takes a room's events in order). Bounded. */
async function notifiedAfter(u: TestUser, roomId: string, marker: string): Promise<string[]> {
  const filter = JSON.stringify({ room: { timeline: { limit: 50 } } });
  for (let i = 0; i < 100; i++) {
    const s = await call("GET", `${V3}/sync?filter=${enc(filter)}`, { token: u.accessToken });
    expect(s.status).toBe(200);
    if ((s.body.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e: any) => e.event_id === marker)) {
      const r = await call("GET", `${V3}/notifications?limit=100`, { token: u.accessToken });
      expect(r.status).toBe(200);
      return r.body.notifications.map((n: any) => n.event.event_id);
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  throw new Error(`${marker} never reached ${u.userId}`);
}

describe("MSC4306 thread subscriptions", () => {
  it("is advertised in /versions", async () => {
    const r = await call("GET", "/_matrix/client/versions");
    expect(r.body.unstable_features["org.matrix.msc4306"]).toBe(true);
  });

  it("subscribes manually, reads the subscription, unsubscribes idempotently", async () => {
    const { bob, roomId, root } = await threadRoom();
    const t = bob.accessToken;
    expect((await call("GET", sub(roomId, root), { token: t })).body.errcode).toBe("M_NOT_FOUND");
    const put = await call("PUT", sub(roomId, root), { token: t, body: {} });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body).toEqual({});
    const got = await call("GET", sub(roomId, root), { token: t });
    expect(got.status).toBe(200);
    expect(got.body).toEqual({ automatic: false });
    // Subscribing again changes nothing.
    expect((await call("PUT", sub(roomId, root), { token: t, body: {} })).status).toBe(200);
    const del = await call("DELETE", sub(roomId, root), { token: t });
    expect(del.status).toBe(200);
    expect(del.body).toEqual({});
    const gone = await call("GET", sub(roomId, root), { token: t });
    expect(gone.status).toBe(404);
    expect(gone.body.errcode).toBe("M_NOT_FOUND");
    // "If the thread was not subscribed, returns 200 with empty body {} for idempotence."
    expect((await call("DELETE", sub(roomId, root), { token: t })).status).toBe(200);
  });

  it("takes automatic subscriptions; a manual one takes precedence", async () => {
    const { alice, bob, roomId, root } = await threadRoom();
    const t = bob.accessToken;
    const reply = await send(alice, roomId, `hey ${bob.userId}`, inThread(root));
    const auto = await call("PUT", sub(roomId, root), { token: t, body: { automatic: reply } });
    expect(auto.status, JSON.stringify(auto.body)).toBe(200);
    expect((await call("GET", sub(roomId, root), { token: t })).body).toEqual({ automatic: true });
    // Manual over automatic: marked manual.
    expect((await call("PUT", sub(roomId, root), { token: t, body: {} })).status).toBe(200);
    expect((await call("GET", sub(roomId, root), { token: t })).body).toEqual({ automatic: false });
    // Automatic over manual: stays manual.
    expect((await call("PUT", sub(roomId, root), { token: t, body: { automatic: reply } })).status).toBe(200);
    expect((await call("GET", sub(roomId, root), { token: t })).body).toEqual({ automatic: false });
    // `automatic: null` is a manual subscription too (the field omitted).
    expect((await call("PUT", sub(roomId, root), { token: t, body: { automatic: null } })).status).toBe(200);
  });

  it("skips an automatic subscription caused by an event older than the unsubscription (409), not a newer one", async () => {
    const { alice, bob, roomId, root } = await threadRoom();
    const t = bob.accessToken;
    const r1 = await send(alice, roomId, "first mention", inThread(root));
    expect((await call("PUT", sub(roomId, root), { token: t, body: { automatic: r1 } })).status).toBe(200);
    expect((await call("DELETE", sub(roomId, root), { token: t })).status).toBe(200);
    // A dormant device that only now sees r1 tries to subscribe again.
    const again = await call("PUT", sub(roomId, root), { token: t, body: { automatic: r1 } });
    expect(again.status).toBe(409);
    expect(again.body.errcode).toBe("IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION");
    expect((await call("GET", sub(roomId, root), { token: t })).status).toBe(404);
    // A mention after the unsubscription subscribes again.
    const r2 = await send(alice, roomId, "second mention", inThread(root));
    const later = await call("PUT", sub(roomId, root), { token: t, body: { automatic: r2 } });
    expect(later.status, JSON.stringify(later.body)).toBe(200);
    expect((await call("GET", sub(roomId, root), { token: t })).body).toEqual({ automatic: true });
    // A manual subscription is never skipped.
    expect((await call("DELETE", sub(roomId, root), { token: t })).status).toBe(200);
    expect((await call("PUT", sub(roomId, root), { token: t, body: {} })).status).toBe(200);
  });

  it("answers bad input with Matrix errors", async () => {
    const { alice, bob, roomId, root } = await threadRoom();
    const t = bob.accessToken;
    const main = await send(alice, roomId, "main timeline");
    const otherRoot = await send(alice, roomId, "another root");
    const otherReply = await send(alice, roomId, "in the other thread", inThread(otherRoot));
    const put = async (body: unknown) => call("PUT", sub(roomId, root), { token: t, body });
    // The cause must be an event of this thread.
    for (const cause of [main, otherReply, root]) {
      const r = await put({ automatic: cause });
      expect(r.status, cause).toBe(400);
      expect(r.body.errcode).toBe("IO.ELEMENT.MSC4306.M_NOT_IN_THREAD");
    }
    // An unknown cause event.
    const unknown = `$${"A".repeat(43)}`;
    expect((await put({ automatic: unknown })).body.errcode).toBe("M_NOT_FOUND");
    // Not an event ID, or the old boolean form.
    for (const automatic of ["not-an-event", true, false, 3, {}]) {
      const r = await put({ automatic });
      expect(r.status, JSON.stringify(automatic)).toBe(400);
      expect(r.body.errcode).toBe("M_BAD_JSON");
    }
    const notJson = await call("PUT", sub(roomId, root), { token: t, rawBody: "{", headers: { "content-type": "application/json" } });
    expect(notJson.status).toBe(400);
    expect(notJson.body.errcode).toBe("M_NOT_JSON");
    for (const method of ["GET", "PUT", "DELETE"]) {
      const body = method === "PUT" ? {} : undefined;
      // Unknown thread root, unknown room: 404.
      const unknownRoot = await call(method, sub(roomId, unknown), { token: t, body });
      expect(unknownRoot.status, method).toBe(404);
      expect(unknownRoot.body.errcode).toBe("M_NOT_FOUND");
      const unknownRoom = await call(method, sub("!nowhere:test.local", root), { token: t, body });
      expect(unknownRoom.body.errcode).toBe("M_NOT_FOUND");
      // Malformed IDs: 400.
      const badRoom = await call(method, sub("nowhere", root), { token: t, body });
      expect(badRoom.status).toBe(400);
      expect(badRoom.body.errcode).toBe("M_INVALID_PARAM");
      const badRoot = await call(method, sub(roomId, "root"), { token: t, body });
      expect(badRoot.status).toBe(400);
      expect(badRoot.body.errcode).toBe("M_INVALID_PARAM");
      // No access token.
      const anon = await call(method, sub(roomId, root), { body });
      expect(anon.status).toBe(401);
      expect(anon.body.errcode).toBe("M_MISSING_TOKEN");
    }
  });

  it("answers 404 for a thread the user cannot see", async () => {
    const [alice, eve] = await Promise.all([registerUser(), registerUser()]);
    const roomId = await createRoom(alice, { preset: "private_chat" });
    const root = await send(alice, roomId, "secret root");
    for (const method of ["GET", "PUT", "DELETE"]) {
      const r = await call(method, sub(roomId, root), { token: eve.accessToken, body: method === "PUT" ? {} : undefined });
      expect(r.status, method).toBe(404);
      expect(r.body.errcode).toBe("M_NOT_FOUND");
    }
  });

  it("notifies a subscribed user of thread replies and not an unsubscribed one (mentions still do)", async () => {
    const { alice, bob, carol, roomId, root } = await threadRoom();
    expect((await call("PUT", sub(roomId, root), { token: bob.accessToken, body: {} })).status).toBe(200);
    // Bob muted the room (a room rule without actions): his subscribed thread still notifies.
    const mute = await call("PUT", `${V3}/pushrules/global/room/${enc(roomId)}`, { token: bob.accessToken, body: { actions: [] } });
    expect(mute.status, JSON.stringify(mute.body)).toBe(200);
    const reply = await send(alice, roomId, "a reply in the thread", inThread(root));
    const mention = await send(alice, roomId, "carol, look", { ...inThread(root), "m.mentions": { user_ids: [carol.userId] } });
    const marker = await send(alice, roomId, "main timeline marker");
    const forBob = await notifiedAfter(bob, roomId, marker);
    expect(forBob).toContain(reply);
    expect(forBob).not.toContain(marker);
    const forCarol = await notifiedAfter(carol, roomId, marker);
    expect(forCarol).not.toContain(reply);
    expect(forCarol).toContain(mention);
    const carolNotes = (await call("GET", `${V3}/notifications`, { token: carol.accessToken })).body.notifications;
    expect(carolNotes.find((n: any) => n.event.event_id === mention).actions).toContainEqual({ set_tweak: "highlight" });
    const bobNotes = (await call("GET", `${V3}/notifications`, { token: bob.accessToken })).body.notifications;
    expect(bobNotes.find((n: any) => n.event.event_id === reply).actions).toEqual(["notify", { set_tweak: "sound", value: "default" }]);

    // Once bob unsubscribes, the next reply is quiet for him.
    expect((await call("DELETE", sub(roomId, root), { token: bob.accessToken })).status).toBe(200);
    const unmute = await call("DELETE", `${V3}/pushrules/global/room/${enc(roomId)}`, { token: bob.accessToken });
    expect(unmute.status).toBe(200);
    const quiet = await send(alice, roomId, "after bob left the thread", inThread(root));
    const marker2 = await send(alice, roomId, "second marker");
    const forBob2 = await notifiedAfter(bob, roomId, marker2);
    expect(forBob2).not.toContain(quiet);
  });

  it("has the postcontent kind with its two rules; clients may toggle them but not add rules", async () => {
    const { alice, carol, roomId, root } = await threadRoom();
    const t = carol.accessToken;
    const all = await call("GET", `${V3}/pushrules/`, { token: t });
    expect(all.body.global.postcontent.map((r: any) => r.rule_id)).toEqual([".io.element.msc4306.rule.unsubscribed_thread", ".io.element.msc4306.rule.subscribed_thread"]);
    expect(all.body.global.postcontent[0]).toEqual({
      rule_id: ".io.element.msc4306.rule.unsubscribed_thread",
      default: true,
      enabled: true,
      conditions: [{ kind: "io.element.msc4306.thread_subscription", subscribed: false }],
      actions: [],
    });
    const one = await call("GET", `${V3}/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread`, { token: t });
    expect(one.status).toBe(200);
    expect(one.body.conditions).toEqual([{ kind: "io.element.msc4306.thread_subscription", subscribed: true }]);
    const add = await call("PUT", `${V3}/pushrules/global/postcontent/my.rule`, { token: t, body: { actions: ["notify"], conditions: [] } });
    expect(add.status).toBe(400);
    expect(add.body.errcode).toBe("M_INVALID_PARAM");
    const del = await call("DELETE", `${V3}/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread`, { token: t });
    expect(del.status).toBe(400);
    expect(del.body.errcode).toBe("M_INVALID_PARAM");
    // Disabling the unsubscribed-thread rule (what Complement does for the threaded-receipt
    // tests) brings back notifications for every thread reply.
    const off = await call("PUT", `${V3}/pushrules/global/postcontent/.io.element.msc4306.rule.unsubscribed_thread/enabled`, { token: t, body: { enabled: false } });
    expect(off.status).toBe(200);
    expect((await call("GET", `${V3}/pushrules/global/postcontent/.io.element.msc4306.rule.unsubscribed_thread/enabled`, { token: t })).body).toEqual({ enabled: false });
    const reply = await send(alice, roomId, "a reply", inThread(root));
    const marker = await send(alice, roomId, "marker");
    expect(await notifiedAfter(carol, roomId, marker)).toContain(reply);
  });
});

// MSC4308: the sliding-sync extension (io.element.msc4308.thread_subscriptions) and its
// companion pagination endpoint.
const SSS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const PAGE = "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions";
const EXT = "io.element.msc4308.thread_subscriptions";

async function sss(u: TestUser, body: unknown, pos?: string, timeout?: number) {
  const qs = new URLSearchParams({ ...(pos ? { pos } : {}), ...(timeout !== undefined ? { timeout: String(timeout) } : {}) }).toString();
  const r = await call("POST", `${SSS}${qs ? `?${qs}` : ""}`, { token: u.accessToken, body });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

describe("MSC4308 thread subscriptions in sliding sync", () => {
  it("sends changes after the connection's position, with bump_stamps; a long-poll wakes for one", async () => {
    const { alice, bob, roomId, root } = await threadRoom();
    const root2 = await send(alice, roomId, "root 2");
    const reply2 = await send(alice, roomId, "mention", inThread(root2));
    const t = bob.accessToken;
    expect((await call("PUT", sub(roomId, root), { token: t, body: {} })).status).toBe(200);
    expect((await call("PUT", sub(roomId, root2), { token: t, body: { automatic: reply2 } })).status).toBe(200);
    const req = { lists: {}, extensions: { [EXT]: { enabled: true } } };
    const first = await sss(bob, req);
    const ext = first.extensions[EXT];
    expect(Object.keys(ext.subscribed[roomId]).sort()).toEqual([root, root2].sort());
    expect(ext.subscribed[roomId][root]).toMatchObject({ automatic: false });
    expect(ext.subscribed[roomId][root2]).toMatchObject({ automatic: true });
    expect(Number.isInteger(ext.subscribed[roomId][root].bump_stamp)).toBe(true);
    expect(ext.subscribed[roomId][root2].bump_stamp).toBeGreaterThan(ext.subscribed[roomId][root].bump_stamp);
    expect(ext.unsubscribed).toBeUndefined();
    expect(ext.prev_batch).toBeUndefined();

    // Nothing new: an incremental request without a timeout carries no changes.
    const quiet = await sss(bob, req, first.pos);
    expect(quiet.extensions[EXT] ?? {}).toEqual({});

    // An unsubscription during a long-poll answers it.
    const poll = sss(bob, req, quiet.pos, 20_000);
    await new Promise((ok) => setTimeout(ok, 300));
    expect((await call("DELETE", sub(roomId, root), { token: t })).status).toBe(200);
    const woke = await poll;
    expect(woke.extensions[EXT].unsubscribed).toEqual({ [roomId]: { [root]: { bump_stamp: expect.any(Number) } } });
    expect(woke.extensions[EXT].unsubscribed[roomId][root].bump_stamp).toBeGreaterThan(ext.subscribed[roomId][root2].bump_stamp);
    expect(woke.extensions[EXT].subscribed).toBeUndefined();
  });

  it("limits a response to the newest changes and pages back through the rest with prev_batch", async () => {
    const { alice, bob, roomId } = await threadRoom();
    const roots: string[] = [];
    for (let i = 0; i < 5; i++) roots.push(await send(alice, roomId, `root ${i}`));
    const t = bob.accessToken;
    for (const r of roots) expect((await call("PUT", sub(roomId, r), { token: t, body: {} })).status).toBe(200);
    const start = await sss(bob, { lists: {}, extensions: { [EXT]: { enabled: true, limit: 1 } } });
    const before = start.pos;
    // Four changes after the connection's position, to three threads (roots[0]'s first one is
    // superseded: only a thread's latest state is kept and sent); the response may carry two.
    expect((await call("DELETE", sub(roomId, roots[0]), { token: t })).status).toBe(200);
    expect((await call("DELETE", sub(roomId, roots[1]), { token: t })).status).toBe(200);
    expect((await call("DELETE", sub(roomId, roots[2]), { token: t })).status).toBe(200);
    expect((await call("PUT", sub(roomId, roots[0]), { token: t, body: {} })).status).toBe(200);
    const inc = await sss(bob, { lists: {}, extensions: { [EXT]: { enabled: true, limit: 2 } } }, before);
    const e = inc.extensions[EXT];
    // The newest two: roots[0] subscribed again, roots[2] unsubscribed.
    expect(Object.keys(e.subscribed[roomId])).toEqual([roots[0]]);
    expect(Object.keys(e.unsubscribed[roomId])).toEqual([roots[2]]);
    expect(typeof e.prev_batch).toBe("string");
    // Paging back from prev_batch to the request's pos gives the rest: roots[1].
    const back = await call("GET", `${PAGE}?dir=b&from=${enc(e.prev_batch)}&to=${enc(before)}`, { token: t });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(back.body).toEqual({ unsubscribed: { [roomId]: { [roots[1]]: { bump_stamp: expect.any(Number) } } } });
    // Without `to`: everything, newest first by pages of 2, each change once.
    const seen: string[] = [];
    let from: string | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await call("GET", `${PAGE}?dir=b&limit=2${from ? `&from=${enc(from)}` : ""}`, { token: t });
      expect(page.status, JSON.stringify(page.body)).toBe(200);
      for (const m of [page.body.subscribed, page.body.unsubscribed]) for (const r of Object.values(m ?? {})) seen.push(...Object.keys(r as object));
      if (!page.body.end) break;
      from = page.body.end;
    }
    expect(seen.sort()).toEqual([...roots].sort());
  });

  it("answers bad pagination input with Matrix errors", async () => {
    const bob = await registerUser();
    const t = bob.accessToken;
    const bad: [string, number, string][] = [
      ["", 400, "M_MISSING_PARAM"],
      ["dir=f", 400, "M_INVALID_PARAM"],
      ["dir=b&limit=0", 400, "M_INVALID_PARAM"],
      ["dir=b&limit=-1", 400, "M_INVALID_PARAM"],
      ["dir=b&limit=abc", 400, "M_INVALID_PARAM"],
      ["dir=b&from=nonsense", 400, "M_INVALID_PARAM"],
      ["dir=b&to=nonsense", 400, "M_INVALID_PARAM"],
      // A pos this device was never given.
      ["dir=b&to=999999", 400, "M_INVALID_PARAM"],
    ];
    for (const [qs, status, errcode] of bad) {
      const r = await call("GET", `${PAGE}?${qs}`, { token: t });
      expect([r.status, r.body.errcode], qs).toEqual([status, errcode]);
    }
    expect((await call("GET", `${PAGE}?dir=b`)).status).toBe(401);
    const empty = await call("GET", `${PAGE}?dir=b&limit=100000`, { token: t });
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual({});
    // A wrong extension shape is 400 M_BAD_JSON.
    const r = await call("POST", SSS, { token: t, body: { extensions: { [EXT]: { enabled: true, limit: 0 } } } });
    expect([r.status, r.body.errcode]).toEqual([400, "M_BAD_JSON"]);
  });
});
