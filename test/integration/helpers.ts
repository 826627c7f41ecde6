// Helpers for workerd integration tests: requests against the real Worker (real D1, DOs, R2).
import { afterAll, afterEach, beforeAll, expect } from "vitest";
import { SELF, env } from "cloudflare:test";
import { generateSigningKey, signJson, type SigningKey } from "../../src/core/signing";
import { storeKeyResponse } from "../../src/services/federation/keys";
import { signRequest } from "../../src/core/x-matrix";
import { hashAndSignEvent, roomIdFromCreateEventId } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { setFederationFetch } from "../../src/services/federation/client";

export const SERVER = "test.local";
export const BASE = "http://test.local";

export interface Json {
  [k: string]: any;
}

export async function call(
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: Json; headers: Headers }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined = opts.rawBody;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] = "application/json";
  }
  const res = await SELF.fetch(`${BASE}${path}`, { method, headers, body });
  const text = await res.text();
  let parsed: Json = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { _text: text };
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** A federation request from `origin`, X-Matrix-signed with its key, to this server. */
export async function federationCall(origin: string, key: SigningKey, method: string, path: string, body?: unknown) {
  const uri = `/_matrix/federation${path}`;
  const authorization = await signRequest(key, { method, uri, origin, destination: SERVER, content: body });
  return call(method, uri, { body, headers: { authorization } });
}

/** `n` users @w<wave>u<i> of `remote` join a room at once through make_join/v2/send_join (v12):
 *  all templates first (so all build on the same extremities), then all send_joins. Throws
 *  unless every request answers 200. */
export async function remoteJoinWave(remote: string, key: SigningKey, roomId: string, wave: number, n: number, opts: { omitMembers?: boolean } = {}): Promise<void> {
  const enc = encodeURIComponent;
  const rv = getRoomVersion("12")!;
  const templates = await Promise.all(
    Array.from({ length: n }, (_, i) => federationCall(remote, key, "GET", `/v1/make_join/${enc(roomId)}/${enc(`@w${wave}u${i}:${remote}`)}?ver=12`)),
  );
  await Promise.all(
    templates.map(async (t) => {
      if (t.status !== 200) throw new Error(`make_join: ${t.status} ${JSON.stringify(t.body)}`);
      const j = await hashAndSignEvent({ ...t.body.event, origin_server_ts: Date.now() } as PDU, rv, remote, key);
      const r = await federationCall(remote, key, "PUT", `/v2/send_join/${enc(roomId)}/${enc(j.eventId)}${opts.omitMembers ? "?omit_members=true" : ""}`, j.pdu);
      if (r.status !== 200) throw new Error(`send_join: ${r.status} ${JSON.stringify(r.body)}`);
    }),
  );
}

/** A room a simulated remote server holds, built as one linear chain of signed events. */
export interface RemoteChain {
  roomId: string;
  events: Map<string, PDU>;
  order: string[];
  ids: Record<string, string>;
}

/** Appends to `room`'s chain: each event gets the next depth, the previous event as its one
 *  prev_event and the room ID once known, and is signed by `server` (`key`) unless the call names
 *  another signer. Recorded under `name` in `room.ids`. */
export function chainAppender(room: RemoteChain, server: string, key: SigningKey) {
  const rv = getRoomVersion("12")!;
  let prev = "";
  let depth = 0;
  return async (name: string, ev: Json, signer = server, signerKey = key): Promise<void> => {
    const { pdu, eventId } = await hashAndSignEvent({ origin_server_ts: Date.now(), depth: ++depth, prev_events: prev ? [prev] : [], ...(room.roomId ? { room_id: room.roomId } : {}), ...ev } as unknown as PDU, rv, signer, signerKey);
    room.events.set(eventId, pdu);
    room.order.push(eventId);
    room.ids[name] = eventId;
    prev = eventId;
  };
}

/** Starts `room` as a public room of version 12 that `creator` (a user of `server`) created and
 *  joined: create, creator's join, power levels and join rules, recorded as `create`, `rem`, `pl`
 *  and `rules`. Returns the appender for the rest of the chain. */
export async function publicRemoteRoom(room: RemoteChain, server: string, key: SigningKey, creator: string) {
  const add = chainAppender(room, server, key);
  await add("create", { type: "m.room.create", state_key: "", sender: creator, content: { room_version: "12" }, auth_events: [] });
  room.roomId = roomIdFromCreateEventId(room.ids.create);
  await add("rem", { type: "m.room.member", state_key: creator, sender: creator, content: { membership: "join" }, auth_events: [] });
  await add("pl", { type: "m.room.power_levels", state_key: "", sender: creator, content: {}, auth_events: [room.ids.rem] });
  await add("rules", { type: "m.room.join_rules", state_key: "", sender: creator, content: { join_rule: "public" }, auth_events: [room.ids.pl, room.ids.rem] });
  return add;
}

/** A simulated resident's make_join answer for `userId` in a room built by chainAppender (its
 *  power levels and join rules recorded as `pl` and `rules`): the join template on the chain's tip. */
export function makeJoinAnswer(room: RemoteChain, userId: string): Response {
  const event = { room_id: room.roomId, sender: userId, state_key: userId, type: "m.room.member", content: { membership: "join" }, origin_server_ts: Date.now(), depth: 50, prev_events: [room.order.at(-1)], auth_events: [room.ids.pl, room.ids.rules] };
  return Response.json({ room_version: "12", event });
}

