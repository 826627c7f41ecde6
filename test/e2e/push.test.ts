// Push notifications end to end: a real server (`npm start`, PUSH_HTTP_LOOPBACK=true) pushing to
// a push gateway written here (plain Node HTTP on loopback) that records every
// POST /_matrix/push/v1/notify and can fail, hang or reject on demand.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort, startServer, type RunningServer } from "./harness";
import { ok, registerUser, until, type Json, type User } from "./client";

/** What the gateway does with the next request for a pushkey. */
type Mode = { kind: "ok" } | { kind: "fail"; times: number } | { kind: "reject" } | { kind: "hang" };

class Gateway {
  server!: Server;
  port = 0;
  /** Every request received, answered or not. */
  received: { pushkey: string; body: Json; answered: number }[] = [];
  modes = new Map<string, Mode>();
  hanging: ServerResponse[] = [];

  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(this.port, "127.0.0.1", () => r()));
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}/_matrix/push/v1/notify`;
  }
  private handle(req: IncomingMessage, res: ServerResponse): void {
    let raw = "";
    req.on("data", (d) => (raw += d));
    req.on("end", () => {
      const body = JSON.parse(raw) as Json;
      const pushkey = body.notification.devices[0].pushkey as string;
      const entry = { pushkey, body, answered: 0 };
      this.received.push(entry);
      const mode = this.modes.get(pushkey) ?? { kind: "ok" };
      if (mode.kind === "hang") {
        this.hanging.push(res);
        return;
      }
      if (mode.kind === "fail" && mode.times > 0) {
        mode.times--;
        res.writeHead(500).end("{}");
        return;
      }
      entry.answered = 200;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ rejected: mode.kind === "reject" ? [pushkey] : [] }));
    });
  }
  /** Answered (delivered) notifications for a pushkey, in arrival order. */
  delivered(pushkey: string): Json[] {
    return this.received.filter((r) => r.pushkey === pushkey && r.answered === 200).map((r) => r.body.notification);
  }
  async stop(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

const gw = new Gateway();
let server: RunningServer;
let port: number;
const stateDir = mkdtempSync(path.join(tmpdir(), "lattice-push-"));
const vars = { PUSH_HTTP_LOOPBACK: "true" };

beforeAll(async () => {
  await gw.start();
  port = await freePort();
  server = await startServer(vars, { stateDir, port });
});
afterAll(async () => {
  await server?.stop();
  await gw.stop();
  rmSync(stateDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let n = 0;
const name = (p: string) => `${p}${Date.now().toString(36)}${++n}`;

async function loginAgain(u: User, password: string): Promise<User> {
  const r = await fetch(`${u.server.baseUrl}/_matrix/client/v3/login`, {
    method: "POST",
    body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password }),
  });
  const b = (await r.json()) as Json;
  return { server: u.server, userId: b.user_id, deviceId: b.device_id, token: b.access_token };
}

async function setPusher(u: User, pushkey: string, data: Json = {}): Promise<void> {
  await ok(u, "POST", "/pushers/set", {
    kind: "http",
    app_id: "org.example.e2e",
    pushkey,
    app_display_name: "e2e",
    device_display_name: u.deviceId,
    lang: "en",
    data: { url: gw.url, ...data },
  });
}

/** A two-person room of `a` and `b` (b joined). */
async function dm(a: User, b: User): Promise<string> {
  const { room_id } = await ok(a, "POST", "/createRoom", { preset: "private_chat", invite: [b.userId] });
  await ok(b, "POST", `/join/${encodeURIComponent(room_id)}`, {});
  return room_id;
}

async function send(u: User, roomId: string, body: string, extra: Json = {}): Promise<string> {
  const r = await ok(u, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${name("t")}`, { msgtype: "m.text", body, ...extra });
  return r.event_id;
}

