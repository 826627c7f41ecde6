// A real client library against a real server: matrix-js-sdk registers, logs in, manages devices.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as sdk from "matrix-js-sdk";
import { startServer, type RunningServer } from "./harness";

let server: RunningServer;
beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.stop();
});

describe("matrix-js-sdk against npm start", () => {
  it("registers, logs in, lists and renames devices, logs out", async () => {
    const username = `alice${Date.now()}`;
    const anon = sdk.createClient({ baseUrl: server.baseUrl });
    const versions = await anon.getVersions();
    expect(versions.versions).toContain("v1.1");

    // UIA: the SDK surfaces the 401 challenge; complete it with m.login.dummy.
    let session: string | undefined;
    try {
      await anon.registerRequest({ username, password: "s3cret-pass" });
    } catch (e: any) {
      expect(e.httpStatus).toBe(401);
      session = e.data.session;
    }
    const reg = await anon.registerRequest({ username, password: "s3cret-pass", auth: { type: "m.login.dummy", session } });
    expect(reg.user_id).toBe(`@${username}:${server.serverName}`);

    const client = sdk.createClient({ baseUrl: server.baseUrl });
    const login = await client.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: username },
      password: "s3cret-pass",
      initial_device_display_name: "e2e laptop",
    });
    expect(login.user_id).toBe(reg.user_id);
    const authed = sdk.createClient({ baseUrl: server.baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
    expect((await authed.whoami()).user_id).toBe(reg.user_id);

    const { devices } = await authed.getDevices();
    expect(devices.map((d) => d.device_id).sort()).toEqual([reg.device_id, login.device_id].sort());
    await authed.setDeviceDetails(login.device_id, { display_name: "renamed" });
    expect((await authed.getDevice(login.device_id)).display_name).toBe("renamed");

    await authed.setDisplayName("Alice E2E");
    expect((await anon.getProfileInfo(reg.user_id)).displayname).toBe("Alice E2E");

    await authed.logout(true);
    await expect(authed.whoami()).rejects.toMatchObject({ errcode: "M_UNKNOWN_TOKEN" });
  });

  it("serves legacy /r0 with ?access_token= to raw fetch", async () => {
    const username = `bob${Date.now()}`;
    const first = await fetch(`${server.baseUrl}/_matrix/client/r0/register`, {
      method: "POST",
      body: JSON.stringify({ username, password: "pw-pw-pw" }),
    });
    expect(first.status).toBe(401);
    const { session } = (await first.json()) as { session: string };
    const reg = await fetch(`${server.baseUrl}/_matrix/client/r0/register`, {
      method: "POST",
      body: JSON.stringify({ username, password: "pw-pw-pw", auth: { type: "m.login.dummy", session } }),
    });
    const { access_token, user_id } = (await reg.json()) as { access_token: string; user_id: string };
    const who = await fetch(`${server.baseUrl}/_matrix/client/r0/account/whoami?access_token=${access_token}`);
    expect(who.status).toBe(200);
    expect(((await who.json()) as { user_id: string }).user_id).toBe(user_id);
    const devices = await fetch(`${server.baseUrl}/_matrix/client/r0/devices?access_token=${access_token}`);
    expect(((await devices.json()) as { devices: unknown[] }).devices).toHaveLength(1);
  });
});
