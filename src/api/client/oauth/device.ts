// Device authorization grant (RFC 8628; spec "Device authorisation flow"): the device
// authorization endpoint, and the verification page where the user (on any browser) enters or
// follows the user code, signs in and approves.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../../types";
import { LIMITS, clientAddress, rateLimit } from "../../middleware/rate-limit";
import { parseScope, SCOPE_API } from "../../../core/oauth/scope";
import { getClient } from "../../../services/oauth/clients";
import { browserSessionUser, createBrowserSession } from "../../../services/oauth/browser-sessions";
import { DEVICE_GRANT_LIFETIME_MS, POLL_INTERVAL_S, createDeviceGrant, decideDeviceGrant, deviceGrantByUserCode, normalizeUserCode } from "../../../services/oauth/device-grants";
import { csrfOk, csrfToken, esc, hidden, OAUTH_BASE, renderPage, securityHeaders, sessionCookie, setSessionCookie } from "./pages";
import { errorPage, limited, passwordSignIn, readForm } from "./authorize";
import { formBody, noStore, oauthError, RepeatedParameter } from "./responses";

export const DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code";
export const LINK_PATH = `${OAUTH_BASE}/link`;

export const oauthDevice = new Hono<AppEnv>();

// POST /device: RFC 8628 §3.1-3.2.
oauthDevice.post("/device", async (c) => {
  let form: Map<string, string> | null;
  try {
    form = await formBody(c);
  } catch (e) {
    if (e instanceof RepeatedParameter) return oauthError(c, 400, "invalid_request", e.message);
    throw e;
  }
  if (!form) return oauthError(c, 400, "invalid_request", "the body must be application/x-www-form-urlencoded");
  const clientId = form.get("client_id");
  const client = clientId ? await getClient(c.env, clientId) : null;
  if (!client) return oauthError(c, 401, "invalid_client", "unknown or missing client_id");
  if (!client.grant_types.includes(DEVICE_GRANT_TYPE)) return oauthError(c, 400, "unauthorized_client", "the client did not register the device_code grant");
  const scope = parseScope(form.get("scope"));
  if (typeof scope === "string") return oauthError(c, 400, "invalid_scope", scope);
  await rateLimit(c, "oauth-device-ip", clientAddress(c), LIMITS.registerPerAddress);
  const { deviceCode, userCode } = await createDeviceGrant(c.env, { clientId: client.client_id, scope: scope.tokens.join(" "), deviceId: scope.deviceId });
  const verification = `${c.var.config.publicBaseUrl}${LINK_PATH}`;
  noStore(c);
  return c.json({
    device_code: deviceCode,
    user_code: userCode,
    verification_uri: verification,
    verification_uri_complete: `${verification}?user_code=${encodeURIComponent(userCode)}`,
    expires_in: DEVICE_GRANT_LIFETIME_MS / 1000,
    interval: POLL_INTERVAL_S,
  });
});

function codeEntryPage(c: Context<AppEnv>, error?: string, status: 200 | 400 | 404 | 429 = 200): Response {
  return renderPage(
    c,
    "Sign in a device",
    `<h1>Sign in a device</h1>${error ? `<p class="error" role="alert">${esc(error)}</p>` : ""}
<form method="get" action="${LINK_PATH}"><label for="user_code">Code shown on your device</label><input type="text" id="user_code" name="user_code" autocomplete="off" autocapitalize="characters" required><button type="submit" id="continue">Continue</button></form>`,
    { status },
  );
}

function linkSignInPage(c: Context<AppEnv>, userCode: string, error?: string, status: 200 | 400 | 401 | 403 | 429 = 200): Response {
  const csrf = csrfToken(c);
  return renderPage(
    c,
    "Sign in",
    `<h1>Sign in to ${esc(c.var.config.serverName)}</h1><p class="muted">to sign in a device with code <code>${esc(userCode)}</code></p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ""}
<form method="post" action="${LINK_PATH}/login">${hidden("csrf", csrf)}${hidden("user_code", userCode)}
<label for="username">Username</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" required>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button></form>`,
    { status },
  );
}

