// The admin console in a real headless Chromium (Debian's `chromium`, driven by puppeteer-core)
// against a real server: sign in, find a user, quarantine their media, deactivate them, delete a
// room; each effect is checked through the admin API. ADMIN_SCREENSHOTS=1 writes the pages'
// screenshots to docs/img/ (docs/admin.md shows them).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHmac } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, mkdtempSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import path from "node:path";
import { startServer, type RunningServer } from "./harness";

const root = path.resolve(import.meta.dirname, "../..");

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
if (!chromium) {
  console.warn("\n\n*** admin-console e2e SKIPPED: no chromium found (apt-get install chromium, or set CHROMIUM_PATH) ***\n\n");
}

const SECRET = "console-e2e-secret";
let server: RunningServer;
const shots = process.env.ADMIN_SCREENSHOTS === "1" ? path.join(root, "docs/img") : mkdtempSync(path.join(tmpdir(), "lattice-shots-"));

async function json(method: string, url: string, token?: string, body?: unknown): Promise<any> {
  const res = await fetch(url, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const out = text ? JSON.parse(text) : {};
  return { status: res.status, ...out };
}

async function register(username: string, password: string, admin = false): Promise<{ user_id: string; access_token: string }> {
  const { nonce } = await json("GET", `${server.baseUrl}/_synapse/admin/v1/register`);
  const mac = createHmac("sha1", SECRET).update(`${nonce}\0${username}\0${password}\0${admin ? "admin" : "notadmin"}`).digest("hex");
  return json("POST", `${server.baseUrl}/_synapse/admin/v1/register`, undefined, { nonce, username, password, admin, mac });
}

beforeAll(async () => {
  if (chromium) server = await startServer({ REGISTRATION_SHARED_SECRET: SECRET });
});
afterAll(async () => {
  await server?.stop();
});

describe.skipIf(!chromium)("admin console in headless Chromium", () => {
  it("the bundled console matches src/console (npm run build:console)", async () => {
    const { render } = await import("../../scripts/build-console.mjs");
    expect(render()).toBe(readFileSync(path.join(root, "src/console/assets.ts"), "utf8"));
  });

  it("signs in, finds a user, quarantines their media, deactivates them, deletes a room", async () => {
    const puppeteer = (await import("puppeteer-core")).default;
    const base = server.baseUrl;
    const A = `${base}/_synapse/admin`;
    const t = Date.now().toString(36);
    const admin = await register(`boss${t}`, "admin pass", true);
    const victim = await register(`spammer${t}`, "victim pass");
    const owner = await register(`owner${t}`, "owner pass");
    await register(`alice${t}`, "alice pass");
    await json("PUT", `${base}/_matrix/client/v3/profile/${encodeURIComponent(victim.user_id)}/displayname`, victim.access_token, { displayname: "Sam Spammer" });
    const up = await fetch(`${base}/_matrix/media/v3/upload?filename=spam.txt`, { method: "POST", headers: { authorization: `Bearer ${victim.access_token}`, "content-type": "text/plain" }, body: "buy now" });
    const mediaId = ((await up.json()) as { content_uri: string }).content_uri.split("/").pop()!;
    const room = await json("POST", `${base}/_matrix/client/v3/createRoom`, owner.access_token, { name: `Spam den ${t}`, preset: "public_chat" });
    await json("POST", `${base}/_matrix/client/v3/join/${encodeURIComponent(room.room_id)}`, victim.access_token, {});
    await json("POST", `${A}/v1/registration_tokens/new`, admin.access_token, { uses_allowed: 5 });

    const browser = await puppeteer.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1200, height: 800 });
      const cspErrors: string[] = [];
      page.on("console", (m) => {
        if (/Content Security Policy|Refused to/i.test(m.text())) cspErrors.push(m.text());
      });
      // Confirmations: accept deleting and deactivating, and blocking; decline erasing (the media
      // must stay to show it is quarantined).
      page.on("dialog", (d) => void (/erase/i.test(d.message()) ? d.dismiss() : d.accept()));
      const shot = async (name: string) => {
        mkdirSync(shots, { recursive: true });
        await page.screenshot({ path: path.join(shots, `admin-${name}.png`), fullPage: true });
      };
      const status = (re: RegExp) => page.waitForFunction((src: string) => new RegExp(src).test(document.getElementById("status")!.textContent ?? ""), { timeout: 45_000 }, re.source);
      const goto = async (hash: string, ready: string) => {
        await page.evaluate((h: string) => (location.hash = h), hash);
        await page.waitForFunction((txt: string) => document.getElementById("main")!.textContent!.includes(txt), { timeout: 45_000 }, ready);
      };

      await page.goto(`${base}/_lattice/admin/`);
      await page.waitForSelector("#signin-user");
      await shot("signin");
      // A non-admin cannot use the console.
      await page.type("#signin-user", `alice${t}`);
      await page.type("#signin-password", "alice pass");
      await page.click("form button[type=submit]");
      await status(/not a server admin/);
      await page.$eval("#signin-user", (el) => ((el as HTMLInputElement).value = ""));
      await page.$eval("#signin-password", (el) => ((el as HTMLInputElement).value = ""));
      await page.type("#signin-user", `boss${t}`);
      await page.type("#signin-password", "admin pass");
      await page.click("form button[type=submit]");
      await page.waitForFunction(() => document.querySelector(".cards") !== null, { timeout: 45_000 });
      expect(await page.$eval("main", (m) => m.textContent)).toContain("federation peers");
      await shot("dashboard");

      // Find the user by display name.
      await goto("#/users", "Create a user");
      await page.type("#user-search", "Sam Spam");
      await page.keyboard.press("Enter");
      await page.waitForFunction(() => location.hash.includes("q=Sam") && document.querySelector("caption")?.textContent === "1 users", { timeout: 45_000 });
      expect(await page.$eval("tbody", (b) => b.textContent)).toContain(victim.user_id);
      await shot("users");

      // Their media: quarantine it.
      await goto(`#/media?user=${encodeURIComponent(victim.user_id)}`, "items uploaded by");
      await shot("media");
      const [quarantine] = await page.$$("xpath/.//button[starts-with(normalize-space(.), 'Quarantine') and ancestor::td]");
      await quarantine.click();
      await status(/Quarantining .*: done/);
      const info = await json("GET", `${A}/v1/media/${server.serverName}/${mediaId}`, admin.access_token);
      expect(info.media_info.quarantined_by).toBe(admin.user_id);
      expect((await fetch(`${base}/_matrix/client/v1/media/download/${server.serverName}/${mediaId}`, { headers: { authorization: `Bearer ${owner.access_token}` } })).status).toBe(404);

      // The user's page, then deactivate.
      await goto(`#/user?id=${encodeURIComponent(victim.user_id)}`, "joined rooms");
      await shot("user");
      const [deactivate] = await page.$$("xpath/.//button[normalize-space(.)='Deactivate']");
      await deactivate.click();
      await status(/Deactivating .*: done/);
      const after = await json("GET", `${A}/v2/users/${encodeURIComponent(victim.user_id)}`, admin.access_token);
      expect(after.deactivated).toBe(1);
      expect((await json("GET", `${base}/_matrix/client/v3/account/whoami`, victim.access_token)).status).toBe(401);

      // Rooms: find and delete.
      await goto(`#/rooms?q=${encodeURIComponent(`Spam den ${t}`)}`, "1 rooms");
      await shot("rooms");
      await goto(`#/room?id=${encodeURIComponent(room.room_id)}`, "joined members");
      await shot("room");
      const [del] = await page.$$("xpath/.//button[normalize-space(.)='Delete room']");
      await del.click();
      await status(/Deleted .*members removed/);
      expect((await json("GET", `${A}/v1/rooms/${encodeURIComponent(room.room_id)}`, admin.access_token)).status).toBe(404);
      expect((await json("GET", `${base}/_matrix/client/v3/joined_rooms`, owner.access_token)).joined_rooms).toEqual([]);
      expect((await json("GET", `${A}/v1/rooms/${encodeURIComponent(room.room_id)}/block`, admin.access_token)).block).toBe(true);

      for (const [hash, ready, name] of [
        ["#/reports", "Reports", "reports"],
        ["#/tokens", "tokens", "tokens"],
        ["#/federation", "destinations", "federation"],
      ]) {
        await goto(hash, ready);
        await shot(name);
      }
      expect(cspErrors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
