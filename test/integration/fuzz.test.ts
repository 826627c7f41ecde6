// Endpoint fuzzing (issue 14, "Across the server"): every Client-Server and Federation route of the
// spec's OpenAPI (test/fuzz/routes.json, made by scripts/fuzz-routes.py) is driven with
// well-formed requests and then with wrong types, missing and extra fields, huge and negative
// numbers, deep nesting, invalid UTF-8, wrong Content-Type, malformed IDs and tokens, unsigned
// and badly signed federation requests. Every answer must be < 500, every 4xx a JSON object
// with a string `errcode` (a UIA challenge, 401 with `flows`, is the one answer without one), and
// the server must still answer /versions and /sync afterwards.
//
// Requests go to the Worker's fetch handler directly (same app, env and Durable Objects): through
// SELF.fetch every request gets slower than the one before (vitest-pool-workers 0.23: /versions
// took 2 ms at first and 157 ms after 350 requests), which would make the run quadratic.
//
// Seeded and bounded: FUZZ_RUNS requests per route (default 20 in `npm test`), FUZZ_SEED (default
// 1). `npm run fuzz` runs 200 per route (FUZZ_RUNS, FUZZ_SEED, FUZZ_ONLY=regex over "METHOD /path" narrow it); a failure prints the seed, method, URL and what was broken.
import { describe, it, expect, beforeAll } from "vitest";
import { SELF, env, createExecutionContext } from "cloudflare:test";
import app from "../../src/index";
import { call, clientOk, federationCall, registerUser, remoteJoinWave, seedRemoteKey, BASE, SERVER, type TestUser } from "./helpers";
import { generateSigningKey, type SigningKey } from "../../src/core/signing";
import { signRequest } from "../../src/core/x-matrix";
import { hashAndSignEvent } from "../../src/core/event-hashes";
import { getRoomVersion } from "../../src/core/room-versions";
import type { PDU } from "../../src/core/types";
import { makeRequest, mulberry32, type FuzzRequest, type Route, type World } from "../fuzz/gen";
import routesJson from "../fuzz/routes.json";
// Routes Lattice serves beyond the spec (Synapse admin registration, MSC3814), written by hand.
import extraRoutesJson from "../fuzz/extra-routes.json";

const fuzzEnv = env as unknown as { FUZZ_RUNS?: string; FUZZ_SEED?: string; FUZZ_ONLY?: string };
/** FUZZ_ONLY (a regular expression over "METHOD /path") narrows the run to some routes. */
const routes = [...(routesJson as Route[]), ...(extraRoutesJson as Route[])].filter((r) => !fuzzEnv.FUZZ_ONLY || new RegExp(fuzzEnv.FUZZ_ONLY).test(`${r.method} ${r.path}`));
const RUNS = Math.max(1, Number(fuzzEnv.FUZZ_RUNS) || 20);
const SEED = Number(fuzzEnv.FUZZ_SEED) || 1;
const REMOTE = "fuzz.remote";
const V3 = "/_matrix/client/v3";
const enc = encodeURIComponent;
const rv12 = getRoomVersion("12")!;
/** A request unanswered this long counts as a failure (the server hangs on it). */
const REQUEST_TIMEOUT_MS = 20_000;

let owner: TestUser; // the fuzzing user: in both rooms
let stranger: TestUser; // in no room ("other-token")
let victim: TestUser; // whose token /logout and /logout/all may end
let remoteKey: SigningKey;
let wrongKey: SigningKey;
let world: World;

beforeAll(async () => {
  [owner, stranger, victim] = await Promise.all([registerUser(), registerUser(), registerUser()]);
  remoteKey = await seedRemoteKey(REMOTE);
  wrongKey = await generateSigningKey();
  const alias = `fuzz${Date.now().toString(36)}`;
  const main = await clientOk(owner.accessToken, "POST", "/createRoom", { preset: "public_chat", room_alias_name: alias, name: "fuzz" });
  // A second room takes the requests that may leave, upgrade or lock a room.
  const scratch = await clientOk(owner.accessToken, "POST", "/createRoom", { preset: "public_chat" });
  const roomIds = [main.room_id, scratch.room_id];
  const eventIds: string[] = [];
  for (const roomId of roomIds) {
    const sent = await clientOk(owner.accessToken, "PUT", `/rooms/${enc(roomId)}/send/m.room.message/fz-setup`, { msgtype: "m.text", body: "hello" });
    eventIds.push(sent.event_id);
    // A user of the simulated remote server joins, so its signed reads get past membership checks.
    await remoteJoinWave(REMOTE, remoteKey, roomId, 0, 1);
  }
  // A make_join template for another remote user: real prev_events and auth_events for PDUs.
  const template = await federationCall(REMOTE, remoteKey, "GET", `/v1/make_join/${enc(main.room_id)}/${enc(`@fz:${REMOTE}`)}?ver=12`);
  if (template.status !== 200) throw new Error(`make_join: ${template.status} ${JSON.stringify(template.body)}`);
  const filter = await clientOk(owner.accessToken, "POST", `/user/${enc(owner.userId)}/filter`, { room: { timeline: { limit: 5 } } });
  const up = await SELF.fetch(`${BASE}/_matrix/media/v3/upload`, { method: "POST", headers: { authorization: `Bearer ${owner.accessToken}`, "content-type": "text/plain" }, body: "fuzz" });
  const media = (await up.json()) as { content_uri: string };
  world = {
    server: SERVER,
    remote: REMOTE,
    userId: owner.userId,
    deviceId: owner.deviceId,
    remoteUserId: `@w0u0:${REMOTE}`,
    roomIds,
    roomAlias: `#${alias}:${SERVER}`,
    eventIds,
    mediaId: media.content_uri.split("/").pop()!,
    filterId: filter.filter_id,
    pdu: template.body.event,
  };
});

