// Seeded request generator for the endpoint fuzz test (test/integration/fuzz.test.ts). Pure: no
// I/O, no globals; the same seed gives the same requests. Routes come from routes.json, which
// scripts/fuzz-routes.py derives from the spec's OpenAPI.

/** One route of routes.json. */
export interface Route {
  file: string;
  method: string;
  path: string;
  auth: "user" | "server" | "appservice" | "none";
  authOptional?: boolean;
  params?: Param[];
  /** Skeleton of the JSON body schema (see Skel). */
  body?: Skel;
  /** Non-JSON body type (media upload). */
  bodyType?: string;
}
export interface Param {
  in: "path" | "query";
  name: string;
  t: string;
  f?: string;
  e?: unknown[];
  req?: boolean;
}
/** Compact schema: type, format, properties, required, items, enum, additionalProperties. */
export interface Skel {
  t?: string;
  f?: string;
  p?: Record<string, Skel>;
  r?: string[];
  i?: Skel;
  e?: unknown[];
  a?: Skel;
}

/** Real identifiers of the test world, so some requests get past lookups into deep code. */
export interface World {
  server: string;
  remote: string;
  userId: string;
  deviceId: string;
  remoteUserId: string;
  roomIds: string[];
  roomAlias: string;
  eventIds: string[];
  mediaId: string;
  filterId: string;
  /** A PDU of the remote server for the main room (from a make_join template), unsigned; the
   *  runner hashes and signs PDUs in federation bodies so they get past the signature check. */
  pdu: Record<string, unknown>;
}

/** A request to send; `sign` asks the runner to X-Matrix-sign it (content = `json`). */
export interface FuzzRequest {
  method: string;
  /** Path and query, already encoded (or deliberately mis-encoded). */
  url: string;
  headers: Record<string, string>;
  /** Raw body, when not plain JSON of `json`. */
  body?: string | Uint8Array;
  /** The JSON value sent (what a signature covers); undefined for raw bodies. */
  json?: unknown;
  auth: "token" | "other-token" | "none" | "junk" | "sign" | "sign-wrong" | "query-token";
  /** What was done, for the failure report. */
  note: string;
}

export type Rng = () => number;

/** mulberry32: a small, fast, seeded PRNG. */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)];
const chance = (rng: Rng, p: number) => rng() < p;
const int = (rng: Rng, n: number) => Math.floor(rng() * n);

/** Nested arrays or objects `depth` deep. */
export function deepNest(depth: number, kind: "array" | "object"): string {
  return kind === "array" ? "[".repeat(depth) + "]".repeat(depth) : '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
}

// Strings that break parsers, ID grammars and encodings. Raw: placed in paths without encoding.
const BAD_STRINGS = [
  "",
  " ",
  "x",
  "!",
  "@",
  "#",
  "$",
  "+",
  ":",
  "@:",
  "!x:",
  "@a:b:c:d",
  "@UPPER:test.local",
  "@a:[::1]:99999",
  "#a:",
  "$abc",
  "!abc:test.local",
  "@a b:test.local",
  "\u0000",
  "\u202e\u0007\u001b[31m",
  "😀🏳️‍🌈",
  "\ud800",
  "-1",
  "0",
  "1e309",
  "-9223372036854775809",
  "99999999999999999999999",
  "NaN",
  "null",
  "true",
  "[]",
  "{}",
  "{\"a\":",
  "../../../etc/passwd",
  // Pagination and sync tokens out of range or half-formed.
  "t-1",
  "t9007199254740993",
  "s0_0",
  "s-5_zz",
  "s99999999999999999999_x",
  "m1.5",
  "a".repeat(300),
  "é".repeat(2000),
  "a".repeat(70000),
];
// Path segments that are deliberately not valid percent-encoding or UTF-8.
const RAW_SEGMENTS = ["%", "%ZZ", "%FF%FE", "%C3%28", "%ED%A0%80", "%00", "%2F..%2F", "..", ".", "%25%", "a%0Ab", ";x=1", "%E2%82"];

const JUNK_VALUES: (() => unknown)[] = [
  () => null,
  () => true,
  () => false,
  () => 0,
  () => -1,
  () => -(2 ** 63),
  () => 2 ** 53 + 2,
  () => 1e308,
  () => -1e308,
  () => 1.5,
  () => "",
  () => "x",
  () => "\ud800\udfff\ud800",
  () => "a".repeat(70000),
  () => [],
  () => [null, 1, "x", {}],
  () => ({}),
  () => ({ "": { "\u0000": [] } }),
  () => JSON.parse('{"__proto__":1,"constructor":{"prototype":1},"toString":1}'),
  () => JSON.parse(deepNest(64, "object")),
  () => JSON.parse(deepNest(300, "array")),
];

