// Registered OAuth 2.0 clients (RFC 7591), stored in D1.
import type { Env } from "../../env";
import type { ClientMetadata } from "../../core/oauth/client-metadata";
import { randomString } from "../crypto-util";

export interface OAuthClient extends ClientMetadata {
  client_id: string;
}

export async function registerClient(env: Env, metadata: ClientMetadata): Promise<OAuthClient> {
  // Public clients only (token_endpoint_auth_method none): the ID is an identifier, not a secret.
  const clientId = randomString(16);
  await env.DB.prepare("INSERT INTO oauth_clients (client_id, metadata, created_ts) VALUES (?, ?, ?)")
    .bind(clientId, JSON.stringify(metadata), Date.now())
    .run();
  return { client_id: clientId, ...metadata };
}

export async function getClient(env: Env, clientId: string): Promise<OAuthClient | null> {
  const row = await env.DB.prepare("SELECT metadata FROM oauth_clients WHERE client_id = ?").bind(clientId).first<{ metadata: string }>();
  return row ? { client_id: clientId, ...(JSON.parse(row.metadata) as ClientMetadata) } : null;
}
