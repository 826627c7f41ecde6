// Pure parts of push delivery and TURN: pusher URL rule, tweaks, priority, notify bodies, backoff,
// coturn shared-secret credentials.
import { describe, it, expect } from "vitest";
import { callNoteOf, checkPusherUrl, notifyBody, prioOf, tweaksOf, type PendingPush } from "../../src/core/push-gateway";
import { coalesceBadges, pushBackoffMs } from "../../durable-objects/pusher";
import type { JsonObject } from "../../src/core/types";
import { sharedSecretCredentials } from "../../src/api/client/voip";
import { sendDirect, PushDeadlines, PUSH_DEADLINE_SHARE_MS, PUSH_DIRECT_BUDGET_MS, PUSH_DIRECT_HANDOVER_MS, PUSH_TIMEOUT_MS } from "../../src/services/push-send";

describe("pusher URLs", () => {
  it("needs https and the notify path, refuses private hosts; loopback only when allowed", () => {
    expect(checkPusherUrl("https://push.example.org/_matrix/push/v1/notify", false)).toBeUndefined();
    expect(checkPusherUrl("https://push.example.org:8443/_matrix/push/v1/notify", false)).toBeUndefined();
    expect(checkPusherUrl("http://push.example.org/_matrix/push/v1/notify", false)).toMatch(/https/);
    expect(checkPusherUrl("https://push.example.org/_matrix/push/v1/notify/x", false)).toMatch(/path/);
    expect(checkPusherUrl("https://192.168.1.1/_matrix/push/v1/notify", false)).toMatch(/blocked/);
    expect(checkPusherUrl("https://u:p@push.example.org/_matrix/push/v1/notify", false)).toMatch(/credentials/);
    expect(checkPusherUrl(undefined, false)).toMatch(/required/);
    expect(checkPusherUrl("http://127.0.0.1:8080/_matrix/push/v1/notify", false)).toBeDefined();
    expect(checkPusherUrl("http://127.0.0.1:8080/_matrix/push/v1/notify", true)).toBeUndefined();
    // The loopback exception is only loopback.
    expect(checkPusherUrl("http://10.0.0.1/_matrix/push/v1/notify", true)).toBeDefined();
  });
});

describe("notify bodies", () => {
  const ev = { event_id: "$e", room_id: "!r:hs", type: "m.room.message", sender: "@a:hs", content: { body: "hi", msgtype: "m.text" } };
  const target = { appId: "app", pushkey: "pk", pushkeyTs: 1_700_000_000_123, data: { url: "https://gw/_matrix/push/v1/notify", format: "event_id_only", x: 1 } };
  it("event_id_only carries IDs, counts, prio and the device without url", () => {
    const b = notifyBody({ event: ev, counts: { unread: 3 }, tweaks: { sound: "default" }, prio: "high" }, target) as any;
    expect(b.notification).toEqual({
      event_id: "$e",
      room_id: "!r:hs",
      prio: "high",
      counts: { unread: 3 },
      devices: [{ app_id: "app", pushkey: "pk", pushkey_ts: 1_700_000_000, data: { format: "event_id_only", x: 1 }, tweaks: { sound: "default" } }],
    });
  });
  it("the full format adds type, sender and content; a badge update has counts only", () => {
    const full = notifyBody({ event: ev, counts: { unread: 1 }, tweaks: {}, prio: "high" }, { ...target, data: { url: "https://gw/_matrix/push/v1/notify" } }) as any;
    expect(full.notification.content).toEqual(ev.content);
    expect(full.notification.sender).toBe("@a:hs");
    expect(full.notification.type).toBe("m.room.message");
    const badge = notifyBody({ counts: { unread: 0 }, tweaks: {}, prio: "low" }, target) as any;
    expect(badge.notification).toEqual({ counts: { unread: 0 }, devices: [{ app_id: "app", pushkey: "pk", pushkey_ts: 1_700_000_000, data: { format: "event_id_only", x: 1 } }] });
  });
  it("tweaks and priority", () => {
    expect(tweaksOf(["notify", { set_tweak: "sound", value: "default" }, { set_tweak: "highlight" }])).toEqual({ sound: "default", highlight: true });
    expect(tweaksOf(["notify", { set_tweak: "highlight", value: false }])).toEqual({ highlight: false });
    expect(prioOf({ type: "m.room.message", content: {} }, "@me:hs", {})).toBe("high");
    expect(prioOf({ type: "m.room.member", state_key: "@me:hs", content: { membership: "invite" } }, "@me:hs", {})).toBe("high");
    expect(prioOf({ type: "m.reaction", content: {} }, "@me:hs", {})).toBe("low");
  });
  it("backoff doubles up to a day", () => {
    expect(pushBackoffMs(1, () => 1)).toBe(1000);
    expect(pushBackoffMs(4, () => 1)).toBe(8000);
    expect(pushBackoffMs(4, () => 0)).toBe(4000);
    expect(pushBackoffMs(40, () => 1)).toBe(24 * 3600_000);
  });
});

