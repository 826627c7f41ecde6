// OpenID tokens end with the account's sessions (workerd; hardening issue item 9): a password
// change or deactivation revokes them, and /openid/userinfo never vouches for a deactivated user.
import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import { call, registerUser, type TestUser } from "./helpers";

const enc = encodeURIComponent;

async function openidToken(u: TestUser): Promise<string> {
  const r = await call("POST", `/_matrix/client/v3/user/${enc(u.userId)}/openid/request_token`, { token: u.accessToken, body: {} });
  expect(r.status).toBe(200);
  return r.body.access_token;
}

const userinfo = (token: string) => call("GET", `/_matrix/federation/v1/openid/userinfo?access_token=${enc(token)}`);

/** POST a UIA-protected account endpoint with the user's password. */
async function withPassword(u: TestUser, path: string, body: Record<string, unknown>) {
  const first = await call("POST", `/_matrix/client/v3${path}`, { token: u.accessToken, body });
  expect(first.status).toBe(401);
  const auth = { type: "m.login.password", identifier: { type: "m.id.user", user: u.userId }, password: u.password, session: first.body.session };
  const r = await call("POST", `/_matrix/client/v3${path}`, { token: u.accessToken, body: { ...body, auth } });
  expect(r.status).toBe(200);
}

describe("OpenID tokens", () => {
  it("a password change revokes them (also when other devices stay logged in)", async () => {
    const u = await registerUser();
    const token = await openidToken(u);
    expect((await userinfo(token)).body).toEqual({ sub: u.userId });
    await withPassword(u, "/account/password", { new_password: "a brand new password", logout_devices: false });
    const r = await userinfo(token);
    expect([r.status, r.body.errcode]).toEqual([401, "M_UNKNOWN_TOKEN"]);
  });

  it("deactivation revokes them", async () => {
    const u = await registerUser();
    const token = await openidToken(u);
    await withPassword(u, "/account/deactivate", {});
    const r = await userinfo(token);
    expect([r.status, r.body.errcode]).toEqual([401, "M_UNKNOWN_TOKEN"]);
  });

  it("userinfo refuses a deactivated user's token even if the token row is still there", async () => {
    const u = await registerUser();
    const token = await openidToken(u);
    // Deactivated by another path than /account/deactivate (an operator editing D1).
    await env.DB.prepare("UPDATE users SET deactivated = 1 WHERE user_id = ?").bind(u.userId).run();
    const r = await userinfo(token);
    expect([r.status, r.body.errcode]).toEqual([401, "M_UNKNOWN_TOKEN"]);
  });
});
