// Lattice admin console: a small single-page app over the Synapse-compatible admin API
// (/_synapse/admin/...) and the client login. No framework; DOM built with h().
"use strict";

const main = document.getElementById("main");
const statusEl = document.getElementById("status");
const nav = document.getElementById("nav");
let token = sessionStorage.getItem("lattice-admin-token");

/** Element helper: h("button", {onclick}, "text", child...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

function say(text, kind) {
  statusEl.textContent = text;
  statusEl.className = kind || "";
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? `${body.errcode}: ${body.error}` : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let json = {};
  try { json = await res.json(); } catch { /* empty */ }
  if (!res.ok) {
    if (res.status === 401 && path !== "/_matrix/client/v3/login") signOut("Your session ended; sign in again.");
    throw new ApiError(res.status, json);
  }
  return json;
}
const A = "/_synapse/admin";
const enc = encodeURIComponent;

/** Run an action, reporting success or the server's error in the status line. */
async function act(label, fn) {
  say(`${label}…`);
  try {
    const r = await fn();
    say(`${label}: done`, "ok");
    return r;
  } catch (e) {
    say(`${label}: ${e.message}`, "error");
    return undefined;
  }
}

function table(caption, columns, rows, actions) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c[0])), actions ? h("th", { scope: "col" }, "Actions") : null);
  const body = rows.map((r) => h("tr", {}, columns.map((c) => h("td", {}, c[1](r))), actions ? h("td", { class: "actions" }, actions(r)) : null));
  if (!rows.length) body.push(h("tr", {}, h("td", { colspan: columns.length + (actions ? 1 : 0), class: "muted" }, "Nothing to show.")));
  return h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body));
}

