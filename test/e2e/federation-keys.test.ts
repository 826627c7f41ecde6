// Two real Lattice servers on loopback (FEDERATION_HTTP_LOOPBACK=true, names localhost:<port>):
// A fetches B's keys as a notary, B verifies a request signed with A's key (fetching A's key
// from A over federation), and refuses forged or misaddressed ones.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { startServer, freePort, type RunningServer } from "./harness";
import { generateSigningKey, verifyJsonSignature, type SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";

let a: RunningServer;
let b: RunningServer;
let aKey: SigningKey;

beforeAll(async () => {
  aKey = await generateSigningKey("ed25519:e2eA");
  const [pa, pb] = [await freePort(), await freePort()];
  // A's signing key is configured so that this test can sign requests as A.
  [a, b] = await Promise.all([
    startServer({ FEDERATION_HTTP_LOOPBACK: "true", SIGNING_KEY: `ed25519 e2eA ${aKey.seed}` }, { port: pa }),
    startServer({ FEDERATION_HTTP_LOOPBACK: "true", TRUSTED_KEY_SERVERS: `localhost:${pa}` }, { port: pb }),
  ]);
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

async function keysOf(s: RunningServer) {
  return (await (await fetch(`${s.baseUrl}/_matrix/key/v2/server`)).json()) as {
    server_name: string;
    verify_keys: Record<string, { key: string }>;
    signatures: Record<string, Record<string, string>>;
  };
}

describe("federation between two servers", () => {
  it("A serves B's keys as a notary, signed by both", async () => {
    expect(a.serverName).toBe(`localhost:${a.port}`);
    const bKeys = await keysOf(b);
    const [bKeyId, { key: bPub }] = Object.entries(bKeys.verify_keys)[0];
    const r = await fetch(`${a.baseUrl}/_matrix/key/v2/query`, {
      method: "POST",
      body: JSON.stringify({ server_keys: { [b.serverName]: { [bKeyId]: { minimum_valid_until_ts: Date.now() } } } }),
    });
    expect(r.status).toBe(200);
    const body = (await r.json()) as { server_keys: Record<string, unknown>[] };
    expect(body.server_keys).toHaveLength(1);
    const resp = body.server_keys[0];
    expect(resp.server_name).toBe(b.serverName);
    expect(await verifyJsonSignature(resp, b.serverName, bKeyId, bPub)).toBe(true);
    expect(await verifyJsonSignature(resp, a.serverName, aKey.keyId, aKey.publicKey)).toBe(true);
    // The GET form too.
    const g = (await (await fetch(`${a.baseUrl}/_matrix/key/v2/query/${encodeURIComponent(b.serverName)}`)).json()) as { server_keys: unknown[] };
    expect(g.server_keys).toHaveLength(1);
  });

  it("B verifies a request signed by A and refuses forged and misaddressed ones", async () => {
    const path = "/_matrix/federation/v1/query/profile?user_id=" + encodeURIComponent(`@nobody:${b.serverName}`);
    const send = async (key: SigningKey, destination = b.serverName) =>
      fetch(`${b.baseUrl}${path}`, {
        headers: { authorization: await signRequest(key, { method: "GET", uri: path, origin: a.serverName, destination }) },
      });
    const ok = await send(aKey);
    // Authenticated (B fetched A's key from A); the user simply does not exist.
    expect(ok.status).toBe(404);
    expect(((await ok.json()) as { errcode: string }).errcode).toBe("M_NOT_FOUND");

    const forger = await generateSigningKey(aKey.keyId);
    const forged = await send(forger);
    expect(forged.status).toBe(401);
    expect(((await forged.json()) as { errcode: string }).errcode).toBe("M_UNAUTHORIZED");

    const misaddressed = await send(aKey, "localhost:1");
    expect(misaddressed.status).toBe(401);

    const unsigned = await fetch(`${b.baseUrl}${path}`);
    expect(unsigned.status).toBe(401);
  });
});
