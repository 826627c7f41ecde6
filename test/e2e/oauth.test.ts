// The OAuth 2.0 API end to end, as Element signs in: matrix-js-sdk's OAuth helpers discover the
// server (GET /auth_metadata), register a client, build the authorization URL; a real headless
// Chromium (Debian's `chromium`, puppeteer-core) opens it, the test signs in (or registers) and
// consents on Lattice's pages; the SDK completes the code grant, syncs, refreshes its token when
// the short-lived access token expires, and logs out by revoking its tokens.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import * as sdk from "matrix-js-sdk";
import type { Browser, Page } from "puppeteer-core";
import { freePort, startServer, type RunningServer } from "./harness";
import { registerUser, startSynced } from "./client";

function findChromium(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
  for (const c of candidates) if (c && existsSync(c)) return c;
  try {
    return execFileSync("sh", ["-c", "command -v chromium || command -v chromium-browser"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}
const chromium = findChromium();
if (!chromium) console.warn("\n\n*** oauth e2e SKIPPED: no chromium found (apt-get install chromium, or set CHROMIUM_PATH) ***\n\n");

let server: RunningServer;
let browser: Browser;
// The shortest access-token lifetime the config accepts, so the refresh happens within the test.
const LIFETIME_MS = 60_000;

beforeAll(async () => {
  if (!chromium) return;
  server = await startServer({ ACCESS_TOKEN_LIFETIME_MS: String(LIFETIME_MS) });
  const puppeteer = (await import("puppeteer-core")).default;
  browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
});
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

/** Open `url` in a fresh browser context; resolves with the URL the pages finally redirect to
 *  on the loopback callback (which nothing serves: the request is answered by the test). */
async function openAuthorization(url: string, callbackPrefix: string, drive: (page: Page) => Promise<void>): Promise<string> {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  let resolveCallback!: (u: string) => void;
  const callback = new Promise<string>((r) => (resolveCallback = r));
  await page.setRequestInterception(true);
  page.on("request", (req) => {
    if (req.url().startsWith(callbackPrefix)) {
      resolveCallback(req.url());
      void req.respond({ status: 200, contentType: "text/plain", body: "signed in" });
    } else void req.continue();
  });
  const violations: string[] = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused/i.test(m.text())) violations.push(m.text());
  });
  try {
    await page.goto(url);
    await drive(page);
    const result = await Promise.race([callback, new Promise<string>((_, rej) => setTimeout(() => rej(new Error("no callback")), 45_000))]);
    expect(violations).toEqual([]);
    return result;
  } finally {
    await context.close();
  }
}

async function discoverAndRegister() {
  const anon = sdk.createClient({ baseUrl: server.baseUrl });
  const metadata = await anon.getAuthMetadata();
  const clientId = await sdk.OAuth2.registerClient(metadata, {
    client_name: "Lattice e2e",
    client_uri: "https://example.com/",
    application_type: "native",
    redirect_uris: ["http://127.0.0.1/callback"],
  });
  return { metadata, clientId };
}

async function consent(page: Page) {
  await page.waitForSelector("#allow", { timeout: 45_000 });
  expect(await page.$eval("#client-name", (e) => e.textContent)).toBe("Lattice e2e");
  await page.click("#allow");
}