oauthDevice.get("/link", async (c) => {
  const raw = c.req.query("user_code");
  if (raw === undefined) return codeEntryPage(c);
  const userCode = normalizeUserCode(raw);
  if (!userCode) return codeEntryPage(c, "That is not a valid code.", 400);
  // Codes are guessable in principle (20^8): limit lookups per address.
  const tooMany = await limited(c, () => rateLimit(c, "device-code-ip", clientAddress(c), LIMITS.loginPerAddress));
  if (tooMany) return codeEntryPage(c, tooMany, 429);
  const grant = await deviceGrantByUserCode(c.env, userCode);
  if (!grant || grant.status !== "pending") return codeEntryPage(c, "This code is unknown, expired or already used.", 404);
  const client = await getClient(c.env, grant.clientId);
  if (!client) return codeEntryPage(c, "The application is no longer registered.", 404);
  const userId = await browserSessionUser(c.env, sessionCookie(c));
  if (!userId) return linkSignInPage(c, userCode);
  const csrf = csrfToken(c);
  const form = (action: "allow" | "deny", label: string, cls = "") =>
    `<form class="inline" method="post" action="${LINK_PATH}">${hidden("csrf", csrf)}${hidden("user_code", userCode)}${hidden("action", action)}<button type="submit" id="${action}"${cls ? ` class="${cls}"` : ""}>${label}</button></form>`;
  const name = client.client_name ?? new URL(client.client_uri).host;
  return renderPage(
    c,
    "Allow access",
    `<h1>Allow <span id="client-name">${esc(name)}</span> on another device to access your account?</h1>
<p>Signed in as <strong id="user-id">${esc(userId)}</strong>. Check that your device shows the code <code id="user-code">${esc(userCode)}</code>.</p>
<p>It will be able to:</p><ul>${grant.scope.includes(SCOPE_API) ? "<li>Read and write everything in your Matrix account: rooms, messages, keys, settings</li>" : ""}<li>Sign in as the device <code>${esc(grant.deviceId)}</code></li></ul>
${form("allow", "Allow")} ${form("deny", "Deny", "secondary")}`,
  );
});

oauthDevice.post("/link/login", async (c) => {
  const form = await readForm(c);
  if (!csrfOk(c, form.csrf)) return errorPage(c, "Form expired", "The form could not be verified (CSRF). Go back, reload the page and try again.", 403);
  const userCode = normalizeUserCode(form.user_code ?? "");
  if (!userCode) return codeEntryPage(c, "That is not a valid code.", 400);
  if (!form.username || form.password === undefined || form.password.length > 512) return linkSignInPage(c, userCode, "Enter your username and password.", 400);
  const result = await passwordSignIn(c, form.username, form.password);
  if ("error" in result) return linkSignInPage(c, userCode, result.error, result.status);
  setSessionCookie(c, await createBrowserSession(c.env, result.userId));
  securityHeaders(c);
  return c.redirect(`${LINK_PATH}?user_code=${encodeURIComponent(userCode)}`, 303);
});

oauthDevice.post("/link", async (c) => {
  const form = await readForm(c);
  if (!csrfOk(c, form.csrf)) return errorPage(c, "Form expired", "The form could not be verified (CSRF). Go back, reload the page and try again.", 403);
  const userCode = normalizeUserCode(form.user_code ?? "");
  const userId = await browserSessionUser(c.env, sessionCookie(c));
  if (!userCode || !userId) return codeEntryPage(c, "Sign in and enter the code again.", 400);
  const approve = form.action === "allow";
  if (!(await decideDeviceGrant(c.env, userCode, userId, approve))) return codeEntryPage(c, "This code is unknown, expired or already used.", 404);
  return renderPage(
    c,
    approve ? "Device signed in" : "Request denied",
    `<h1 id="result">${approve ? "Done: your device is being signed in" : "Request denied"}</h1><p>You can close this page and return to your device.</p>`,
  );
});
