// Remote profiles: GET /profile for another server's user asks that server (/query/profile).
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { call, registerUser, offline } from "./helpers";
import { setFederationFetch } from "../../src/services/federation/client";

const asked: string[] = [];

beforeAll(() => {
  setFederationFetch(async (input) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    asked.push(url.host + url.pathname);
    if (url.host !== "remote.test:8448" || url.pathname !== "/_matrix/federation/v1/query/profile") throw new Error("offline (test)");
    const user = url.searchParams.get("user_id");
    if (user === "@bob:remote.test:8448") return Response.json({ displayname: "Bob Remote", avatar_url: "mxc://remote.test/abc" });
    if (user === "@odd:remote.test:8448") return Response.json({ displayname: 42, avatar_url: "x".repeat(5000) });
    return Response.json({ errcode: "M_NOT_FOUND", error: "no such user" }, { status: 404 });
  });
});
afterAll(() => setFederationFetch(offline));

describe("remote profiles", () => {
  it("are fetched from the user's server", async () => {
    const me = await registerUser();
    const r = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent("@bob:remote.test:8448")}`, { token: me.accessToken });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ displayname: "Bob Remote", avatar_url: "mxc://remote.test/abc" });
    const dn = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent("@bob:remote.test:8448")}/displayname`, { token: me.accessToken });
    expect(dn.body).toEqual({ displayname: "Bob Remote" });
    expect(asked).toContain("remote.test:8448/_matrix/federation/v1/query/profile");
  });
  it("keeps the remote 404, drops malformed fields, and answers 502 for unreachable servers", async () => {
    const missing = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent("@nobody:remote.test:8448")}`);
    expect(missing.status).toBe(404);
    expect(missing.body.errcode).toBe("M_NOT_FOUND");
    const odd = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent("@odd:remote.test:8448")}`);
    expect(odd.status).toBe(200);
    expect(odd.body).toEqual({});
    const down = await call("GET", `/_matrix/client/v3/profile/${encodeURIComponent("@x:unreachable.test:8448")}`);
    expect(down.status).toBe(502);
    expect(down.body.errcode).toBe("M_UNKNOWN");
  });
});
