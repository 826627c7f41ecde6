// Partial-state ("faster") joins (spec: PUT /v2/send_join `omit_members`, `members_omitted`,
// `servers_in_room`; MSC3706, Synapse's faster joins), in workerd.
//
// Joining side: a simulated resident server (resident.test, through setFederationFetch) holds an
// encrypted v12 room of 7 members (one of them, @m6, banned). It honours omit_members and holds
// back its /state answer until the test lets it go, so the test sees the room while it is
// partial: the client's join answered, an event valid only with the full state, one valid
// only with the partial state, a member list asked for mid-join, a message sent meanwhile; then
// the room completed: the second event re-checked and rejected, the member list whole, the
// encrypted room's members in the joiner's device-list changes.
//
// The fetch is the RoomDO's alarm (not the Worker's waitUntil, cut after 30 s on Cloudflare):
// the resident fails /state three more times once released, and the room still completes, with
// no request waiting on it. A state event valid only with the partial state (the banned @m6
// joining again) is accepted, then rejected at completion and taken out of every later state,
// not only the current one; the joiner's sync hub is told at completion (the room's state comes
// whole in the next /sync without a new event); a device-list change of the joiner while
// partial reaches servers_in_room.
//
// Resident side: what Lattice answers to send_join?omit_members=true.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import { uploadDeviceKeys } from "./e2ee-helpers";
import { call, clientOk, federationCall, offline, registerUser, seedRemoteKey, SERVER, type TestUser } from "./helpers";
import type { SigningKey } from "../../src/core/signing";
import { hashAndSignEvent, roomIdFromCreateEventId } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { JsonObject, PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

const REMOTE = "resident.test";
const REM = `@rem:${REMOTE}`;
const m = (i: number) => `@m${i}:${REMOTE}`;
const rv = getRoomVersion("12")!;
const enc = encodeURIComponent;

let key: SigningKey;
let alice: TestUser;

/** The resident server's copy of the room: every event by ID, in order. */
const events = new Map<string, PDU>();
const order: string[] = [];
let roomId: string;
const ids: Record<string, string> = {};

async function add(name: string, ev: JsonObject): Promise<string> {
  const { pdu, eventId } = await hashAndSignEvent({ origin_server_ts: Date.now(), ...ev } as unknown as PDU, rv, REMOTE, key);
  events.set(eventId, pdu);
  order.push(eventId);
  ids[name] = eventId;
  return eventId;
}

function authChainOf(start: string[]): PDU[] {
  const seen = new Set<string>();
  const stack = start.flatMap((id) => (events.get(id)?.auth_events as string[]) ?? []);
  while (stack.length) {
    const id = stack.pop()!;
    if (seen.has(id) || !events.has(id)) continue;
    seen.add(id);
    stack.push(...(events.get(id)!.auth_events as string[]));
  }
  return [...seen].map((id) => events.get(id)!);
}

/** The state before our join, as the resident sees it. */
function stateBeforeJoin(): string[] {
  const st = new Map<string, string>();
  for (const id of order.slice(0, order.indexOf(ids.ourJoin))) {
    const e = events.get(id)!;
    if (e.state_key !== undefined) st.set(`${e.type}|${e.state_key}`, id);
  }
  return [...st.values()];
}

// What the resident was asked, and the gate on its /state answer.
let sendJoinQuery = "";
let stateAsked = 0;
let stateIdsAsked = 0;
let releaseState!: () => void;
const stateGate = new Promise<void>((r) => (releaseState = r));
const sentToResident: PDU[] = [];
const edusToResident: JsonObject[] = [];
/** /state answers that fail once the gate opens (the fetch must retry past them). */
let stateFailures = 3;

async function resident(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const url = new URL(String(input instanceof Request ? input.url : input));
  const path = decodeURIComponent(url.pathname);
  if (path.startsWith(`/_matrix/federation/v1/make_join/${roomId}/`)) {
    const event = { room_id: roomId, sender: alice.userId, state_key: alice.userId, type: "m.room.member", content: { membership: "join" }, origin_server_ts: Date.now(), depth: 20, prev_events: [ids.ban], auth_events: [ids.pl, ids.rules] };
    return Response.json({ room_version: "12", event });
  }
  if (path.startsWith(`/_matrix/federation/v2/send_join/${roomId}/`)) {
    sendJoinQuery = url.search;
    const body = JSON.parse(String(init?.body ?? (input instanceof Request ? await input.text() : "{}"))) as PDU;
    ids.ourJoin = path.split("/").pop()!;
    events.set(ids.ourJoin, body);
    order.push(ids.ourJoin);
    const state = stateBeforeJoin();
    if (url.searchParams.get("omit_members") === "true") {
      const kept = state.filter((id) => events.get(id)!.type !== "m.room.member");
      const chain = authChainOf([...kept, ids.ourJoin]).filter((e) => !kept.some((k) => events.get(k) === e));
      return Response.json({ origin: REMOTE, state: kept.map((id) => events.get(id)), auth_chain: chain, members_omitted: true, servers_in_room: [REMOTE] });
    }
    return Response.json({ origin: REMOTE, state: state.map((id) => events.get(id)), auth_chain: authChainOf([...state, ids.ourJoin]), servers_in_room: [REMOTE] });
  }
  if (path === `/_matrix/federation/v1/state_ids/${roomId}`) {
    // Fails: the joining server falls back to /state from the same server.
    stateIdsAsked++;
    return Response.json({ errcode: "M_UNKNOWN", error: "not now" }, { status: 500 });
  }
  if (path === `/_matrix/federation/v1/state/${roomId}`) {
    stateAsked++;
    await stateGate;
    if (stateFailures-- > 0) return Response.json({ errcode: "M_UNKNOWN", error: "busy" }, { status: 503 });
    const state = stateBeforeJoin();
    return Response.json({ pdus: state.map((id) => events.get(id)), auth_chain: authChainOf(state) });
  }
  if (path.startsWith(`/_matrix/federation/v1/event_auth/${roomId}/`)) {
    return Response.json({ auth_chain: authChainOf([path.split("/").pop()!]) });
  }
  if (path.startsWith("/_matrix/federation/v1/event/")) {
    const e = events.get(path.split("/").pop()!);
    return e ? Response.json({ origin: REMOTE, origin_server_ts: Date.now(), pdus: [e] }) : Response.json({ errcode: "M_NOT_FOUND" }, { status: 404 });
  }
  if (path.startsWith("/_matrix/federation/v1/send/")) {
    const body = JSON.parse(String(init?.body ?? (input instanceof Request ? await input.text() : "{}"))) as { pdus?: PDU[]; edus?: JsonObject[] };
    sentToResident.push(...(body.pdus ?? []));
    edusToResident.push(...(body.edus ?? []));
    return Response.json({ pdus: {} });
  }
  if (path.startsWith("/_matrix/")) return Response.json({ errcode: "M_UNRECOGNIZED", error: "not here" }, { status: 404 });
  throw new Error("offline (test)");
}

async function sendPdus(pdus: PDU[]): Promise<Record<string, JsonObject>> {
  const r = await federationCall(REMOTE, key, "PUT", `/v1/send/pj${Date.now()}${Math.random()}`, { origin: REMOTE, origin_server_ts: Date.now(), pdus });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.pdus ?? {};
}

async function timelineIds(): Promise<string[]> {
  const r = await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/messages?dir=b&limit=50`);
  return (r.chunk as JsonObject[]).map((e) => e.event_id as string);
}

beforeAll(async () => {
  setFederationFetch(offline);
  key = await seedRemoteKey(REMOTE);
  alice = await registerUser();
  const create = await add("create", { type: "m.room.create", state_key: "", sender: REM, content: { room_version: "12" }, depth: 1, prev_events: [], auth_events: [] });
  roomId = roomIdFromCreateEventId(create);
  let prev = create;
  let depth = 1;
  const next = async (name: string, ev: JsonObject) => (prev = await add(name, { room_id: roomId, depth: ++depth, prev_events: [prev], ...ev }));
  await next("rem", { type: "m.room.member", state_key: REM, sender: REM, content: { membership: "join" }, auth_events: [] });
  await next("pl", { type: "m.room.power_levels", state_key: "", sender: REM, content: {}, auth_events: [ids.rem] });
  await next("rules", { type: "m.room.join_rules", state_key: "", sender: REM, content: { join_rule: "public" }, auth_events: [ids.pl, ids.rem] });
  await next("name", { type: "m.room.name", state_key: "", sender: REM, content: { name: "Partial" }, auth_events: [ids.pl, ids.rem] });
  await next("enc", { type: "m.room.encryption", state_key: "", sender: REM, content: { algorithm: "m.megolm.v1.aes-sha2" }, auth_events: [ids.pl, ids.rem] });
  for (let i = 1; i <= 6; i++) await next(`m${i}`, { type: "m.room.member", state_key: m(i), sender: m(i), content: { membership: "join" }, auth_events: [ids.pl, ids.rules] });
  await next("ban", { type: "m.room.member", state_key: m(6), sender: REM, content: { membership: "ban" }, auth_events: [ids.pl, ids.rem, ids.m6] });
  setFederationFetch(resident as typeof fetch);
});
afterAll(() => setFederationFetch(offline));

describe("partial-state join (joining side)", () => {

  it("asks send_join with omit_members and answers the client before the members are here", async () => {
    await clientOk(alice.accessToken, "GET", "/sync?timeout=0"); // the hub exists before the join
    const r = await call("POST", `/_matrix/client/v3/join/${enc(roomId)}?server_name=${REMOTE}`, { token: alice.accessToken, body: {} });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(sendJoinQuery).toBe("?omit_members=true");
    // The full state is being fetched in the background, and held back by the resident.
    for (let i = 0; i < 100 && stateAsked === 0; i++) await new Promise((res) => setTimeout(res, 20));
    expect(stateAsked).toBeGreaterThan(0);
    expect(stateIdsAsked).toBeGreaterThan(0); // asked first; it failed, /state is the fallback
    // The room is usable: its name and our join are there.
    const name = await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/state/m.room.name/`);
    expect(name.name).toBe("Partial");
    expect(await timelineIds()).toContain(ids.ourJoin);
  });

  it("a device-list change of the joiner while partial goes to servers_in_room (whose members we do not know yet)", async () => {
    await uploadDeviceKeys(alice);
    for (let i = 0; i < 100 && !edusToResident.some((e) => e.edu_type === "m.device_list_update"); i++) await new Promise((res) => setTimeout(res, 50));
    const update = edusToResident.find((e) => e.edu_type === "m.device_list_update");
    expect(update, "m.device_list_update to the resident").toBeDefined();
    expect((update!.content as JsonObject).user_id).toBe(alice.userId);
  });

  it("an event valid only with the full state is accepted while the room is partial", async () => {
    // @m3's membership was omitted: checked against the partial state alone, @m3 would not be in
    // the room. Its auth events (its join) are resolved in, as Synapse does.
    await add("msg3", { room_id: roomId, type: "m.room.message", sender: m(3), content: { msgtype: "m.text", body: "from m3" }, depth: 21, prev_events: [ids.ourJoin], auth_events: [ids.pl, ids.m3] });
    const res = await sendPdus([events.get(ids.msg3)!]);
    expect(res[ids.msg3]?.error).toBeUndefined();
    expect(await timelineIds()).toContain(ids.msg3);
  });

  it("an event valid only with the partial state is accepted now and rejected when the state completes", async () => {
    // @m6 was banned before our join; the ban is a member event, so it was omitted.
    await add("msg6", { room_id: roomId, type: "m.room.message", sender: m(6), content: { msgtype: "m.text", body: "from banned m6" }, depth: 22, prev_events: [ids.msg3], auth_events: [ids.pl, ids.m6] });
    const res = await sendPdus([events.get(ids.msg6)!]);
    expect(res[ids.msg6]?.error).toBeUndefined();
    expect(await timelineIds()).toContain(ids.msg6);
  });

  it("a state event valid only with the partial state is accepted now (and the state after it too)", async () => {
    // @m6 joins again: with its ban omitted, the partial state (resolved with the join's auth
    // events) says @m6 is joined, so the join is allowed. A topic follows it.
    await add("join6", { room_id: roomId, type: "m.room.member", state_key: m(6), sender: m(6), content: { membership: "join" }, depth: 23, prev_events: [ids.msg6], auth_events: [ids.pl, ids.rules, ids.m6] });
    await add("topic", { room_id: roomId, type: "m.room.topic", state_key: "", sender: REM, content: { topic: "after m6" }, depth: 24, prev_events: [ids.join6], auth_events: [ids.pl, ids.rem] });
    const res = await sendPdus([events.get(ids.join6)!, events.get(ids.topic)!]);
    expect(res[ids.join6]?.error).toBeUndefined();
    expect(res[ids.topic]?.error).toBeUndefined();
    expect(await timelineIds()).toEqual(expect.arrayContaining([ids.join6, ids.topic]));
  });

  it("sending while partial reaches the servers that were in the room (servers_in_room)", async () => {
    const sent = await clientOk(alice.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/pj1`, { msgtype: "m.text", body: "hello while partial" });
    for (let i = 0; i < 100 && !sentToResident.some((p) => (p.content as JsonObject)?.body === "hello while partial"); i++) await new Promise((res) => setTimeout(res, 50));
    expect(sentToResident.map((p) => (p.content as JsonObject)?.body)).toContain("hello while partial");
    expect(sent.event_id).toBeTruthy();
  });

  let tokenWhilePartial: string;

  it("a member list asked for mid-join waits for the full state", async () => {
    tokenWhilePartial = (await clientOk(alice.accessToken, "GET", "/sync?timeout=0")).next_batch as string;
    let settled = false;
    const pending = call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/members`, { token: alice.accessToken }).then((r) => {
      settled = true;
      return r;
    });
    // Another server asks us for a join template meanwhile (we are its only `via`): it waits
    // for our full state too, rather than a 404 at once.
    const otherKey = await seedRemoteKey("third.test");
    const template = federationCall("third.test", otherKey, "GET", `/v1/make_join/${enc(roomId)}/${enc("@t:third.test")}?ver=12`);
    await new Promise((res) => setTimeout(res, 500));
    expect(settled).toBe(false);
    releaseState();
    const r = await pending;
    expect(r.status).toBe(200);
    const t = await template;
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    expect(t.body.event?.type).toBe("m.room.member");
    const byUser = Object.fromEntries((r.body.chunk as JsonObject[]).map((e) => [e.state_key, (e.content as JsonObject).membership]));
    expect(byUser).toMatchObject({ [REM]: "join", [m(1)]: "join", [m(5)]: "join", [m(6)]: "ban", [alice.userId]: "join" });
    const joined = await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/joined_members`);
    expect(Object.keys(joined.joined).sort()).toEqual([REM, m(1), m(2), m(3), m(4), m(5), alice.userId].sort());
  });

  it("after completion the event the full state forbids is rejected; the others stay", async () => {
    const tl = await timelineIds();
    expect(tl).toContain(ids.msg3);
    expect(tl).not.toContain(ids.msg6);
    expect(tl).not.toContain(ids.join6);
    expect(tl).toContain(ids.topic);
    expect(tl).toContain(ids.ourJoin);
    // The /state answers that failed were retried by the alarm (backoff), with no request open.
    expect(stateFailures).toBeLessThan(0);
  });

  it("a state event rejected at completion leaves the later states too, not only the current one", async () => {
    // The state at the topic (which followed @m6's rejected join): @m6 banned, as before it.
    const r = await federationCall(REMOTE, key, "GET", `/v1/state_ids/${enc(roomId)}?event_id=${enc(ids.topic)}`);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.pdu_ids).toContain(ids.ban);
    expect(r.body.pdu_ids).not.toContain(ids.join6);
    const ban = await clientOk(alice.accessToken, "GET", `/rooms/${enc(roomId)}/state/m.room.member/${enc(m(6))}`);
    expect(ban.membership).toBe("ban");
  });

  it("the member counts kept in the room (room/member-counts.ts) are those of the completed state", async () => {
    const counts = await runInDurableObject(env.ROOMS.get(env.ROOMS.idFromName(roomId)), async (_instance, state) => {
      const sql = state.storage.sql;
      const stored = sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'member_counts'").one().value;
      const rows = sql
        .exec<{ ms: string | null }>("SELECT json_extract(e.pdu, '$.content.membership') AS ms FROM current_state c JOIN events e ON e.event_id = c.event_id WHERE c.type = 'm.room.member'")
        .toArray();
      return { stored, counted: `${rows.filter((r) => r.ms === "join").length} ${rows.filter((r) => r.ms === "invite").length}` };
    });
    // REM, @m1 … @m5 and alice joined; @m6 banned.
    expect(counts).toEqual({ stored: "7 0", counted: "7 0" });
  });

  it("the joiner's hub is told at completion: the next /sync carries the room's full state without a new event", async () => {
    const r = await clientOk(alice.accessToken, "GET", `/sync?since=${enc(tokenWhilePartial)}&timeout=10000`);
    const room = (r.rooms as JsonObject | undefined)?.join as Record<string, JsonObject> | undefined;
    const state = ((room?.[roomId]?.state as JsonObject | undefined)?.events ?? []) as JsonObject[];
    const members = state.filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    expect(members).toEqual(expect.arrayContaining([REM, m(1), m(2), m(5), m(6)]));
  });

  it("an encrypted room's members are in the joiner's device-list changes after completion", async () => {
    let changed: string[] = [];
    for (let i = 0; i < 50; i++) {
      const now = (await clientOk(alice.accessToken, "GET", "/sync?timeout=0")).next_batch as string;
      // From a token taken while partial: @m6's join, accepted then and rejected at completion,
      // was delivered (and flagged) before it; what completion adds must not name @m6.
      changed = (await clientOk(alice.accessToken, "GET", `/keys/changes?from=${enc(tokenWhilePartial)}&to=${enc(now)}`)).changed as string[];
      if (changed.includes(m(1))) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(changed).toEqual(expect.arrayContaining([REM, m(1), m(2), m(3), m(4), m(5)]));
    expect(changed).not.toContain(m(6));
  });

  it("the room is no longer partial: events from the completed members are checked against the full state", async () => {
    await add("msg4", { room_id: roomId, type: "m.room.message", sender: m(4), content: { msgtype: "m.text", body: "after" }, depth: 25, prev_events: [ids.topic], auth_events: [ids.pl, ids.m4] });
    expect((await sendPdus([events.get(ids.msg4)!]))[ids.msg4]?.error).toBeUndefined();
    expect(await timelineIds()).toContain(ids.msg4);
    await add("msg6b", { room_id: roomId, type: "m.room.message", sender: m(6), content: { msgtype: "m.text", body: "banned again" }, depth: 26, prev_events: [ids.msg4], auth_events: [ids.pl, ids.m6] });
    await sendPdus([events.get(ids.msg6b)!]);
    expect(await timelineIds()).not.toContain(ids.msg6b);
  });
});

describe("send_join with omit_members (resident side)", () => {
  const MEMBERS = "members.test";
  const JOINER = "joiner.test";
  const keys: Record<string, SigningKey> = {};

  /** make_join (or make_leave) → signed by the user's server → send_join (send_leave). */
  async function membership(roomId: string, userId: string, kind: "join" | "leave", query = "") {
    const server = userId.split(":")[1];
    const t = await federationCall(server, keys[server], "GET", `/v1/make_${kind}/${enc(roomId)}/${enc(userId)}${kind === "join" ? "?ver=12" : ""}`);
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    const { origin: _o, ...ev } = t.body.event;
    void _o;
    const signed = await hashAndSignEvent({ ...ev, origin_server_ts: Date.now() } as unknown as PDU, rv, server, keys[server]);
    const r = await federationCall(server, keys[server], "PUT", `/v2/send_${kind}/${enc(roomId)}/${enc(signed.eventId)}${query}`, signed.pdu);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return { body: r.body, eventId: signed.eventId };
  }

  it("keeps the joiner's own membership and the heroes (first five joined by stream order), the auth chain of that state only, and the servers before the join", async () => {
    for (const s of [MEMBERS, JOINER]) keys[s] = await seedRemoteKey(s);
    const owner = await registerUser();
    const bob = await registerUser();
    // No name, no canonical alias: the joining server needs the heroes to name the room.
    const room = (await clientOk(owner.accessToken, "POST", "/createRoom", { preset: "public_chat", room_version: "12" })).room_id as string;
    await clientOk(bob.accessToken, "POST", `/rooms/${enc(room)}/join`, {});
    // Joined in this order; user-ID order is the reverse.
    for (const u of ["zed", "yan", "xav", "wim", "ann"]) await membership(room, `@${u}:${MEMBERS}`, "join");
    await membership(room, `@gone:${MEMBERS}`, "join");
    await membership(room, `@gone:${MEMBERS}`, "leave");
    const joiner = `@joiner:${JOINER}`;
    await membership(room, joiner, "join");
    await membership(room, joiner, "leave");

    const { body } = await membership(room, joiner, "join", "?omit_members=true");
    expect(body.members_omitted).toBe(true);
    // "The servers active in the room (ie, those with joined members) before the join".
    expect([...(body.servers_in_room as string[])].sort()).toEqual([MEMBERS, SERVER].sort());
    const state = body.state as PDU[];
    const members = Object.fromEntries(state.filter((e) => e.type === "m.room.member").map((e) => [e.state_key, (e.content as JsonObject).membership]));
    // Heroes: the first five joined or invited members by stream ordering, never the joiner;
    // the joiner's own current membership (an auth event of its join) is kept too.
    expect(members).toEqual({ [owner.userId]: "join", [bob.userId]: "join", [`@zed:${MEMBERS}`]: "join", [`@yan:${MEMBERS}`]: "join", [`@xav:${MEMBERS}`]: "join", [joiner]: "leave" });
    expect(state.map((e) => e.type)).toEqual(expect.arrayContaining(["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"]));
    // The auth chain of the kept state and the join, without the events already in `state`.
    const chain = body.auth_chain as PDU[];
    const chainKeys = chain.map((e) => `${e.type}|${e.state_key ?? ""}|${(e.content as JsonObject).membership ?? ""}`);
    expect(chainKeys).toContain(`m.room.member|${joiner}|join`); // auth event of the joiner's leave
    expect(chainKeys).not.toContain(`m.room.member|${joiner}|leave`); // in state: not repeated
    expect(chainKeys.filter((k) => k.startsWith("m.room.member|@ann") || k.startsWith("m.room.member|@wim") || k.startsWith("m.room.member|@gone"))).toEqual([]);
  });
});
