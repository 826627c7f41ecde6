// Pure OAuth parts: client metadata and redirect URI rules (spec "Redirect URI validation", with
// the spec's own example lists), redirect URI matching, PKCE S256 (RFC 7636 appendix B), scopes.
import { describe, expect, it } from "vitest";
import { ClientMetadataError, matchRedirectUri, redirectUriProblem, validateClientMetadata } from "../../src/core/oauth/client-metadata";
import { s256Challenge, verifyPkce, isValidCodeChallenge } from "../../src/core/oauth/pkce";
import { parseScope } from "../../src/core/oauth/scope";

const base = new URL("https://example.com/");

describe("redirect URI validation (spec examples)", () => {
  it("web: accepts the spec's valid examples and rejects its invalid ones", () => {
    for (const ok of ["https://example.com/callback", "https://app.example.com/callback", "https://example.com:5173/?query=value"]) {
      expect(redirectUriProblem(ok, "web", base), ok).toBeNull();
    }
    for (const bad of ["https://example.com/callback#fragment", "http://example.com/callback", "http://localhost/", "https://app.com/callback", "https://user:pw@example.com/cb", "https://notexample.com/cb"]) {
      expect(redirectUriProblem(bad, "web", base), bad).not.toBeNull();
    }
  });
  it("native: accepts the spec's valid examples and rejects its invalid ones", () => {
    for (const ok of ["com.example.app:/callback", "com.example:/", "com.example:callback", "http://localhost/callback", "http://127.0.0.1/callback", "http://[::1]/callback", "https://app.example.com/cb"]) {
      expect(redirectUriProblem(ok, "native", base), ok).toBeNull();
    }
    for (const bad of ["example:/callback", "com.example.app://callback", "https://localhost/callback", "http://localhost:1234/callback", "http://localhost:80/callback", "com.examplex:/cb", "http://evil.com/cb"]) {
      expect(redirectUriProblem(bad, "native", base), bad).not.toBeNull();
    }
  });
});

describe("validateClientMetadata", () => {
  const web = { client_uri: "https://example.com/", redirect_uris: ["https://app.example.com/cb"], client_name: "App" };
  it("fills RFC 7591 defaults and drops unknown grant types and fields", () => {
    const m = validateClientMetadata({ ...web, grant_types: ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"], extra: 1 });
    expect(m).toEqual({
      client_uri: "https://example.com/",
      application_type: "web",
      redirect_uris: ["https://app.example.com/cb"],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      client_name: "App",
    });
  });
  it("keeps localized human-readable fields, validating localized URIs like plain ones", () => {
    const m = validateClientMetadata({ ...web, "client_name#fr": "Appli", "tos_uri#fr": "https://example.com/fr/tos" });
    expect(m["client_name#fr"]).toBe("Appli");
    expect(m["tos_uri#fr"]).toBe("https://example.com/fr/tos");
    expect(() => validateClientMetadata({ ...web, "policy_uri#de": "https://other.org/p" })).toThrow(ClientMetadataError);
  });
  it("rejects a missing or non-https client_uri, a confidential auth method, bad redirect URIs", () => {
    const err = (b: unknown) => {
      try {
        validateClientMetadata(b);
      } catch (e) {
        return (e as ClientMetadataError).error;
      }
      return "accepted";
    };
    expect(err({ redirect_uris: ["https://example.com/cb"] })).toBe("invalid_client_metadata");
    expect(err({ ...web, client_uri: "http://example.com/" })).toBe("invalid_client_metadata");
    expect(err({ ...web, token_endpoint_auth_method: "client_secret_basic" })).toBe("invalid_client_metadata");
    expect(err({ ...web, redirect_uris: ["https://evil.com/cb"] })).toBe("invalid_redirect_uri");
    expect(err({ ...web, redirect_uris: [] })).toBe("invalid_redirect_uri");
    expect(err({ ...web, logo_uri: "http://example.com/logo.png" })).toBe("invalid_client_metadata");
    expect(err({ ...web, application_type: "desktop" })).toBe("invalid_client_metadata");
  });
});

describe("matchRedirectUri", () => {
  it("matches exactly, and loopback URIs on any port", () => {
    expect(matchRedirectUri("https://app.example.com/cb", ["https://app.example.com/cb"])).toBe(true);
    expect(matchRedirectUri("https://app.example.com/cb/", ["https://app.example.com/cb"])).toBe(false);
    expect(matchRedirectUri("https://app.example.com/cb?x=1", ["https://app.example.com/cb"])).toBe(false);
    expect(matchRedirectUri("http://127.0.0.1:43123/callback", ["http://127.0.0.1/callback"])).toBe(true);
    expect(matchRedirectUri("http://[::1]:5000/callback", ["http://[::1]/callback"])).toBe(true);
    expect(matchRedirectUri("http://127.0.0.1:43123/other", ["http://127.0.0.1/callback"])).toBe(false);
    expect(matchRedirectUri("http://127.0.0.1:1@evil.com/callback", ["http://127.0.0.1/callback"])).toBe(false);
    expect(matchRedirectUri("https://app.example.com:8443/cb", ["https://app.example.com/cb"])).toBe(false);
  });
});

describe("PKCE S256", () => {
  it("RFC 7636 appendix B", async () => {
    const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    expect(await s256Challenge(verifier)).toBe("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    expect(await verifyPkce(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")).toBe(true);
    expect(await verifyPkce(verifier.replace("d", "e"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")).toBe(false);
    expect(await verifyPkce("short", await s256Challenge("short"))).toBe(false);
    expect(isValidCodeChallenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")).toBe(true);
    expect(isValidCodeChallenge("plain-verifier")).toBe(false);
  });
});

describe("scope", () => {
  it("needs the API scope and exactly one device", () => {
    expect(parseScope("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ")).toEqual({
      deviceId: "ABCDEFGHIJ",
      tokens: ["urn:matrix:client:api:*", "urn:matrix:client:device:ABCDEFGHIJ"],
    });
    expect(typeof parseScope("urn:matrix:client:api:*")).toBe("string");
    expect(typeof parseScope("urn:matrix:client:device:ABCDEFGHIJ")).toBe("string");
    expect(typeof parseScope("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ urn:matrix:client:device:KLMNOPQRST")).toBe("string");
    expect(typeof parseScope("urn:matrix:client:api:* urn:matrix:client:device:short")).toBe("string");
    expect(typeof parseScope("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ openid")).toBe("string");
    expect(typeof parseScope(undefined)).toBe("string");
  });
});
