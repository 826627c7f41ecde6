#!/usr/bin/env node
// The admin API from a terminal (a thin wrapper; prints the JSON answers):
//   npm run admin -- [--url URL] [--token TOKEN] <command> [args]
// The token is an admin's access token: --token, or $LATTICE_ADMIN_TOKEN (`login` prints one).
// URL: --url, $LATTICE_URL, or http://127.0.0.1:8008.
const args = process.argv.slice(2);
const flags = new Set(["--erase", "--admin", "--block", "--no-purge", "--deactivated"]);
const valued = ["--url", "--token", "--password", "--uses"];
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const positional = args.filter((a, i) => !flags.has(a) && !valued.includes(a) && !valued.includes(args[i - 1]));
const [command, ...rest] = positional;
const url = (opt("--url") ?? process.env.LATTICE_URL ?? "http://127.0.0.1:8008").replace(/\/+$/, "");
const token = opt("--token") ?? process.env.LATTICE_ADMIN_TOKEN;
const enc = encodeURIComponent;
const A = "/_synapse/admin";

function mxc(uri) {
  const m = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(uri ?? "");
  if (!m) fail("expected an mxc://server/id URI");
  return `${enc(m[1])}/${enc(m[2])}`;
}
function need(v, what) {
  if (!v) fail(`missing ${what}`);
  return v;
}
function fail(msg) {
  console.error(`admin: ${msg}`);
  process.exit(2);
}

/** [method, path, body] for each command. */
const COMMANDS = {
  version: () => ["GET", `${A}/v1/server_version`],
  users: (q = "") => ["GET", `${A}/v2/users?limit=100&name=${enc(q)}&deactivated=${args.includes("--deactivated")}&locked=true`],
  user: (id) => ["GET", `${A}/v2/users/${enc(need(id, "user ID"))}`],
  "create-user": (id) => ["PUT", `${A}/v2/users/${enc(need(id, "user ID"))}`, { password: need(opt("--password"), "--password"), admin: args.includes("--admin") }],
  deactivate: (id) => ["POST", `${A}/v1/deactivate/${enc(need(id, "user ID"))}`, { erase: args.includes("--erase") }],
  "reset-password": (id, pw) => ["POST", `${A}/v1/reset_password/${enc(need(id, "user ID"))}`, { new_password: need(pw, "new password"), logout_devices: true }],
  "set-admin": (id, v = "true") => ["PUT", `${A}/v1/users/${enc(need(id, "user ID"))}/admin`, { admin: v === "true" }],
  devices: (id) => ["GET", `${A}/v2/users/${enc(need(id, "user ID"))}/devices`],
  "delete-device": (id, dev) => ["DELETE", `${A}/v2/users/${enc(need(id, "user ID"))}/devices/${enc(need(dev, "device ID"))}`],
  "joined-rooms": (id) => ["GET", `${A}/v1/users/${enc(need(id, "user ID"))}/joined_rooms`],
  whois: (id) => ["GET", `${A}/v1/whois/${enc(need(id, "user ID"))}`],
  suspend: (id, v = "true") => ["PUT", `/_matrix/client/v1/admin/suspend/${enc(need(id, "user ID"))}`, { suspended: v === "true" }],
  lock: (id, v = "true") => ["PUT", `/_matrix/client/v1/admin/lock/${enc(need(id, "user ID"))}`, { locked: v === "true" }],
  rooms: (q = "") => ["GET", `${A}/v1/rooms?limit=100&search_term=${enc(q)}`],
  room: (id) => ["GET", `${A}/v1/rooms/${enc(need(id, "room ID"))}`],
  members: (id) => ["GET", `${A}/v1/rooms/${enc(need(id, "room ID"))}/members`],
  "block-room": (id, v = "true") => ["PUT", `${A}/v1/rooms/${enc(need(id, "room ID"))}/block`, { block: v === "true" }],
  "delete-room": (id) => ["DELETE", `${A}/v1/rooms/${enc(need(id, "room ID"))}`, { block: args.includes("--block"), purge: !args.includes("--no-purge") }],
  media: (id) => ["GET", `${A}/v1/users/${enc(need(id, "user ID"))}/media?limit=100`],
  quarantine: (uri) => ["POST", `${A}/v1/media/quarantine/${mxc(uri)}`],
  unquarantine: (uri) => ["POST", `${A}/v1/media/unquarantine/${mxc(uri)}`],
  "delete-media": (uri) => ["DELETE", `${A}/v1/media/${mxc(uri)}`],
  destinations: () => ["GET", `${A}/v1/federation/destinations?limit=500`],
  "reset-destination": (d) => ["POST", `${A}/v1/federation/destinations/${enc(need(d, "server name"))}/reset_connection`],
  tokens: () => ["GET", `${A}/v1/registration_tokens`],
  "new-token": () => ["POST", `${A}/v1/registration_tokens/new`, opt("--uses") ? { uses_allowed: Number(opt("--uses")) } : {}],
  "delete-token": (t) => ["DELETE", `${A}/v1/registration_tokens/${enc(need(t, "token"))}`],
  raw: (method, path, json) => [need(method, "method").toUpperCase(), need(path, "path"), json ? JSON.parse(json) : undefined],
};

if (command === "login") {
  const [user, password] = rest;
  const res = await fetch(`${url}/_matrix/client/v3/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: need(user, "user") }, password: need(password ?? opt("--password"), "password") }),
  });
  const body = await res.json();
  if (!res.ok) fail(`${body.errcode}: ${body.error}`);
  console.log(body.access_token);
  process.exit(0);
}
if (!command || !COMMANDS[command]) {
  console.error(`usage: npm run admin -- [--url URL] [--token TOKEN] <command> [args]\ncommands: login <user> <password>, ${Object.keys(COMMANDS).join(", ")}`);
  process.exit(2);
}
if (!token) fail("no admin token (--token or LATTICE_ADMIN_TOKEN; `npm run admin -- login <user> <password>` prints one)");
const [method, path, body] = COMMANDS[command](...rest);
const res = await fetch(`${url}${path}`, {
  method,
  headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
  body: body === undefined ? undefined : JSON.stringify(body),
});
const text = await res.text();
let out;
try {
  out = JSON.stringify(JSON.parse(text), null, 2);
} catch {
  out = text;
}
if (!res.ok) {
  console.error(out);
  process.exit(1);
}
console.log(out);
