// Admin API, in the de-facto standard shape tools use (Synapse's /_synapse/admin/v1/...):
// shared-secret registration (to create the first user when registration is closed) and
// registration tokens.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, notFound } from "../errors";
import { parseBody } from "../validate";
import { authenticate } from "../middleware/auth";
import { createUser, validateNewLocalpart } from "../../services/accounts";
import { randomString, timingSafeEqualStrings } from "../../services/crypto-util";
import { db } from "../../db";
import { clientSession } from "../../services/sessions";

export const admin = new Hono<AppEnv>();

const NONCE_LIFETIME_MS = 60_000;

admin.get("/v1/register", async (c) => {
  if (!c.var.config.registrationSharedSecret) throw new MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled");
  const nonce = randomString(32);
  await c.env.DB.prepare("INSERT INTO registration_nonces (nonce, created_ts) VALUES (?, ?)").bind(nonce, Date.now()).run();
  return c.json({ nonce });
});

const sharedSecretSchema = z.object({
  nonce: z.string(),
  username: z.string().max(255),
  password: z.string().max(512),
  displayname: z.string().max(256).optional(),
  admin: z.boolean().optional(),
  mac: z.string().regex(/^[0-9a-f]{40}$/i, "must be a hex HMAC-SHA1"),
});

/** HMAC-SHA1 over nonce NUL username NUL password NUL admin|notadmin, hex (the format tools use). */
export async function sharedSecretMac(secret: string, nonce: string, username: string, password: string, isAdmin: boolean): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  const msg = enc.encode(`${nonce}\0${username}\0${password}\0${isAdmin ? "admin" : "notadmin"}`);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, msg));
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
}

admin.post("/v1/register", async (c) => {
  const config = c.var.config;
  const secret = config.registrationSharedSecret;
  if (!secret) throw new MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled");
  const body = await parseBody(c, sharedSecretSchema);
  // Each nonce works once and only briefly (replay protection).
  const used = await c.env.DB.prepare("DELETE FROM registration_nonces WHERE nonce = ? RETURNING created_ts")
    .bind(body.nonce)
    .first<{ created_ts: number }>();
  if (!used || used.created_ts + NONCE_LIFETIME_MS < Date.now()) throw new MatrixError(400, "M_UNKNOWN", "Unrecognised nonce");
  const expected = await sharedSecretMac(secret, body.nonce, body.username, body.password, body.admin === true);
  if (!timingSafeEqualStrings(expected, body.mac.toLowerCase())) throw forbidden("HMAC incorrect");

  const localpart = body.username.toLowerCase();
  const userId = validateNewLocalpart(localpart, config.serverName);
  await createUser(c.env, { userId, localpart, password: body.password, admin: body.admin === true, displayname: body.displayname });
  return c.json(await clientSession(db(c.env), { userId, serverName: config.serverName, lifetimeMs: config.accessTokenLifetimeMs }));
});

export async function requireAdmin(c: Context<AppEnv>): Promise<string> {
  const auth = await authenticate(c);
  const row = await c.env.DB.prepare("SELECT admin FROM users WHERE user_id = ?").bind(auth.userId).first<{ admin: number }>();
  if (!row?.admin) throw forbidden("You are not a server admin");
  return auth.userId;
}

const tokenRow = (r: Record<string, unknown>) => ({
  token: r.token,
  uses_allowed: r.uses_allowed,
  pending: r.pending,
  completed: r.completed,
  expiry_time: r.expiry_ts,
});

admin.get("/v1/registration_tokens", async (c) => {
  await requireAdmin(c);
  const { results } = await c.env.DB.prepare("SELECT * FROM registration_tokens ORDER BY token").all();
  return c.json({ registration_tokens: results.map(tokenRow) });
});

admin.post("/v1/registration_tokens/new", async (c) => {
  await requireAdmin(c);
  const body = await parseBody(
    c,
    z.object({
      token: z.string().regex(/^[A-Za-z0-9._~-]{1,64}$/).optional(),
      uses_allowed: z.number().int().min(0).nullable().optional(),
      expiry_time: z.number().int().min(0).nullable().optional(),
      length: z.number().int().min(1).max(64).optional(),
    }),
  );
  const token = body.token ?? randomString(body.length ?? 16);
  const r = await c.env.DB.prepare("INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
    .bind(token, body.uses_allowed ?? null, body.expiry_time ?? null)
    .run();
  if (r.meta.changes !== 1) throw new MatrixError(400, "M_INVALID_PARAM", "Token already exists");
  return c.json({ token, uses_allowed: body.uses_allowed ?? null, pending: 0, completed: 0, expiry_time: body.expiry_time ?? null });
});

admin.delete("/v1/registration_tokens/:token", async (c) => {
  await requireAdmin(c);
  const r = await c.env.DB.prepare("DELETE FROM registration_tokens WHERE token = ?").bind(c.req.param("token")).run();
  if (r.meta.changes !== 1) throw notFound("No such registration token");
  return c.json({});
});
