// Helpers for the admin API tests: an admin account (shared-secret registration), uploads.
import { SELF } from "cloudflare:test";
import { BASE, call, uniqueName, type TestUser } from "./helpers";
import { sharedSecretMac } from "../../src/api/admin/admin";

export const A = "/_synapse/admin";
export const enc = encodeURIComponent;

export async function registerAdmin(): Promise<TestUser> {
  const n = await call("GET", `${A}/v1/register`);
  const username = uniqueName("admin");
  const password = "admin password";
  const mac = await sharedSecretMac("test-shared-secret", n.body.nonce, username, password, true);
  const r = await call("POST", `${A}/v1/register`, { body: { nonce: n.body.nonce, username, password, admin: true, mac } });
  if (r.status !== 200) throw new Error(`admin register: ${r.status} ${JSON.stringify(r.body)}`);
  return { userId: r.body.user_id, accessToken: r.body.access_token, deviceId: r.body.device_id, password };
}

/** Upload bytes as `token`; the media ID. */
export async function uploadMedia(token: string, text = "hello media"): Promise<string> {
  const res = await SELF.fetch(`${BASE}/_matrix/media/v3/upload`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "text/plain" }, body: text });
  const json = (await res.json()) as { content_uri: string };
  if (res.status !== 200) throw new Error(`upload: ${res.status} ${JSON.stringify(json)}`);
  return json.content_uri.split("/").pop()!;
}
