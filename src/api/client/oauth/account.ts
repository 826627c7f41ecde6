// Account management pages (spec: Client-Server API "Account management" under the OAuth 2.0
// API: account_management_uri and its actions). With the OAuth API, clients send the user here
// for what UIA used to guard: profile, sessions, password, deactivation, and approving a
// cross-signing reset (the `m.oauth` UIA stage of /keys/device_signing/upload).
import { Hono, type Context } from "hono";
import type { AppEnv } from "../../types";
import { db } from "../../../db";
import { browserSessionUser, createBrowserSession, endBrowserSession } from "../../../services/oauth/browser-sessions";
import { approveCrossSigningReset, takeCrossSigningResetApproval } from "../../../services/oauth/cross-signing-reset";
import { deleteDevice } from "../../../services/sessions";
import { hashPassword } from "../../../services/passwords";
import { deactivateAccount } from "../../../services/admin-accounts";
import { onProfileChange } from "../../../services/profile-hooks";
import { clearSessionCookie, csrfOk, csrfToken, esc, hidden, OAUTH_BASE, renderPage, securityHeaders, sessionCookie, setSessionCookie } from "./pages";
import { errorPage, passwordSignIn, readForm, type Form } from "./authorize";

export const ACCOUNT_PATH = `${OAUTH_BASE}/account`;

/** The actions account_management_actions_supported lists (spec "Account management URL actions"). */
export const ACCOUNT_ACTIONS = [
  "org.matrix.profile",
  "org.matrix.devices_list",
  "org.matrix.device_view",
  "org.matrix.device_delete",
  "org.matrix.account_deactivate",
  "org.matrix.cross_signing_reset",
] as const;

/** How long an approved cross-signing reset stays usable. */
export const CROSS_SIGNING_RESET_WINDOW_MS = 10 * 60_000;

export const oauthAccount = new Hono<AppEnv>();

/** The account URL for an action (and device), built from fixed parts only: never a caller's URL. */
function accountUrl(action?: string, deviceId?: string, notice?: string): string {
  const p = new URLSearchParams();
  if (action && (ACCOUNT_ACTIONS as readonly string[]).includes(action)) p.set("action", action);
  if (deviceId) p.set("device_id", deviceId);
  if (notice) p.set("notice", notice);
  const qs = p.toString();
  return qs ? `${ACCOUNT_PATH}?${qs}` : ACCOUNT_PATH;
}

const NOTICES: Record<string, string> = {
  profile: "Your profile was saved.",
  device_deleted: "The session was signed out.",
  password: "Your password was changed.",
  cross_signing: "Approved: your client may now reset your cross-signing keys (for 10 minutes).",
};

function signInPage(c: Context<AppEnv>, action?: string, deviceId?: string, error?: string, status: 200 | 400 | 401 | 403 | 429 = 200): Response {
  const csrf = csrfToken(c);
  return renderPage(
    c,
    "Sign in",
    `<h1>Sign in to ${esc(c.var.config.serverName)}</h1><p class="muted">to manage your account</p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ""}
<form method="post" action="${ACCOUNT_PATH}/login">${hidden("csrf", csrf)}${action ? hidden("action", action) : ""}${deviceId ? hidden("device_id", deviceId) : ""}
<label for="username">Username</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" required>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button></form>`,
    { status },
  );
}

interface DeviceRow {
  device_id: string;
  display_name: string | null;
  last_seen_ts: number | null;
  last_seen_ip: string | null;
}