export function junk(rng: Rng): unknown {
  return pick(rng, JUNK_VALUES)();
}

function badString(rng: Rng): string {
  return pick(rng, BAD_STRINGS);
}

/** A well-formed value for a parameter or property name, from the world when the name says what
 *  it holds. */
function worldValue(rng: Rng, w: World, name: string, format: string | undefined, federation: boolean): string | undefined {
  const n = name.toLowerCase();
  if (format === "mx-user-id" || n === "userid" || n === "user_id" || n === "sender") {
    return federation ? pick(rng, [w.remoteUserId, w.remoteUserId, w.userId]) : pick(rng, [w.userId, w.userId, w.remoteUserId]);
  }
  if (format === "mx-room-id" || n === "roomid" || n === "room_id") return pick(rng, w.roomIds);
  if (n === "roomidoralias" || n === "room_id_or_alias") return pick(rng, [...w.roomIds, w.roomAlias]);
  if (n === "roomalias" || n === "room_alias") return w.roomAlias;
  if (format === "mx-event-id" || n === "eventid" || n === "event_id") return pick(rng, w.eventIds);
  if (format === "mx-server-name" || n === "servername" || n === "server_name" || n === "origin") return pick(rng, [w.server, w.remote]);
  if (n === "deviceid" || n === "device_id") return w.deviceId;
  if (n === "mediaid" || n === "media_id") return w.mediaId;
  if (n === "filterid") return w.filterId;
  if (n === "eventtype" || n === "type") return pick(rng, ["m.room.message", "m.room.name", "m.room.topic", "m.room.member", "m.room.power_levels", "m.fuzz"]);
  if (n === "statekey" || n === "state_key") return pick(rng, ["", w.userId]);
  if (n === "kind") return pick(rng, ["override", "underride", "sender", "room", "content"]);
  if (n === "ruleid") return pick(rng, [".m.rule.master", "fuzzrule"]);
  if (n === "receipttype") return pick(rng, ["m.read", "m.read.private", "m.fully_read"]);
  if (n === "reltype" || n === "rel_type") return pick(rng, ["m.thread", "m.annotation", "m.reference"]);
  if (n === "keyname") return pick(rng, ["displayname", "avatar_url", "m.tz", "org.fuzz"]);
  if (n === "membership") return pick(rng, ["join", "leave", "invite", "ban", "knock"]);
  if (n === "querytype") return pick(rng, ["profile", "directory"]);
  if (n === "version") return pick(rng, ["1", "2", "12"]);
  if (n === "txnid") return `fz${Math.floor(rng() * 1e9)}`;
  if (n === "dir") return pick(rng, ["b", "f"]);
  if (n === "timeout") return pick(rng, ["0", "10"]);
  if (n === "limit") return pick(rng, ["1", "5"]);
  if (n === "field") return pick(rng, ["displayname", "avatar_url"]);
  if (n === "ver") return "12";
  if (n === "url") return pick(rng, ["https://example.org/", "http://127.0.0.1/", "file:///etc/passwd"]);
  return undefined;
}

/** A PDU like the world's, of some type, with some content. */
function pduValue(rng: Rng, w: World): Record<string, unknown> {
  const pdu = structuredClone(w.pdu);
  const kind = int(rng, 4);
  if (kind === 1) Object.assign(pdu, { type: "m.room.message", content: { msgtype: "m.text", body: "fuzz" } }, { state_key: undefined });
  if (kind === 2) Object.assign(pdu, { type: "m.room.topic", state_key: "", content: { topic: "fuzz" } });
  if (kind === 3) Object.assign(pdu, { type: "m.room.member", content: { membership: pick(rng, ["leave", "knock", "invite", "ban"]) } });
  if (pdu.state_key === undefined) delete pdu.state_key;
  pdu.origin_server_ts = Date.now();
  return pdu;
}

const EDU_TYPES = ["m.typing", "m.receipt", "m.presence", "m.direct_to_device", "m.device_list_update", "m.signing_key_update"];