describe("push notifications", () => {
  it("two pushers on two devices: exactly one notify per notifying event each, counts, highlight, none for own messages or muted rooms", async () => {
    const pw = "pw-123456";
    const alice = await registerUser(server, name("alice"), pw);
    const bob = await registerUser(server, name("bob"), pw);
    const bob2 = await loginAgain(bob, pw);
    const full = name("full");
    const idOnly = name("idonly");
    await setPusher(bob, full, { custom: "x" });
    await setPusher(bob2, idOnly, { format: "event_id_only" });
    expect((await ok(bob, "GET", "/pushers")).pushers.length).toBe(2);

    const roomId = await dm(alice, bob);
    const m1 = await send(alice, roomId, "hello");
    const m2 = await send(alice, roomId, "hey bob", { "m.mentions": { user_ids: [bob.userId] } });
    const own = await send(bob, roomId, "my own message");
    const m3 = await send(alice, roomId, "after bob spoke");

    // Muted room: a room rule without actions (dont_notify).
    const muted = await dm(alice, bob);
    await ok(bob, "PUT", `/pushrules/global/room/${encodeURIComponent(muted)}`, { actions: [] });
    const mutedMsg = await send(alice, muted, "you will not hear this");

    await until("m3 on both pushers", async () => gw.delivered(full).some((x) => x.event_id === m3) && gw.delivered(idOnly).some((x) => x.event_id === m3));
    await sleep(1500); // anything extra (duplicates, own or muted messages) would arrive by now
    for (const pk of [full, idOnly]) {
      const got = gw.delivered(pk).filter((x) => x.event_id);
      const ids = got.map((x) => x.event_id);
      for (const id of [m1, m2, m3]) expect(ids.filter((x) => x === id).length, `${pk} ${id}`).toBe(1);
      expect(ids).not.toContain(own);
      expect(ids).not.toContain(mutedMsg);
      // In order, with the badge: unread counts notifying messages after bob's read mark (his own
      // message marks everything before it read).
      const byId = new Map(got.map((x) => [x.event_id, x]));
      expect(ids.indexOf(m1)).toBeLessThan(ids.indexOf(m2));
      expect(byId.get(m1)!.counts.unread).toBe(1);
      expect(byId.get(m2)!.counts.unread).toBe(2);
      expect(byId.get(m3)!.counts.unread).toBe(1);
      expect(byId.get(m1)!.prio).toBe("high");
      const dev = byId.get(m2)!.devices[0];
      expect(dev.app_id).toBe("org.example.e2e");
      expect(dev.pushkey).toBe(pk);
      expect(typeof dev.pushkey_ts).toBe("number");
      expect(dev.data.url).toBeUndefined();
      expect(dev.tweaks.highlight).toBe(true);
      expect(byId.get(m1)!.devices[0].tweaks.highlight ?? false).toBe(false);
      expect(byId.get(m1)!.room_id).toBe(roomId);
    }
    const f = gw.delivered(full).find((x) => x.event_id === m1)!;
    expect(f.type).toBe("m.room.message");
    expect(f.sender).toBe(alice.userId);
    expect(f.content.body).toBe("hello");
    expect(f.devices[0].data).toEqual({ custom: "x" });
    const i = gw.delivered(idOnly).find((x) => x.event_id === m1)!;
    expect(i.content).toBeUndefined();
    expect(i.sender).toBeUndefined();
    expect(i.devices[0].data).toEqual({ format: "event_id_only" });

    // Reading elsewhere: a receipt sends a badge update (counts only) with the lower count.
    const before = gw.delivered(full).length;
    await ok(bob2, "POST", `/rooms/${encodeURIComponent(roomId)}/receipt/m.read/${encodeURIComponent(m3)}`, {});
    const badge = await until("badge update", async () => gw.delivered(full).slice(before).find((x) => !x.event_id));
    expect(badge.counts.unread).toBe(0);
    expect(badge.devices[0].pushkey).toBe(full);
  });

  it("sends keep their latency when the room's members have pushers (pushing is off the send path)", async () => {
    // Two rooms of 15 with the same sender; in one the 14 others have pushers. Blocks of sends
    // alternate between them (each block waits until the previous one's pushes arrived), so
    // machine load falls on both alike. Before the fix every push cost the one workerd thread
    // three SQLite commits (fsyncs), and back-to-back sends queued behind them.
    const size = 15;
    const users = async (tag: string) => Promise.all(Array.from({ length: size - 1 }, (_, i) => registerUser(server, name(`${tag}${i}x`), "pw-123456")));
    const sender = await registerUser(server, name("loud"), "pw-123456");
    const [pushed, quiet] = [await users("p"), await users("q")];
    const room = async (members: User[]) => {
      const { room_id } = await ok(sender, "POST", "/createRoom", { preset: "public_chat" });
      for (const m of members) await ok(m, "POST", `/join/${encodeURIComponent(room_id)}`, {});
      return room_id as string;
    };
    const [withPushers, without] = [await room(pushed), await room(quiet)];
    const keys = pushed.map(() => name("lat"));
    for (const [i, m] of pushed.entries()) await setPusher(m, keys[i], { format: "event_id_only" });
    let sentWith = 0;
    const block = async (roomId: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const t = performance.now();
        await send(sender, roomId, "latency");
        out.push(performance.now() - t);
      }
      if (roomId === withPushers) {
        sentWith += n;
        await until("the block's pushes", async () => keys.every((k) => gw.delivered(k).length >= sentWith), 60_000);
      }
      return out;
    };
    await block(withPushers, 3); // warm-up
    await block(without, 3);
    const a: number[] = [];
    const b: number[] = [];
    for (let round = 0; round < 3; round++) {
      a.push(...(await block(withPushers, 8)));
      b.push(...(await block(without, 8)));
    }
    const median = (v: number[]) => [...v].sort((p, q) => p - q)[Math.floor(v.length / 2)];
    const [ma, mb] = [median(a), median(b)];
    console.log(`room of ${size}: median send ${ma.toFixed(0)} ms with pushers, ${mb.toFixed(0)} ms without`);
    expect(ma, `median send ${ma.toFixed(0)} ms with pushers, ${mb.toFixed(0)} ms without`).toBeLessThan(1.5 * mb + 50);
    // And every push arrived, once.
    await sleep(1000);
    for (const k of keys) expect(new Set(gw.delivered(k).map((x) => x.event_id)).size).toBe(gw.delivered(k).length);
  });

  it("counts.missed_calls: a call that ended unanswered counts until read, an answered one never", async () => {
    const alice = await registerUser(server, name("alice"), "pw-123456");
    const bob = await registerUser(server, name("bob"), "pw-123456");
    const pk = name("calls");
    await setPusher(bob, pk);
    const roomId = await dm(alice, bob);
    await until("the invite's push", async () => gw.delivered(pk).length === 1);
    const call = async (u: User, type: string, content: Json) =>
      (await ok(u, "PUT", `/rooms/${encodeURIComponent(roomId)}/send/${type}/${name("c")}`, { version: "1", ...content })).event_id as string;
    const offer = { type: "offer", sdp: "v=0" };
    // A call bob answers is not missed (and his answer, like anything he sends, marks the room read).
    await call(alice, "m.call.invite", { call_id: "c1", party_id: "a", lifetime: 60_000, offer });
    await call(bob, "m.call.answer", { call_id: "c1", party_id: "b", answer: { type: "answer", sdp: "v=0" } });
    await call(alice, "m.call.hangup", { call_id: "c1", party_id: "a" });
    // A call bob never picks up: it rings (pushed, nothing missed yet), then alice hangs up.
    const ring = await call(alice, "m.call.invite", { call_id: "c2", party_id: "a", lifetime: 60_000, offer });
    const rang = await until("the ring's push", async () => gw.delivered(pk).find((x) => x.event_id === ring));
    expect(rang.counts.missed_calls).toBe(0);
    await call(alice, "m.call.hangup", { call_id: "c2", party_id: "a" });
    const badge = await until("a badge update for the missed call", async () => gw.delivered(pk).find((x) => !x.event_id && x.counts.missed_calls === 1));
    expect(badge.counts.unread).toBe(1);
    const after = await send(alice, roomId, "call me back");
    const msg = await until("the message's push", async () => gw.delivered(pk).find((x) => x.event_id === after));
    expect(msg.counts.missed_calls).toBe(1);
    // Reading the room acknowledges the missed call.
    await ok(bob, "POST", `/rooms/${encodeURIComponent(roomId)}/receipt/m.read/${encodeURIComponent(after)}`, {});
    const read = await until("badge after reading", async () => gw.delivered(pk).findLast((x) => !x.event_id && x.counts.unread === 0));
    expect(read.counts.missed_calls).toBe(0);
  });

  it("a gateway answering 500 three times gets the notifications after retries, in order", async () => {
    const alice = await registerUser(server, name("alice"), "pw-123456");
    const bob = await registerUser(server, name("bob"), "pw-123456");
    const pk = name("flaky");
    await setPusher(bob, pk);
    const roomId = await dm(alice, bob);
    await until("the invite's push", async () => gw.delivered(pk).length === 1);
    gw.modes.set(pk, { kind: "fail", times: 3 });
    const sent = [await send(alice, roomId, "one"), await send(alice, roomId, "two"), await send(alice, roomId, "three")];
    await until("all three delivered", async () => gw.delivered(pk).length >= 4, 30_000);
    expect(gw.delivered(pk).slice(1).map((x) => x.event_id)).toEqual(sent);
    const attempts = gw.received.filter((r) => r.pushkey === pk).slice(1);
    expect(attempts.filter((r) => r.answered !== 200).length).toBe(3);
    expect(attempts.slice(0, 4).every((r) => r.body.notification.event_id === sent[0])).toBe(true);
  });

  it("a rejected pushkey disappears from /pushers", async () => {
    const alice = await registerUser(server, name("alice"), "pw-123456");
    const bob = await registerUser(server, name("bob"), "pw-123456");
    const pk = name("rejected");
    await setPusher(bob, pk);
    await setPusher(bob, name("kept"));
    gw.modes.set(pk, { kind: "reject" });
    const roomId = await dm(alice, bob);
    await send(alice, roomId, "hello");
    await until("pusher removed", async () => {
      const list = (await ok(bob, "GET", "/pushers")).pushers as Json[];
      return list.length === 1 && list[0].pushkey !== pk;
    });
    // No further pushes to it.
    const seen = gw.received.filter((r) => r.pushkey === pk).length;
    await send(alice, roomId, "again");
    await sleep(1500);
    expect(gw.received.filter((r) => r.pushkey === pk).length).toBe(seen);
  });

  it("the server is killed between send and push, and the push arrives after restart", async () => {
    const alice = await registerUser(server, name("alice"), "pw-123456");
    const bob = await registerUser(server, name("bob"), "pw-123456");
    const pk = name("restart");
    await setPusher(bob, pk);
    const roomId = await dm(alice, bob);
    gw.modes.set(pk, { kind: "hang" });
    const eventId = await send(alice, roomId, "survive");
    // The push is on its way (the gateway holds it unanswered) when the server dies.
    await until("push attempted", async () => gw.received.some((r) => r.pushkey === pk && r.body.notification.event_id === eventId));
    await server.stop();
    gw.modes.set(pk, { kind: "ok" });
    server = await startServer(vars, { stateDir, port });
    await until("push delivered after restart", async () => gw.delivered(pk).some((x) => x.event_id === eventId), 60_000);
  });
});
