// The authorization endpoint (spec: Client-Server API "Authorisation code flow"; RFC 6749 §4.1,
// RFC 7636, RFC 9700) and the pages behind it: sign in with the password store, register when
// REGISTRATION allows it, consent. Requests that cannot be trusted to redirect (unknown client,
// unregistered redirect URI) get an error page and never a redirect (RFC 6749 §4.1.2.1), so the
// endpoint is no open redirector.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../../types";
import { MatrixError } from "../../errors";
import { LIMITS, clientAddress, rateLimit } from "../../middleware/rate-limit";
import { resolveLoginUser } from "../login";
import { checkRegistrationToken, claimRegistrationToken, settleRegistrationToken } from "../register";
import { matchRedirectUri } from "../../../core/oauth/client-metadata";
import { isValidCodeChallenge } from "../../../core/oauth/pkce";
import { parseScope, SCOPE_API } from "../../../core/oauth/scope";
import { getClient, type OAuthClient } from "../../../services/oauth/clients";
import { approveGrant, createGrant, deleteGrant, pendingGrant, type Grant } from "../../../services/oauth/grants";
import { browserSessionUser, createBrowserSession, endBrowserSession } from "../../../services/oauth/browser-sessions";
import { verifyPassword } from "../../../services/passwords";
import { createUser, userExists, validateNewLocalpart } from "../../../services/accounts";
import { checkUserNotExclusive } from "../../../services/appservices";
import {
  OAUTH_BASE,
  STYLESHEET,
  clearSessionCookie,
  csrfOk,
  csrfToken,
  cspSourceFor,
  esc,
  hidden,
  renderPage,
  securityHeaders,
  sessionCookie,
  setSessionCookie,
} from "./pages";

export const oauthPages = new Hono<AppEnv>();

oauthPages.get("/style.css", (c) => {
  c.header("Content-Type", "text/css; charset=utf-8");
  c.header("Cache-Control", "public, max-age=3600");
  c.header("X-Content-Type-Options", "nosniff");
  return c.body(STYLESHEET);
});

/** Where the client gets its answer: the redirect URI with the parameters in the query or the
 *  fragment (spec "Callback"; OAuth 2.0 Multiple Response Type Encoding Practices). */
export function callbackUrl(redirectUri: string, mode: "query" | "fragment", params: Record<string, string | undefined>): string {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) qs.set(k, v);
  if (mode === "fragment") return `${redirectUri}#${qs}`;
  return `${redirectUri}${redirectUri.includes("?") ? "&" : "?"}${qs}`;
}

export function errorPage(c: Context<AppEnv>, title: string, message: string, status: 400 | 403 | 404 | 429 = 400): Response {
  return renderPage(c, title, `<h1>${esc(title)}</h1><p class="error">${esc(message)}</p><p class="muted">Return to the application and try again.</p>`, { status });
}

const MAX_PARAM = 1024;

oauthPages.get("/authorize", async (c) => {
  const q = (k: string) => c.req.query(k);
  const clientId = q("client_id");
  const client = clientId && clientId.length <= MAX_PARAM ? await getClient(c.env, clientId) : null;
  if (!client) return errorPage(c, "Unknown application", "The application is not registered with this server (client_id).");
  const redirectUri = q("redirect_uri");
  if (!redirectUri || !matchRedirectUri(redirectUri, client.redirect_uris)) {
    return errorPage(c, "Invalid redirect", "The redirect_uri is missing or is not one the application registered.");
  }
  // From here on errors go back to the client (RFC 6749 §4.1.2.1), with its state.
  const state = q("state");
  const rawMode = q("response_mode");
  const responseMode = rawMode === "fragment" ? "fragment" : "query";
  const fail = (error: string, description: string) => {
    securityHeaders(c);
    return c.redirect(callbackUrl(redirectUri, responseMode, { error, error_description: description, state }), 302);
  };
  if (rawMode !== undefined && rawMode !== "query" && rawMode !== "fragment") return fail("invalid_request", "response_mode must be query or fragment");
  if (q("response_type") !== "code") return fail("unsupported_response_type", "only response_type=code is supported");
  if (!client.grant_types.includes("authorization_code")) return fail("unauthorized_client", "the client did not register the authorization_code grant");
  const challenge = q("code_challenge");
  if (!challenge) return fail("invalid_request", "code_challenge is required (PKCE)");
  if (q("code_challenge_method") !== "S256") return fail("invalid_request", "code_challenge_method must be S256");
  if (!isValidCodeChallenge(challenge)) return fail("invalid_request", "code_challenge must be a base64url SHA-256 digest");
  if ((state?.length ?? 0) > MAX_PARAM || (q("nonce")?.length ?? 0) > MAX_PARAM) return fail("invalid_request", "state or nonce is too long");
  const scope = parseScope(q("scope"));
  if (typeof scope === "string") return fail("invalid_scope", scope);
  const prompt = q("prompt");
  if (prompt !== undefined && prompt.split(" ").includes("none")) return fail("interaction_required", "this server always asks the user to consent");

  // Each request stores a row: cap how fast one address can add them (as sign-in attempts).
  const tooMany = await limited(c, () => rateLimit(c, "oauth-authorize-ip", clientAddress(c), LIMITS.loginPerAddress));
  if (tooMany) return errorPage(c, "Too many requests", tooMany, 429);
  const id = await createGrant(c.env, {
    clientId: client.client_id,
    redirectUri,
    scope: scope.tokens.join(" "),
    deviceId: scope.deviceId,
    state,
    nonce: q("nonce"),
    codeChallenge: challenge,
    responseMode,
    prompt: prompt?.split(" ").includes("create") ? "create" : undefined,
  });
  securityHeaders(c);
  return c.redirect(`${OAUTH_BASE}/grant?id=${encodeURIComponent(id)}`, 303);
});