const ts = (t) => (t ? new Date(t).toISOString().replace("T", " ").slice(0, 19) : "—");
const bytes = (n) => (n == null ? "—" : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`);

function render(title, ...content) {
  main.replaceChildren(h("h2", {}, title), ...content);
  document.title = `${title} · Lattice admin`;
  for (const a of nav.querySelectorAll("a")) a.toggleAttribute("aria-current", a.getAttribute("href") === location.hash.split("?")[0]);
  for (const a of nav.querySelectorAll("a[aria-current]")) a.setAttribute("aria-current", "page");
}

// ---------------------------------------------------------------------------------------------
// Sign in.

function signOut(message) {
  token = null;
  sessionStorage.removeItem("lattice-admin-token");
  nav.hidden = true;
  showSignIn(message);
}

function showSignIn(message) {
  const user = h("input", { id: "signin-user", name: "user", autocomplete: "username", required: true });
  const pass = h("input", { id: "signin-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "stack", "aria-label": "Sign in", onsubmit: async (e) => {
      e.preventDefault();
      const r = await act("Signing in", () =>
        api("POST", "/_matrix/client/v3/login", { type: "m.login.password", identifier: { type: "m.id.user", user: user.value }, password: pass.value, initial_device_display_name: "Lattice admin console" }),
      );
      if (!r) return;
      token = r.access_token;
      try {
        await api("GET", `${A}/v1/server_version`);
      } catch (err) {
        say(err.status === 403 ? "This account is not a server admin." : err.message, "error");
        await api("POST", "/_matrix/client/v3/logout", {}).catch(() => {});
        token = null;
        return;
      }
      sessionStorage.setItem("lattice-admin-token", token);
      nav.hidden = false;
      location.hash = "#/dashboard";
      route();
    } },
    h("label", { for: "signin-user" }, "User ID or name", user),
    h("label", { for: "signin-password" }, "Password", pass),
    h("button", { type: "submit" }, "Sign in"),
  );
  main.replaceChildren(h("h2", {}, "Sign in"), h("p", { class: "muted" }, "Sign in with a server admin account."), form);
  if (message) say(message, "error");
}

document.getElementById("signout").addEventListener("click", async () => {
  await api("POST", "/_matrix/client/v3/logout", {}).catch(() => {});
  signOut("Signed out.");
});

// ---------------------------------------------------------------------------------------------
// Pages.

async function dashboard(_params, page) {
  const [version, users, rooms, media, dests] = await Promise.all([
    api("GET", `${A}/v1/server_version`),
    api("GET", `${A}/v2/users?limit=0`),
    api("GET", `${A}/v1/rooms?limit=0`),
    api("GET", `${A}/v1/statistics/users/media?limit=1000`),
    api("GET", `${A}/v1/federation/destinations?limit=500`),
  ]);
  const mediaBytes = media.users.reduce((s, u) => s + (u.media_length || 0), 0);
  const failing = dests.destinations.filter((d) => d.failure_ts);
  const card = (label, value, extra) => h("div", { class: "card" }, h("b", {}, value), label, extra ? h("div", { class: "muted" }, extra) : null);
  page(
    "Dashboard",
    h("p", { class: "muted" }, version.server_version),
    h(
      "div",
      { class: "cards" },
      card("users", users.total),
      card("rooms", rooms.total_rooms),
      card("media stored", bytes(mediaBytes), `${media.total} uploaders`),
      card("federation peers", dests.total, failing.length ? h("span", { class: "bad" }, `${failing.length} failing`) : "all healthy"),
    ),
  );
}

async function users(params, page) {
  const q = params.get("q") || "";
  const showDeactivated = params.get("deactivated") === "true";
  const from = Number(params.get("from") || 0);
  const list = await api("GET", `${A}/v2/users?limit=50&from=${from}&name=${enc(q)}&deactivated=${showDeactivated}&locked=true`);
  const search = h("input", { id: "user-search", type: "search", name: "q", value: q });
  const deact = h("input", { id: "user-deactivated", type: "checkbox", checked: showDeactivated });
  const searchForm = h(
    "form",
    { role: "search", "aria-label": "Search users", onsubmit: (e) => {
      e.preventDefault();
      location.hash = `#/users?q=${enc(search.value)}&deactivated=${deact.checked}`;
    } },
    h("label", { for: "user-search" }, "Search by user ID or display name", search),
    h("label", { class: "inline", for: "user-deactivated" }, deact, "include deactivated"),
    h("button", { type: "submit" }, "Search"),
  );
  const rows = table(
    `${list.total} users`,
    [
      ["User", (u) => h("a", { href: `#/user?id=${enc(u.name)}` }, u.name)],
      ["Display name", (u) => u.displayname || ""],
      ["Admin", (u) => (u.admin ? "yes" : "")],
      ["State", (u) => (u.deactivated ? "deactivated" : u.locked ? "locked" : u.suspended ? "suspended" : u.shadow_banned ? "shadow-banned" : "active")],
      ["Created", (u) => ts(u.creation_ts)],
      ["Last seen", (u) => ts(u.last_seen_ts)],
    ],
    list.users,
    (u) => (u.deactivated ? [] : [h("button", { type: "button", class: "danger", onclick: () => deactivate(u.name) }, "Deactivate", h("span", { class: "skip" }, ` ${u.name}`))]),
  );
  const more = list.next_token ? h("a", { href: `#/users?q=${enc(q)}&deactivated=${showDeactivated}&from=${list.next_token}` }, "Next page") : null;
  const newId = h("input", { id: "new-user", name: "user_id", placeholder: "@name:server", required: true });
  const newPw = h("input", { id: "new-password", name: "password", type: "password", autocomplete: "new-password", required: true });
  const newAdmin = h("input", { id: "new-admin", type: "checkbox" });
  const create = h(
    "form",
    { "aria-label": "Create user", onsubmit: async (e) => {
      e.preventDefault();
      if (await act(`Creating ${newId.value}`, () => api("PUT", `${A}/v2/users/${enc(newId.value)}`, { password: newPw.value, admin: newAdmin.checked }))) route(true);
    } },
    h("label", { for: "new-user" }, "User ID", newId),
    h("label", { for: "new-password" }, "Password", newPw),
    h("label", { class: "inline", for: "new-admin" }, newAdmin, "admin"),
    h("button", { type: "submit" }, "Create or update"),
  );
  page("Users", searchForm, rows, more, h("h3", {}, "Create a user"), create);
}

async function deactivate(userId) {
  if (!confirm(`Deactivate ${userId}? This cannot be undone. Their sessions end and they leave every room.`)) return;
  const erase = confirm("Also erase their profile and uploaded media?");
  if (await act(`Deactivating ${userId}`, () => api("POST", `${A}/v1/deactivate/${enc(userId)}`, { erase }))) route(true);
}

