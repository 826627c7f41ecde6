// Federated rooms, serving side, in workerd: the error paths of make_join/send_join,
// make_leave/send_leave, make_knock/send_knock, v2 invite, event, state, state_ids, event_auth,
// backfill and get_missing_events. Remote servers are simulated: their signing keys are seeded
// into the D1 key cache, their requests and events are signed here, and every outbound
// federation request fails (no network).
import { describe, it, expect, beforeAll, afterEach } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, SERVER, type TestUser } from "./helpers";
import { generateSigningKey, signJson, type SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { computeEventId, hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { storeKeyResponse, resetKeyFetchThrottle } from "../../src/services/federation/keys";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "remote.test";
const EVIL = "evil.test"; // denied by the ACL of the rooms below
const OTHER = "other.test"; // allowed, but with no user in the rooms
const keys: Record<string, SigningKey> = {};
const enc = encodeURIComponent;

const offline: typeof fetch = async () => {
  throw new Error("offline (test)");
};

async function seedKey(server: string): Promise<void> {
  const key = await generateSigningKey();
  keys[server] = key;
  const resp = await signJson({ server_name: server, verify_keys: { [key.keyId]: { key: key.publicKey } }, old_verify_keys: {}, valid_until_ts: Date.now() + 3600_000 }, server, key);
  await storeKeyResponse(env, resp, server);
}

/** A federation request from `origin`, X-Matrix signed with its key. */
async function fed(origin: string, method: string, path: string, body?: unknown) {
  const uri = `/_matrix/federation${path}`;
  const authorization = await signRequest(keys[origin], { method, uri, origin, destination: SERVER, content: body });
  return call(method, uri, { body, headers: { authorization } });
}

function client(u: TestUser, method: string, path: string, body?: unknown) {
  return call(method, `/_matrix/client/v3${path}`, { token: u.accessToken, body });
}

async function ok(u: TestUser, method: string, path: string, body?: unknown) {
  const r = await client(u, method, path, body);
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** make_* template → an event signed by the template user's server. */
async function signTemplate(template: Record<string, any>, server: string, patch: Record<string, unknown> = {}, key = keys[server]) {
  const rv = getRoomVersion(template.room_version)!;
  const { origin: _o, ...ev } = template.event;
  void _o;
  return hashAndSignEvent({ ...ev, origin_server_ts: Date.now(), ...patch } as unknown as PDU, rv, server, key);
}

/** A remote user joins through make_join/send_join; returns the send_join answer. */
async function remoteJoin(roomId: string, userId: string, query = "") {
  const server = userId.split(":")[1];
  const t = await fed(server, "GET", `/v1/make_join/${enc(roomId)}/${enc(userId)}?ver=11&ver=12`);
  expect(t.status).toBe(200);
  const { pdu, eventId } = await signTemplate(t.body, server);
  const r = await fed(server, "PUT", `/v2/send_join/${enc(roomId)}/${enc(eventId)}${query}`, pdu);
  return { ...r, eventId };
}

let alice: TestUser;
/** A v12 public room with `shared` history (the preset), ACL denying evil.test, remote.test joined. */
let room: string;
/** A v12 room with `joined` history visibility, remote.test joined. */
let joinedRoom: string;

beforeAll(async () => {
  setFederationFetch(offline);
  for (const s of [REMOTE, EVIL, OTHER]) await seedKey(s);
  alice = await registerUser();
  room = (await ok(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12", name: "Serving" })).room_id;
  await ok(alice, "PUT", `/rooms/${enc(room)}/state/m.room.server_acl/`, { allow: ["*"], deny: [EVIL], allow_ip_literals: false });
  const j = await remoteJoin(room, `@rem:${REMOTE}`);
  expect(j.status).toBe(200);
  joinedRoom = (await ok(alice, "POST", "/createRoom", {
    preset: "public_chat",
    room_version: "12",
    initial_state: [{ type: "m.room.history_visibility", state_key: "", content: { history_visibility: "joined" } }],
  })).room_id;
  expect((await remoteJoin(joinedRoom, `@rem:${REMOTE}`)).status).toBe(200);
  await ok(alice, "PUT", `/rooms/${enc(joinedRoom)}/send/m.room.message/t1`, { msgtype: "m.text", body: "secret" });
});

afterEach(() => {
  setFederationFetch(offline);
  resetKeyFetchThrottle();
});

async function latestEventId(roomId: string): Promise<string> {
  const r = await ok(alice, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=1`);
  return r.chunk[0].event_id;
}

const UNKNOWN_ROOM = `!nosuchroom000000000000000000000000000000000`;

describe("make_join / send_join", () => {
  it("refuses an ACL-denied origin, an unknown room, a room version the joiner lacks, and another server's user", async () => {
    const denied = await fed(EVIL, "GET", `/v1/make_join/${enc(room)}/${enc(`@x:${EVIL}`)}?ver=12`);
    expect([denied.status, denied.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const unknown = await fed(REMOTE, "GET", `/v1/make_join/${enc(UNKNOWN_ROOM)}/${enc(`@x:${REMOTE}`)}?ver=12`);
    expect([unknown.status, unknown.body.errcode]).toEqual([404, "M_NOT_FOUND"]);
    const badId = await fed(REMOTE, "GET", `/v1/make_join/notaroom/${enc(`@x:${REMOTE}`)}?ver=12`);
    expect(badId.status).toBe(404);
    const oldOnly = await fed(REMOTE, "GET", `/v1/make_join/${enc(room)}/${enc(`@x:${REMOTE}`)}?ver=10&ver=11`);
    expect([oldOnly.status, oldOnly.body.errcode, oldOnly.body.room_version]).toEqual([400, "M_INCOMPATIBLE_ROOM_VERSION", "12"]);
    // No ver= at all means "1" only (spec: "Defaults to [1]").
    const noVer = await fed(REMOTE, "GET", `/v1/make_join/${enc(room)}/${enc(`@x:${REMOTE}`)}`);
    expect([noVer.status, noVer.body.errcode]).toEqual([400, "M_INCOMPATIBLE_ROOM_VERSION"]);
    const foreign = await fed(REMOTE, "GET", `/v1/make_join/${enc(room)}/${enc(`@x:${OTHER}`)}?ver=12`);
    expect([foreign.status, foreign.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
  });

  it("send_join refuses an ACL-denied origin and an unknown room", async () => {
    // A template from an allowed server, signed by evil.test as if its own.
    const t = await fed(OTHER, "GET", `/v1/make_join/${enc(room)}/${enc(`@x:${OTHER}`)}?ver=12`);
    const { pdu, eventId } = await signTemplate({ ...t.body, event: { ...t.body.event, sender: `@x:${EVIL}`, state_key: `@x:${EVIL}` } }, EVIL);
    const denied = await fed(EVIL, "PUT", `/v2/send_join/${enc(room)}/${enc(eventId)}`, pdu);
    expect([denied.status, denied.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const unknown = await fed(EVIL, "PUT", `/v2/send_join/${enc(UNKNOWN_ROOM)}/${enc(eventId)}`, pdu);
    expect(unknown.status).toBe(404);
  });

  it("send_join refuses a bad signature, a forged sender domain, an event for another user, the wrong room and a mismatched event ID", async () => {
    const user = `@mallory:${OTHER}`;
    const t = await fed(OTHER, "GET", `/v1/make_join/${enc(room)}/${enc(user)}?ver=12`);
    expect(t.status).toBe(200);
    const send = (eventId: string, pdu: unknown) => fed(OTHER, "PUT", `/v2/send_join/${enc(room)}/${enc(eventId)}`, pdu);

    // Signed with a key of the same ID that is not other.test's.
    const wrongKey = await generateSigningKey(keys[OTHER].keyId);
    const badSig = await signTemplate(t.body, OTHER, {}, wrongKey);
    const r1 = await send(badSig.eventId, badSig.pdu);
    expect(r1.status).toBe(403);
    expect(r1.body.error).toMatch(/signature/);

    // A join for a user of this server (test.local), sent and signed by other.test.
    const forged = await signTemplate({ ...t.body, event: { ...t.body.event, sender: alice.userId, state_key: alice.userId } }, OTHER);
    const r2 = await send(forged.eventId, forged.pdu);
    expect([r2.status, r2.body.errcode]).toEqual([403, "M_FORBIDDEN"]);

    // Sender joins someone else (state_key ≠ sender).
    const other = await signTemplate({ ...t.body, event: { ...t.body.event, state_key: `@victim:${OTHER}` } }, OTHER);
    const r3 = await send(other.eventId, other.pdu);
    expect([r3.status, r3.body.errcode]).toEqual([400, "M_BAD_JSON"]);

    // Not a join.
    const leave = await signTemplate({ ...t.body, event: { ...t.body.event, content: { membership: "leave" } } }, OTHER);
    expect((await send(leave.eventId, leave.pdu)).status).toBe(400);

    // An event for joinedRoom sent to room's send_join path.
    const elsewhere = await signTemplate({ ...t.body, event: { ...t.body.event, room_id: joinedRoom } }, OTHER);
    const r4 = await send(elsewhere.eventId, elsewhere.pdu);
    expect([r4.status, r4.body.errcode]).toEqual([400, "M_BAD_JSON"]);

    // The path's event ID is not the event's.
    const good = await signTemplate(t.body, OTHER);
    const r5 = await send(badSig.eventId, good.pdu);
    expect([r5.status, r5.body.errcode]).toEqual([400, "M_BAD_JSON"]);

    // None of these joined anyone.
    const members = await ok(alice, "GET", `/rooms/${enc(room)}/joined_members`);
    expect(Object.keys(members.joined)).not.toContain(user);
    expect(Object.keys(members.joined)).not.toContain(`@victim:${OTHER}`);

    // The good one still works afterwards.
    const r6 = await send(good.eventId, good.pdu);
    expect(r6.status).toBe(200);
    expect((await ok(alice, "GET", `/rooms/${enc(room)}/joined_members`)).joined[user]).toBeDefined();
    // Leave again so that other.test has no member in the rooms (tests below rely on that).
    const l = await fed(OTHER, "GET", `/v1/make_leave/${enc(room)}/${enc(user)}`);
    const lv = await signTemplate({ room_version: "12", event: l.body.event }, OTHER);
    expect((await fed(OTHER, "PUT", `/v2/send_leave/${enc(room)}/${enc(lv.eventId)}`, lv.pdu)).status).toBe(200);
  });

  it("send_join answers the state before the join; omit_members leaves out members but keeps servers_in_room", async () => {
    const full = await remoteJoin(room, `@full:${REMOTE}`);
    expect(full.status).toBe(200);
    const types = (full.body.state as PDU[]).map((e) => e.type);
    expect(types).toContain("m.room.create");
    expect(types).toContain("m.room.server_acl");
    const fullMembers = (full.body.state as PDU[]).filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    expect(fullMembers).toEqual(expect.arrayContaining([alice.userId, `@rem:${REMOTE}`]));
    expect(fullMembers).not.toContain(`@full:${REMOTE}`); // state *before* the join
    expect(full.body.members_omitted).toBe(false);
    expect(full.body.servers_in_room).toEqual(expect.arrayContaining([SERVER, REMOTE]));

    const slim = await remoteJoin(room, `@slim:${REMOTE}`, "?omit_members=true");
    expect(slim.status).toBe(200);
    expect(slim.body.members_omitted).toBe(true);
    expect(slim.body.servers_in_room).toEqual(expect.arrayContaining([SERVER, REMOTE]));
    expect(slim.body.servers_in_room).not.toContain(OTHER); // its only member left above
    // The room has a name: no heroes are needed, so no member events beyond those in the auth
    // chain of the remaining state (the creator's join, which authorises power levels etc.).
    const slimState = slim.body.state as PDU[];
    expect(slimState.filter((e) => e.type === "m.room.member")).toEqual([]);
    expect(slimState.map((e) => e.type)).toEqual(expect.arrayContaining(["m.room.create", "m.room.power_levels", "m.room.join_rules"]));
    const chain = slim.body.auth_chain as PDU[];
    expect(chain.some((e) => e.type === "m.room.member" && e.state_key === alice.userId)).toBe(true);
    expect(chain.some((e) => e.state_key === `@full:${REMOTE}`)).toBe(false);
  });

  it("send_join serves each event as stored: a redacted one redacted, none with unsigned, the auth chain closed under auth_events", async () => {
    const r = (await ok(alice, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id;
    const topic = (await ok(alice, "PUT", `/rooms/${enc(r)}/state/m.room.topic/`, { topic: "to be redacted" })).event_id;
    await ok(alice, "PUT", `/rooms/${enc(r)}/redact/${enc(topic)}/t1`, {});
    // A remote join that arrives with `unsigned` (stored as received).
    const t = await fed(REMOTE, "GET", `/v1/make_join/${enc(r)}/${enc(`@u:${REMOTE}`)}?ver=12`);
    const first = await signTemplate(t.body, REMOTE, { unsigned: { age: 5 } });
    expect((await fed(REMOTE, "PUT", `/v2/send_join/${enc(r)}/${enc(first.eventId)}`, first.pdu)).status).toBe(200);
    const j = await remoteJoin(r, `@second:${REMOTE}`);
    expect(j.status).toBe(200);
    const state = j.body.state as PDU[];
    const chain = j.body.auth_chain as PDU[];
    const served = state.find((e) => e.type === "m.room.topic")!;
    expect(served.content).toEqual({});
    expect(await computeEventId(served, getRoomVersion("12")!)).toBe(topic);
    const firstServed = state.find((e) => e.state_key === `@u:${REMOTE}`)!;
    expect(await computeEventId(firstServed, getRoomVersion("12")!)).toBe(first.eventId);
    for (const e of [...state, ...chain]) expect(e).not.toHaveProperty("unsigned");
    const ids = new Set(await Promise.all([...state, ...chain].map((e) => computeEventId(e, getRoomVersion("12")!))));
    for (const e of [...state, ...chain]) for (const a of e.auth_events as string[]) expect(ids.has(a)).toBe(true);
    // Every event of the state is in the answer, once.
    const current = (await ok(alice, "GET", `/rooms/${enc(r)}/state`)) as unknown as { event_id: string; state_key: string }[];
    const stateIds = await Promise.all(state.map((e) => computeEventId(e, getRoomVersion("12")!)));
    expect(new Set(stateIds).size).toBe(stateIds.length);
    expect(new Set(stateIds)).toEqual(new Set(current.filter((e) => e.state_key !== `@second:${REMOTE}`).map((e) => e.event_id)));
  });

  it("make_join is refused (403) for a banned user", async () => {
    const banned = `@banned:${REMOTE}`;
    await ok(alice, "POST", `/rooms/${enc(room)}/ban`, { user_id: banned });
    const r = await fed(REMOTE, "GET", `/v1/make_join/${enc(room)}/${enc(banned)}?ver=12`);
    expect([r.status, r.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
  });
});

describe("make_leave / send_leave", () => {
  it("refuse an ACL-denied origin, an unknown room, another server's user and a leave for someone else", async () => {
    expect((await fed(EVIL, "GET", `/v1/make_leave/${enc(room)}/${enc(`@x:${EVIL}`)}`)).status).toBe(403);
    expect((await fed(REMOTE, "GET", `/v1/make_leave/${enc(UNKNOWN_ROOM)}/${enc(`@rem:${REMOTE}`)}`)).status).toBe(404);
    expect((await fed(REMOTE, "GET", `/v1/make_leave/${enc(room)}/${enc(alice.userId)}`)).status).toBe(403);
    const t = await fed(REMOTE, "GET", `/v1/make_leave/${enc(room)}/${enc(`@rem:${REMOTE}`)}`);
    expect(t.status).toBe(200);
    const kick = await signTemplate({ ...t.body, event: { ...t.body.event, state_key: alice.userId } }, REMOTE);
    const r = await fed(REMOTE, "PUT", `/v2/send_leave/${enc(room)}/${enc(kick.eventId)}`, kick.pdu);
    expect([r.status, r.body.errcode]).toEqual([400, "M_BAD_JSON"]);
    const lv = await signTemplate(t.body, REMOTE);
    expect((await fed(EVIL, "PUT", `/v2/send_leave/${enc(room)}/${enc(lv.eventId)}`, lv.pdu)).status).toBe(403);
    expect((await fed(REMOTE, "PUT", `/v2/send_leave/${enc(UNKNOWN_ROOM)}/${enc(lv.eventId)}`, lv.pdu)).status).toBe(404);
    expect((await ok(alice, "GET", `/rooms/${enc(room)}/state/m.room.member/${enc(alice.userId)}`)).membership).toBe("join");
  });
});

describe("make_knock / send_knock", () => {
  it("refuse an ACL-denied origin, an unknown room, an unsupported ver= and a room that does not take knocks", async () => {
    expect((await fed(EVIL, "GET", `/v1/make_knock/${enc(room)}/${enc(`@x:${EVIL}`)}?ver=12`)).status).toBe(403);
    expect((await fed(REMOTE, "GET", `/v1/make_knock/${enc(UNKNOWN_ROOM)}/${enc(`@k:${REMOTE}`)}?ver=12`)).status).toBe(404);
    const v = await fed(REMOTE, "GET", `/v1/make_knock/${enc(room)}/${enc(`@k:${REMOTE}`)}?ver=11`);
    expect([v.status, v.body.errcode]).toEqual([400, "M_INCOMPATIBLE_ROOM_VERSION"]);
    // room's join rule is public: the auth rules refuse a knock.
    const pub = await fed(REMOTE, "GET", `/v1/make_knock/${enc(room)}/${enc(`@k:${REMOTE}`)}?ver=12`);
    expect([pub.status, pub.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
  });

  it("a knock room: send_knock refuses another user's knock and the wrong membership, accepts the real one with stripped state", async () => {
    const knockRoom = (await ok(alice, "POST", "/createRoom", {
      preset: "private_chat",
      room_version: "12",
      name: "Knock here",
      initial_state: [{ type: "m.room.join_rules", state_key: "", content: { join_rule: "knock" } }],
    })).room_id;
    const user = `@knocker:${REMOTE}`;
    const t = await fed(REMOTE, "GET", `/v1/make_knock/${enc(knockRoom)}/${enc(user)}?ver=12`);
    expect(t.status).toBe(200);
    const forged = await signTemplate({ ...t.body, event: { ...t.body.event, sender: `@k:${OTHER}`, state_key: `@k:${OTHER}` } }, OTHER);
    expect((await fed(REMOTE, "PUT", `/v1/send_knock/${enc(knockRoom)}/${enc(forged.eventId)}`, forged.pdu)).status).toBe(403);
    const asJoin = await signTemplate({ ...t.body, event: { ...t.body.event, content: { membership: "join" } } }, REMOTE);
    expect((await fed(REMOTE, "PUT", `/v1/send_knock/${enc(knockRoom)}/${enc(asJoin.eventId)}`, asJoin.pdu)).status).toBe(400);
    const k = await signTemplate(t.body, REMOTE);
    const r = await fed(REMOTE, "PUT", `/v1/send_knock/${enc(knockRoom)}/${enc(k.eventId)}`, k.pdu);
    expect(r.status).toBe(200);
    expect(r.body.knock_room_state.map((e: PDU) => e.type)).toEqual(expect.arrayContaining(["m.room.create", "m.room.join_rules", "m.room.name"]));
    expect((await ok(alice, "GET", `/rooms/${enc(knockRoom)}/state/m.room.member/${enc(user)}`)).membership).toBe("knock");
  });
});

describe("v2 invite (we are the invitee's server)", () => {
  async function inviteFrom(server: string, roomId: string, invitee: string, roomVersion = "12", senderServer = server) {
    const rv = getRoomVersion("12")!;
    const ev = {
      room_id: roomId,
      sender: `@inviter:${senderServer}`,
      type: "m.room.member",
      state_key: invitee,
      content: { membership: "invite" },
      origin_server_ts: Date.now(),
      depth: 5,
      prev_events: ["$prev00000000000000000000000000000000000000"],
      auth_events: ["$auth00000000000000000000000000000000000000"],
    } as unknown as PDU;
    const { pdu, eventId } = await hashAndSignEvent(ev, rv, senderServer, keys[senderServer]);
    return fed(server, "PUT", `/v2/invite/${enc(roomId)}/${enc(eventId)}`, { room_version: roomVersion, event: pdu, invite_room_state: [] });
  }

  it("refuses an ACL-denied origin, an unsupported room version, a forged inviter and an unknown invitee", async () => {
    // The room is known here and denies evil.test.
    const denied = await inviteFrom(EVIL, room, alice.userId);
    expect([denied.status, denied.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const badVersion = await inviteFrom(REMOTE, `!remote-room:${REMOTE}`, alice.userId, "999");
    expect([badVersion.status, badVersion.body.errcode]).toEqual([400, "M_INCOMPATIBLE_ROOM_VERSION"]);
    const forged = await inviteFrom(REMOTE, `!remote-room:${REMOTE}`, alice.userId, "12", OTHER);
    expect([forged.status, forged.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    const nobody = await inviteFrom(REMOTE, `!remote-room:${REMOTE}`, `@nobody:${SERVER}`);
    expect(nobody.status).toBe(404);
    const notOurs = await inviteFrom(REMOTE, `!remote-room:${REMOTE}`, `@someone:${OTHER}`);
    expect(notOurs.status).toBe(400);
    // A valid invite into a room we do not know is co-signed.
    const good = await inviteFrom(REMOTE, `!remote-room2:${REMOTE}`, alice.userId);
    expect(good.status).toBe(200);
    expect(Object.keys(good.body.event.signatures).sort()).toEqual([REMOTE, SERVER].sort());
  });
});

describe("retrieving events", () => {
  it("event, state, state_ids, event_auth, backfill and get_missing_events refuse an ACL-denied origin (403) and an unknown room (404)", async () => {
    const ev = await latestEventId(room);
    const paths: [string, string, unknown?][] = [
      ["GET", `/v1/state/ROOM?event_id=${enc(ev)}`],
      ["GET", `/v1/state_ids/ROOM?event_id=${enc(ev)}`],
      ["GET", `/v1/event_auth/ROOM/${enc(ev)}`],
      ["GET", `/v1/backfill/ROOM?v=${enc(ev)}&limit=5`],
      ["POST", `/v1/get_missing_events/ROOM`, { earliest_events: [], latest_events: [ev], limit: 5 }],
    ];
    for (const [method, p, body] of paths) {
      const denied = await fed(EVIL, method, p.replace("ROOM", enc(room)), body);
      expect([p, denied.status, denied.body.errcode]).toEqual([p, 403, "M_FORBIDDEN"]);
      const unknown = await fed(REMOTE, method, p.replace("ROOM", enc(UNKNOWN_ROOM)), body);
      expect([p, unknown.status, unknown.body.errcode]).toEqual([p, 404, "M_NOT_FOUND"]);
      const allowed = await fed(REMOTE, method, p.replace("ROOM", enc(room)), body);
      expect([p, allowed.status]).toEqual([p, 200]);
    }
    const deniedEvent = await fed(EVIL, "GET", `/v1/event/${enc(ev)}`);
    expect(deniedEvent.status).toBe(403);
    expect((await fed(REMOTE, "GET", `/v1/event/${enc(ev)}`)).status).toBe(200);
    expect((await fed(REMOTE, "GET", `/v1/event/${enc("$nosuchevent0000000000000000000000000000000")}`)).status).toBe(404);
    expect((await fed(REMOTE, "GET", `/v1/backfill/${enc(room)}`)).status).toBe(400); // v is required
    expect((await fed(REMOTE, "GET", `/v1/state_ids/${enc(room)}`)).status).toBe(400); // event_id is required
  });

  it("a server with no joined member gets nothing of a joined-visibility room", async () => {
    const ev = await latestEventId(joinedRoom);
    for (const [method, p, body] of [
      ["GET", `/v1/state/${enc(joinedRoom)}?event_id=${enc(ev)}`],
      ["GET", `/v1/state_ids/${enc(joinedRoom)}?event_id=${enc(ev)}`],
      ["GET", `/v1/event_auth/${enc(joinedRoom)}/${enc(ev)}`],
      ["GET", `/v1/backfill/${enc(joinedRoom)}?v=${enc(ev)}&limit=5`],
      ["POST", `/v1/get_missing_events/${enc(joinedRoom)}`, { earliest_events: [], latest_events: [ev], limit: 5 }],
    ] as [string, string, unknown?][]) {
      const r = await fed(OTHER, method, p, body);
      expect([p, r.status, r.body.errcode]).toEqual([p, 403, "M_FORBIDDEN"]);
    }
    // /event: a server that was never in the room reads nothing (as every read above).
    const r = await fed(OTHER, "GET", `/v1/event/${enc(ev)}`);
    expect([r.status, r.body.errcode]).toEqual([403, "M_FORBIDDEN"]);
    // The joined server sees it in full.
    const mine = await fed(REMOTE, "GET", `/v1/event/${enc(ev)}`);
    expect(mine.status).toBe(200);
    expect(mine.body.pdus[0].content.body).toBe("secret");
  });

  it("get_missing_events and backfill walk the DAG, bounded and in order", async () => {
    const first = await latestEventId(joinedRoom);
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push((await ok(alice, "PUT", `/rooms/${enc(joinedRoom)}/send/m.room.message/gm${i}`, { msgtype: "m.text", body: `gm${i}` })).event_id);
    const gm = await fed(REMOTE, "POST", `/v1/get_missing_events/${enc(joinedRoom)}`, { earliest_events: [first], latest_events: [sent[4]], limit: 10 });
    expect(gm.status).toBe(200);
    expect(gm.body.events.map((e: PDU) => e.content.body)).toEqual(["gm0", "gm1", "gm2", "gm3"]);
    const bf = await fed(REMOTE, "GET", `/v1/backfill/${enc(joinedRoom)}?v=${enc(sent[4])}&limit=3`);
    expect(bf.status).toBe(200);
    expect(bf.body.pdus.map((e: PDU) => e.content.body)).toEqual(["gm4", "gm3", "gm2"]);
  });
});
