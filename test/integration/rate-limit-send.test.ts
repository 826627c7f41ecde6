// The send limit as users run it (RATE_LIMITS=on, wrangler.toml's default): what it admits and
// refuses, and what it costs per send (issue 21: the limiter object is asked once per lease of a
// few tokens, not once per send, and keeps its buckets in memory only).
import { describe, expect, it } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { call, clientOk, createRoom, registerUser, withEnv, type TestUser } from "./helpers";
import { A, enc, registerAdmin } from "./admin-helpers";
import type { RateLimiterDO } from "../../durable-objects/rate-limiter";

const ON = { RATE_LIMITS: "on" };
const limiter = (key: string) => env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(key));
/** Run `fn` on the limiter object named `key`. */
const onLimiter = <T>(key: string, fn: (inst: RateLimiterDO, state: DurableObjectState) => T | Promise<T>) =>
  runInDurableObject(limiter(key), (inst, state) => fn(inst as unknown as RateLimiterDO, state));

/** Keys and tables the limiter object stored (none: its buckets are in memory). */
async function storedByLimiter(key: string): Promise<number> {
  return onLimiter(key, async (_inst, state) => {
    const tables = [...state.storage.sql.exec("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%' AND name NOT LIKE 'sqlite_%'")];
    return (await state.storage.list()).size + tables.length;
  });
}

async function sendOn(u: TestUser, roomId: string, txn: string) {
  return withEnv(ON, "PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { msgtype: "m.text", body: txn }, u.accessToken);
}

describe("send rate limit (RATE_LIMITS=on)", () => {
  it("admits the burst, then 429 M_LIMIT_EXCEEDED with retry_after_ms; refused sends are not stored", async () => {
    const admin = await registerAdmin();
    const u = await registerUser();
    const roomId = await createRoom(u);
    // A burst of 6, then one token a second (the override API takes whole numbers).
    const set = await call("POST", `${A}/v1/users/${enc(u.userId)}/override_ratelimit`, { token: admin.accessToken, body: { messages_per_second: 1, burst_count: 6 } });
    expect(set.status).toBe(200);
    const statuses: number[] = [];
    let limited: any;
    const start = Date.now();
    for (let i = 0; i < 12; i++) {
      const r = await sendOn(u, roomId, `t${i}`);
      statuses.push(r.status);
      if (r.status === 429) limited = r.body;
    }
    const refilled = Math.floor((Date.now() - start) / 1000);
    expect(statuses.slice(0, 6)).toEqual([200, 200, 200, 200, 200, 200]);
    const accepted = statuses.filter((s) => s === 200).length;
    expect(accepted, statuses.join(",")).toBeLessThanOrEqual(6 + refilled);
    expect(limited?.errcode, statuses.join(",")).toBe("M_LIMIT_EXCEEDED");
    expect(limited.retry_after_ms).toBeGreaterThan(0);
    const msgs = await clientOk(u.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=50`);
    expect(msgs.chunk.filter((e: any) => e.type === "m.room.message").length).toBe(accepted);
    expect(await storedByLimiter(`send:${u.userId}`)).toBe(0);
  });

  it("sequential sends ask the limiter object once per lease of tokens, not once per send", async () => {
    const u = await registerUser();
    const roomId = await createRoom(u);
    for (let i = 0; i < 24; i++) expect((await sendOn(u, roomId, `s${i}`)).status).toBe(200);
    const asked = await onLimiter(`send:${u.userId}`, (inst) => inst.asked);
    expect(asked).toBeLessThanOrEqual(6);
  });

  it("the limiter writes nothing to storage", async () => {
    const u = await registerUser();
    const roomId = await createRoom(u);
    for (let i = 0; i < 3; i++) expect((await sendOn(u, roomId, `w${i}`)).status).toBe(200);
    expect(await storedByLimiter(`send:${u.userId}`)).toBe(0);
  });
});

describe("RateLimiterDO leases", () => {
  it("lease only out of the bucket's upper half, never more than it holds; unspent tokens come back", async () => {
    await onLimiter(`lease-test:${crypto.randomUUID()}`, (inst) => {
      const k = "k";
      // Burst 10, no refill to speak of: 5 (down to half), then one at a time down to 0.
      const taken = [];
      for (let i = 0; i < 8; i++) taken.push(inst.takeLease(k, 0.0001, 10, 0, 8).tokens);
      expect(taken).toEqual([5, 1, 1, 1, 1, 1, 0, 0]);
      expect(inst.takeLease(k, 0.0001, 10, 0, 8).wait).toBeGreaterThan(0);
      // 4 unspent tokens given back: one at a time again (the bucket is under half).
      expect(inst.takeLease(k, 0.0001, 10, 4, 8)).toEqual({ wait: 0, tokens: 1 });
      // Given back beyond the burst: capped at the burst.
      expect(inst.takeLease(k, 0.0001, 10, 100, 8)).toEqual({ wait: 0, tokens: 5 });
    });
  });
});
