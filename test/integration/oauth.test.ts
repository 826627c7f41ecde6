// OAuth 2.0 API (spec: Client-Server API "OAuth 2.0 API"): client registration, the
// authorization endpoint and its pages, the token and revocation endpoints, every RFC error.
import { describe, expect, it } from "vitest";
import { call } from "./helpers";

const OAUTH = "/_lattice/oauth";

export async function registerClient(body: Record<string, unknown>) {
  return call("POST", `${OAUTH}/register`, { body });
}

describe("dynamic client registration (RFC 7591)", () => {
  it("registers a web client and answers 201 with the client_id and what was registered", async () => {
    const r = await registerClient({
      client_name: "My App",
      "client_name#fr": "Mon application",
      client_uri: "https://example.com/",
      tos_uri: "https://example.com/tos.html",
      redirect_uris: ["https://app.example.com/callback"],
      token_endpoint_auth_method: "none",
      response_types: ["code"],
      grant_types: ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"],
      application_type: "web",
    });
    expect(r.status).toBe(201);
    expect(r.headers.get("cache-control")).toBe("no-store");
    expect(typeof r.body.client_id).toBe("string");
    expect(r.body).toMatchObject({
      client_name: "My App",
      "client_name#fr": "Mon application",
      grant_types: ["authorization_code", "refresh_token"],
      redirect_uris: ["https://app.example.com/callback"],
      application_type: "web",
      token_endpoint_auth_method: "none",
    });
  });

  it("registers a native client with a loopback and a private-use redirect URI", async () => {
    const r = await registerClient({
      client_uri: "https://example.com/",
      application_type: "native",
      redirect_uris: ["http://127.0.0.1/callback", "com.example.app:/callback"],
      grant_types: ["authorization_code", "refresh_token"],
    });
    expect(r.status).toBe(201);
  });

  it("answers invalid_redirect_uri and invalid_client_metadata per RFC 7591 §3.2.2", async () => {
    const bad = await registerClient({ client_uri: "https://example.com/", redirect_uris: ["https://evil.org/cb"] });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toBe("invalid_redirect_uri");
    const noUri = await registerClient({ redirect_uris: ["https://example.com/cb"] });
    expect(noUri.status).toBe(400);
    expect(noUri.body.error).toBe("invalid_client_metadata");
    const secret = await registerClient({ client_uri: "https://example.com/", redirect_uris: ["https://example.com/cb"], token_endpoint_auth_method: "client_secret_post" });
    expect(secret.body.error).toBe("invalid_client_metadata");
    const notJson = await call("POST", `${OAUTH}/register`, { rawBody: "{", headers: { "content-type": "application/json" } });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error).toBe("invalid_client_metadata");
  });
});