/** A client-server v3 request as `token` that must answer 200; its body. */
export async function clientOk(token: string, method: string, path: string, body?: unknown): Promise<Json> {
  const r = await call(method, `/_matrix/client/v3${path}`, { token, body });
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

let counter = 0;
export function uniqueName(prefix = "user"): string {
  counter++;
  return `${prefix}${Date.now().toString(36)}${counter}`;
}

export interface TestUser {
  userId: string;
  accessToken: string;
  deviceId: string;
  password: string;
}

/** Register through the real UIA dance (open registration: m.login.dummy). */
export async function registerUser(username = uniqueName(), password = "correct horse battery staple"): Promise<TestUser> {
  const first = await call("POST", "/_matrix/client/v3/register", { body: { username, password } });
  if (first.status !== 401) throw new Error(`expected UIA challenge, got ${first.status} ${JSON.stringify(first.body)}`);
  const res = await call("POST", "/_matrix/client/v3/register", {
    body: { username, password, auth: { type: "m.login.dummy", session: first.body.session } },
  });
  if (res.status !== 200) throw new Error(`register failed: ${res.status} ${JSON.stringify(res.body)}`);
  return { userId: res.body.user_id, accessToken: res.body.access_token, deviceId: res.body.device_id, password };
}

/** One request through the Worker with extra bindings (e.g. REGISTRATION=token, RATE_LIMITS=on,
 *  GUEST_ACCESS=on) over the shared test env. */
export async function withEnv(overrides: Record<string, string>, method: string, path: string, body?: unknown, token?: string) {
  const { createExecutionContext, waitOnExecutionContext } = await import("cloudflare:test");
  const app = (await import("../../src/index")).default;
  const ctx = createExecutionContext();
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await app.fetch(
    new Request(`${BASE}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }),
    { ...env, ...overrides },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return { status: res.status, body: (await res.json()) as any };
}

/** A federation fetch for tests where nothing may leave the test: every request fails. */
export const offline: typeof fetch = async () => {
  throw new Error("offline (test)");
};

/** Give the simulated remote `server` a new signing key and store its key response (valid for an
 *  hour) as if it had been fetched, so requests signed with the key are accepted. */
export async function seedRemoteKey(server: string): Promise<SigningKey> {
  const key = await generateSigningKey();
  const resp = await signJson({ server_name: server, verify_keys: { [key.keyId]: { key: key.publicKey } }, old_verify_keys: {}, valid_until_ts: Date.now() + 3600_000 }, server, key);
  await storeKeyResponse(env, resp, server);
  return key;
}

/** The set-up federation tests share, as the file's hooks (call it at the top level): before the
 *  tests, outbound federation requests fail (`offline`), the simulated server `remote` gets a
 *  signing key this server trusts, and a local user registers; `ready` receives both. `reset`
 *  puts `offline` back after each test or after the file (default: neither). */
export function federationSetup(remote: string, ready: (s: { key: SigningKey; alice: TestUser }) => void, reset?: "afterEach" | "afterAll"): void {
  beforeAll(async () => {
    setFederationFetch(offline);
    const key = await seedRemoteKey(remote);
    ready({ key, alice: await registerUser() });
  });
  if (reset === "afterEach") afterEach(() => setFederationFetch(offline));
  if (reset === "afterAll") afterAll(() => setFederationFetch(offline));
}

// Client actions that must succeed (each asserts 200, with the response body as the message).
const V3 = "/_matrix/client/v3";
let txnCounter = 0;

/** POST /createRoom as `owner`; the new room's ID. */
export async function createRoom(owner: TestUser, body: Json = { preset: "public_chat" }): Promise<string> {
  const r = await call("POST", `${V3}/createRoom`, { token: owner.accessToken, body });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.room_id;
}
export async function joinRoom(u: TestUser, roomId: string): Promise<void> {
  const r = await call("POST", `${V3}/rooms/${encodeURIComponent(roomId)}/join`, { token: u.accessToken, body: {} });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}
export async function leaveRoom(u: TestUser, roomId: string): Promise<void> {
  const r = await call("POST", `${V3}/rooms/${encodeURIComponent(roomId)}/leave`, { token: u.accessToken, body: {} });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}
/** Send an m.text message (as event `type`); its event ID. */
export async function sendText(u: TestUser, roomId: string, body: string, type = "m.room.message"): Promise<string> {
  const r = await call("PUT", `${V3}/rooms/${encodeURIComponent(roomId)}/send/${type}/h${++txnCounter}`, { token: u.accessToken, body: { msgtype: "m.text", body } });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.event_id;
}
/** GET /sync with query parameters `q`; the response body. */
export async function syncOk(u: TestUser, q: Record<string, string | number | boolean> = {}): Promise<Json> {
  const qs = new URLSearchParams(Object.entries(q).map(([k, v]) => [k, String(v)])).toString();
  const r = await call("GET", `${V3}/sync${qs ? `?${qs}` : ""}`, { token: u.accessToken });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

// Simplified Sliding Sync (MSC4186).
const SSS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/** POST a sliding sync request as `u` with query `q` (pos, timeout); the raw answer. */
export async function sss(u: TestUser, body: Json, q: { pos?: string; timeout?: number } = {}) {
  const qs = new URLSearchParams(Object.entries(q).map(([k, v]) => [k, String(v)])).toString();
  return call("POST", `${SSS}${qs ? `?${qs}` : ""}`, { token: u.accessToken, body });
}
/** Like sss, but the answer must be 200; its body. */
export async function sssOk(u: TestUser, body: Json, q: { pos?: string; timeout?: number } = {}): Promise<Json> {
  const r = await sss(u, body, q);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}
