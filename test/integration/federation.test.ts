// Inbound federation in workerd: X-Matrix verification (with keys seeded into the D1 key cache
// or served by an injected fetch), transactions with replay protection, queries, the notary,
// and the SenderDO's batching and retries.
import { describe, it, expect, beforeAll, afterEach } from "vitest";
import { env, SELF, runDurableObjectAlarm } from "cloudflare:test";
import { call, offline, registerUser, SERVER, BASE } from "./helpers";
import { generateSigningKey, signJson, verifyJsonSignature, type SigningKey } from "../../src/core/signing";
import { signRequest, formatXMatrix, parseXMatrix } from "../../src/core/x-matrix";
import {
  getVerifyKey,
  ownKeyResponse,
  storeKeyResponse,
  validateKeyResponse,
  resetKeyFetchThrottle,
  type ServerKeys,
} from "../../src/services/federation/keys";
import { parseConfig } from "../../src/config";
import { setFederationFetch } from "../../src/services/federation/client";
import { registerEduHandler } from "../../src/services/federation/inbound";
import { clearDiscoveryCache } from "../../src/services/federation/discovery";

const REMOTE = "remote.test";
let remoteKey: SigningKey;

async function keyResponse(server: string, key: SigningKey, validForMs = 3600_000): Promise<ServerKeys> {
  return signJson({ server_name: server, verify_keys: { [key.keyId]: { key: key.publicKey } }, old_verify_keys: {}, valid_until_ts: Date.now() + validForMs }, server, key);
}

async function signedCall(
  method: string,
  path: string,
  opts: { body?: unknown; key?: SigningKey; origin?: string; destination?: string; signUri?: string; header?: string } = {},
) {
  const key = opts.key ?? remoteKey;
  const origin = opts.origin ?? REMOTE;
  const header =
    opts.header ??
    (await signRequest(key, { method, uri: opts.signUri ?? path, origin, destination: opts.destination ?? SERVER, content: opts.body }));
  return call(method, path, { body: opts.body, headers: { authorization: header } });
}

/** No real network in these tests: every outbound federation request fails unless a test
 *  installs its own fake. */
/** Run the DO's alarm until `done()` holds (automatic alarms may run too), bounded. */
async function driveAlarms(stub: Parameters<typeof runDurableObjectAlarm>[0], done: () => boolean | Promise<boolean>, max = 30) {
  for (let i = 0; i < max && !(await done()); i++) {
    await runDurableObjectAlarm(stub);
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  setFederationFetch(offline);
  remoteKey = await generateSigningKey();
  await storeKeyResponse(env, await keyResponse(REMOTE, remoteKey), REMOTE);
});

afterEach(() => {
  setFederationFetch(offline);
  resetKeyFetchThrottle();
  clearDiscoveryCache();
});