describe("missed calls and badge coalescing", () => {
  const me = "@me:x";
  const ev = (type: string, sender: string, content: JsonObject) => ({ type, sender, content, origin_server_ts: 1000 });
  it("invites meant for me ring until their lifetime; my answer, reject or hangup takes them; others end them", () => {
    expect(callNoteOf(ev("m.call.invite", "@a:x", { call_id: "c", lifetime: 60000 }), me, 0)).toEqual({ kind: "invite", callId: "c", expiresTs: 61000 });
    expect(callNoteOf(ev("m.call.invite", "@a:x", { call_id: "c" }), me, 0)).toEqual({ kind: "invite", callId: "c", expiresTs: 91000 });
    expect(callNoteOf(ev("m.call.invite", "@a:x", { call_id: "c", lifetime: 1, invitee: "@b:x" }), me, 0)).toBeNull();
    expect(callNoteOf(ev("m.call.invite", "@a:x", { call_id: "c", lifetime: 1, invitee: me }), me, 0)?.kind).toBe("invite");
    expect(callNoteOf(ev("m.call.invite", me, { call_id: "c", lifetime: 1 }), me, 0)).toBeNull();
    for (const t of ["m.call.answer", "m.call.reject", "m.call.hangup"]) expect(callNoteOf(ev(t, me, { call_id: "c" }), me, 0)).toEqual({ kind: "taken", callId: "c" });
    for (const t of ["m.call.reject", "m.call.hangup"]) expect(callNoteOf(ev(t, "@a:x", { call_id: "c" }), me, 0)).toEqual({ kind: "ended", callId: "c" });
    expect(callNoteOf(ev("m.call.answer", "@a:x", { call_id: "c" }), me, 0)).toBeNull();
    expect(callNoteOf(ev("m.call.candidates", "@a:x", { call_id: "c" }), me, 0)).toBeNull();
    expect(callNoteOf(ev("m.call.hangup", "@a:x", {}), me, 0)).toBeNull();
    expect(callNoteOf(ev("m.room.message", "@a:x", { call_id: "c" }), me, 0)).toBeNull();
  });
  it("a badge update superseded by a later one in the same hand-over is left out", () => {
    const badge = (n: number): PendingPush => ({ counts: { unread: n }, tweaks: {}, prio: "low" });
    const push = (id: string): PendingPush => ({ event: { event_id: id, room_id: "!r:x", type: "m.room.message", sender: "@a:x", content: {} }, counts: { unread: 1 }, tweaks: {}, prio: "high" });
    const out = coalesceBadges([badge(3), push("$1"), badge(2), push("$2"), badge(0)]);
    expect(out.map((p) => p.event?.event_id ?? p.counts.unread)).toEqual(["$1", "$2", 0]);
    expect(coalesceBadges([push("$1")]).length).toBe(1);
  });
});

