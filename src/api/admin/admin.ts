// Admin API, in the de-facto standard shape tools use (Synapse's /_synapse/admin/v1/...):
// shared-secret registration (to create the first user when registration is closed) and
// registration tokens.
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../types";
import { MatrixError, forbidden, notFound } from "../errors";
import { parseBody } from "../validate";
import { requireAdmin } from "./common";
import { createUser, validateNewLocalpart } from "../../services/accounts";
import { randomString, timingSafeEqualStrings } from "../../services/crypto-util";
import { db } from "../../db";
import { clientSession } from "../../services/sessions";
import { sweepExpired } from "../../services/sweep";

export const admin = new Hono<AppEnv>();

const NONCE_LIFETIME_MS = 60_000;

// Nonces are stateless: `<time>.<random>.<HMAC of both under the shared secret>`. GET
// /_synapse/admin/v1/register is unauthenticated, so it must not write anything (it inserted a
// row per call, never cleaned). A nonce becomes a row only once it is used with a correct MAC
// (replay protection), and those rows are swept after NONCE_LIFETIME_MS.
async function nonceMac(secret: string, time: string, random: string): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(`lattice-register-nonce\0${time}\0${random}`)));
  return Array.from(mac.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A nonce issued at `now` (exported for tests of expiry). */
export async function mintNonce(secret: string, now = Date.now()): Promise<string> {
  const time = now.toString(36);
  const random = randomString(16);
  return `${time}.${random}.${await nonceMac(secret, time, random)}`;
}

/** When the nonce was issued, if we issued it and it is under NONCE_LIFETIME_MS old. */
async function nonceIssuedAt(secret: string, nonce: string, now = Date.now()): Promise<number | null> {
  const [time, random, mac, ...rest] = nonce.split(".");
  if (rest.length || !time || !random || !mac) return null;
  if (!timingSafeEqualStrings(await nonceMac(secret, time, random), mac)) return null;
  const issued = parseInt(time, 36);
  if (!Number.isSafeInteger(issued) || issued > now + 5_000 || issued + NONCE_LIFETIME_MS < now) return null;
  return issued;
}

admin.get("/v1/register", async (c) => {
  const secret = c.var.config.registrationSharedSecret;
  if (!secret) throw new MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled");
  return c.json({ nonce: await mintNonce(secret) });
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
  const issued = await nonceIssuedAt(secret, body.nonce);
  const unrecognised = () => new MatrixError(400, "M_UNKNOWN", "Unrecognised nonce");
  if (issued === null) throw unrecognised();
  if (await c.env.DB.prepare("SELECT 1 FROM registration_nonces WHERE nonce = ?").bind(body.nonce).first()) throw unrecognised();
  const expected = await sharedSecretMac(secret, body.nonce, body.username, body.password, body.admin === true);
  if (!timingSafeEqualStrings(expected, body.mac.toLowerCase())) throw forbidden("HMAC incorrect");
  await sweepExpired(c.env.DB, "registration_nonces", Date.now() - NONCE_LIFETIME_MS);
  const claimed = await c.env.DB.prepare("INSERT INTO registration_nonces (nonce, created_ts) VALUES (?, ?) ON CONFLICT DO NOTHING")
    .bind(body.nonce, issued)
    .run();
  if (claimed.meta.changes !== 1) throw unrecognised(); // used by a concurrent request

  const localpart = body.username.toLowerCase();
  const userId = validateNewLocalpart(localpart, config.serverName);
  await createUser(c.env, { userId, localpart, password: body.password, admin: body.admin === true, displayname: body.displayname });
  return c.json(await clientSession(db(c.env), { userId, serverName: config.serverName, lifetimeMs: config.accessTokenLifetimeMs }));
});

// requireAdmin lives in ./common (shared by every admin module); re-exported for older importers.
export { requireAdmin } from "./common";

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

admin.get("/v1/registration_tokens/:token", async (c) => {
  await requireAdmin(c);
  const r = await c.env.DB.prepare("SELECT * FROM registration_tokens WHERE token = ?").bind(c.req.param("token")).first();
  if (!r) throw notFound("No such registration token");
  return c.json(tokenRow(r));
});

// PUT /v1/registration_tokens/{token}: change uses_allowed and/or expiry_time (null = no limit).
admin.put("/v1/registration_tokens/:token", async (c) => {
  await requireAdmin(c);
  const body = await parseBody(
    c,
    z.object({ uses_allowed: z.number().int().min(0).nullable().optional(), expiry_time: z.number().int().min(0).nullable().optional() }),
  );
  const token = c.req.param("token");
  if (!(await c.env.DB.prepare("SELECT 1 FROM registration_tokens WHERE token = ?").bind(token).first())) throw notFound("No such registration token");
  if (body.uses_allowed !== undefined) await c.env.DB.prepare("UPDATE registration_tokens SET uses_allowed = ? WHERE token = ?").bind(body.uses_allowed, token).run();
  if (body.expiry_time !== undefined) await c.env.DB.prepare("UPDATE registration_tokens SET expiry_ts = ? WHERE token = ?").bind(body.expiry_time, token).run();
  return c.json(tokenRow((await c.env.DB.prepare("SELECT * FROM registration_tokens WHERE token = ?").bind(token).first())!));
});

admin.delete("/v1/registration_tokens/:token", async (c) => {
  await requireAdmin(c);
  const r = await c.env.DB.prepare("DELETE FROM registration_tokens WHERE token = ?").bind(c.req.param("token")).run();
  if (r.meta.changes !== 1) throw notFound("No such registration token");
  return c.json({});
});
