// Requests the endpoint fuzzer (fuzz.test.ts) found answered with a 5xx or a non-Matrix error,
// kept as plain regression tests: each must now be a Matrix error with the right status.
import { describe, it, expect, beforeAll } from "vitest";
import { SELF } from "cloudflare:test";
import { BASE, clientOk, registerUser, type TestUser } from "./helpers";
import { nestedDeeperThan } from "../../src/api/validate";

const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
let alice: TestUser;
let roomId: string;
let txn = 0;

beforeAll(async () => {
  alice = await registerUser();
  roomId = (await clientOk(alice.accessToken, "POST", "/createRoom", { preset: "private_chat" })).room_id;
});

/** Send a raw JSON text (so it can hold what JSON.stringify would not write). */
async function raw(method: string, path: string, body: string) {
  const res = await SELF.fetch(`${BASE}${path}`, { method, headers: { authorization: `Bearer ${alice.accessToken}`, "content-type": "application/json" }, body });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = { _text: text };
  }
  return { status: res.status, body: json };
}
const send = (body: string) => raw("PUT", `${V3}/rooms/${enc(roomId)}/send/m.room.message/r${++txn}`, body);

describe("event content that is not canonical JSON", () => {
  // Canonical JSON (spec: Appendices) allows integers in [-(2^53)+1, 2^53-1] only, and strings
  // must be valid Unicode. Found by the fuzzer as 500 "Internal error in room".
  it("an integer beyond 2^53 in message content is 400 M_BAD_JSON", async () => {
    const r = await send('{"msgtype":"m.text","body":"x","n":18446744073709551616}');
    expect(r.status, JSON.stringify(r.body)).toBe(400);
    expect(r.body.errcode).toBe("M_BAD_JSON");
  });

  it("a lone surrogate in state content is 400 M_BAD_JSON", async () => {
    const r = await raw("PUT", `${V3}/rooms/${enc(roomId)}/state/m.room.topic/`, '{"topic":"\\ud800"}');
    expect(r.status, JSON.stringify(r.body)).toBe(400);
    expect(r.body.errcode).toBe("M_BAD_JSON");
  });

  it("a non-integer in createRoom's creation_content is 400 M_BAD_JSON", async () => {
    const r = await raw("POST", `${V3}/createRoom`, '{"creation_content":{"x":1e308}}');
    expect(r.status, JSON.stringify(r.body)).toBe(400);
    expect(r.body.errcode).toBe("M_BAD_JSON");
  });
});

describe("deeply nested JSON bodies", () => {
  // Found by the fuzzer: a 20,000-deep object as message content answered 500 (stack overflow).
  it("a 20,000-deep object is refused with 400, and a 100,000-deep array too", async () => {
    for (const body of [`{"a":${'{"a":'.repeat(20_000)}1${"}".repeat(20_000)}}`, "[".repeat(100_000) + "]".repeat(100_000)]) {
      const r = await send(body);
      expect(r.status, JSON.stringify(r.body).slice(0, 200)).toBe(400);
      expect(r.body.errcode).toMatch(/^M_(BAD|NOT)_JSON$/);
    }
  });

  it("content nested 50 deep is still accepted", async () => {
    const r = await send(`{"msgtype":"m.text","body":"x","deep":${'{"a":'.repeat(50)}1${"}".repeat(50)}}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  });
});

describe("nestedDeeperThan", () => {
  it("counts brackets outside strings only, in one pass", () => {
    expect(nestedDeeperThan('{"a":[1]}', 2)).toBe(false);
    expect(nestedDeeperThan('{"a":[[1]]}', 2)).toBe(true);
    expect(nestedDeeperThan('{"a":"[[[[\\"[[[["}', 1)).toBe(false);
    expect(nestedDeeperThan("[".repeat(1_000_000), 128)).toBe(true);
  });
});

describe("deeply nested filter parameters", () => {
  // Found by the fuzzer: GET /rooms/{id}/messages?filter=<5,000-deep object> answered 500
  // (stack overflow passing the filter to the RoomDO; unknown filter keys are kept).
  const deep = `{"a":${'{"a":'.repeat(5000)}1${"}".repeat(5000)}}`;
  // (/sync already refused it; kept as a guard.)
  it("/messages and /sync refuse a filter nested 5,000 deep with 400 M_INVALID_PARAM", async () => {
    for (const path of [`${V3}/rooms/${enc(roomId)}/messages?dir=b&filter=${enc(deep)}`, `${V3}/sync?timeout=0&filter=${enc(deep)}`]) {
      const res = await SELF.fetch(`${BASE}${path}`, { headers: { authorization: `Bearer ${alice.accessToken}` } });
      const body = (await res.json()) as { errcode?: string };
      expect(res.status, `${path.slice(0, 40)} ${JSON.stringify(body)}`).toBe(400);
      expect(body.errcode).toBe("M_INVALID_PARAM");
    }
  });
});
