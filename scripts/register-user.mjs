#!/usr/bin/env node
// Create a user through shared-secret registration (/_synapse/admin/v1/register), e.g. the first
// admin when registration is closed:
//   npm run register-user -- @alice:localhost:8008 --admin [--password PW] [--url http://127.0.0.1:8008]
// The shared secret comes from --secret or $REGISTRATION_SHARED_SECRET (set the same value on the
// server: `.dev.vars` locally, `wrangler secret put REGISTRATION_SHARED_SECRET` in production).
import { createHmac, randomBytes } from "node:crypto";
import { createInterface } from "node:readline/promises";

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const positional = args.filter((a, i) => !a.startsWith("--") && !["--password", "--url", "--secret"].includes(args[i - 1]));
const who = positional[0];
if (!who) {
  console.error("usage: npm run register-user -- <@user:server | username> [--admin] [--password PW] [--url URL] [--secret S]");
  process.exit(2);
}
const username = who.startsWith("@") ? who.slice(1, who.indexOf(":") > 0 ? who.indexOf(":") : undefined) : who;
const url = (opt("--url") ?? process.env.LATTICE_URL ?? "http://127.0.0.1:8008").replace(/\/+$/, "");
const secret = opt("--secret") ?? process.env.REGISTRATION_SHARED_SECRET;
if (!secret) {
  console.error("register-user: no shared secret (--secret or REGISTRATION_SHARED_SECRET)");
  process.exit(2);
}
const admin = args.includes("--admin");
let password = opt("--password");
if (!password) {
  if (process.stdin.isTTY) {
    const rl = createInterface({ input: process.stdin, output: process.stdout });
    password = await rl.question("Password (empty: generate one): ");
    rl.close();
  }
  if (!password) {
    password = randomBytes(18).toString("base64url");
    console.log(`Generated password: ${password}`);
  }
}

const nonceRes = await fetch(`${url}/_synapse/admin/v1/register`);
const nonceBody = await nonceRes.json();
if (!nonceRes.ok) {
  console.error(`register-user: ${nonceBody.error ?? nonceRes.status}`);
  process.exit(1);
}
const mac = createHmac("sha1", secret)
  .update(`${nonceBody.nonce}\0${username}\0${password}\0${admin ? "admin" : "notadmin"}`)
  .digest("hex");
const res = await fetch(`${url}/_synapse/admin/v1/register`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ nonce: nonceBody.nonce, username, password, admin, mac }),
});
const body = await res.json();
if (!res.ok) {
  console.error(`register-user: ${body.errcode}: ${body.error}`);
  process.exit(1);
}
console.log(`Created ${body.user_id}${admin ? " (admin)" : ""}`);