/** A well-formed value of a skeleton's type. */
function validValue(rng: Rng, w: World, s: Skel, name: string, depth: number, federation: boolean): unknown {
  if (federation && name === "pdus") return Array.from({ length: 1 + int(rng, 2) }, () => pduValue(rng, w));
  if (federation && name === "edu_type") return pick(rng, EDU_TYPES);
  if (s.e && s.e.length) return pick(rng, s.e);
  const t = s.t ?? (s.p ? "object" : "string");
  switch (t) {
    case "string":
      return worldValue(rng, w, name, s.f, federation) ?? pick(rng, ["fuzz", "hello", "m.text", ""]);
    case "integer":
      return pick(rng, [0, 1, 10, 1000]);
    case "number":
      return pick(rng, [0, 0.5, 100]);
    case "boolean":
      return chance(rng, 0.5);
    case "array": {
      if (depth > 6) return [];
      const n = int(rng, 3);
      return Array.from({ length: n }, () => validValue(rng, w, s.i ?? { t: "string" }, name, depth + 1, federation));
    }
    case "object": {
      const out: Record<string, unknown> = {};
      if (depth > 6) return out;
      const required = new Set(s.r ?? []);
      for (const [k, sub] of Object.entries(s.p ?? {})) {
        if (required.has(k) || chance(rng, 0.6)) out[k] = validValue(rng, w, sub, k, depth + 1, federation);
      }
      if (s.a && chance(rng, 0.7)) {
        const key = worldValue(rng, w, name, undefined, federation) ?? pick(rng, [w.userId, w.roomIds[0], w.deviceId, "fuzz"]);
        out[key] = validValue(rng, w, s.a, key, depth + 1, federation);
      }
      return out;
    }
    default:
      return null;
  }
}

/** Paths (lists of keys) to every node in a JSON value, bounded. */
function nodePaths(v: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  if (out.length > 200) return out;
  if (Array.isArray(v)) v.forEach((x, i) => (out.push([...prefix, i]), nodePaths(x, [...prefix, i], out)));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) out.push([...prefix, k]), nodePaths(x, [...prefix, k], out);
  return out;
}
function parentOf(root: unknown, path: (string | number)[]): any {
  let cur: any = root;
  for (const k of path.slice(0, -1)) cur = cur?.[k];
  return cur;
}

/** Break a valid body: wrong types, missing and extra fields, huge numbers, deep nesting. */
function mutateJson(rng: Rng, value: unknown, s: Skel | undefined): { value: unknown; note: string } {
  const v = structuredClone(value) as any;
  const notes: string[] = [];
  const n = 1 + int(rng, 3);
  for (let i = 0; i < n; i++) {
    const paths = nodePaths(v);
    const op = int(rng, 5);
    if (op === 0 && paths.length) {
      const p = pick(rng, paths);
      parentOf(v, p)[p[p.length - 1]] = junk(rng);
      notes.push(`junk at ${p.join(".")}`);
    } else if (op === 1 && paths.length) {
      const p = pick(rng, paths);
      const parent = parentOf(v, p);
      if (Array.isArray(parent)) parent.splice(Number(p[p.length - 1]), 1);
      else delete parent[p[p.length - 1]];
      notes.push(`dropped ${p.join(".")}`);
    } else if (op === 2 && v && typeof v === "object" && !Array.isArray(v)) {
      const k = pick(rng, ["extra", "", "\u0000", "__proto__", "m.fuzz", ...Object.keys(s?.p ?? {})]);
      v[k] = junk(rng);
      notes.push(`extra ${JSON.stringify(k)}`);
    } else if (op === 3 && paths.length) {
      const p = pick(rng, paths);
      parentOf(v, p)[p[p.length - 1]] = pick(rng, [-1, -(2 ** 53), 2 ** 64, 9007199254740993, -0, 1e-320, 0.1]);
      notes.push(`number at ${p.join(".")}`);
    } else {
      const p = paths.length ? pick(rng, paths) : undefined;
      const nest = JSON.parse(deepNest(20 + int(rng, 220), pick(rng, ["array", "object"] as const)));
      if (p) parentOf(v, p)[p[p.length - 1]] = nest;
      else if (v && typeof v === "object" && !Array.isArray(v)) v.nested = nest;
      notes.push(`deep nesting at ${p?.join(".") ?? "nested"}`);
    }
  }
  return { value: v, note: notes.join(", ") };
}