describe.skipIf(!chromium)("OAuth 2.0 sign-in with matrix-js-sdk and headless Chromium", () => {
  it("discovers, registers a client, signs in on the pages, completes the grant, syncs, refreshes, logs out", { timeout: 240_000 }, async () => {
    const t = Date.now().toString(36);
    const user = await registerUser(server, `oauth${t}`, "oauth password");
    const { metadata, clientId } = await discoverAndRegister();
    expect(metadata.grant_types_supported).toEqual(expect.arrayContaining(["authorization_code", "refresh_token"]));

    const oauth = new sdk.OAuth2(metadata, { clientId });
    const redirectUri = `http://127.0.0.1:${await freePort()}/callback`;
    const url = await oauth.generateAuthorizationCodeGrantUrl(`state-${t}`, redirectUri, "query");
    const callback = await openAuthorization(url, redirectUri, async (page) => {
      await page.waitForSelector("#username");
      await page.type("#username", `oauth${t}`);
      await page.type("#password", "oauth password");
      await Promise.all([page.waitForNavigation(), page.click("#sign-in")]);
      await consent(page);
    });
    const params = new URL(callback).searchParams;
    expect(params.get("state")).toBe(`state-${t}`);
    const tokens = await oauth.completeAuthorizationCodeGrant(params.get("code")!, redirectUri);
    expect(tokens.refresh_token).toBeTruthy();
    expect(tokens.expires_in).toBe(LIFETIME_MS / 1000);

    const refreshed: { accessToken: string; refreshToken?: string }[] = [];
    const client = sdk.createClient({
      baseUrl: server.baseUrl,
      userId: user.userId,
      deviceId: oauth.context.deviceId,
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      oauthClientId: clientId,
      onTokenRefresh: (t) => void refreshed.push(t),
    });
    try {
      expect(await client.whoami()).toMatchObject({ user_id: user.userId, device_id: oauth.context.deviceId });
      await startSynced(client);
      const { room_id } = await client.createRoom({ name: "oauth room" });
      await client.sendTextMessage(room_id, "hello over OAuth");
      client.stopClient();

      // Let the access token expire: the SDK's next request gets M_UNKNOWN_TOKEN (soft logout),
      // refreshes with the refresh token grant and retries.
      await new Promise((r) => setTimeout(r, LIFETIME_MS + 2_000));
      expect((await client.getAccountDataFromServer("m.push_rules")) ?? {}).toBeTruthy();
      expect(refreshed).toHaveLength(1);
      expect(refreshed[0].accessToken).not.toBe(tokens.access_token);
      expect(refreshed[0].refreshToken).not.toBe(tokens.refresh_token);
      // The old refresh token is spent; replaying it now would revoke the session, so check the
      // new token works instead, then log out (the SDK revokes through the revocation endpoint).
      expect((await client.whoami()).device_id).toBe(oauth.context.deviceId);
      const newAccess = refreshed[0].accessToken;
      await client.logout(true);
      const after = await fetch(`${server.baseUrl}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${newAccess}` } });
      expect(after.status).toBe(401);
    } finally {
      client.stopClient();
    }
  });

  it("registers a new account through the pages (prompt=create)", { timeout: 120_000 }, async () => {
    const t = Date.now().toString(36);
    const { metadata, clientId } = await discoverAndRegister();
    expect(metadata.prompt_values_supported).toContain("create");
    const oauth = new sdk.OAuth2(metadata, { clientId });
    const redirectUri = `http://127.0.0.1:${await freePort()}/callback`;
    const url = await oauth.generateAuthorizationCodeGrantUrl(`s-${t}`, redirectUri, "fragment", "create");
    const callback = await openAuthorization(url, redirectUri, async (page) => {
      await page.waitForSelector("#create-account");
      await page.type("#username", `fresh${t}`);
      await page.type("#password", "fresh password");
      await page.type("#password2", "fresh password");
      await Promise.all([page.waitForNavigation(), page.click("#create-account")]);
      await consent(page);
    });
    const params = new URLSearchParams(new URL(callback).hash.slice(1));
    expect(params.get("state")).toBe(`s-${t}`);
    const tokens = await oauth.completeAuthorizationCodeGrant(params.get("code")!, redirectUri);
    const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: tokens.access_token });
    expect(await client.whoami()).toMatchObject({ user_id: `@fresh${t}:${server.serverName}`, device_id: oauth.context.deviceId });
  });

  it("signs a device in through the device authorisation grant (RFC 8628)", { timeout: 120_000 }, async () => {
    const t = Date.now().toString(36);
    const user = await registerUser(server, `tv${t}`, "tv password");
    const { metadata, clientId } = await discoverAndRegister();
    expect(metadata.device_authorization_endpoint).toBe(`${server.baseUrl}/_lattice/oauth/device`);
    const oauth = new sdk.OAuth2(metadata, { clientId });
    const session = await oauth.startDeviceAuthorizationGrant();
    const waiting = oauth.waitForDeviceAuthorizationGrant(session);
    // The user opens the verification URI (e.g. from a QR code) in a browser elsewhere.
    const context = await browser.createBrowserContext();
    try {
      const page = await context.newPage();
      await page.goto(session.verification_uri_complete!);
      await page.waitForSelector("#username");
      await page.type("#username", `tv${t}`);
      await page.type("#password", "tv password");
      await Promise.all([page.waitForNavigation(), page.click("#sign-in")]);
      await page.waitForSelector("#allow");
      expect(await page.$eval("#user-code", (e) => e.textContent)).toBe(session.user_code);
      await Promise.all([page.waitForNavigation(), page.click("#allow")]);
      expect(await page.$eval("#result", (e) => e.textContent)).toContain("Done");
    } finally {
      await context.close();
    }
    const result = await waiting;
    if (!("access_token" in result)) throw new Error(`device grant failed: ${JSON.stringify(result)}`);
    const client = sdk.createClient({ baseUrl: server.baseUrl, accessToken: result.access_token });
    expect(await client.whoami()).toMatchObject({ user_id: user.userId, device_id: oauth.context.deviceId });
  });
});
