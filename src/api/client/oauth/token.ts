// The token endpoint (RFC 6749 §3.2, §4.1.3, §6) and the revocation endpoint (RFC 7009). Public
// clients only: the client is identified by client_id, and PKCE binds the code to it.
import { Hono, type Context } from "hono";
import type { AppEnv } from "../../types";
import { verifyPkce } from "../../../core/oauth/pkce";
import { getClient } from "../../../services/oauth/clients";
import { claimCode, setGrantSession } from "../../../services/oauth/grants";
import { refreshOAuthSession, revokeOAuthSession, revokeToken, sessionById, startOAuthSession } from "../../../services/oauth/tokens";
import { pollDeviceGrant } from "../../../services/oauth/device-grants";
import { DEVICE_GRANT_TYPE } from "./device";
import { formBody, noStore, oauthError, RepeatedParameter } from "./responses";

export const oauthToken = new Hono<AppEnv>();

async function readForm(c: Context<AppEnv>): Promise<Map<string, string> | Response> {
  try {
    const form = await formBody(c);
    if (!form) return oauthError(c, 400, "invalid_request", "the body must be application/x-www-form-urlencoded");
    return form;
  } catch (e) {
    if (e instanceof RepeatedParameter) return oauthError(c, 400, "invalid_request", e.message);
    throw e;
  }
}

oauthToken.post("/token", async (c) => {
  const form = await readForm(c);
  if (form instanceof Response) return form;
  const grantType = form.get("grant_type");
  if (!grantType) return oauthError(c, 400, "invalid_request", "grant_type is required");
  const clientId = form.get("client_id");
  // RFC 6749 §5.2: invalid_client with 401 when the client cannot be identified.
  const client = clientId ? await getClient(c.env, clientId) : null;
  if (!client) return oauthError(c, 401, "invalid_client", "unknown or missing client_id");
  if (grantType !== "authorization_code" && grantType !== "refresh_token" && grantType !== DEVICE_GRANT_TYPE) return oauthError(c, 400, "unsupported_grant_type", `grant_type ${grantType} is not supported`);
  if (!client.grant_types.includes(grantType)) return oauthError(c, 400, "unauthorized_client", `the client did not register the ${grantType} grant`);
  const config = c.var.config;

  if (grantType === DEVICE_GRANT_TYPE) {
    const deviceCode = form.get("device_code");
    if (!deviceCode) return oauthError(c, 400, "invalid_request", "device_code is required");
    const outcome = await pollDeviceGrant(c.env, deviceCode, client.client_id);
    if ("error" in outcome) return oauthError(c, 400, outcome.error, outcome.description);
    const grant = outcome.ok;
    const user = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(grant.userId).first<{ deactivated: number }>();
    if (!user || user.deactivated) return oauthError(c, 400, "invalid_grant", "the account is deactivated");
    const { tokens } = await startOAuthSession(c.env, config, { clientId: client.client_id, userId: grant.userId!, deviceId: grant.deviceId, scope: grant.scope, displayName: client.client_name });
    noStore(c);
    return c.json(tokens);
  }

  if (grantType === "refresh_token") {
    const refreshToken = form.get("refresh_token");
    if (!refreshToken) return oauthError(c, 400, "invalid_request", "refresh_token is required");
    const outcome = await refreshOAuthSession(c.env, config, refreshToken, client.client_id);
    if ("error" in outcome) return oauthError(c, 400, outcome.error, outcome.description);
    noStore(c);
    return c.json(outcome.ok);
  }

  const code = form.get("code");
  const redirectUri = form.get("redirect_uri");
  const verifier = form.get("code_verifier");
  if (!code || !redirectUri || !verifier) return oauthError(c, 400, "invalid_request", "code, redirect_uri and code_verifier are required");
  const claimed = await claimCode(c.env, code);
  if (!claimed) return oauthError(c, 400, "invalid_grant", "unknown authorization code");
  const { grant } = claimed;
  if (!claimed.first) {
    // RFC 6749 §4.1.2: a code used twice → deny, and revoke what the first exchange issued.
    if (grant.sessionId !== null) {
      const session = await sessionById(c.env, grant.sessionId);
      if (session && !session.revoked) await revokeOAuthSession(c.env, config, session);
    }
    return oauthError(c, 400, "invalid_grant", "authorization code was already used");
  }
  if (grant.expiresTs <= Date.now()) return oauthError(c, 400, "invalid_grant", "authorization code has expired");
  if (grant.clientId !== client.client_id) return oauthError(c, 400, "invalid_grant", "authorization code was issued to another client");
  // RFC 6749 §4.1.3: redirect_uri must be identical to the authorization request's.
  if (grant.redirectUri !== redirectUri) return oauthError(c, 400, "invalid_grant", "redirect_uri does not match the authorization request");
  if (!(await verifyPkce(verifier, grant.codeChallenge))) return oauthError(c, 400, "invalid_grant", "code_verifier does not match the code_challenge");
  const user = await c.env.DB.prepare("SELECT deactivated FROM users WHERE user_id = ?").bind(grant.userId).first<{ deactivated: number }>();
  if (!user || user.deactivated) return oauthError(c, 400, "invalid_grant", "the account is deactivated");

  const { session, tokens } = await startOAuthSession(c.env, config, {
    clientId: client.client_id,
    userId: grant.userId!,
    deviceId: grant.deviceId,
    scope: grant.scope,
    displayName: client.client_name,
  });
  await setGrantSession(c.env, grant.id, session.id);
  noStore(c);
  return c.json(tokens);
});

oauthToken.post("/revoke", async (c) => {
  const form = await readForm(c);
  if (form instanceof Response) return form;
  const token = form.get("token");
  if (!token) return oauthError(c, 400, "invalid_request", "token is required");
  const hint = form.get("token_type_hint");
  // RFC 7009 §2.1: an unknown hint is ignored (the server "extends its search").
  void hint;
  // The spec: revoke even without a (matching) client_id, to help secret scanners.
  await revokeToken(c.env, c.var.config, token);
  noStore(c);
  return c.body(null, 200);
});