/** Raw bodies that are not a JSON object at all. */
function rawBody(rng: Rng): { body: string | Uint8Array; note: string } {
  switch (int(rng, 9)) {
    case 0:
      return { body: pick(rng, ["[]", '"x"', "1", "null", "true", "-0", "1e999"]), note: "non-object JSON" };
    case 1:
      return { body: pick(rng, ['{"a":', "{", '{"a":1,}', "{'a':1}", '{"a":NaN}', '{"a":1}{"b":2}', "\ufeff{}"]), note: "malformed JSON" };
    case 2:
      return { body: new Uint8Array([0x7b, 0x22, 0x62, 0x6f, 0x64, 0x79, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x22, 0x7d]), note: "invalid UTF-8 in a JSON string" };
    case 3:
      return { body: new Uint8Array([0xff, 0xfe, 0x00, 0x7b, 0x7d]), note: "invalid UTF-8 bytes" };
    case 4:
      return { body: deepNest(100_000, "array"), note: "100,000-deep array" };
    case 5:
      return { body: `{"a":${deepNest(20_000, "object")}}`, note: "20,000-deep object" };
    case 6:
      return { body: `{"a":"${"x".repeat(1_100_000)}"}`, note: "1.1 MB body" };
    case 7:
      return { body: '{"a":1,"a":2,"__proto__":{"admin":true}}', note: "duplicate keys and __proto__" };
    default:
      return { body: "", note: "empty body" };
  }
}

function fillPath(rng: Rng, w: World, route: Route, federation: boolean, malformed: Set<string>): string {
  const params = new Map((route.params ?? []).filter((p) => p.in === "path").map((p) => [p.name, p]));
  return route.path.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const p = params.get(name);
    if (malformed.has(name)) {
      if (chance(rng, 0.3)) return pick(rng, RAW_SEGMENTS);
      const s = badString(rng);
      return s === "\ud800" ? "%ED%A0%80" : encodeURIComponent(s);
    }
    return encodeURIComponent(worldValue(rng, w, name, p?.f, federation) ?? (p?.e ? String(pick(rng, p.e)) : "fuzz"));
  });
}

function encodeQueryValue(s: string): string {
  return s === "\ud800" ? "%ED%A0%80" : encodeURIComponent(s);
}

function queryString(rng: Rng, w: World, route: Route, federation: boolean, breakIt: boolean): { qs: string; note: string } {
  const parts: string[] = [];
  const notes: string[] = [];
  for (const p of (route.params ?? []).filter((x) => x.in === "query")) {
    if (p.name === "access_token") continue;
    if (!p.req && chance(rng, 0.5)) continue;
    if (breakIt && chance(rng, 0.5)) {
      if (chance(rng, 0.15)) {
        notes.push(`dropped ?${p.name}`);
        continue;
      }
      // Long-polls are legitimately held open for `timeout` ms: no huge values there.
      let v = p.name === "timeout" ? pick(rng, ["-1", "abc", "1e400", "1.5", ""]) : badString(rng);
      if (p.name === "filter" && chance(rng, 0.5)) v = pick(rng, [deepNest(5000, "object"), '{"room":{"timeline":{"limit":-1}}}', '{"room":{"rooms":[1]}}', '{"event_fields":[""]}', "{", "[]", "99999"]);
      const raw = chance(rng, 0.15) ? pick(rng, RAW_SEGMENTS) : encodeQueryValue(v);
      parts.push(`${p.name}=${raw}`);
      if (chance(rng, 0.2)) parts.push(`${p.name}=${encodeQueryValue(badString(rng))}`); // repeated
      notes.push(`?${p.name} bad`);
      continue;
    }
    let v = worldValue(rng, w, p.name, p.f, federation);
    if (v === undefined) {
      if (p.e?.length) v = String(pick(rng, p.e));
      else if (p.t === "integer" || p.t === "number") v = String(pick(rng, [0, 1, 10]));
      else if (p.t === "boolean") v = pick(rng, ["true", "false"]);
      else v = "fuzz";
    }
    parts.push(`${p.name}=${encodeURIComponent(v)}`);
  }
  if (breakIt && chance(rng, 0.3)) {
    parts.push(`${pick(rng, ["extra", "", "limit", "from", "%FF", "a%00b"])}=${encodeQueryValue(badString(rng))}`);
    notes.push("extra query param");
  }
  return { qs: parts.length ? `?${parts.join("&")}` : "", note: notes.join(", ") };
}