describe("request authentication", () => {
  it("version is public", async () => {
    const r = await call("GET", "/_matrix/federation/v1/version");
    expect(r.status).toBe(200);
    expect(r.body.server.name).toBe("Lattice");
  });

  it("accepts a correctly signed request and answers profile queries", async () => {
    const u = await registerUser();
    await call("PUT", `/_matrix/client/v3/profile/${encodeURIComponent(u.userId)}/displayname`, { token: u.accessToken, body: { displayname: "Fed Test" } });
    const path = `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(u.userId)}`;
    const r = await signedCall("GET", path);
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ displayname: "Fed Test" });
    const f = await signedCall("GET", `${path}&field=avatar_url`);
    expect(f.body).toEqual({});
    const missing = await signedCall("GET", `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(`@nobody:${SERVER}`)}`);
    expect(missing.status).toBe(404);
  });

  it("refuses unsigned, forged, misaddressed and tampered requests with 401 M_UNAUTHORIZED", async () => {
    const path = `/_matrix/federation/v1/query/profile?user_id=${encodeURIComponent(`@x:${SERVER}`)}`;
    const unsigned = await call("GET", path);
    expect([unsigned.status, unsigned.body.errcode]).toEqual([401, "M_UNAUTHORIZED"]);

    const impostor = await generateSigningKey(remoteKey.keyId); // same key ID, different key
    const forged = await signedCall("GET", path, { key: impostor });
    expect([forged.status, forged.body.errcode]).toEqual([401, "M_UNAUTHORIZED"]);

    const misaddressed = await signedCall("GET", path, { destination: "other.test" });
    expect([misaddressed.status, misaddressed.body.errcode]).toEqual([401, "M_UNAUTHORIZED"]);

    const tamperedUri = await signedCall("GET", path, { signUri: "/_matrix/federation/v1/version" });
    expect(tamperedUri.status).toBe(401);

    const good = parseXMatrix(await signRequest(remoteKey, { method: "PUT", uri: "/_matrix/federation/v1/send/t1", origin: REMOTE, destination: SERVER, content: { pdus: [] } }));
    const tamperedBody = await call("PUT", "/_matrix/federation/v1/send/t1", { body: { pdus: [], edus: [] }, headers: { authorization: formatXMatrix(good) } });
    expect(tamperedBody.status).toBe(401);
    const spoofedOrigin = await call("PUT", "/_matrix/federation/v1/send/t1", { body: { pdus: [] }, headers: { authorization: formatXMatrix({ ...good, origin: "evil.test" }) } });
    expect(spoofedOrigin.status).toBe(401);

    const malformed = await call("GET", path, { headers: { authorization: 'X-Matrix origin="a",origin="b"' } });
    expect(malformed.status).toBe(401);
    const bearer = await call("GET", path, { headers: { authorization: "Bearer abc" } });
    expect(bearer.status).toBe(401);

    // A server whose keys cannot be fetched (no network here: fetch fails).
    const stranger = await generateSigningKey();
    const unknown = await signedCall("GET", path, { key: stranger, origin: "stranger.test" });
    expect(unknown.status).toBe(401);
    // An unknown path is 404 M_UNRECOGNIZED (spec: unknown endpoints), signed or not; a known one
    // without a signature is 401.
    const unknownPath = await call("GET", "/_matrix/federation/v1/nonexistent");
    expect(unknownPath.status).toBe(404);
    expect(unknownPath.body.errcode).toBe("M_UNRECOGNIZED");
    expect((await call("GET", "/_matrix/federation/v1/event/$abc")).status).toBe(401);
  });

  it("fetches an unknown origin's key from the origin itself", async () => {
    const key = await generateSigningKey();
    const fetched: string[] = [];
    setFederationFetch(async (input) => {
      const url = String(input);
      fetched.push(url);
      if (url === "https://fresh.test:8448/_matrix/key/v2/server") return Response.json(await keyResponse("fresh.test:8448", key));
      return new Response("no", { status: 404 });
    });
    const r = await signedCall("GET", "/_matrix/federation/v1/query/directory?room_alias=%23nope%3Atest.local", { key, origin: "fresh.test:8448" });
    expect(r.status).toBe(404); // authenticated; the alias just does not exist
    expect(r.body.errcode).toBe("M_NOT_FOUND");
    expect(fetched).toContain("https://fresh.test:8448/_matrix/key/v2/server");
  });

  it("rejects a key response with a wrong server_name or bad self-signature", async () => {
    const key = await generateSigningKey();
    const good = await keyResponse("a.test", key);
    expect(await validateKeyResponse(good, "a.test")).toBeUndefined();
    expect(await validateKeyResponse(good, "b.test")).toBeDefined();
    expect(await validateKeyResponse({ ...good, valid_until_ts: good.valid_until_ts + 1 }, "a.test")).toBeDefined();
    const other = await generateSigningKey();
    expect(await validateKeyResponse(await keyResponse("a.test", other).then((r) => ({ ...r, verify_keys: good.verify_keys })), "a.test")).toBeDefined();
  });
});

describe("transactions", () => {
  it("processes a transaction once, with per-PDU results, and hands EDUs to hooks", async () => {
    const seen: unknown[] = [];
    registerEduHandler("org.example.test_edu", async (_env, _config, origin, content) => {
      seen.push({ origin, content });
    });
    const pdu = {
      room_id: "!unknown:remote.test",
      sender: "@a:remote.test",
      type: "m.room.message",
      content: { body: "hi" },
      origin_server_ts: 1,
      depth: 1,
      prev_events: [],
      auth_events: [],
      hashes: { sha256: "x" },
      event_id: "$ev1:remote.test",
    };
    const body = { origin: REMOTE, origin_server_ts: Date.now(), pdus: [pdu], edus: [{ edu_type: "org.example.test_edu", content: { n: 1 } }] };
    const first = await signedCall("PUT", "/_matrix/federation/v1/send/txn-a", { body });
    expect(first.status).toBe(200);
    expect(first.body.pdus["$ev1:remote.test"].error).toMatch(/unknown room/i);
    const again = await signedCall("PUT", "/_matrix/federation/v1/send/txn-a", { body });
    expect(again.body).toEqual(first.body);
    expect(seen).toEqual([{ origin: REMOTE, content: { n: 1 } }]); // the replay did not re-run the EDU
  });

  it("refuses oversized transactions", async () => {
    const r = await signedCall("PUT", "/_matrix/federation/v1/send/big", { body: { pdus: new Array(51).fill({}) } });
    expect(r.status).toBe(400);
  });
});