/** The page for a pending request: consent if signed in, else sign-in (or registration). */
oauthPages.get("/grant", async (c) => {
  const grant = await pendingGrant(c.env, c.req.query("id") ?? "");
  if (!grant) return errorPage(c, "Request expired", "This sign-in request has expired or was already used.", 404);
  const client = await getClient(c.env, grant.clientId);
  if (!client) return errorPage(c, "Unknown application", "The application is no longer registered.", 404);
  const userId = await browserSessionUser(c.env, sessionCookie(c));
  if (userId) return consentPage(c, grant, client, userId);
  const view = c.req.query("view") ?? (grant.prompt === "create" ? "register" : "login");
  if (view === "register" && c.var.config.registration !== "closed") return registerPage(c, grant, client);
  return loginPage(c, grant, client);
});

function clientLabel(client: OAuthClient): string {
  return client.client_name ?? new URL(client.client_uri).host;
}

function loginPage(c: Context<AppEnv>, grant: Grant, client: OAuthClient, error?: string, status: 200 | 400 | 401 | 403 | 429 = 200): Response {
  const csrf = csrfToken(c);
  const canRegister = c.var.config.registration !== "closed";
  return renderPage(
    c,
    "Sign in",
    `<h1>Sign in to ${esc(c.var.config.serverName)}</h1>
<p class="muted">to continue to <strong>${esc(clientLabel(client))}</strong></p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ""}
<form method="post" action="${OAUTH_BASE}/login">
${hidden("grant", grant.id)}${hidden("csrf", csrf)}
<label for="username">Username</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" required>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form>
${canRegister ? `<p class="muted">No account? <a id="to-register" href="${OAUTH_BASE}/grant?id=${esc(encodeURIComponent(grant.id))}&amp;view=register">Create one</a></p>` : ""}`,
    { status },
  );
}

function registerPage(c: Context<AppEnv>, grant: Grant, client: OAuthClient, error?: string, status: 200 | 400 | 403 | 429 = 200): Response {
  const csrf = csrfToken(c);
  const needsToken = c.var.config.registration === "token";
  return renderPage(
    c,
    "Create account",
    `<h1>Create an account on ${esc(c.var.config.serverName)}</h1>
<p class="muted">to continue to <strong>${esc(clientLabel(client))}</strong></p>
${error ? `<p class="error" role="alert">${esc(error)}</p>` : ""}
<form method="post" action="${OAUTH_BASE}/register-account">
${hidden("grant", grant.id)}${hidden("csrf", csrf)}
<label for="username">Username</label><input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" required>
<label for="password">Password</label><input type="password" id="password" name="password" autocomplete="new-password" minlength="8" required>
<label for="password2">Repeat password</label><input type="password" id="password2" name="password2" autocomplete="new-password" required>
${needsToken ? `<label for="token">Registration token</label><input type="text" id="token" name="registration_token" required>` : ""}
<button type="submit" id="create-account">Create account</button>
</form>
<p class="muted">Have an account? <a id="to-login" href="${OAUTH_BASE}/grant?id=${esc(encodeURIComponent(grant.id))}&amp;view=login">Sign in</a></p>`,
    { status },
  );
}

