// VoIP (spec: module "Voice over IP", GET /voip/turnServer; OpenAPI voip.yaml).
// Two ways to hand out TURN credentials (src/config.ts):
//  - coturn's shared-secret REST scheme (TURN_SHARED_SECRET, TURN_URIS): username
//    "<expiry unix seconds>:<user id>", password base64(HMAC-SHA1(secret, username)), which coturn
//    checks with `use-auth-secret` + `static-auth-secret`;
//  - Cloudflare Realtime TURN (TURN_KEY_ID, TURN_KEY_API_TOKEN): the Worker asks Cloudflare's API
//    (POST /v1/turn/keys/{id}/credentials/generate-ice-servers) for short-lived credentials.
// Unconfigured, the answer is {} (as Synapse answers), which clients read as "no TURN server".
import { Hono } from "hono";
import type { AppEnv } from "../types";
import { MatrixError } from "../errors";
import { requireAuth } from "../middleware/auth";
import { encodeBase64 } from "../../core/base64";
import type { Config } from "../../config";

export const voip = new Hono<AppEnv>();

export interface TurnServer {
  username: string;
  password: string;
  uris: string[];
  ttl: number;
}

/** coturn REST API credentials (draft-uberti-behave-turn-rest-00 §2.2). */
export async function sharedSecretCredentials(secret: string, userId: string, uris: string[], ttlSeconds: number, nowMs = Date.now()): Promise<TurnServer> {
  const username = `${Math.floor(nowMs / 1000) + ttlSeconds}:${userId}`;
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(username)));
  // coturn expects standard base64 with padding.
  let password = encodeBase64(mac);
  while (password.length % 4) password += "=";
  return { username, password, uris, ttl: ttlSeconds };
}

type Cloudflare = Extract<NonNullable<Config["turn"]>, { kind: "cloudflare" }>;

/** Ask Cloudflare's TURN API for credentials; the TURN (not STUN) URLs of the answer. */
export async function cloudflareCredentials(t: Cloudflare, fetcher: typeof fetch = fetch): Promise<TurnServer> {
  let res: Response;
  try {
    res = await fetcher(`${t.apiUrl}/turn/keys/${encodeURIComponent(t.keyId)}/credentials/generate-ice-servers`, {
      method: "POST",
      headers: { Authorization: `Bearer ${t.apiToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ ttl: t.ttlSeconds }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch {
    throw new MatrixError(502, "M_UNKNOWN", "The TURN credentials service could not be reached");
  }
  if (!res.ok) {
    await res.body?.cancel();
    console.warn(`turn: Cloudflare answered ${res.status}`);
    throw new MatrixError(502, "M_UNKNOWN", "The TURN credentials service failed");
  }
  const body = (await res.json().catch(() => null)) as { iceServers?: unknown } | null;
  const servers = Array.isArray(body?.iceServers) ? body.iceServers : body?.iceServers ? [body.iceServers] : [];
  for (const s of servers as { urls?: unknown; username?: unknown; credential?: unknown }[]) {
    if (typeof s?.username !== "string" || typeof s.credential !== "string") continue;
    const urls = (Array.isArray(s.urls) ? s.urls : [s.urls]).filter((u): u is string => typeof u === "string" && /^turns?:/.test(u));
    if (urls.length) return { username: s.username, password: s.credential, uris: urls, ttl: t.ttlSeconds };
  }
  throw new MatrixError(502, "M_UNKNOWN", "The TURN credentials service gave no TURN server");
}

voip.get("/voip/turnServer", requireAuth, async (c) => {
  const t = c.var.config.turn;
  if (!t) return c.json({});
  if (t.kind === "shared-secret") return c.json(await sharedSecretCredentials(t.secret, c.var.auth.userId, t.uris, t.ttlSeconds));
  return c.json(await cloudflareCredentials(t));
});