describe("keys and notary", () => {
  it("publishes our key, self-signed, valid for at least an hour", async () => {
    const r = await call("GET", "/_matrix/key/v2/server");
    expect(r.status).toBe(200);
    expect(await validateKeyResponse(r.body, SERVER)).toBeUndefined();
    expect(r.body.valid_until_ts).toBeGreaterThan(Date.now() + 3600_000);
  });

  it("serves cached remote keys re-signed by us (GET and POST)", async () => {
    const ours = (await call("GET", "/_matrix/key/v2/server")).body as ServerKeys;
    const [ourKeyId, { key: ourPub }] = Object.entries(ours.verify_keys)[0];
    const g = await call("GET", `/_matrix/key/v2/query/${REMOTE}`);
    expect(g.status).toBe(200);
    expect(g.body.server_keys).toHaveLength(1);
    const resp = g.body.server_keys[0];
    expect(await validateKeyResponse(resp, REMOTE)).toBeUndefined();
    expect(await verifyJsonSignature(resp, SERVER, ourKeyId, ourPub)).toBe(true);

    const p = await call("POST", "/_matrix/key/v2/query", { body: { server_keys: { [REMOTE]: {}, [SERVER]: {} } } });
    expect(p.status).toBe(200);
    expect(p.body.server_keys.map((k: ServerKeys) => k.server_name).sort()).toEqual([REMOTE, SERVER].sort());
    expect((await call("POST", "/_matrix/key/v2/query", { body: { server_keys: {} } })).body).toEqual({ server_keys: [] });
    expect((await call("POST", "/_matrix/key/v2/query", { body: { nope: 1 } })).status).toBe(400);
  });
});

describe("key validity rules", () => {
  it("requests need a current key; events may use old keys before they expired; validity is capped at 7 days", async () => {
    const cur = await generateSigningKey("ed25519:cur");
    const old = await generateSigningKey("ed25519:old");
    const now = Date.now();
    const resp = await signJson(
      {
        server_name: "rot.test",
        verify_keys: { [cur.keyId]: { key: cur.publicKey } },
        old_verify_keys: { [old.keyId]: { key: old.publicKey, expired_ts: now - 1000 } },
        valid_until_ts: now + 365 * 24 * 3600_000,
      },
      "rot.test",
      cur,
    );
    expect(await validateKeyResponse(resp, "rot.test")).toBeUndefined();
    await storeKeyResponse(env, resp, "rot.test", now);
    const ctx = { env, config: parseConfig(env) };
    const c = await getVerifyKey(ctx, "rot.test", cur.keyId, { purpose: "request" });
    expect(c?.publicKey).toBe(cur.publicKey);
    expect(c!.validUntilTs).toBeLessThanOrEqual(now + 7 * 24 * 3600_000);
    // Old keys never authenticate requests...
    expect(await getVerifyKey(ctx, "rot.test", old.keyId, { purpose: "request" })).toBeUndefined();
    // ...but verify events from before they expired, not after.
    expect((await getVerifyKey(ctx, "rot.test", old.keyId, { purpose: "event", ts: now - 5000 }))?.publicKey).toBe(old.publicKey);
    expect(await getVerifyKey(ctx, "rot.test", old.keyId, { purpose: "event", ts: now })).toBeUndefined();
    // Beyond valid_until_ts (capped): not valid for an event from then.
    expect(await getVerifyKey(ctx, "rot.test", cur.keyId, { purpose: "event", ts: now + 8 * 24 * 3600_000 })).toBeUndefined();
    expect((await getVerifyKey(ctx, "rot.test", cur.keyId, { purpose: "event" }))?.publicKey).toBe(cur.publicKey);
  });

  it("an expired cached key is refetched; a response for another server is refused", async () => {
    const k = await generateSigningKey();
    const stale = await keyResponse("stale.test", k, -1000); // already expired
    await storeKeyResponse(env, stale, "stale.test");
    const ctx = { env, config: parseConfig(env) };
    let fetches = 0;
    setFederationFetch(async (input) => {
      // Discovery (well-known, DNS-over-HTTPS) goes through the same fetch; count key fetches.
      if (String(input) === "https://stale.test:8448/_matrix/key/v2/server") fetches++;
      return Response.json(await keyResponse("stale.test", k));
    });
    expect((await getVerifyKey(ctx, "stale.test", k.keyId, { purpose: "request" }))?.publicKey).toBe(k.publicKey);
    expect(fetches).toBe(1);
    const k2 = await generateSigningKey();
    setFederationFetch(async () => Response.json(await keyResponse("liar.test", k2)));
    expect(await getVerifyKey(ctx, "victim.test", k2.keyId, { purpose: "request" })).toBeUndefined();
  });

  it("concurrent lookups of a new server's key share its one fetch (none is refused by the throttle)", async () => {
    const k = await generateSigningKey();
    const ctx = { env, config: parseConfig(env) };
    let fetches = 0;
    setFederationFetch(async (input) => {
      if (String(input) === "https://burst.test:8448/_matrix/key/v2/server") fetches++;
      await new Promise((r) => setTimeout(r, 20));
      return Response.json(await keyResponse("burst.test", k));
    });
    const got = await Promise.all(Array.from({ length: 4 }, () => getVerifyKey(ctx, "burst.test", k.keyId, { purpose: "request" })));
    expect(got.map((x) => x?.publicKey)).toEqual(Array(4).fill(k.publicKey));
    expect(fetches).toBe(1);
  });

  it("publishes configured old keys (key rotation) under old_verify_keys", async () => {
    const config = { ...parseConfig(env), oldVerifyKeys: [{ keyId: "ed25519:retired", publicKey: "A".repeat(43), expiredTs: 1234 }] };
    const r = await ownKeyResponse(env, config);
    expect(r.old_verify_keys).toMatchObject({ "ed25519:retired": { key: "A".repeat(43), expired_ts: 1234 } });
    expect(await validateKeyResponse(r, SERVER)).toBeUndefined();
  });
});

