#!/usr/bin/env node
// Manage application service registrations (bridges) through the admin API:
//   npm run appservice -- add reg.yaml [--url http://127.0.0.1:8008]
//   npm run appservice -- list [--url URL]
//   npm run appservice -- remove ID [--url URL]
// The admin's access token comes from --token or $LATTICE_ADMIN_TOKEN (log in as a server admin,
// e.g. one made with `npm run register-user -- @admin:server --admin`).
import { readFile } from "node:fs/promises";

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const positional = args.filter((a, i) => !a.startsWith("--") && !["--url", "--token"].includes(args[i - 1]));
const [command, arg] = positional;
const usage = "usage: npm run appservice -- add <registration.yaml> | list | remove <id>  [--url URL] [--token ADMIN_TOKEN]";
if (!["add", "list", "remove"].includes(command) || (command !== "list" && !arg)) {
  console.error(usage);
  process.exit(2);
}
const url = (opt("--url") ?? process.env.LATTICE_URL ?? "http://127.0.0.1:8008").replace(/\/+$/, "");
const token = opt("--token") ?? process.env.LATTICE_ADMIN_TOKEN;
if (!token) {
  console.error("appservice: no admin access token (--token or LATTICE_ADMIN_TOKEN)");
  process.exit(2);
}

const base = `${url}/_lattice/admin/v1/appservices`;
const headers = { authorization: `Bearer ${token}` };
let res;
if (command === "add") {
  // The file goes as it is (YAML or JSON); the server validates it.
  res = await fetch(base, { method: "POST", headers: { ...headers, "content-type": "application/yaml" }, body: await readFile(arg, "utf8") });
} else if (command === "list") {
  res = await fetch(base, { headers });
} else {
  res = await fetch(`${base}/${encodeURIComponent(arg)}`, { method: "DELETE", headers });
}
const body = await res.json().catch(() => ({}));
if (!res.ok) {
  console.error(`appservice: ${body.errcode ?? res.status}: ${body.error ?? ""}`);
  process.exit(1);
}
if (command === "add") console.log(`Added ${body.id} (sender @${body.sender_localpart}, url ${body.url ?? "none"})`);
else if (command === "remove") console.log(`Removed ${arg}`);
else if (body.appservices.length === 0) console.log("No application services registered.");
else for (const a of body.appservices) console.log(`${a.id}\t${a.url ?? "(no url)"}\t@${a.sender_localpart}`);