async function consentPage(c: Context<AppEnv>, grant: Grant, client: OAuthClient, userId: string): Promise<Response> {
  const csrf = csrfToken(c);
  const existing = await c.env.DB.prepare("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?").bind(userId, grant.deviceId).first();
  const links = [
    client.tos_uri ? `<a href="${esc(client.tos_uri)}" rel="noopener noreferrer">Terms of service</a>` : "",
    client.policy_uri ? `<a href="${esc(client.policy_uri)}" rel="noopener noreferrer">Privacy policy</a>` : "",
  ].filter((x) => x !== "");
  const scopes = grant.scope
    .split(" ")
    .map((s) => (s === SCOPE_API ? `<li>Read and write everything in your Matrix account: rooms, messages, keys, settings (<code>${esc(s)}</code>)</li>` : ""))
    .join("");
  const form = (action: "allow" | "deny", label: string, cls = "") =>
    `<form class="inline" method="post" action="${OAUTH_BASE}/consent">${hidden("grant", grant.id)}${hidden("csrf", csrf)}${hidden("action", action)}<button type="submit" id="${action}"${cls ? ` class="${cls}"` : ""}>${label}</button></form>`;
  return renderPage(
    c,
    "Allow access",
    `<h1>Allow <span id="client-name">${esc(clientLabel(client))}</span> to access your account?</h1>
<p>Signed in as <strong id="user-id">${esc(userId)}</strong>.</p>
<p class="muted">Application: <a href="${esc(client.client_uri)}" rel="noopener noreferrer">${esc(new URL(client.client_uri).host)}</a>${links.length ? ` · ${links.join(" · ")}` : ""}</p>
<p>It will be able to:</p>
<ul>${scopes}<li>Sign in as the ${existing ? "existing" : "new"} device <code>${esc(grant.deviceId)}</code></li></ul>
<p class="muted">You will be sent back to <code>${esc(grant.redirectUri)}</code>.</p>
${form("allow", "Allow")} ${form("deny", "Deny", "secondary")}
<form method="post" action="${OAUTH_BASE}/logout">${hidden("grant", grant.id)}${hidden("csrf", csrf)}<button type="submit" class="secondary" id="switch-account">Use another account</button></form>`,
    { formTargets: [cspSourceFor(grant.redirectUri)] },
  );
}

export type Form = Record<string, string>;
export async function readForm(c: Context<AppEnv>): Promise<Form> {
  const body = await c.req.parseBody();
  const out: Form = {};
  for (const [k, v] of Object.entries(body)) if (typeof v === "string") out[k] = v;
  return out;
}

/** A form post must carry the page's CSRF token and name a pending request. */
async function checkedForm(c: Context<AppEnv>): Promise<{ form: Form; grant: Grant; client: OAuthClient } | Response> {
  const form = await readForm(c);
  if (!csrfOk(c, form.csrf)) return errorPage(c, "Form expired", "The form could not be verified (CSRF). Go back, reload the page and try again.", 403);
  const grant = await pendingGrant(c.env, form.grant ?? "");
  if (!grant) return errorPage(c, "Request expired", "This sign-in request has expired or was already used.", 404);
  const client = await getClient(c.env, grant.clientId);
  if (!client) return errorPage(c, "Unknown application", "The application is no longer registered.", 404);
  return { form, grant, client };
}

function backToGrant(c: Context<AppEnv>, grant: Grant): Response {
  securityHeaders(c);
  return c.redirect(`${OAUTH_BASE}/grant?id=${encodeURIComponent(grant.id)}`, 303);
}

/** Rate limits as MatrixErrors (429) → the page's message. */
export async function limited(c: Context<AppEnv>, fn: () => Promise<void>): Promise<string | null> {
  try {
    await fn();
    return null;
  } catch (e) {
    if (e instanceof MatrixError && e.status === 429) return `Too many attempts. Try again in ${Math.ceil(Number(e.extra.retry_after_ms ?? 1000) / 1000)} s.`;
    throw e;
  }
}

/** Check a username and password against the password store, under the same rate-limit buckets
 *  as POST /login (so the pages are no way around its limits). The user ID, or why not. */