describe("direct sends (the hub or an idle queue, nothing stored per request)", () => {
  const push = (id: string): PendingPush => ({ event: { event_id: id, room_id: "!r:x", type: "m.room.message", sender: "@a:x", content: {} }, counts: { unread: 1 }, tweaks: {}, prio: "high" });
  /** sendDirect over `n` items whose requests take `ms(i)` each on a simulated clock. */
  const run = async (n: number, ms: (i: number) => number) => {
    let clock = 0;
    let i = 0;
    const sent: string[] = [];
    const r = await sendDirect(
      Array.from({ length: n }, (_, k) => push(`$${k}`)),
      (p) => p,
      async () => {
        clock += ms(i++);
        return "sent";
      },
      (p, ok) => ok && sent.push(p.event!.event_id),
      () => clock,
    );
    return { r, sent: sent.length };
  };
  it("a backlog of fast requests that together take over a second is still sent directly", async () => {
    // (a busy thread: each request waited its turn; before, the rest went to the queue at 1 s)
    const { r, sent } = await run(12, () => 150);
    expect(r.end).toBe("sent");
    expect(sent).toBe(12);
  });
  it("a slow gateway (one request over the budget) leaves the rest to the queue", async () => {
    const { r, sent } = await run(5, () => PUSH_DIRECT_BUDGET_MS + 500);
    expect(r).toMatchObject({ end: "slow" });
    expect(sent).toBe(1);
    expect((r as { rest: unknown[] }).rest).toHaveLength(4);
  });
  it("a hand-over is sent directly for a bounded time", async () => {
    const { r, sent } = await run(200, () => 500);
    expect(r.end).toBe("slow");
    expect(sent).toBe(PUSH_DIRECT_HANDOVER_MS / 500 + 1);
  });
});

describe("TURN shared secret (coturn REST scheme)", () => {
  it("username is expiry:user, password base64 HMAC-SHA1 (vector computed with Python's hmac)", async () => {
    const t = await sharedSecretCredentials("s3cret-key", "@a:test.local", ["turn:turn.example.org:3478?transport=udp"], 86400, 1_700_000_000_000);
    expect(t).toEqual({ username: "1700086400:@a:test.local", password: "HKeusei6oTw/HlZZ1lEUlxNfa3s=", uris: ["turn:turn.example.org:3478?transport=udp"], ttl: 86400 });
  });
});

describe("gateway request timeouts (a hub's PushDeadlines)", () => {
  it("requests started within a few seconds share one timer, and each gets at least PUSH_TIMEOUT_MS", () => {
    let now = 1_000_000;
    const made: { ms: number; at: number; c: AbortController }[] = [];
    const d = new PushDeadlines(
      (ms) => {
        const c = new AbortController();
        made.push({ ms, at: now, c });
        return c.signal;
      },
      () => now,
    );
    const starts: { at: number; signal: AbortSignal }[] = [];
    for (let i = 0; i < 100; i++) {
      starts.push({ at: now, signal: d.signal() });
      now += 123; // 100 pushes over ~12 s
    }
    expect(made.length).toBeLessThanOrEqual(Math.ceil((100 * 123) / PUSH_DEADLINE_SHARE_MS) + 1);
    for (const s of starts) {
      const timer = made.find((m) => m.c.signal === s.signal)!;
      const abortsAt = timer.at + timer.ms;
      expect(abortsAt - s.at).toBeGreaterThanOrEqual(PUSH_TIMEOUT_MS);
      expect(abortsAt - s.at).toBeLessThanOrEqual(PUSH_TIMEOUT_MS + PUSH_DEADLINE_SHARE_MS);
    }
    // A signal that fired is not handed out again.
    made[made.length - 1].c.abort();
    expect(d.signal().aborted).toBe(false);
  });
});
