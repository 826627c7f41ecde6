// Lattice's own sign-in pages for the OAuth 2.0 API: plain server-rendered HTML with forms, no
// script, no external assets. Every page carries a strict CSP (nothing but our stylesheet and our
// own forms; no framing: frame-ancestors 'none', RFC 9700 §4.16), no-store and no-referrer.
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { getCookie, setCookie, deleteCookie } from "hono/cookie";
import type { AppEnv } from "../../types";
import { randomToken, timingSafeEqualStrings } from "../../../services/crypto-util";
import { BROWSER_SESSION_LIFETIME_MS } from "../../../services/oauth/browser-sessions";

export const OAUTH_BASE = "/_lattice/oauth";

/** HTML-escape text and attribute values. */
export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!);
}

export const STYLESHEET = `
body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1b1d22;margin:0;display:flex;justify-content:center}
main{background:#fff;max-width:26rem;width:100%;margin:3rem 1rem;padding:2rem;border-radius:12px;box-shadow:0 1px 4px #0002}
h1{font-size:1.4rem;margin-top:0}label{display:block;margin:.8rem 0 .2rem;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #bbb;border-radius:6px;font-size:1rem}
button{margin-top:1.2rem;padding:.6rem 1.2rem;border:0;border-radius:6px;font-size:1rem;background:#0b6e4f;color:#fff;cursor:pointer}
button.secondary{background:#e4e6ea;color:#1b1d22}.error{background:#fde8e8;color:#8a1c1c;padding:.6rem;border-radius:6px}
.muted{color:#5c6370;font-size:.9rem}ul{padding-left:1.2rem}form.inline{display:inline}code{word-break:break-all}
`;

/** The CSP of a page; `formTargets` adds where a form may lead (the client's redirect URI, which
 *  a consent form redirects to: Chrome checks form-action on redirects too). */
export function csp(formTargets: string[] = []): string {
  return [
    "default-src 'none'",
    "style-src 'self'",
    "img-src 'self'",
    `form-action 'self'${formTargets.map((t) => ` ${t}`).join("")}`,
    "frame-ancestors 'none'",
    "base-uri 'none'",
  ].join("; ");
}

/** A CSP source for a redirect URI: its origin (http/https) or its scheme (private-use). */
export function cspSourceFor(redirectUri: string): string {
  const url = new URL(redirectUri);
  if (url.protocol === "http:" || url.protocol === "https:") return url.origin;
  return url.protocol;
}

export function securityHeaders(c: Context, formTargets: string[] = []): void {
  c.header("Content-Security-Policy", csp(formTargets));
  c.header("X-Frame-Options", "DENY");
  c.header("X-Content-Type-Options", "nosniff");
  c.header("Referrer-Policy", "no-referrer");
  c.header("Cache-Control", "no-store");
}

export function renderPage(c: Context<AppEnv>, title: string, body: string, opts: { status?: ContentfulStatusCode; formTargets?: string[] } = {}): Response {
  securityHeaders(c, opts.formTargets);
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)} · ${esc(c.var.config.serverName)}</title><link rel="stylesheet" href="${OAUTH_BASE}/style.css"></head>
<body><main>${body}</main></body></html>`;
  return c.html(html, opts.status ?? 200);
}

// Cookies. On https the __Host- prefix pins them to this host (no Domain, Path=/, Secure), so a
// sibling subdomain cannot plant a session or CSRF cookie. Both are HttpOnly and Secure.
function cookieName(c: Context<AppEnv>, base: string): string {
  return c.var.config.publicBaseUrl.startsWith("https://") ? `__Host-${base}` : base;
}
const SESSION = "lattice_session";
const CSRF = "lattice_csrf";

export function sessionCookie(c: Context<AppEnv>): string | undefined {
  return getCookie(c, cookieName(c, SESSION));
}

export function setSessionCookie(c: Context<AppEnv>, token: string): void {
  // Lax: the cookie must come along when a client's redirect brings the user to /authorize.
  setCookie(c, cookieName(c, SESSION), token, { path: "/", httpOnly: true, secure: true, sameSite: "Lax", maxAge: BROWSER_SESSION_LIFETIME_MS / 1000 });
}

export function clearSessionCookie(c: Context<AppEnv>): void {
  deleteCookie(c, cookieName(c, SESSION), { path: "/", secure: true });
}

/** The CSRF token for forms on this page (double-submit: an HttpOnly cookie and a hidden field
 *  that must match). A cross-site page can neither read the cookie nor set it. */
export function csrfToken(c: Context<AppEnv>): string {
  const existing = getCookie(c, cookieName(c, CSRF));
  if (existing && /^latx_[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
  const token = randomToken("latx");
  setCookie(c, cookieName(c, CSRF), token, { path: "/", httpOnly: true, secure: true, sameSite: "Strict" });
  return token;
}

export function csrfOk(c: Context<AppEnv>, submitted: string | undefined): boolean {
  const cookie = getCookie(c, cookieName(c, CSRF));
  return !!cookie && !!submitted && timingSafeEqualStrings(cookie, submitted);
}

export function hidden(name: string, value: string): string {
  return `<input type="hidden" name="${esc(name)}" value="${esc(value)}">`;
}
