// Application services (spec: Application Service API): registrations through the admin API,
// namespaces, as_token authentication and masquerading.
import { describe, it, expect, beforeAll } from "vitest";
import { call, registerUser, uniqueName, type TestUser } from "./helpers";
import { unsafeRegexReason } from "../../src/core/appservice-registration";

let admin: TestUser;

async function makeAdmin(): Promise<TestUser> {
  const { sharedSecretMac } = await import("../../src/api/admin/admin");
  const n = await call("GET", "/_synapse/admin/v1/register");
  const username = uniqueName("asadmin");
  const mac = await sharedSecretMac("test-shared-secret", n.body.nonce, username, "pw", true);
  const r = await call("POST", "/_synapse/admin/v1/register", { body: { nonce: n.body.nonce, username, password: "pw", admin: true, mac } });
  expect(r.status).toBe(200);
  return { userId: r.body.user_id, accessToken: r.body.access_token, deviceId: r.body.device_id } as TestUser;
}

/** A registration with fresh tokens and namespaces under a fresh prefix. */
export function registration(over: Record<string, unknown> = {}): Record<string, any> {
  const p = uniqueName("as").toLowerCase();
  return {
    id: p,
    url: null,
    as_token: `as_${p}_secret`,
    hs_token: `hs_${p}_secret`,
    sender_localpart: `${p}_bot`,
    namespaces: {
      users: [{ exclusive: true, regex: `@_${p}_.*:test\\.local` }],
      aliases: [{ exclusive: true, regex: `#_${p}_.*:test\\.local` }],
      rooms: [],
    },
    rate_limited: false,
    ...over,
  };
}

async function addReg(reg: Record<string, unknown>, token = admin.accessToken) {
  return call("POST", "/_lattice/admin/v1/appservices", { token, body: reg });
}

beforeAll(async () => {
  admin = await makeAdmin();
});

describe("registration admin API", () => {
  it("adds (JSON), lists without tokens, refuses duplicates and removes", async () => {
    const reg = registration();
    const r = await addReg(reg);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.id).toBe(reg.id);
    const list = await call("GET", "/_lattice/admin/v1/appservices", { token: admin.accessToken });
    expect(list.status).toBe(200);
    const mine = list.body.appservices.find((a: any) => a.id === reg.id);
    expect(mine.sender_localpart).toBe(reg.sender_localpart);
    expect(JSON.stringify(list.body)).not.toContain(reg.as_token);
    expect(JSON.stringify(list.body)).not.toContain(reg.hs_token);
    // The sender_localpart user exists.
    const prof = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent(`@${reg.sender_localpart}:test.local`)}`);
    expect(prof.status).toBe(200);

    for (const clash of [
      { id: reg.id },
      { as_token: reg.as_token },
      { hs_token: reg.hs_token },
      { sender_localpart: reg.sender_localpart },
      { as_token: reg.hs_token },
    ]) {
      const dup = await addReg({ ...registration(), ...clash });
      expect(dup.status, JSON.stringify(clash)).toBe(400);
      expect(dup.body.errcode).toBe("M_INVALID_PARAM");
    }
    const del = await call("DELETE", `/_lattice/admin/v1/appservices/${reg.id}`, { token: admin.accessToken });
    expect(del.status).toBe(200);
    const again = await call("DELETE", `/_lattice/admin/v1/appservices/${reg.id}`, { token: admin.accessToken });
    expect(again.status).toBe(404);
    expect(again.body.errcode).toBe("M_NOT_FOUND");
  });

  it("accepts the registration as YAML", async () => {
    const p = uniqueName("yaml").toLowerCase();
    const yaml = [
      `id: ${p}`,
      `url: null`,
      `as_token: as_${p}_token`,
      `hs_token: hs_${p}_token`,
      `sender_localpart: ${p}_bot`,
      `rate_limited: false`,
      `namespaces:`,
      `  users:`,
      `    - exclusive: true`,
      `      regex: '@_${p}_.*:test\\.local'`,
      `  aliases: []`,
      `  rooms: []`,
    ].join("\n");
    const r = await call("POST", "/_lattice/admin/v1/appservices", { token: admin.accessToken, rawBody: yaml, headers: { "content-type": "application/x-yaml" } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.namespaces.users[0].regex).toBe(`@_${p}_.*:test\\.local`);
  });

  it("refuses bad registrations with a clear error", async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ namespaces: { users: [{ exclusive: true, regex: "(a+)+$" }] } }, "M_BAD_JSON", /catastrophic/],
      [{ namespaces: { users: [{ exclusive: true, regex: "(x|xx)*y" }] } }, "M_BAD_JSON", /catastrophic/],
      [{ namespaces: { users: [{ exclusive: true, regex: "@_a_(.*:test" }] } }, "M_BAD_JSON", /does not compile/],
      [{ namespaces: { aliases: [{ exclusive: true, regex: "x".repeat(600) }] } }, "M_BAD_JSON", /longer than/],
      [{ namespaces: { users: [{ regex: "@_a_.*" }] } }, "M_BAD_JSON", /exclusive/],
      [{ sender_localpart: "Bad Bot" }, "M_BAD_JSON", /sender_localpart/],
      [{ as_token: "" }, "M_BAD_JSON", /as_token/],
      [{ hs_token: undefined }, "M_BAD_JSON", /hs_token/],
      [{ url: "http://bridge.example.org:9000" }, "M_INVALID_PARAM", /https/],
      [{ url: "https://10.0.0.1/" }, "M_INVALID_PARAM", /not allowed/],
    ];
    for (const [over, errcode, message] of cases) {
      const r = await addReg(registration(over));
      expect(r.status, JSON.stringify(over)).toBe(400);
      expect(r.body.errcode, JSON.stringify(over)).toBe(errcode);
      expect(r.body.error, JSON.stringify(over)).toMatch(message);
    }
    const notYaml = await call("POST", "/_lattice/admin/v1/appservices", { token: admin.accessToken, rawBody: "id: [unclosed" });
    expect(notYaml.status).toBe(400);
    expect(notYaml.body.errcode).toBe("M_NOT_JSON");
  });

  it("needs a server admin", async () => {
    const user = await registerUser();
    expect((await addReg(registration(), user.accessToken)).status).toBe(403);
    expect((await call("GET", "/_lattice/admin/v1/appservices", { token: user.accessToken })).status).toBe(403);
    expect((await call("GET", "/_lattice/admin/v1/appservices")).status).toBe(401);
  });

  it("judges regexes: common bridge patterns pass, backtracking traps do not", () => {
    for (const ok of ["@_irc_.*:example\\.org", "@telegram_[0-9]+:server", "#_discord_[0-9]+_[0-9]+:x\\.y", "@(bot|ghost)_\\d+:hs", "@a(_[a-z])?:hs"]) {
      expect(unsafeRegexReason(ok), ok).toBeNull();
    }
    for (const bad of ["(a+)+", "(a*)*b", "(a|aa)+", "(\\w+\\s?)*$", "(a)\\1", "(?=a).*", ".*.*.*.*x", "(.{1,3})+"]) {
      expect(unsafeRegexReason(bad), bad).not.toBeNull();
    }
  });
});