async function user(params, page) {
  const id = params.get("id");
  const [u, devices, joined] = await Promise.all([
    api("GET", `${A}/v2/users/${enc(id)}`),
    api("GET", `${A}/v2/users/${enc(id)}/devices`),
    api("GET", `${A}/v1/users/${enc(id)}/joined_rooms`),
  ]);
  const pw = h("input", { id: "reset-password", type: "password", autocomplete: "new-password", required: true });
  const reset = h(
    "form",
    { "aria-label": "Reset password", onsubmit: async (e) => {
      e.preventDefault();
      await act("Resetting password", () => api("POST", `${A}/v1/reset_password/${enc(id)}`, { new_password: pw.value, logout_devices: true }));
    } },
    h("label", { for: "reset-password" }, "New password", pw),
    h("button", { type: "submit" }, "Reset password"),
  );
  const toggle = (label, method, path, body) => h("button", { type: "button", onclick: async () => { if (await act(label, () => api(method, path, body))) route(true); } }, label);
  const moderation = h(
    "p",
    {},
    toggle(u.admin ? "Remove admin" : "Make admin", "PUT", `${A}/v1/users/${enc(id)}/admin`, { admin: !u.admin }), " ",
    toggle(u.locked ? "Unlock" : "Lock", "PUT", `/_matrix/client/v1/admin/lock/${enc(id)}`, { locked: !u.locked }), " ",
    toggle(u.suspended ? "Unsuspend" : "Suspend", "PUT", `/_matrix/client/v1/admin/suspend/${enc(id)}`, { suspended: !u.suspended }), " ",
    toggle(u.shadow_banned ? "Lift shadow-ban" : "Shadow-ban", u.shadow_banned ? "DELETE" : "POST", `${A}/v1/users/${enc(id)}/shadow_ban`), " ",
    u.deactivated ? null : h("button", { type: "button", class: "danger", onclick: () => deactivate(id) }, "Deactivate"),
  );
  page(
    id,
    h("p", {}, `Display name: ${u.displayname || "—"} · created ${ts(u.creation_ts)} · ${u.deactivated ? (u.erased ? "deactivated (erased)" : "deactivated") : "active"}${u.admin ? " · admin" : ""}`),
    moderation,
    reset,
    table(
      `${devices.total} devices`,
      [["Device", (d) => d.device_id], ["Name", (d) => d.display_name || ""], ["Last seen", (d) => ts(d.last_seen_ts)], ["IP", (d) => d.last_seen_ip || ""]],
      devices.devices,
      (d) => [h("button", { type: "button", class: "danger", onclick: async () => { if (await act(`Deleting device ${d.device_id}`, () => api("DELETE", `${A}/v2/users/${enc(id)}/devices/${enc(d.device_id)}`))) route(true); } }, "Delete")],
    ),
    table(`${joined.total} joined rooms`, [["Room", (r) => h("a", { href: `#/room?id=${enc(r)}` }, r)]], joined.joined_rooms),
    h("p", {}, h("a", { href: `#/media?user=${enc(id)}` }, "Media uploaded by this user")),
  );
}

async function rooms(params, page) {
  const q = params.get("q") || "";
  const from = Number(params.get("from") || 0);
  const list = await api("GET", `${A}/v1/rooms?limit=50&from=${from}&search_term=${enc(q)}`);
  const search = h("input", { id: "room-search", type: "search", value: q });
  const searchForm = h(
    "form",
    { role: "search", "aria-label": "Search rooms", onsubmit: (e) => { e.preventDefault(); location.hash = `#/rooms?q=${enc(search.value)}`; } },
    h("label", { for: "room-search" }, "Search by name, alias or room ID", search),
    h("button", { type: "submit" }, "Search"),
  );
  page(
    "Rooms",
    searchForm,
    table(
      `${list.total_rooms} rooms`,
      [
        ["Room", (r) => h("a", { href: `#/room?id=${enc(r.room_id)}` }, r.name || r.canonical_alias || r.room_id)],
        ["Alias", (r) => r.canonical_alias || ""],
        ["Members", (r) => `${r.joined_members} (${r.joined_local_members} local)`],
        ["Version", (r) => r.version],
        ["Public", (r) => (r.public ? "yes" : "")],
      ],
      list.rooms,
      (r) => [h("button", { type: "button", class: "danger", onclick: () => deleteRoom(r.room_id) }, "Delete", h("span", { class: "skip" }, ` ${r.room_id}`))],
    ),
    list.next_batch ? h("a", { href: `#/rooms?q=${enc(q)}&from=${list.next_batch}` }, "Next page") : null,
  );
}