oauthAccount.get("/account", async (c) => {
  const action = c.req.query("action");
  const deviceId = c.req.query("device_id");
  const userId = await browserSessionUser(c.env, sessionCookie(c));
  if (!userId) return signInPage(c, action, deviceId);
  const csrf = csrfToken(c);
  const user = await c.env.DB.prepare("SELECT displayname FROM users WHERE user_id = ?").bind(userId).first<{ displayname: string | null }>();
  const { results: devices } = await c.env.DB.prepare("SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = ? ORDER BY last_seen_ts DESC")
    .bind(userId)
    .all<DeviceRow>();
  const form = (path: string, inner: string, extra = "") => `<form method="post" action="${ACCOUNT_PATH}/${path}"${extra}>${hidden("csrf", csrf)}${inner}</form>`;
  const focused = deviceId && (action === "org.matrix.device_view" || action === "org.matrix.device_delete") ? devices.find((d) => d.device_id === deviceId) : undefined;
  const deviceRow = (d: DeviceRow) =>
    `<li id="device-${esc(d.device_id)}"><strong>${esc(d.display_name ?? "Unnamed session")}</strong> <code>${esc(d.device_id)}</code>
<span class="muted">${d.last_seen_ts ? `last seen ${esc(new Date(d.last_seen_ts).toISOString().slice(0, 16).replace("T", " "))} UTC` : ""}</span>
${form("sessions/delete", `${hidden("device_id", d.device_id)}<button type="submit" class="secondary" id="sign-out-${esc(d.device_id)}">Sign out</button>`, ' class="inline"')}</li>`;
  const notice = NOTICES[c.req.query("notice") ?? ""];
  const sections: string[] = [];
  if (notice) sections.push(`<p class="muted" role="status" id="notice">${esc(notice)}</p>`);
  if (action === "org.matrix.cross_signing_reset") {
    sections.push(`<section id="cross-signing"><h2>Reset your cross-signing keys?</h2>
<p>Your client asks to replace your cross-signing identity. Other people will see that your identity changed, and your other sessions will need to be verified again. Only allow this if you started it.</p>
${form("cross-signing-reset", `<button type="submit" id="approve-reset">Allow the reset</button>`)}</section>`);
  }
  if (focused && action === "org.matrix.device_delete") {
    sections.push(`<section id="confirm-delete"><h2>Sign out this session?</h2><ul>${deviceRow(focused)}</ul></section>`);
  }
  sections.push(`<section id="profile"><h2>Profile</h2>${form(
    "profile",
    `<label for="displayname">Display name</label><input type="text" id="displayname" name="displayname" maxlength="256" value="${esc(user?.displayname ?? "")}"><button type="submit" id="save-profile">Save</button>`,
  )}</section>`);
  sections.push(`<section id="sessions"><h2>Sessions</h2><ul>${(focused && action === "org.matrix.device_view" ? [focused] : devices).map(deviceRow).join("")}</ul>${
    focused && action === "org.matrix.device_view" ? `<p><a href="${accountUrl("org.matrix.devices_list")}">All sessions</a></p>` : ""
  }</section>`);
  sections.push(`<section id="password"><h2>Change password</h2>${form(
    "password",
    `<label for="current">Current password</label><input type="password" id="current" name="current" autocomplete="current-password" required>
<label for="new">New password</label><input type="password" id="new" name="new" autocomplete="new-password" minlength="8" required>
<label for="new2">Repeat new password</label><input type="password" id="new2" name="new2" autocomplete="new-password" required>
<button type="submit" id="change-password">Change password</button>`,
  )}</section>`);
  sections.push(`<section id="deactivate"><h2>Deactivate account</h2><p class="muted">Your user ID stays reserved; you leave every room and every session is signed out. This cannot be undone.</p>${form(
    "deactivate",
    `<label for="deactivate-password">Password</label><input type="password" id="deactivate-password" name="password" autocomplete="current-password" required>
<label><input type="checkbox" name="erase" value="1"> Also erase my profile and messages for people who join later</label>
<label><input type="checkbox" name="confirm" value="1" required> I understand this cannot be undone</label>
<button type="submit" id="deactivate-account">Deactivate</button>`,
  )}</section>`);
  return renderPage(
    c,
    "Your account",
    `<h1>Your account</h1><p>Signed in as <strong id="user-id">${esc(userId)}</strong> ${form("logout", `<button type="submit" class="secondary" id="account-sign-out">Sign out of this page</button>`, ' class="inline"')}</p>
${sections.join("\n")}`,
  );
});

oauthAccount.post("/account/login", async (c) => {
  const form = await readForm(c);
  if (!csrfOk(c, form.csrf)) return errorPage(c, "Form expired", "The form could not be verified (CSRF). Go back, reload the page and try again.", 403);
  if (!form.username || form.password === undefined || form.password.length > 512) return signInPage(c, form.action, form.device_id, "Enter your username and password.", 400);
  const result = await passwordSignIn(c, form.username, form.password);
  if ("error" in result) return signInPage(c, form.action, form.device_id, result.error, result.status);
  setSessionCookie(c, await createBrowserSession(c.env, result.userId));
  return back(c, accountUrl(form.action, form.device_id));
});

function back(c: Context<AppEnv>, url: string): Response {
  securityHeaders(c);
  return c.redirect(url, 303);
}

/** A form post on the account page: CSRF token and a signed-in browser. */
async function accountForm(c: Context<AppEnv>): Promise<{ form: Form; userId: string } | Response> {
  const form = await readForm(c);
  if (!csrfOk(c, form.csrf)) return errorPage(c, "Form expired", "The form could not be verified (CSRF). Go back, reload the page and try again.", 403);
  const userId = await browserSessionUser(c.env, sessionCookie(c));
  if (!userId) return back(c, ACCOUNT_PATH);
  return { form, userId };
}