describe("SenderDO", () => {
  it("batches ≤50 PDUs per transaction in order, one at a time, and retries failures with the same txnId", async () => {
    const txns: { path: string; pdus: number[]; auth: string }[] = [];
    let failNext = 1;
    setFederationFetch(async (input, init) => {
      const url = new URL(String(input));
      if (failNext > 0) {
        failNext--;
        return new Response("down", { status: 502 });
      }
      const body = JSON.parse(String(init!.body));
      txns.push({ path: url.pathname, pdus: body.pdus.map((p: { n: number }) => p.n), auth: new Headers(init!.headers).get("authorization") ?? "" });
      return Response.json({ pdus: {} });
    });
    const dest = "peer.test:8448";
    const stub = env.FEDERATION_SENDER.get(env.FEDERATION_SENDER.idFromName(dest));
    const pdus = Array.from({ length: 120 }, (_, n) => ({ n }));
    await stub.enqueue(SERVER, dest, pdus, [{ edu_type: "m.typing", content: {} }]);
    // First attempt fails (502), then three transactions: 50 + 50 + 20 PDUs.
    await driveAlarms(stub, async () => (await stub.status()).queued === 0);
    const st = await stub.status();
    expect(txns.map((t) => t.pdus.length)).toEqual([50, 50, 20]);
    expect(txns.flatMap((t) => t.pdus)).toEqual(pdus.map((p) => p.n));
    expect(new Set(txns.map((t) => t.path)).size).toBe(3);
    expect(parseXMatrix(txns[0].auth)).toMatchObject({ origin: SERVER, destination: dest });
    expect(st).toMatchObject({ queued: 0, failures: 0, sentTxns: 3, down: false });
  });

  it("marks a destination down after repeated failures and resumes on wake()", async () => {
    let up = false;
    let delivered = 0;
    setFederationFetch(async (_input, init) => {
      if (!up) throw new Error("connection refused");
      delivered += JSON.parse(String(init!.body)).pdus.length;
      return Response.json({ pdus: {} });
    });
    const dest = "flaky.test:8448";
    const stub = env.FEDERATION_SENDER.get(env.FEDERATION_SENDER.idFromName(dest));
    await stub.enqueue(SERVER, dest, [{ n: 1 }], []);
    await driveAlarms(stub, async () => (await stub.status()).down);
    const down = await stub.status();
    expect(down.down).toBe(true);
    expect(down.queued).toBe(1);
    expect(down.nextAttemptTs! - Date.now()).toBeGreaterThan(30_000); // long backoff while down
    up = true;
    await stub.wake();
    await driveAlarms(stub, () => delivered > 0);
    expect(delivered).toBe(1);
    expect(await stub.status()).toMatchObject({ queued: 0, down: false });
  });
});

describe("SenderDO queue bound", () => {
  it("drops EDUs first, then the oldest PDUs, when a dead peer's queue overflows", async () => {
    const dest = "gone.test:8448";
    const stub = env.FEDERATION_SENDER.get(env.FEDERATION_SENDER.idFromName(dest));
    await stub.enqueue(SERVER, dest, [], [{ edu_type: "m.typing", content: {} }]);
    await stub.enqueue(SERVER, dest, Array.from({ length: 5000 }, (_, n) => ({ n })), []);
    const st = await stub.status();
    expect(st.queued).toBe(5000);
    expect(st.dropped).toBe(1); // the EDU went first
    await stub.enqueue(SERVER, dest, [{ n: 5000 }], []);
    expect((await stub.status()).queued).toBe(5000);
  });
});

// Keep SELF/BASE referenced for readers who extend this file with raw requests.
void SELF;
void BASE;