export async function passwordSignIn(c: Context<AppEnv>, username: string, password: string): Promise<{ userId: string } | { error: string; status: 401 | 403 | 429 }> {
  const userId = resolveLoginUser(username.trim(), c.var.config.serverName);
  const tooMany = await limited(c, async () => {
    await rateLimit(c, "login-ip", clientAddress(c), LIMITS.loginPerAddress);
    await rateLimit(c, "login-user", userId, LIMITS.loginPerAccount);
  });
  if (tooMany) return { error: tooMany, status: 429 };
  const user = await c.env.DB.prepare("SELECT password_hash, deactivated, locked FROM users WHERE user_id = ?")
    .bind(userId)
    .first<{ password_hash: string | null; deactivated: number; locked: number }>();
  // Verify even for unknown users so timing does not reveal which accounts exist (as /login).
  const ok = await verifyPassword(password, user?.password_hash ?? "pbkdf2-sha512$100000$AAAAAAAAAAAAAAAAAAAAAA$AAAA");
  if (!user || !ok) return { error: "Invalid username or password.", status: 401 };
  if (user.deactivated) return { error: "This account has been deactivated.", status: 403 };
  if (user.locked) return { error: "This account has been locked.", status: 403 };
  return { userId };
}

oauthPages.post("/login", async (c) => {
  const checked = await checkedForm(c);
  if (checked instanceof Response) return checked;
  const { form, grant, client } = checked;
  if (!form.username || form.password === undefined || form.password.length > 512) return loginPage(c, grant, client, "Enter your username and password.", 400);
  const result = await passwordSignIn(c, form.username, form.password);
  if ("error" in result) return loginPage(c, grant, client, result.error, result.status);
  setSessionCookie(c, await createBrowserSession(c.env, result.userId));
  return backToGrant(c, grant);
});

oauthPages.post("/register-account", async (c) => {
  const checked = await checkedForm(c);
  if (checked instanceof Response) return checked;
  const { form, grant, client } = checked;
  const config = c.var.config;
  if (config.registration === "closed") return loginPage(c, grant, client, "Registration is disabled on this server.", 403);
  const fail = (msg: string, status: 400 | 403 | 429 = 400) => registerPage(c, grant, client, msg, status);
  const password = form.password ?? "";
  if (password.length < 8 || password.length > 512) return fail("Choose a password of 8 to 512 characters.");
  if (password !== form.password2) return fail("The passwords do not match.");
  const tooMany = await limited(c, () => rateLimit(c, "register-ip", clientAddress(c), LIMITS.registerPerAddress));
  if (tooMany) return fail(tooMany, 429);
  const localpart = (form.username ?? "").trim().toLowerCase();
  let userId: string;
  try {
    userId = validateNewLocalpart(localpart, config.serverName);
    await checkUserNotExclusive(c.env, config.serverName, userId);
  } catch (e) {
    if (e instanceof MatrixError) return fail(e.message);
    throw e;
  }
  if (await userExists(c.env, userId)) return fail("That username is taken.");
  const create = () => createUser(c.env, { userId, localpart, password });
  try {
    if (config.registration === "token") {
      // As POST /register: check, then claim one use atomically, settle once the account exists.
      const token = form.registration_token ?? "";
      const problem = token ? await checkRegistrationToken(c.env, token) : "A registration token is required";
      if (problem) return fail(problem, 403);
      if (!(await claimRegistrationToken(c.env, token))) return fail("Registration token has been used up or has expired", 403);
      try {
        await create();
      } catch (e) {
        await settleRegistrationToken(c.env, token, false);
        throw e;
      }
      await settleRegistrationToken(c.env, token, true);
    } else await create();
  } catch (e) {
    if (e instanceof MatrixError) return fail(e.message);
    throw e;
  }
  setSessionCookie(c, await createBrowserSession(c.env, userId));
  return backToGrant(c, grant);
});

oauthPages.post("/logout", async (c) => {
  const checked = await checkedForm(c);
  if (checked instanceof Response) return checked;
  await endBrowserSession(c.env, sessionCookie(c));
  clearSessionCookie(c);
  return backToGrant(c, checked.grant);
});

oauthPages.post("/consent", async (c) => {
  const checked = await checkedForm(c);
  if (checked instanceof Response) return checked;
  const { form, grant } = checked;
  const userId = await browserSessionUser(c.env, sessionCookie(c));
  if (!userId) return backToGrant(c, grant);
  securityHeaders(c, [cspSourceFor(grant.redirectUri)]);
  if (form.action !== "allow") {
    await deleteGrant(c.env, grant.id);
    return c.redirect(callbackUrl(grant.redirectUri, grant.responseMode, { error: "access_denied", error_description: "The user denied the request.", state: grant.state }), 303);
  }
  const code = await approveGrant(c.env, grant.id, userId);
  if (!code) return errorPage(c, "Request expired", "This sign-in request has expired or was already used.", 404);
  return c.redirect(callbackUrl(grant.redirectUri, grant.responseMode, { state: grant.state, code }), 303);
});
