// Authorization requests and their one-time codes (RFC 6749 §4.1), stored hashed in D1.
import type { Env } from "../../env";
import { randomString, randomToken, sha256Hex } from "../crypto-util";
import { sweepOAuth } from "./sweep";

/** How long the user has to sign in and consent. */
export const GRANT_LIFETIME_MS = 30 * 60_000;
/** RFC 6749 §4.1.2: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED." */
export const CODE_LIFETIME_MS = 10 * 60_000;

export interface GrantRequest {
  clientId: string;
  redirectUri: string;
  scope: string;
  deviceId: string;
  state?: string;
  nonce?: string;
  codeChallenge: string;
  responseMode: "query" | "fragment";
  prompt?: string;
}

export interface Grant extends GrantRequest {
  id: string;
  expiresTs: number;
  userId: string | null;
  approved: boolean;
  exchangedTs: number | null;
  sessionId: number | null;
}

interface GrantRow {
  id: string;
  client_id: string;
  redirect_uri: string;
  scope: string;
  device_id: string;
  state: string | null;
  nonce: string | null;
  code_challenge: string;
  response_mode: string;
  prompt: string | null;
  expires_ts: number;
  user_id: string | null;
  code_hash: string | null;
  exchanged_ts: number | null;
  session_id: number | null;
}

function fromRow(r: GrantRow): Grant {
  return {
    id: r.id,
    clientId: r.client_id,
    redirectUri: r.redirect_uri,
    scope: r.scope,
    deviceId: r.device_id,
    state: r.state ?? undefined,
    nonce: r.nonce ?? undefined,
    codeChallenge: r.code_challenge,
    responseMode: r.response_mode === "fragment" ? "fragment" : "query",
    prompt: r.prompt ?? undefined,
    expiresTs: r.expires_ts,
    userId: r.user_id,
    approved: r.code_hash !== null,
    exchangedTs: r.exchanged_ts,
    sessionId: r.session_id,
  };
}

export async function createGrant(env: Env, req: GrantRequest): Promise<string> {
  await sweepOAuth(env, "oauth_grants");
  const id = randomString(24);
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO oauth_grants (id, client_id, redirect_uri, scope, device_id, state, nonce, code_challenge, response_mode, prompt, created_ts, expires_ts)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  )
    .bind(id, req.clientId, req.redirectUri, req.scope, req.deviceId, req.state ?? null, req.nonce ?? null, req.codeChallenge, req.responseMode, req.prompt ?? null, now, now + GRANT_LIFETIME_MS)
    .run();
  return id;
}

/** A pending (not yet approved, not expired) authorization request. */
export async function pendingGrant(env: Env, id: string): Promise<Grant | null> {
  const row = await env.DB.prepare("SELECT * FROM oauth_grants WHERE id = ? AND code_hash IS NULL AND expires_ts > ?").bind(id, Date.now()).first<GrantRow>();
  return row ? fromRow(row) : null;
}

/** The user consented: mint the code (once). null if the request was already decided or expired. */
export async function approveGrant(env: Env, id: string, userId: string): Promise<string | null> {
  const code = randomToken("latc");
  const now = Date.now();
  const r = await env.DB.prepare("UPDATE oauth_grants SET user_id = ?, code_hash = ?, expires_ts = ? WHERE id = ? AND code_hash IS NULL AND expires_ts > ?")
    .bind(userId, await sha256Hex(code), now + CODE_LIFETIME_MS, id, now)
    .run();
  return r.meta.changes === 1 ? code : null;
}

export async function deleteGrant(env: Env, id: string): Promise<void> {
  await env.DB.prepare("DELETE FROM oauth_grants WHERE id = ? AND code_hash IS NULL").bind(id).run();
}

/** Claim a code for exchange. `first` false means it had been exchanged before (a replay). */
export async function claimCode(env: Env, code: string): Promise<{ grant: Grant; first: boolean } | null> {
  const hash = await sha256Hex(code);
  const claimed = await env.DB.prepare("UPDATE oauth_grants SET exchanged_ts = ? WHERE code_hash = ? AND exchanged_ts IS NULL RETURNING *")
    .bind(Date.now(), hash)
    .first<GrantRow>();
  if (claimed) return { grant: fromRow(claimed), first: true };
  const used = await env.DB.prepare("SELECT * FROM oauth_grants WHERE code_hash = ?").bind(hash).first<GrantRow>();
  return used ? { grant: fromRow(used), first: false } : null;
}

export async function setGrantSession(env: Env, id: string, sessionId: number): Promise<void> {
  await env.DB.prepare("UPDATE oauth_grants SET session_id = ? WHERE id = ?").bind(sessionId, id).run();
}
