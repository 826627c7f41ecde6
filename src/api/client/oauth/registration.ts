// Dynamic client registration (spec: Client-Server API "Dynamic client registration flow";
// RFC 7591 §3). Public clients only; the response echoes what was registered.
import { Hono } from "hono";
import type { AppEnv } from "../../types";
import { readJsonBody } from "../../validate";
import { ClientMetadataError, validateClientMetadata } from "../../../core/oauth/client-metadata";
import { registerClient } from "../../../services/oauth/clients";
import { LIMITS, clientAddress, rateLimit } from "../../middleware/rate-limit";
import { noStore, oauthError } from "./responses";

export const oauthRegistration = new Hono<AppEnv>();

oauthRegistration.post("/register", async (c) => {
  let body: unknown;
  try {
    body = await readJsonBody(c);
  } catch {
    return oauthError(c, 400, "invalid_client_metadata", "body must be JSON");
  }
  // Registrations are unauthenticated; cap how fast one address can add rows.
  await rateLimit(c, "oauth-register-ip", clientAddress(c), LIMITS.registerPerAddress);
  let metadata;
  try {
    metadata = validateClientMetadata(body);
  } catch (e) {
    if (e instanceof ClientMetadataError) return oauthError(c, 400, e.error, e.message);
    throw e;
  }
  const client = await registerClient(c.env, metadata);
  noStore(c);
  return c.json(client, 201);
});