/** Routes that may end a membership or lock a room get the scratch room. */
function adjust(route: Route, req: FuzzRequest): FuzzRequest {
  if (/\/(leave|forget|upgrade|kick|ban|state\/\{eventType\}\/\{stateKey\})$/.test(route.path) && route.path.startsWith(`${V3}/rooms/`)) {
    return { ...req, url: req.url.replace(enc(world.roomIds[0]), enc(world.roomIds[1])) };
  }
  return req;
}

async function send(route: Route, req: FuzzRequest): Promise<{ status: number; text: string; contentType: string }> {
  const headers = { ...req.headers };
  let url = req.url;
  // /logout and /logout/all end the session they are sent with: the victim's, never the owner's.
  const me = /\/logout(\/all)?$/.test(route.path) ? victim : owner;
  if (req.auth === "token") headers.authorization = `Bearer ${me.accessToken}`;
  if (req.auth === "other-token") headers.authorization = `Bearer ${stranger.accessToken}`;
  if (req.auth === "query-token") url += `${url.includes("?") ? "&" : "?"}access_token=${enc(me.accessToken)}`;
  let body: BodyInit | undefined = req.body;
  if (body === undefined && req.json !== undefined) body = JSON.stringify(req.json);
  if (req.auth === "sign" && route.path.startsWith("/_matrix/federation/") && req.json && typeof req.json === "object" && !Array.isArray(req.json) && req.body === undefined) {
    ({ url, body } = await signPdus(route, url, req.json as Record<string, unknown>));
    req = { ...req, json: JSON.parse(body as string) };
  }
  if (req.auth === "sign" || req.auth === "sign-wrong") {
    // Sign what the server will see: the URL as parsed (the parser normalises some characters).
    const parsed = new URL(BASE + url);
    const uri = parsed.pathname + parsed.search;
    const wrong = req.auth === "sign-wrong";
    try {
      headers.authorization = await signRequest(wrong ? wrongKey : remoteKey, {
        method: req.method,
        uri,
        origin: REMOTE,
        destination: SERVER,
        content: req.body === undefined ? req.json : undefined,
      });
      if (wrong) headers.authorization = headers.authorization.replace(wrongKey.keyId, remoteKey.keyId);
    } catch {
      // Content that cannot be canonicalised (lone surrogates, non-integers) goes unsigned.
    }
  }
  const request = new Request(BASE + url, { method: req.method, headers, body: req.method === "GET" || req.method === "HEAD" ? undefined : body });
  let timer: ReturnType<typeof setTimeout> | null = null;
  const res = await Promise.race([
    app.fetch(request, env, createExecutionContext()),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS))),
  ]).finally(() => clearTimeout(timer));
  const text = new TextDecoder().decode(await res.arrayBuffer());
  return { status: res.status, text, contentType: res.headers.get("content-type") ?? "" };
}

/** Hash and sign, as the remote server, the PDUs a federation body carries (after the generator
 *  broke them: valid signatures over odd content reach the auth checks). The path's event ID
 *  follows the signed PDU's. PDUs that cannot be signed go as they are. */
async function signPdus(route: Route, url: string, json: Record<string, unknown>): Promise<{ url: string; body: string }> {
  const sign = async (pdu: unknown): Promise<{ pdu: unknown; eventId?: string }> => {
    if (!pdu || typeof pdu !== "object" || Array.isArray(pdu) || typeof (pdu as { room_id?: unknown }).room_id !== "string") return { pdu };
    try {
      return await hashAndSignEvent(pdu as PDU, rv12, REMOTE, remoteKey);
    } catch {
      return { pdu };
    }
  };
  const out = { ...json };
  if (/\/send\/\{txnId\}$/.test(route.path) && Array.isArray(out.pdus)) {
    out.pdus = await Promise.all(out.pdus.map(async (p) => (await sign(p)).pdu));
  } else if (/\/send_(join|leave|knock)\//.test(route.path) || /\/v2\/invite\//.test(route.path)) {
    const inner = /\/v2\/invite\//.test(route.path);
    const signed = await sign(inner ? out.event : out);
    const eventId = signed.eventId;
    if (inner) out.event = signed.pdu;
    if (eventId) {
      url = url.replace(/\/(%24|\$)[^/?]*(?=$|\?)/, `/${enc(eventId)}`);
      return { url, body: JSON.stringify(inner ? out : signed.pdu) };
    }
  }
  return { url, body: JSON.stringify(out) };
}

