// Drive Lattice's OAuth pages like a browser: a cookie jar, manual redirects, the forms' hidden fields.
import { SELF } from "cloudflare:test";
import { BASE, call } from "./helpers";
import { s256Challenge } from "../../src/core/oauth/pkce";

export const OAUTH = "/_lattice/oauth";
export const REDIRECT = "https://app.example.com/callback";

export class Browser {
  cookies = new Map<string, string>();
  /** With `vars`, requests go to the Worker's fetch handler with these environment overrides
   *  (REGISTRATION=token, RATE_LIMITS=on, ...) instead of SELF. */
  constructor(private readonly vars?: Record<string, string>) {}
  async fetch(path: string, init: { method?: string; form?: Record<string, string> } = {}): Promise<{ status: number; html: string; headers: Headers; location: string | null }> {
    const headers: Record<string, string> = {};
    if (this.cookies.size) headers.cookie = [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
    let body: string | undefined;
    if (init.form) {
      body = new URLSearchParams(init.form).toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    const url = path.startsWith("http") ? path : `${BASE}${path}`;
    const reqInit = { method: init.method ?? (init.form ? "POST" : "GET"), headers, body, redirect: "manual" as const };
    let res: Response;
    if (this.vars) {
      const { env, createExecutionContext, waitOnExecutionContext } = await import("cloudflare:test");
      const app = (await import("../../src/index")).default;
      const ctx = createExecutionContext();
      res = await app.fetch(new Request(url, reqInit), { ...env, ...this.vars }, ctx);
      await waitOnExecutionContext(ctx);
    } else res = await SELF.fetch(url, reqInit);
    for (const sc of res.headers.getSetCookie()) {
      const [pair] = sc.split(";");
      const [k, v] = [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)];
      if (v === "" || /max-age=0/i.test(sc)) this.cookies.delete(k);
      else this.cookies.set(k, v);
    }
    return { status: res.status, html: await res.text(), headers: res.headers, location: res.headers.get("location") };
  }
}

export function field(html: string, name: string): string {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  if (!m) throw new Error(`no field ${name} in ${html.slice(0, 400)}`);
  return m[1].replace(/&amp;/g, "&").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">");
}

export async function newClient(extra: Record<string, unknown> = {}): Promise<string> {
  const r = await call("POST", `${OAUTH}/register`, {
    body: { client_name: "Test App", client_uri: "https://example.com/", redirect_uris: [REDIRECT], grant_types: ["authorization_code", "refresh_token"], ...extra },
  });
  if (r.status !== 201) throw new Error(`client registration: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.client_id;
}

export interface AuthRequest {
  clientId: string;
  deviceId?: string;
  verifier?: string;
  state?: string;
  redirectUri?: string;
  responseMode?: "query" | "fragment";
  extra?: Record<string, string>;
}

export function randomVerifier(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(48)), (b) => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"[b % 66]).join("");
}

export async function authorizeUrl(req: AuthRequest): Promise<string> {
  const verifier = req.verifier ?? randomVerifier();
  const p = new URLSearchParams({
    response_type: "code",
    client_id: req.clientId,
    redirect_uri: req.redirectUri ?? REDIRECT,
    scope: `urn:matrix:client:api:* urn:matrix:client:device:${req.deviceId ?? "DEVICE" + Math.random().toString(36).slice(2, 10).toUpperCase()}`,
    state: req.state ?? "st4te",
    code_challenge: await s256Challenge(verifier),
    code_challenge_method: "S256",
    ...(req.responseMode ? { response_mode: req.responseMode } : {}),
    ...req.extra,
  });
  return `${OAUTH}/authorize?${p}`;
}

/** Sign in on the pages (if not yet) and consent; the callback URL the browser is sent to. */
export async function authorize(b: Browser, req: AuthRequest, user: { username: string; password: string }): Promise<string> {
  const start = await b.fetch(await authorizeUrl(req));
  if (start.status !== 303) throw new Error(`authorize: ${start.status} ${start.location} ${start.html.slice(0, 300)}`);
  let page = await b.fetch(start.location!);
  if (page.html.includes('action="/_lattice/oauth/login"')) {
    const login = await b.fetch(`${OAUTH}/login`, { form: { grant: field(page.html, "grant"), csrf: field(page.html, "csrf"), username: user.username, password: user.password } });
    if (login.status !== 303) throw new Error(`login: ${login.status} ${login.html.slice(0, 500)}`);
    page = await b.fetch(login.location!);
  }
  if (!page.html.includes('id="allow"')) throw new Error(`no consent page: ${page.status} ${page.html.slice(0, 500)}`);
  const consent = await b.fetch(`${OAUTH}/consent`, { form: { grant: field(page.html, "grant"), csrf: field(page.html, "csrf"), action: "allow" } });
  if (consent.status !== 303) throw new Error(`consent: ${consent.status} ${consent.html.slice(0, 300)}`);
  return consent.location!;
}

export function callbackParams(url: string): URLSearchParams {
  const u = new URL(url);
  return new URLSearchParams(u.hash ? u.hash.slice(1) : u.search);
}

export async function tokenRequest(form: Record<string, string>) {
  const res = await SELF.fetch(`${BASE}${OAUTH}/token`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(form).toString() });
  return { status: res.status, body: (await res.json()) as Record<string, any>, headers: res.headers };
}

export async function exchange(clientId: string, code: string, verifier: string, redirectUri = REDIRECT) {
  return tokenRequest({ grant_type: "authorization_code", client_id: clientId, code, code_verifier: verifier, redirect_uri: redirectUri });
}