async function deleteRoom(roomId) {
  if (!confirm(`Delete ${roomId}? Every local member is removed and the room is purged from this server.`)) return;
  const block = confirm("Also block the room so nobody here can join it again?");
  const r = await act(`Deleting ${roomId}`, () => api("DELETE", `${A}/v2/rooms/${enc(roomId)}`, { block, purge: true }));
  if (!r) return;
  for (let i = 0; i < 60; i++) {
    const s = await api("GET", `${A}/v2/rooms/delete_status/${enc(r.delete_id)}`);
    if (s.status === "complete" || s.status === "failed") {
      say(s.status === "complete" ? `Deleted ${roomId}: ${s.shutdown_room.kicked_users.length} members removed` : `Deleting ${roomId} failed: ${s.error}`, s.status === "complete" ? "ok" : "error");
      if (location.hash.startsWith("#/room?")) location.hash = "#/rooms";
      else route(true);
      return;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
  say(`Still deleting ${roomId}; check again later.`);
}

async function room(params, page) {
  const id = params.get("id");
  const [r, members, block] = await Promise.all([
    api("GET", `${A}/v1/rooms/${enc(id)}`),
    api("GET", `${A}/v1/rooms/${enc(id)}/members`),
    api("GET", `${A}/v1/rooms/${enc(id)}/block`),
  ]);
  page(
    r.name || id,
    h("p", {}, h("code", {}, id), ` · version ${r.version} · created by ${r.creator} · join rule ${r.join_rules || "—"} · ${r.encryption ? "encrypted" : "not encrypted"}`),
    r.topic ? h("p", { class: "muted" }, r.topic) : null,
    h(
      "p",
      {},
      h("button", { type: "button", onclick: async () => { if (await act(block.block ? "Unblocking" : "Blocking", () => api("PUT", `${A}/v1/rooms/${enc(id)}/block`, { block: !block.block }))) route(true); } }, block.block ? "Unblock" : "Block"),
      " ",
      h("button", { type: "button", class: "danger", onclick: () => deleteRoom(id) }, "Delete room"),
    ),
    table(`${members.total} joined members`, [["Member", (m) => h("a", { href: `#/user?id=${enc(m)}` }, m)]], members.members.map((m) => m)),
  );
}

async function media(params, page) {
  const who = params.get("user") || "";
  const input = h("input", { id: "media-user", value: who, placeholder: "@name:server", required: true });
  const form = h(
    "form",
    { "aria-label": "Media by user", onsubmit: (e) => { e.preventDefault(); location.hash = `#/media?user=${enc(input.value)}`; } },
    h("label", { for: "media-user" }, "Uploader", input),
    h("button", { type: "submit" }, "Show media"),
  );
  const mxc = h("input", { id: "media-mxc", placeholder: "mxc://server/id", required: true });
  const byId = h(
    "form",
    { "aria-label": "Quarantine by ID", onsubmit: async (e) => {
      e.preventDefault();
      const m = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(mxc.value.trim());
      if (!m) return say("Enter an mxc:// URI", "error");
      await act(`Quarantining ${mxc.value}`, () => api("POST", `${A}/v1/media/quarantine/${enc(m[1])}/${enc(m[2])}`));
    } },
    h("label", { for: "media-mxc" }, "Media URI", mxc),
    h("button", { type: "submit" }, "Quarantine"),
  );
  const stats = await api("GET", `${A}/v1/statistics/users/media?limit=20`);
  let list = null;
  if (who) {
    const l = await api("GET", `${A}/v2/users/${enc(who)}`).then(() => api("GET", `${A}/v1/users/${enc(who)}/media?limit=100&dir=b`));
    const server = who.slice(who.indexOf(":") + 1);
    list = table(
      `${l.total} items uploaded by ${who}`,
      [
        ["Media", (m) => h("code", {}, `mxc://${server}/${m.media_id}`)],
        ["Type", (m) => m.media_type || ""],
        ["Size", (m) => bytes(m.media_length)],
        ["Uploaded", (m) => ts(m.created_ts)],
        ["Quarantined", (m) => (m.quarantined_by !== null ? `by ${m.quarantined_by}` : "")],
      ],
      l.media,
      (m) => [
        m.quarantined_by !== null
          ? h("button", { type: "button", onclick: async () => { if (await act("Releasing", () => api("POST", `${A}/v1/media/unquarantine/${enc(server)}/${enc(m.media_id)}`))) route(true); } }, "Release")
          : h("button", { type: "button", onclick: async () => { if (await act(`Quarantining ${m.media_id}`, () => api("POST", `${A}/v1/media/quarantine/${enc(server)}/${enc(m.media_id)}`))) route(true); } }, "Quarantine", h("span", { class: "skip" }, ` ${m.media_id}`)),
        h("button", { type: "button", class: "danger", onclick: async () => { if (confirm("Delete this media for good?") && (await act("Deleting media", () => api("DELETE", `${A}/v1/media/${enc(server)}/${enc(m.media_id)}`)))) route(true); } }, "Delete"),
      ],
    );
  }
  page(
    "Media",
    form,
    list,
    h("h3", {}, "Quarantine any item"),
    byId,
    table("Largest uploaders", [["User", (u) => h("a", { href: `#/media?user=${enc(u.user_id)}` }, u.user_id)], ["Items", (u) => u.media_count], ["Bytes", (u) => bytes(u.media_length)]], stats.users),
  );
}

async function reports(_params, page) {
  let list;
  try {
    list = await api("GET", `${A}/v1/event_reports?limit=100`);
  } catch (e) {
    if (e.status === 404) return page("Reports", h("p", { class: "muted" }, "This server does not store event reports yet."));
    throw e;
  }
  page(
    "Reports",
    table(
      `${list.total} reports`,
      [["Received", (r) => ts(r.received_ts)], ["Room", (r) => h("a", { href: `#/room?id=${enc(r.room_id)}` }, r.name || r.room_id)], ["Reporter", (r) => r.user_id], ["Sender", (r) => r.sender], ["Reason", (r) => r.reason || ""]],
      list.event_reports,
      (r) => [
        h("button", { type: "button", class: "danger", onclick: () => deleteRoom(r.room_id) }, "Delete room"),
        h("button", { type: "button", onclick: async () => { if (await act("Dismissing", () => api("DELETE", `${A}/v1/event_reports/${enc(r.id)}`))) route(true); } }, "Dismiss"),
      ],
    ),
  );
}

async function tokens(_params, page) {
  const list = await api("GET", `${A}/v1/registration_tokens`);
  const uses = h("input", { id: "token-uses", type: "number", min: "1", inputmode: "numeric" });
  const create = h(
    "form",
    { "aria-label": "New registration token", onsubmit: async (e) => {
      e.preventDefault();
      const body = uses.value ? { uses_allowed: Number(uses.value) } : {};
      const r = await act("Creating token", () => api("POST", `${A}/v1/registration_tokens/new`, body));
      if (r) { await route(true); say(`New token: ${r.token}`, "ok"); }
    } },
    h("label", { for: "token-uses" }, "Uses allowed (empty: unlimited)", uses),
    h("button", { type: "submit" }, "Create token"),
  );
  page(
    "Registration tokens",
    create,
    table(
      `${list.registration_tokens.length} tokens`,
      [["Token", (t) => h("code", {}, t.token)], ["Uses allowed", (t) => t.uses_allowed ?? "unlimited"], ["Pending", (t) => t.pending], ["Completed", (t) => t.completed], ["Expires", (t) => ts(t.expiry_time)]],
      list.registration_tokens,
      (t) => [h("button", { type: "button", class: "danger", onclick: async () => { if (await act("Deleting token", () => api("DELETE", `${A}/v1/registration_tokens/${enc(t.token)}`))) route(true); } }, "Delete")],
    ),
  );
}

async function federation(_params, page) {
  const list = await api("GET", `${A}/v1/federation/destinations?limit=500`);
  page(
    "Federation",
    table(
      `${list.total} destinations`,
      [
        ["Server", (d) => d.destination],
        ["Health", (d) => (d.down ? h("span", { class: "bad" }, "down") : d.failure_ts ? h("span", { class: "bad" }, "retrying") : "ok")],
        ["Failing since", (d) => ts(d.failure_ts)],
        ["Next retry in", (d) => (d.retry_interval ? `${Math.round(d.retry_interval / 1000)} s` : "—")],
        ["Queued", (d) => d.queued],
        ["Transactions sent", (d) => d.sent_txns],
      ],
      list.destinations,
      (d) => (d.failure_ts ? [h("button", { type: "button", onclick: async () => { if (await act(`Resetting ${d.destination}`, () => api("POST", `${A}/v1/federation/destinations/${enc(d.destination)}/reset_connection`))) route(true); } }, "Retry now")] : []),
    ),
  );
}

let routeGen = 0;
const PAGES = { dashboard, users, user, rooms, room, media, reports, tokens, federation };

async function route(keepStatus) {
  if (!token) return showSignIn();
  nav.hidden = false;
  const [path, query] = (location.hash.slice(2) || "dashboard").split("?");
  const fn = PAGES[path] || dashboard;
  if (!keepStatus) say("");
  // Only the latest navigation renders: an earlier page still loading (e.g. a refresh after an
  // action) must not replace the page navigated to since.
  const gen = ++routeGen;
  const current = () => gen === routeGen;
  try {
    await fn(new URLSearchParams(query || ""), (...a) => current() && render(...a));
    if (current()) main.focus({ preventScroll: true });
  } catch (e) {
    if (current()) render("Error", h("p", { class: "bad" }, e.message));
  }
}

// Following a nav link starts afresh; other navigation (after an action) keeps its message.
nav.addEventListener("click", (e) => { if (e.target.closest("a")) say(""); });
window.addEventListener("hashchange", () => route(true));
route();
