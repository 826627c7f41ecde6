// Client helpers shared by the e2e tests: registering an account through the m.login.dummy UIA
// stage (with matrix-js-sdk or with plain fetch), starting an SDK client until its first sync,
// and authenticated JSON requests as a registered user.
import * as sdk from "matrix-js-sdk";
import type { RunningServer } from "./harness";

/** Register with matrix-js-sdk: the first request only fetches the UIA session, the second
 *  completes m.login.dummy. Returns the registration response. */
export async function sdkRegister(baseUrl: string, username: string, password: string) {
  const anon = sdk.createClient({ baseUrl });
  let session: string | undefined;
  try {
    await anon.registerRequest({ username, password });
  } catch (e: any) {
    session = e.data.session;
  }
  return anon.registerRequest({ username, password, auth: { type: "m.login.dummy", session } });
}

/** Register a new account and return a (not yet started) client logged in as it. */
export async function registerSdkClient(baseUrl: string, username: string, password: string): Promise<sdk.MatrixClient> {
  const reg = await sdkRegister(baseUrl, username, password);
  return sdk.createClient({ baseUrl, accessToken: reg.access_token, userId: reg.user_id, deviceId: reg.device_id });
}

/** Log in a new device of `username` with m.login.password. */
export async function sdkLogin(baseUrl: string, username: string, password: string) {
  return sdk.createClient({ baseUrl }).loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: username }, password });
}

/** The one way the e2e tests set up an encrypting client: matrix-js-sdk for a logged-in device
 *  (`login`: a login or registration response) with Rust crypto kept in memory (no IndexedDB in
 *  Node). Not started (see startSynced). `extra`: more createClient options (fetchFn,
 *  cryptoCallbacks). */
export async function rustCryptoClient(
  baseUrl: string,
  login: { access_token: string; user_id: string; device_id: string },
  extra: Partial<sdk.ICreateClientOpts> = {},
): Promise<sdk.MatrixClient> {
  const client = sdk.createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id, ...extra });
  await client.initRustCrypto({ useIndexedDB: false });
  return client;
}

/** Start syncing and wait until the first sync is done. */
export async function startSynced(client: sdk.MatrixClient, opts: sdk.IStartClientOpts = {}): Promise<void> {
  const ready = new Promise<void>((resolve) => {
    client.on(sdk.ClientEvent.Sync, (state) => {
      if (state === sdk.SyncState.Prepared || state === sdk.SyncState.Syncing) resolve();
    });
  });
  await client.startClient({ initialSyncLimit: 20, ...opts });
  await ready;
}

export type Json = Record<string, any>;

/** A user registered over plain HTTP (see registerUser). */
export interface User {
  server: RunningServer;
  userId: string;
  deviceId: string;
  token: string;
}

/** Register `username` on `server` with fetch: a first request without auth, then m.login.dummy
 *  with the session it returned (unless the first one already succeeded). */
export async function registerUser(server: RunningServer, username: string, password: string): Promise<User> {
  const url = `${server.baseUrl}/_matrix/client/v3/register`;
  const first = await fetch(url, { method: "POST", body: JSON.stringify({ username, password }) });
  let body = (await first.json()) as Json;
  if (!body.access_token) {
    const r = await fetch(url, { method: "POST", body: JSON.stringify({ username, password, auth: { type: "m.login.dummy", session: body.session } }) });
    body = (await r.json()) as Json;
  }
  return { server, userId: body.user_id, deviceId: body.device_id, token: body.access_token };
}

/** A JSON request as `u`; `path` is under /_matrix/client/v3 unless it starts with /_matrix. */
export async function api<T = Json>(u: User, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const r = await fetch(`${u.server.baseUrl}${path.startsWith("/_matrix") ? path : `/_matrix/client/v3${path}`}`, {
    method,
    headers: { authorization: `Bearer ${u.token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json()) as T };
}

/** Like api, but anything other than 200 throws (with the server's name and the answer). */
export async function ok<T = Json>(u: User, method: string, path: string, body?: unknown): Promise<T> {
  const r = await api<T>(u, method, path, body);
  if (r.status !== 200) throw new Error(`${method} ${path} on ${u.server.serverName}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Poll until `fn` returns a truthy value, for at most `ms` (errors from `fn` count as "not yet"
 *  and the last one is reported on time-out). */
export async function until<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, ms = 20_000, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

/** Poll (at most `ms`) until `client` has decrypted the message with `body` in the live timeline
 *  of `roomId`; the body. */
export async function decrypted(client: sdk.MatrixClient, roomId: string, body: string, ms = 30_000): Promise<string> {
  return until(`${client.getUserId()}/${client.getDeviceId()} to decrypt "${body}"`, async () => {
    const room = client.getRoom(roomId);
    if (!room) return undefined;
    for (const ev of room.getLiveTimeline().getEvents()) {
      if (ev.getWireType() !== "m.room.encrypted") continue;
      await client.decryptEventIfNeeded(ev);
      if (!ev.isDecryptionFailure() && ev.getContent().body === body) return body;
    }
    return undefined;
  }, ms);
}
