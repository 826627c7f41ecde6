// A join's state from a resident server, with a member whose own server cannot be reached for
// its signing key (durable-objects/room/keys.ts verifyKey, src/services/federation/keys.ts
// vouchedKey): the resident is asked as a notary (POST /_matrix/key/v2/query), and its answer
// counts only when it carries the member server's self-signature and a valid signature of the
// resident itself. Without it the member's event failed its signature check and the member was
// left out of the room's state for good.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { env } from "cloudflare:test";
import { call, clientOk, makeJoinAnswer, publicRemoteRoom, offline, registerUser, seedRemoteKey, type TestUser } from "./helpers";
import { generateSigningKey, signJson, type SigningKey } from "../../src/core/signing";
import type { JsonObject, PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";
import { vouchedKey } from "../../src/services/federation/keys";
import { parseConfig } from "../../src/config";

const REMOTE = "resident-notary.test";
const REM = `@rem:${REMOTE}`;
const VOUCHED = "gone-vouched.test";
const FORGED = "gone-forged.test";
const LATER = "gone-later.test";
const enc = encodeURIComponent;

let key: SigningKey;
let alice: TestUser;
const memberKeys: Record<string, SigningKey> = {};
/** The key the resident signs its notary answers for FORGED with: not its own. */
let wrongKey: SigningKey;
const asked: string[] = [];

interface Room {
  /** send_join answers members_omitted (a partial-state join): the member comes with /state later. */
  partial?: boolean;
  roomId: string;
  events: Map<string, PDU>;
  order: string[];
  ids: Record<string, string>;
}
const rooms = new Map<string, Room>();

async function makeRoom(memberServer: string, partial = false): Promise<Room> {
  const room: Room = { partial, roomId: "", events: new Map(), order: [], ids: {} };
  const add = await publicRemoteRoom(room, REMOTE, key, REM);
  const u = `@far:${memberServer}`;
  await add("far", { type: "m.room.member", state_key: u, sender: u, content: { membership: "join" }, auth_events: [room.ids.pl, room.ids.rules] }, memberServer, memberKeys[memberServer]);
  rooms.set(room.roomId, room);
  return room;
}

async function keyResponse(server: string) {
  const k = memberKeys[server];
  return signJson({ server_name: server, verify_keys: { [k.keyId]: { key: k.publicKey } }, old_verify_keys: {}, valid_until_ts: Date.now() + 3600_000 }, server, k);
}

async function resident(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const url = new URL(String(input instanceof Request ? input.url : input));
  const path = decodeURIComponent(url.pathname);
  const body = async () => JSON.parse(String(init?.body ?? (input instanceof Request ? await input.text() : "{}")));
  asked.push(`${url.hostname} ${path}`);
  // The members' servers are down.
  if (url.hostname !== REMOTE) return new Response("down", { status: 503 });
  if (path.startsWith("/_matrix/federation/v1/send/")) return Response.json({ pdus: {} });
  if (path === "/_matrix/key/v2/query") {
    const servers = Object.keys((await body()).server_keys ?? {});
    const out = [];
    for (const s of servers.filter((s) => memberKeys[s])) out.push(await signJson(await keyResponse(s), REMOTE, s === FORGED ? { ...wrongKey, keyId: key.keyId } : key));
    return Response.json({ server_keys: out });
  }
  const room = [...rooms.values()].find((r) => path.includes(r.roomId));
  if (!room) return Response.json({ errcode: "M_NOT_FOUND", error: "no such room" }, { status: 404 });
  const pdus = (list: string[]) => list.map((id) => room.events.get(id)!);
  if (path.startsWith(`/_matrix/federation/v1/make_join/${room.roomId}/`)) return makeJoinAnswer(room, alice.userId);
  if (path.startsWith(`/_matrix/federation/v2/send_join/${room.roomId}/`)) {
    const join = (await body()) as PDU;
    const chain = [room.ids.create, room.ids.rem, room.ids.pl, room.ids.rules];
    room.events.set(path.split("/").pop()!, join);
    if (room.partial && url.searchParams.get("omit_members") === "true") {
      return Response.json({ origin: REMOTE, state: pdus([room.ids.create, room.ids.pl, room.ids.rules]), auth_chain: pdus([room.ids.rem]), members_omitted: true, servers_in_room: [REMOTE] });
    }
    return Response.json({ origin: REMOTE, state: pdus(room.order), auth_chain: pdus(chain) });
  }
  if (path === `/_matrix/federation/v1/state_ids/${room.roomId}`) return Response.json({ pdu_ids: room.order, auth_chain_ids: [] });
  if (path === `/_matrix/federation/v1/state/${room.roomId}`) return Response.json({ pdus: pdus(room.order), auth_chain: [] });
  return Response.json({ errcode: "M_UNRECOGNIZED", error: "not here" }, { status: 404 });
}

beforeAll(async () => {
  setFederationFetch(offline);
  key = await seedRemoteKey(REMOTE);
  alice = await registerUser();
  memberKeys[VOUCHED] = await generateSigningKey();
  memberKeys[FORGED] = await generateSigningKey();
  memberKeys[LATER] = await generateSigningKey();
  wrongKey = await generateSigningKey();
  setFederationFetch(resident as typeof fetch);
});
afterAll(() => setFederationFetch(offline));

async function joinedAfterJoin(room: Room): Promise<string[]> {
  const r = await call("POST", `/_matrix/client/v3/join/${enc(room.roomId)}?server_name=${REMOTE}`, { token: alice.accessToken, body: {} });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return Object.keys((await clientOk(alice.accessToken, "GET", `/rooms/${enc(room.roomId)}/joined_members`)).joined as JsonObject).sort();
}

describe("a join's state signed by a server that cannot be reached", () => {
  it("the resident vouches for the member server's key (signed by the resident): the member is in the room", async () => {
    const room = await makeRoom(VOUCHED);
    expect(await joinedAfterJoin(room)).toEqual([REM, `@far:${VOUCHED}`, alice.userId].sort());
    expect(asked).toContain(`${VOUCHED} /_matrix/key/v2/server`);
    expect(asked).toContain(`${REMOTE} /_matrix/key/v2/query`);
    // Not kept in the key ring: the resident is no notary of ours for anything else.
    const row = await env.DB.prepare("SELECT count(*) AS n FROM remote_server_keys WHERE server_name = ?").bind(VOUCHED).first<{ n: number }>();
    expect(row?.n).toBe(0);
  });

  it("a notary answer not signed by the resident's key does not count: the member is left out", async () => {
    const room = await makeRoom(FORGED);
    expect(await joinedAfterJoin(room)).toEqual([REM, alice.userId].sort());
  });

  it("a partial-state join: the member fetched with the rest of the state is vouched for the same way, without waiting", async () => {
    const room = await makeRoom(LATER, true);
    const t0 = Date.now();
    expect(await joinedAfterJoin(room)).toEqual([REM, `@far:${LATER}`, alice.userId].sort());
    // (Without the resident's word the fetch waits for the member server's key: 8 tries over ~48 s.)
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 120_000);

  it("SENDER_AS_NOTARY=off: the resident is not asked for the member server's key", async () => {
    const ctx = { env, config: { ...parseConfig(env), senderAsNotary: false } };
    const before = asked.length;
    expect(await vouchedKey(ctx, REMOTE, VOUCHED, memberKeys[VOUCHED].keyId, { purpose: "event" })).toBeUndefined();
    expect(asked.slice(before)).toEqual([]);
    // The same call with the default (on) asks the resident and gets the key.
    const on = await vouchedKey({ env, config: parseConfig(env) }, REMOTE, VOUCHED, memberKeys[VOUCHED].keyId, { purpose: "event" });
    expect(on?.publicKey).toBe(memberKeys[VOUCHED].publicKey);
  });
});