/** What is wrong with an answer, or undefined when it is fine. */
function problem(status: number, text: string): string | undefined {
  // 502/504 say another server failed (here: every server but this one is unreachable); they must
  // still be Matrix errors. Any other 5xx is ours.
  if (status >= 500 && status !== 502 && status !== 504) return `status ${status}`;
  if (status < 400) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `${status} without a JSON body`;
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) return `${status} body is not a JSON object`;
  const o = body as Record<string, unknown>;
  if (typeof o.errcode === "string" && /^[A-Z0-9_.]+$/i.test(o.errcode)) return undefined;
  if (status === 401 && Array.isArray(o.flows)) return undefined; // UIA challenge
  return `${status} without a string errcode`;
}

describe("fuzzing every spec route", () => {
  it(`answers ${routes.length} routes × ${RUNS} requests without a 5xx or a non-Matrix error, and still serves afterwards`, { timeout: 120_000 + RUNS * routes.length * 1000 }, async () => {
    const rng = mulberry32(SEED);
    const dupRng = mulberry32(SEED ^ 0x5bd1e995);
    const failures: string[] = [];
    // Printed as found, so a long run that is stopped still reports what it saw.
    const fail = (msg: string) => {
      failures.push(msg);
      console.log(`fuzz failure: ${msg}`);
    };
    const statuses = new Map<number, number>();
    let sent = 0;
    let genMs = 0;
    const perRoute = new Map<string, number>();
    const roundTimes: string[] = [];
    const slow: { ms: number; what: string }[] = [];
    const started = Date.now();
    for (let i = 0; i < RUNS; i++) {
      for (const route of routes) {
        const g0 = Date.now();
        const req = adjust(route, makeRequest(rng, world, route, i));
        genMs += Date.now() - g0;
        let res;
        const t0 = Date.now();
        try {
          // One request in 16 goes twice at once (duplicate submissions race on unique rows).
          if (i > 0 && dupRng() < 1 / 16) {
            const [a, b] = await Promise.all([send(route, req), send(route, req)]);
            sent++;
            const p2 = problem(b.status, b.text);
            if (p2) fail(`${p2} (the second of two at once): ${req.method} ${req.url.slice(0, 200)} [${req.note}; auth ${req.auth}] → ${b.text.slice(0, 200)}`);
            res = a;
          } else res = await send(route, req);
          if (Date.now() - t0 > 3000) console.log(`fuzz: slow ${Date.now() - t0} ms: ${res.status} ${req.method} ${req.url.slice(0, 200)} [${req.note}; auth ${req.auth}]`);
          const key = `${route.method} ${route.path}`;
          perRoute.set(key, (perRoute.get(key) ?? 0) + Date.now() - t0);
          slow.push({ ms: Date.now() - t0, what: `${res.status} ${req.method} ${req.url.slice(0, 120)} [${req.note}]` });
          slow.sort((a, b) => b.ms - a.ms).splice(10);
        } catch (e) {
          fail(`${req.method} ${req.url.slice(0, 200)} [${req.note}; auth ${req.auth}] threw ${String(e).slice(0, 200)} after ${Date.now() - t0} ms`);
          continue;
        }
        sent++;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const p = problem(res.status, res.text);
        if (p) fail(`${p}: ${req.method} ${req.url.slice(0, 200)} [${req.note}; auth ${req.auth}] → ${res.text.slice(0, 200)}`);
      }
      roundTimes.push(((Date.now() - started) / 1000).toFixed(0));
      // Still answering between rounds.
      const p0 = Date.now();
      const v = await call("GET", "/_matrix/client/versions");
      console.log(`fuzz: round ${i + 1}/${RUNS} done at ${roundTimes[i]} s; /versions took ${Date.now() - p0} ms`);
      if (v.status !== 200) fail(`round ${i}: /versions answered ${v.status}`);
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const byStatus = [...statuses.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(" ");
    console.log(`fuzz: seed ${SEED}, ${RUNS} runs × ${routes.length} routes (1 in 16 sent twice at once) = ${sent} requests in ${seconds} s; statuses ${byStatus}; rounds done at ${roundTimes.join(", ")} s`);
    console.log(`generation ${genMs} ms; routes by total time:\n${[...perRoute.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, v]) => `${v} ms ${k}`).join("\n")}`);
    console.log(`slowest:\n${slow.map((x) => `${x.ms} ms ${x.what}`).join("\n")}`);

    // The server still answers: /versions, and a full /sync of the fuzzing user.
    expect((await call("GET", "/_matrix/client/versions")).status).toBe(200);
    const s = await call("GET", `${V3}/sync?timeout=0`, { token: owner.accessToken });
    expect(s.status, JSON.stringify(s.body).slice(0, 300)).toBe(200);
    expect(s.body.rooms.join[world.roomIds[0]]).toBeDefined();

    expect(failures, `seed ${SEED}: ${failures.length} bad answers of ${sent}:\n${failures.slice(0, 40).join("\n")}`).toEqual([]);
  });
});
