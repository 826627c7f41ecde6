// GET /_matrix/client/v1/auth_metadata (spec: "Server metadata discovery"; RFC 8414). Lists only
// what works: grants, modes and endpoints that are implemented.
import { Hono } from "hono";
import type { AppEnv } from "../../types";
import { OAUTH_BASE } from "./pages";
import { ACCOUNT_ACTIONS, ACCOUNT_PATH } from "./account";
import { DEVICE_GRANT_TYPE } from "./device";

export const authMetadata = new Hono<AppEnv>();

authMetadata.get("/auth_metadata", (c) => {
  const base = c.var.config.publicBaseUrl;
  c.header("Cache-Control", "public, max-age=300");
  return c.json({
    issuer: `${base}/`,
    authorization_endpoint: `${base}${OAUTH_BASE}/authorize`,
    token_endpoint: `${base}${OAUTH_BASE}/token`,
    registration_endpoint: `${base}${OAUTH_BASE}/register`,
    revocation_endpoint: `${base}${OAUTH_BASE}/revoke`,
    response_types_supported: ["code"],
    response_modes_supported: ["query", "fragment"],
    grant_types_supported: ["authorization_code", "refresh_token", DEVICE_GRANT_TYPE],
    device_authorization_endpoint: `${base}${OAUTH_BASE}/device`,
    code_challenge_methods_supported: ["S256"],
    token_endpoint_auth_methods_supported: ["none"],
    revocation_endpoint_auth_methods_supported: ["none"],
    account_management_uri: `${base}${ACCOUNT_PATH}`,
    account_management_actions_supported: ACCOUNT_ACTIONS,
    scopes_supported: ["urn:matrix:client:api:*"],
    // prompt=create shows the registration page, which needs registration to be open (or token).
    ...(c.var.config.registration !== "closed" ? { prompt_values_supported: ["create"] } : {}),
  });
});