const WRONG_CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=latin1", "application/xml", ""];

/** The `i`-th request for `route`. The first request of each route is well-formed (a baseline that
 *  reaches the handler); the rest break one or more of: path IDs, query, body, content type, auth. */
export function makeRequest(rng: Rng, w: World, route: Route, i: number): FuzzRequest {
  const federation = route.path.startsWith("/_matrix/federation/");
  const wellFormed = i === 0;
  const notes: string[] = [];

  const pathNames = (route.params ?? []).filter((p) => p.in === "path").map((p) => p.name);
  const malformed = new Set<string>();
  if (!wellFormed) for (const n of pathNames) if (chance(rng, 0.3)) malformed.add(n);
  if (malformed.size) notes.push(`bad path ${[...malformed].join(",")}`);
  const path = fillPath(rng, w, route, federation, malformed);
  const q = queryString(rng, w, route, federation, !wellFormed && chance(rng, 0.5));
  if (q.note) notes.push(q.note);

  let method = route.method;
  if (!wellFormed && chance(rng, 0.03)) {
    method = pick(rng, ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]);
    notes.push(`method ${method}`);
  }

  const headers: Record<string, string> = {};
  let json: unknown;
  let body: string | Uint8Array | undefined;
  const sendsBody = method !== "GET" && method !== "HEAD";
  if (sendsBody && route.bodyType) {
    // Media upload: any bytes, any declared type.
    body = pick(rng, [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0xff]), "GIF89a\u0000", "", "x".repeat(int(rng, 5000))]);
    headers["content-type"] = pick(rng, ["image/png", "image/gif", "application/octet-stream", "text/html", "", "image/svg+xml"]);
    notes.push(`upload as ${headers["content-type"] || "no type"}`);
  } else if (sendsBody && (route.body || !wellFormed)) {
    let valid = route.body ? validValue(rng, w, route.body, "body", 0, federation) : {};
    // Bodies that are a PDU (send_join, send_leave, send_knock) or hold one (invite v2).
    if (/\/send_(join|leave|knock)\//.test(route.path)) valid = pduValue(rng, w);
    if (/\/v2\/invite\//.test(route.path) && valid && typeof valid === "object") (valid as Record<string, unknown>).event = pduValue(rng, w);
    const r = rng();
    if (wellFormed || r < 0.15) json = valid;
    else if (r < 0.75) {
      const m = mutateJson(rng, valid, route.body);
      json = m.value;
      notes.push(m.note);
    } else {
      const raw = rawBody(rng);
      body = raw.body;
      notes.push(raw.note);
    }
    headers["content-type"] = "application/json";
    if (!wellFormed && chance(rng, 0.12)) {
      headers["content-type"] = pick(rng, WRONG_CONTENT_TYPES);
      notes.push(`content-type ${JSON.stringify(headers["content-type"])}`);
    }
    if (headers["content-type"] === "") delete headers["content-type"];
  }

  // Authentication: mostly valid, so requests reach the handler.
  let auth: FuzzRequest["auth"] = "none";
  if (route.auth === "server") auth = "sign";
  else if (route.auth === "user" || route.auth === "appservice") auth = "token";
  if (!wellFormed && chance(rng, route.auth === "none" ? 0.3 : 0.15)) {
    auth = pick(rng, route.auth === "server" ? (["none", "junk", "sign-wrong", "token"] as const) : (["none", "junk", "query-token", "other-token", "sign"] as const));
    notes.push(`auth ${auth}`);
  }
  if (auth === "junk") {
    headers.authorization = pick(rng, [
      "Bearer",
      "Bearer ",
      "Bearer lat_" + "A".repeat(43),
      "Bearer \u00ff\u00fe",
      "Basic YTpi",
      "X-Matrix",
      'X-Matrix origin="",key="",sig=""',
      'X-Matrix origin=remote,key="ed25519:a",sig="!!!",destination="test.local"',
      `X-Matrix origin="${w.remote}",key="ed25519:nope",sig="AAAA"`,
      'X-Matrix origin="\u00ff:1",key="ed25519:a",sig="a",extra',
      "X-Matrix " + "origin=a,".repeat(500),
      "Bearer " + "x".repeat(9000),
    ]);
  }
  const url = path + q.qs;
  return { method, url, headers, body, json, auth, note: notes.join("; ") || "well-formed" };
}
