// Calls: TURN credentials (voip.yaml), MatrixRTC transport discovery (MSC4143). The integration
// environment configures neither, so these are the unconfigured answers; the configured ones are
// tested end to end (test/e2e/calls.test.ts) and in test/unit/push-gateway.test.ts.
import { describe, it, expect } from "vitest";
import { call, clientOk, registerUser } from "./helpers";
import { parseConfig, ConfigError } from "../../src/config";

describe("voip/turnServer", () => {
  it("answers {} when no TURN server is configured, and needs authentication", async () => {
    const u = await registerUser();
    expect(await clientOk(u.accessToken, "GET", "/voip/turnServer")).toEqual({});
    expect((await call("GET", "/_matrix/client/v3/voip/turnServer")).status).toBe(401);
  });
  it("refuses contradictory or incomplete TURN configuration", () => {
    const bad = (vars: Record<string, string>) => expect(() => parseConfig({ ...vars } as any)).toThrow(ConfigError);
    bad({ TURN_SHARED_SECRET: "0123456789", TURN_URIS: "turn:t.example.org", TURN_KEY_ID: "abc", TURN_KEY_API_TOKEN: "x" });
    bad({ TURN_SHARED_SECRET: "0123456789" });
    bad({ TURN_SHARED_SECRET: "0123456789", TURN_URIS: "https://t.example.org" });
    bad({ TURN_KEY_ID: "abc" });
    bad({ TURN_TTL_SECONDS: "5" });
    bad({ RTC_FOCUS_URL: "ftp://x" });
    bad({ PUSH_HTTP_LOOPBACK: "yes" });
    const ok = parseConfig({ TURN_SHARED_SECRET: "0123456789", TURN_URIS: "turn:a.example.org:3478, turns:a.example.org:5349" } as any);
    expect(ok.turn).toEqual({ kind: "shared-secret", secret: "0123456789", uris: ["turn:a.example.org:3478", "turns:a.example.org:5349"], ttlSeconds: 86400 });
  });
});

describe("MatrixRTC transports (MSC4143)", () => {
  it("lists no transport when RTC_FOCUS_URL is unset; well-known has no rtc_foci", async () => {
    const u = await registerUser();
    const r = await call("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", { token: u.accessToken });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ rtc_transports: [] });
    expect((await call("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports")).status).toBe(401);
    const wk = await call("GET", "/.well-known/matrix/client");
    expect(wk.body["org.matrix.msc4143.rtc_foci"]).toBeUndefined();
  });
});