function formError(c: Context<AppEnv>, message: string, status: 400 | 401 | 403 | 429): Response {
  return renderPage(c, "Not done", `<h1>Not done</h1><p class="error" role="alert">${esc(message)}</p><p><a href="${ACCOUNT_PATH}">Back to your account</a></p>`, { status });
}

oauthAccount.post("/account/logout", async (c) => {
  const r = await accountForm(c);
  if (r instanceof Response) return r;
  await endBrowserSession(c.env, sessionCookie(c));
  clearSessionCookie(c);
  return back(c, ACCOUNT_PATH);
});

oauthAccount.post("/account/profile", async (c) => {
  const r = await accountForm(c);
  if (r instanceof Response) return r;
  const name = (r.form.displayname ?? "").trim();
  if (name.length > 256) return formError(c, "The display name is too long (256 characters at most).", 400);
  await c.env.DB.prepare("UPDATE users SET displayname = ? WHERE user_id = ?").bind(name || null, r.userId).run();
  // As PUT /profile/{userId}/displayname: new member events in every joined room, directory.
  await onProfileChange(c.env, c.var.config, r.userId);
  return back(c, accountUrl("org.matrix.profile", undefined, "profile"));
});

oauthAccount.post("/account/sessions/delete", async (c) => {
  const r = await accountForm(c);
  if (r instanceof Response) return r;
  const deviceId = r.form.device_id ?? "";
  const known = await c.env.DB.prepare("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?").bind(r.userId, deviceId).first();
  if (!known) return formError(c, "No such session.", 400);
  // Tokens (legacy and OAuth, with its refresh chain), E2EE keys, pushers: as DELETE /devices/{id}.
  await deleteDevice(db(c.env), r.userId, deviceId, c.env, c.var.config);
  return back(c, accountUrl("org.matrix.devices_list", undefined, "device_deleted"));
});

oauthAccount.post("/account/password", async (c) => {
  const r = await accountForm(c);
  if (r instanceof Response) return r;
  const { current = "", new: next = "", new2 = "" } = r.form;
  if (next.length < 8 || next.length > 512) return formError(c, "Choose a new password of 8 to 512 characters.", 400);
  if (next !== new2) return formError(c, "The new passwords do not match.", 400);
  const check = await passwordSignIn(c, r.userId, current);
  if ("error" in check) return formError(c, check.status === 401 ? "The current password is wrong." : check.error, check.status);
  await c.env.DB.prepare("UPDATE users SET password_hash = ? WHERE user_id = ?").bind(await hashPassword(next), r.userId).run();
  await c.env.DB.prepare("DELETE FROM openid_tokens WHERE user_id = ?").bind(r.userId).run();
  // Sessions stay signed in: the user can sign any of them out in the list above.
  return back(c, accountUrl(undefined, undefined, "password"));
});

oauthAccount.post("/account/deactivate", async (c) => {
  const r = await accountForm(c);
  if (r instanceof Response) return r;
  if (r.form.confirm !== "1") return formError(c, "Tick the box to confirm.", 400);
  const check = await passwordSignIn(c, r.userId, r.form.password ?? "");
  if ("error" in check) return formError(c, check.status === 401 ? "The password is wrong." : check.error, check.status);
  await deactivateAccount(c.env, c.var.config, r.userId, r.form.erase === "1");
  await endBrowserSession(c.env, sessionCookie(c));
  clearSessionCookie(c);
  return renderPage(c, "Account deactivated", `<h1>Account deactivated</h1><p id="deactivated">${esc(r.userId)} has been deactivated.</p>`);
});

oauthAccount.post("/account/cross-signing-reset", async (c) => {
  const r = await accountForm(c);
  if (r instanceof Response) return r;
  await approveCrossSigningReset(c.env, r.userId, CROSS_SIGNING_RESET_WINDOW_MS);
  return back(c, accountUrl(undefined, undefined, "cross_signing"));
});

/** The m.oauth stage's UIA options: where to approve, and how to tell it was approved. */
export function crossSigningResetUia(c: Context<AppEnv>, userId: string) {
  return {
    params: { "m.oauth": { url: `${c.var.config.publicBaseUrl}${accountUrl("org.matrix.cross_signing_reset")}` } },
    checkOAuthApproval: () => takeCrossSigningResetApproval(c.env, userId),
  };
}
